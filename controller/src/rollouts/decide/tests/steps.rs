//! What keeps an install from being ordered, and what became of the orders.

use chrono::Duration;
use expect_test::expect;
use serde_json::json;

use super::*;

// ---- steps: what keeps an install from being ordered -----------------------------------

#[test]
fn a_step_waits_for_its_server_its_package_and_its_dependencies() {
    check(
        acme(json!({})).with_server("acme-web", |s| s.online = false),
        expect![[r#"
            step acme-web/database: pending
              waiting for the server to reconnect
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    check(
        acme(json!({})).with_server("acme-web", |s| {
            s.modules[0].pending_version = None;
            s.modules[0].download_state = Some("downloading".into());
            s.modules[0].download_detail = Some("40 of 120 MB".into());
        }),
        expect![[r#"
            step acme-web/database: pending
              waiting for the package: download downloading: 40 of 120 MB
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    check(
        acme(json!({})).with_server("acme-web", |s| s.modules.clear()),
        expect![[r#"
            step acme-web/database: pending
              the server no longer reports this module
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    let mut unknown = acme(json!({}));
    unknown.ctx.servers.clear();
    check(
        unknown,
        expect![[r#"
            step acme-web/database: pending
              the server is no longer known to the controller
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
}

#[test]
fn a_step_already_at_its_version_is_skipped_and_a_newer_pending_package_fails_it() {
    check(
        acme(json!({})).with_server("acme-web", |s| {
            s.modules[0].installed_version = Some("2.0.0".into());
        }),
        expect![[r#"
            step acme-web/database: skipped, finished
              already at 2.0.0
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    check(
        acme(json!({})).with_server("acme-web", |s| {
            s.modules[0].pending_version = Some("3.0.0".into());
        }),
        expect![[r#"
            step acme-web/database: failed, attempt 1, finished
              failed after 1 attempts: the server now has database 3.0.0 pending, newer than this release's 2.0.0; roll out the newer release
            step acme-web/ecommerce: pending
              waits for database
            log flotilla install_failed: database on acme-web: the server now has database 3.0.0 pending, newer than this release's 2.0.0; roll out the newer release
        "#]],
    );
}

#[test]
fn one_install_at_a_time_per_server_in_its_window_and_after_its_backoff() {
    // Two modules of one layer on one server: one is ordered, the other waits.
    check(
        world(json!({"order": {}}))
            .site("acme", 1, SiteState::Running)
            .step("acme", "acme-web/ecommerce", 0, StepState::Pending)
            .step("acme", "acme-web/phygitalapi", 0, StepState::Pending)
            .server(
                "acme-web",
                true,
                &[
                    ("ecommerce", "1.0.0", Some("2.0.0")),
                    ("phygitalapi", "1.0.0", Some("2.0.0")),
                ],
            ),
        expect![[r#"
            step acme-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            step acme-web/phygitalapi: pending
              waiting for the server's current install
            order install ecommerce 2.0.0 on acme-web
        "#]],
    );
    check(
        acme(json!({})).with_step("acme-web/database", |s| {
            s.next_attempt_at = Some(now() + Duration::seconds(20));
        }),
        expect![[r#"
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    // The window closes before the install would end.
    check(
        acme(json!({})).windows("acme", json!([{"start": "09:00", "end": "10:02"}])),
        expect![[r#"
            step acme-web/database: pending
              waiting for the maintenance window opening at Wed 2026-12-02 09:00:00 UTC
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
}

// ---- steps: what became of the orders --------------------------------------------------

#[test]
fn a_running_install_shows_its_phase_and_one_without_progress_is_stuck() {
    check(
        ordered_step(StepState::Starting).install("c1", InstallState::Running, Some("BACKUP"), ""),
        expect![[r#"
            step acme-web/database: running, attempt 1
              BACKUP
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    check(
        ordered_step(StepState::Running)
            .install("c1", InstallState::Running, Some("BACKUP"), "")
            .with_step("acme-web/database", |s| s.message = Some("BACKUP".into())),
        expect![[r#"
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    let mut stuck = ordered_step(StepState::Running).install(
        "c1",
        InstallState::Running,
        Some("POSTINSTALL"),
        "",
    );
    stuck.strategy.failure.stuck_after_seconds = 5;
    check(
        stuck,
        expect![[r#"
            site acme: running
              database on acme-web: stuck: no progress for 10 s (last in phase POSTINSTALL); waiting for the running installs to end before rolling back
            step acme-web/database: failed, attempt 1, finished
              stuck: no progress for 10 s (last in phase POSTINSTALL)
            log flotilla stuck: database on acme-web: stuck: no progress for 10 s (last in phase POSTINSTALL)
        "#]],
    );
}

#[test]
fn a_succeeded_install_lets_the_next_layer_start() {
    check(
        ordered_step(StepState::Running)
            .install("c1", InstallState::Succeeded, None, "")
            .with_server("acme-web", |s| {
                s.modules[0].installed_version = Some("2.0.0".into())
            }),
        expect![[r#"
            step acme-web/database: succeeded, attempt 1, finished
              installed in 55 s, 120 ms out of service
            step acme-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            order install ecommerce 2.0.0 on acme-web
        "#]],
    );
}

#[test]
fn a_failed_install_is_tried_again_after_its_backoff_then_fails_for_good() {
    check(
        ordered_step(StepState::Running).install(
            "c1",
            InstallState::Failed,
            Some("PREINSTALL"),
            "exit code 2",
        ),
        expect![[r#"
            step acme-web/database: pending, attempt 1, next at +30s
              attempt 1 failed: failed in phase PREINSTALL: exit code 2; trying again in 30 s
            step acme-web/ecommerce: pending
              waits for database
            log flotilla retry: database on acme-web: attempt 1 failed: failed in phase PREINSTALL: exit code 2
        "#]],
    );
    check(
        ordered_step(StepState::Running)
            .with_step("acme-web/database", |s| s.attempts = 2)
            .install(
                "c1",
                InstallState::Failed,
                Some("PREINSTALL"),
                "exit code 2",
            ),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rolled_back, finished
              every server is back at the versions it had
            step acme-web/database: failed, attempt 2, finished
              failed after 2 attempts: failed in phase PREINSTALL: exit code 2
            step acme-web/ecommerce: cancelled
            log flotilla install_failed: database on acme-web: failed in phase PREINSTALL: exit code 2
            log flotilla site_failed: site acme: database on acme-web: failed after 2 attempts: failed in phase PREINSTALL: exit code 2; rolling every server back
            log flotilla site_rolled_back: site acme
            log flotilla paused: 1 of 1 sites failed, past the threshold (any failed site); no new site starts. Resume to go on, retry the failed sites, or cancel
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
}

#[test]
fn the_log_of_a_failed_install_ends_with_its_hooks_last_stderr_lines() {
    let long = "x".repeat(300);
    check(
        ordered_step(StepState::Running)
            .with_step("acme-web/database", |s| s.attempts = 2)
            .install(
                "c1",
                InstallState::Failed,
                Some("PREINSTALL"),
                "hook PREINSTALL_database.cmd exited with code 3",
            )
            .stderr(
                "c1",
                &[
                    "first",
                    "second",
                    "",
                    "third",
                    "fourth",
                    "fifth",
                    &long,
                    "ERROR: relation \"customer\" already exists",
                ],
            ),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rolled_back, finished
              every server is back at the versions it had
            step acme-web/database: failed, attempt 2, finished
              failed after 2 attempts: failed in phase PREINSTALL: hook PREINSTALL_database.cmd exited with code 3; its stderr ended: third | fourth | fifth | xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… | ERROR: relation "customer" already exists
            step acme-web/ecommerce: cancelled
            log flotilla install_failed: database on acme-web: failed in phase PREINSTALL: hook PREINSTALL_database.cmd exited with code 3; its stderr ended: third | fourth | fifth | xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… | ERROR: relation "customer" already exists
            log flotilla site_failed: site acme: database on acme-web: failed after 2 attempts: failed in phase PREINSTALL: hook PREINSTALL_database.cmd exited with code 3; its stderr ended: third | fourth | fifth | xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… | ERROR: relation "customer" already exists; rolling every server back
            log flotilla site_rolled_back: site acme
            log flotilla paused: 1 of 1 sites failed, past the threshold (any failed site); no new site starts. Resume to go on, retry the failed sites, or cancel
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
}

#[test]
fn a_customized_database_waits_for_its_review_and_asks_again() {
    check(
        ordered_step(StepState::Starting).install(
            "c1",
            InstallState::Failed,
            Some("PREINSTALL"),
            "the database is customized; review it",
        ),
        expect![[r#"
            site acme: running
              waiting for a database review of database on acme-web: the database is customized; run its scripts one by one (dashboard or portal)
            step acme-web/database: review, next at +10s
              waiting for a database review: the database is customized; review it
            step acme-web/ecommerce: pending
              waits for database
            log flotilla database_review: database on acme-web: the database is customized; waiting for a database review
        "#]],
    );
    // The recheck is due: the step is ordered again.
    check(
        acme(json!({})).with_step("acme-web/database", |s| s.state = StepState::Review),
        expect![[r#"
            site acme: running
              waiting for a database review of database on acme-web: the database is customized; run its scripts one by one (dashboard or portal)
            step acme-web/database: starting, attempt 1
              ordered (attempt 1)
            step acme-web/ecommerce: pending
              waits for database
            order install database 2.0.0 on acme-web
        "#]],
    );
}

#[test]
fn an_order_nobody_heard_of_is_found_on_the_server_ordered_again_or_stuck() {
    let lost = |connected: i64, installed: &str| {
        ordered_step(StepState::Starting).with_server("acme-web", |s| {
            s.connected_at = Some(now() - Duration::seconds(connected));
            s.modules[0].installed_version = Some(installed.into());
        })
    };
    // Reconnected since the order, for long enough to have resent its results.
    check(
        lost(30, "2.0.0"),
        expect![[r#"
            step acme-web/database: succeeded, attempt 1, finished
              database is at 2.0.0 on acme-web
            step acme-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            order install ecommerce 2.0.0 on acme-web
        "#]],
    );
    check(
        lost(30, "1.0.0"),
        expect![[r#"
            step acme-web/database: starting, attempt 2
              ordered (attempt 2)
            step acme-web/ecommerce: pending
              waits for database
            order install database 2.0.0 on acme-web
        "#]],
    );
    // Reconnected a moment ago: it may still resend.
    check(
        lost(2, "1.0.0"),
        expect![[r#"
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    // In flight: its answer is awaited.
    let mut in_flight = lost(30, "1.0.0");
    in_flight.in_flight.insert("c1".into());
    check(
        in_flight,
        expect![[r#"
            step acme-web/ecommerce: pending
              waits for database
        "#]],
    );
    let mut silent = lost(7200, "1.0.0");
    silent.strategy.failure.stuck_after_seconds = 30;
    silent.strategy.failure.site = crate::rollouts::strategy::SiteFailure::Stop;
    check(
        silent,
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: failed, finished
              database on acme-web: stuck: no word of the install for 60 s since it was ordered; waiting for an operator (retry or roll back)
            step acme-web/database: failed, attempt 1, finished
              stuck: no word of the install for 60 s since it was ordered
            log flotilla stuck: database on acme-web: stuck: no word of the install for 60 s since it was ordered
            log flotilla site_failed: site acme: database on acme-web: stuck: no word of the install for 60 s since it was ordered; stopped for an operator
            log flotilla paused: 1 of 1 sites failed, past the threshold (any failed site); no new site starts. Resume to go on, retry the failed sites, or cancel
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
}
