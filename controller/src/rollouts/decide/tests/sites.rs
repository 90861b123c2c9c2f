//! Waves, the rollout's end, windows, notices, failure and rollback.

use chrono::Duration;
use expect_test::expect;
use serde_json::json;

use super::*;

// ---- waves and the rollout ---------------------------------------------------------

#[test]
fn the_open_waves_sites_start_and_order_their_first_layer_the_next_wave_waits() {
    check(
        world(json!({}))
            .site("acme", 1, SiteState::Waiting)
            .site("bravo", 2, SiteState::Waiting)
            .step("acme", "acme-web/database", 0, StepState::Pending)
            .step("acme", "acme-web/ecommerce", 1, StepState::Pending)
            .step("bravo", "bravo-web/ecommerce", 0, StepState::Pending)
            .server(
                "acme-web",
                true,
                &[
                    ("database", "1.0.0", Some("2.0.0")),
                    ("ecommerce", "1.0.0", Some("2.0.0")),
                ],
            )
            .server("bravo-web", true, &[("ecommerce", "1.0.0", Some("2.0.0"))])
            .preflight_ok(),
        expect![[r#"
            site acme: running, planned +0s to +600s
            step acme-web/database: starting, attempt 1
              ordered (attempt 1)
            step acme-web/ecommerce: pending
              waits for database
            log flotilla preflight: site acme: 1 server(s) ready
            log flotilla site_started: site acme: wave 1
            order install database 2.0.0 on acme-web
        "#]],
    );
}

#[test]
fn a_settled_wave_opens_the_next_at_once_after_a_pause_or_at_a_manual_gate() {
    let settled = |strategy| {
        world(strategy)
            .site("acme", 1, SiteState::Succeeded)
            .site("bravo", 2, SiteState::Waiting)
            .step("acme", "acme-web/ecommerce", 0, StepState::Succeeded)
            .step("bravo", "bravo-web/ecommerce", 0, StepState::Pending)
            .server("bravo-web", true, &[("ecommerce", "1.0.0", Some("2.0.0"))])
            .preflight_ok()
    };
    check(
        settled(json!({})),
        expect![[r#"
            rollout: running, wave 2 open
            site bravo: running, planned +0s to +300s
            step bravo-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            log flotilla wave: wave 2 starts
            log flotilla preflight: site bravo: 1 server(s) ready
            log flotilla site_started: site bravo: wave 2
            order install ecommerce 2.0.0 on bravo-web
        "#]],
    );
    check(
        settled(json!({"waves": {"pause_seconds": 600}})),
        expect![[r#"
            rollout: running, wave 1 open, next wave at +600s
              reason: wave 2 starts in 600 s
        "#]],
    );
    check(
        settled(json!({"waves": {"pause_seconds": 600}}))
            .rollout(|r| r.wave_ready_at = Some(now() - Duration::seconds(1))),
        expect![[r#"
            rollout: running, wave 2 open
            site bravo: running, planned +0s to +300s
            step bravo-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            log flotilla wave: wave 2 starts
            log flotilla preflight: site bravo: 1 server(s) ready
            log flotilla site_started: site bravo: wave 2
            order install ecommerce 2.0.0 on bravo-web
        "#]],
    );
    check(
        settled(json!({"waves": {"gate": "manual"}})),
        expect![[r#"
            rollout: paused, wave 2 open
              reason: wave 2 is ready; resume to start it
            log flotilla gate: wave 2 is ready; resume to start it
        "#]],
    );
    // Paused at the gate, nothing starts; resumed, it does.
    check(
        settled(json!({"waves": {"gate": "manual"}})).rollout(|r| {
            r.state = RolloutState::Paused;
            r.opened_wave = 2;
        }),
        expect![[r#"
            nothing
        "#]],
    );
}

#[test]
fn too_many_failed_sites_pause_the_rollout_beyond_those_acknowledged() {
    let failed = |strategy| {
        world(strategy)
            .site("acme", 1, SiteState::Failed)
            .site("bravo", 1, SiteState::Running)
            .site("charlie", 2, SiteState::Waiting)
            .step("acme", "acme-web/ecommerce", 0, StepState::Failed)
            .step("bravo", "bravo-web/ecommerce", 0, StepState::Running)
            .step("charlie", "charlie-web/ecommerce", 0, StepState::Pending)
            .with_step("bravo-web/ecommerce", |s| s.command_id = Some("c2".into()))
            .install("c2", InstallState::Running, Some("UPDATE"), "")
            .server(
                "charlie-web",
                true,
                &[("ecommerce", "1.0.0", Some("2.0.0"))],
            )
    };
    check(
        failed(json!({})),
        expect![[r#"
            rollout: paused, wave 1 open
              reason: 1 of 3 sites failed, past the threshold (any failed site); no new site starts. Resume to go on, retry the failed sites, or cancel
            step bravo-web/ecommerce: running
              UPDATE
            log flotilla paused: 1 of 3 sites failed, past the threshold (any failed site); no new site starts. Resume to go on, retry the failed sites, or cancel
        "#]],
    );
    check(
        failed(json!({"failure": {"max_failed_sites": 1}})),
        expect![[r#"
            step bravo-web/ecommerce: running
              UPDATE
        "#]],
    );
    check(
        failed(json!({})).rollout(|r| r.acknowledged_failures = 1),
        expect![[r#"
            step bravo-web/ecommerce: running
              UPDATE
        "#]],
    );
}

#[test]
fn a_rollout_ends_succeeded_failed_or_cancelled_once_nothing_runs() {
    check(
        world(json!({})).site("acme", 1, SiteState::Succeeded).site(
            "bravo",
            1,
            SiteState::Succeeded,
        ),
        expect![[r#"
            rollout: succeeded, wave 1 open, finished
            log flotilla succeeded: 2 sites updated
        "#]],
    );
    check(
        world(json!({}))
            .site("acme", 1, SiteState::Succeeded)
            .site("bravo", 1, SiteState::RolledBack)
            .rollout(|r| r.state = RolloutState::Paused),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 2 sites did not update
            log flotilla failed: 1 of 2 sites did not update
        "#]],
    );
    // Not while a later wave has not run.
    check(
        world(json!({}))
            .site("acme", 1, SiteState::Succeeded)
            .site("bravo", 2, SiteState::Cancelled)
            .rollout(|r| r.state = RolloutState::Paused),
        expect![[r#"
            nothing
        "#]],
    );
    check(
        world(json!({}))
            .site("acme", 1, SiteState::Cancelled)
            .rollout(|r| r.state = RolloutState::Cancelled),
        expect![[r#"
            rollout: cancelled, wave 1 open, finished
            log flotilla finished: cancelled; the last running installs and restores ended
        "#]],
    );
}

#[test]
fn a_cancelled_rollout_cancels_the_sites_not_started_and_ends_the_running_ones_when_idle() {
    check(
        world(json!({}))
            .rollout(|r| r.state = RolloutState::Cancelled)
            .site("acme", 1, SiteState::Running)
            .site("bravo", 1, SiteState::Scheduled)
            .site("charlie", 2, SiteState::Waiting)
            .step("acme", "acme-web/database", 0, StepState::Succeeded)
            .step("acme", "acme-web/ecommerce", 1, StepState::Cancelled),
        expect![[r#"
            rollout: cancelled, wave 1 open, finished
            site acme: cancelled, finished
              cancelled with 1 of 2 modules updated
            site bravo: cancelled, finished
            site charlie: cancelled, finished
            log flotilla finished: cancelled; the last running installs and restores ended
        "#]],
    );
}

// ---- sites: windows and notices -------------------------------------------------------

#[test]
fn a_site_waits_for_its_window_or_says_none_is_long_enough() {
    let scheduled = || {
        world(json!({})).site("acme", 1, SiteState::Scheduled).step(
            "acme",
            "acme-web/ecommerce",
            0,
            StepState::Pending,
        )
    };
    check(
        scheduled().windows("acme", json!([{"start": "22:00", "end": "02:00"}])),
        expect![[r#"
            site acme: scheduled, planned +43200s to +43500s
              waiting for the maintenance window opening at Tue 2026-12-01 22:00:00 UTC (needs about 300 s)
        "#]],
    );
    check(
        scheduled().windows("acme", json!([{"start": "22:00", "end": "22:01"}])),
        expect![[r#"
            site acme: scheduled
              no maintenance window in the next eight days is long enough for its estimated 300 s
        "#]],
    );
    // A site whose servers are all at the release's versions is done.
    check(
        world(json!({})).site("acme", 1, SiteState::Scheduled).step(
            "acme",
            "acme-web/ecommerce",
            0,
            StepState::Skipped,
        ),
        expect![[r#"
            rollout: succeeded, wave 1 open, finished
            site acme: succeeded, finished
              nothing to install: every server is at the release's versions
            log flotilla site_succeeded: site acme: nothing to install
            log flotilla succeeded: 1 sites updated
        "#]],
    );
}

#[test]
fn users_are_warned_ahead_of_the_start_then_the_site_starts_at_the_planned_time() {
    let noticed = || {
        world(json!({"notice": {"webhook_url": "https://hooks.example/acme", "lead_seconds": 900}}))
            .site("acme", 1, SiteState::Scheduled)
            .step("acme", "acme-web/ecommerce", 0, StepState::Pending)
            .server("acme-web", true, &[("ecommerce", "1.0.0", Some("2.0.0"))])
    };
    check(
        noticed(),
        expect![[r#"
            site acme: scheduled, planned +900s to +1200s, users warned
              users warned; starts at Tue 2026-12-01 10:15:00 UTC
            log flotilla notice: site acme: users warned of the maintenance from Tue 2026-12-01 10:15:00 UTC to Tue 2026-12-01 10:20:00 UTC
            notice acme to https://hooks.example/acme
        "#]],
    );
    // A window opening later: the warning waits until the lead before it.
    check(
        noticed().windows("acme", json!([{"start": "22:00", "end": "02:00"}])),
        expect![[r#"
            site acme: scheduled, planned +43200s to +43500s
              users will be warned at Tue 2026-12-01 21:45:00 UTC; starts at Tue 2026-12-01 22:00:00 UTC
        "#]],
    );
    // Warned: nothing until the planned start, then it starts.
    let warned = |start: i64| {
        noticed().with_site("acme", |s| {
            s.notice_sent_at = Some(now() - Duration::seconds(900));
            s.planned_start = Some(now() + Duration::seconds(start));
            s.planned_end = Some(now() + Duration::seconds(start + 300));
        })
    };
    check(
        warned(60),
        expect![[r#"
            nothing
        "#]],
    );
    check(
        warned(0).preflight_ok(),
        expect![[r#"
            site acme: running, planned +0s to +300s, users warned
            step acme-web/ecommerce: starting, attempt 1
              ordered (attempt 1)
            log flotilla preflight: site acme: 1 server(s) ready
            log flotilla site_started: site acme: wave 1
            order install ecommerce 2.0.0 on acme-web
        "#]],
    );
}

// ---- sites: failure and rollback ---------------------------------------------------------

#[test]
fn a_failed_site_stops_for_an_operator_or_rolls_back_the_last_layer_first() {
    check(
        half_updated(json!({"failure": {"site": "stop", "max_failed_sites": 1}})),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: failed, finished
              ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; waiting for an operator (retry or roll back)
            log flotilla site_failed: site acme: ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; stopped for an operator
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
    check(
        half_updated(json!({"failure": {"max_failed_sites": 1}})),
        expect![[r#"
            site acme: rolling_back
              ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; rolling the site back
            step acme-web/database: rolling_back, attempt 1
              restoring 1.0.0
            log flotilla site_failed: site acme: ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; rolling every server back
            order restore database 1.0.0 on acme-web
        "#]],
    );
    // The failed module's new version still in the inventory (reported
    // mid-install), though the agent put the old one back: only the
    // database is restored.
    let mut lagging = half_updated(json!({"failure": {"max_failed_sites": 1}}))
        .with_server("acme-web", |s| {
            s.modules[1].installed_version = Some("2.0.0".into())
        });
    lagging.installs[0].rolled_back = true;
    check(
        lagging,
        expect![[r#"
            site acme: rolling_back
              ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; rolling the site back
            step acme-web/database: rolling_back, attempt 1
              restoring 1.0.0
            log flotilla site_failed: site acme: ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; rolling every server back
            order restore database 1.0.0 on acme-web
        "#]],
    );
    // Still running elsewhere on the site: the failure waits for it.
    check(
        half_updated(json!({}))
            .step("acme", "acme-app/integration", 0, StepState::Running)
            .with_step("acme-app/integration", |s| s.command_id = Some("c9".into()))
            .install("c9", InstallState::Running, Some("UPDATE"), ""),
        expect![[r#"
            site acme: running
              ecommerce on acme-web: failed in phase POSTINSTALL: exit code 1; waiting for the running installs to end before rolling back
            step acme-app/integration: running
              UPDATE
        "#]],
    );
}

#[test]
fn a_site_is_rolled_back_when_its_restores_succeed_and_needs_an_operator_when_one_fails() {
    check(
        rolling_back()
            .install("r1", InstallState::Succeeded, None, "")
            .with_server("acme-web", |s| {
                s.modules[0].installed_version = Some("1.0.0".into())
            }),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1
              files back at 1.0.0; its database stays at 2.0.0 until its backup is restored or it is kept
            log flotilla database_decision: site acme: waiting for an operator to restore or keep these databases: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            order database discard database 1.0.0 on acme-web
        "#]],
    );
    check(
        rolling_back().install("r1", InstallState::Failed, Some("UPDATE"), "file locked"),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rollback_failed, finished
              the rollback failed: database on acme-web: failed in phase UPDATE: file locked; an operator is needed
            step acme-web/database: rollback_failed, attempt 1, finished
              failed in phase UPDATE: file locked
            log flotilla rollback_failed: database on acme-web: failed in phase UPDATE: file locked
            log flotilla site_rollback_failed: site acme: database on acme-web: failed in phase UPDATE: file locked
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
    // Already back at the version it had: restored, nothing to do.
    check(
        rolling_back().install(
            "r1",
            InstallState::Failed,
            None,
            "database 1.0.0 is already installed",
        ),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1
              files back at 1.0.0; its database stays at 2.0.0 until its backup is restored or it is kept
            log flotilla database_decision: site acme: waiting for an operator to restore or keep these databases: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            order database discard database 1.0.0 on acme-web
        "#]],
    );
    // Offline: the restore waits for the server.
    check(
        rolling_back()
            .with_step("acme-web/database", |s| s.rollback_command_id = None)
            .with_server("acme-web", |s| s.online = false),
        expect![[r#"
            step acme-web/database: rolling_back, attempt 1
              waiting for the server to reconnect to roll back
        "#]],
    );
}

#[test]
fn a_site_whose_last_step_succeeds_succeeds() {
    check(
        ordered_step(StepState::Running)
            .with_step("acme-web/ecommerce", |s| s.state = StepState::Succeeded)
            .install("c1", InstallState::Succeeded, None, ""),
        expect![[r#"
            rollout: succeeded, wave 1 open, finished
            site acme: succeeded, finished
            step acme-web/database: succeeded, attempt 1, finished
              installed in 55 s, 120 ms out of service
            log flotilla site_succeeded: site acme
            log flotilla succeeded: 1 sites updated
        "#]],
    );
}

#[test]
fn restores_stop_above_a_failed_one_and_need_the_version_they_had() {
    // Two layers: the top one's restore failed, the one below stays.
    check(
        rolling_back()
            .with_step("acme-web/ecommerce", |s| {
                s.state = StepState::RollbackFailed;
                s.message = Some("failed in phase UPDATE: file locked".into());
            })
            .with_step("acme-web/database", |s| s.rollback_command_id = None),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rollback_failed, finished
              the rollback failed: ecommerce on acme-web: failed in phase UPDATE: file locked; an operator is needed
            step acme-web/database: succeeded, attempt 1
              not rolled back: a restore above it in the order failed
            log flotilla site_rollback_failed: site acme: ecommerce on acme-web: failed in phase UPDATE: file locked
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
    check(
        rolling_back().with_step("acme-web/database", |s| {
            s.rollback_command_id = None;
            s.from_version = None;
        }),
        expect![[r#"
            step acme-web/database: rollback_failed, attempt 1
              the version it had is unknown; restore it by hand
        "#]],
    );
    // A restore order lost with the connection is ordered again.
    check(
        rolling_back().with_server("acme-web", |s| {
            s.connected_at = Some(now() - Duration::seconds(10));
        }),
        expect![[r#"
            step acme-web/database: rolling_back, attempt 1
              restoring 1.0.0
            order restore database 1.0.0 on acme-web
        "#]],
    );
}
