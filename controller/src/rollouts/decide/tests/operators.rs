//! Operators' actions and agents' answers.

use expect_test::expect;
use serde_json::json;

use super::*;

// ---- operators' actions --------------------------------------------------------------------

#[test]
fn pause_resume_and_cancel_are_taken_only_in_the_states_that_allow_them() {
    let running = || acme(json!({}));
    check_act(
        running(),
        Action::Pause,
        expect![[r#"
            rollout: paused, wave 1 open
              reason: paused by carol
            log carol paused: no new site starts; sites under way finish
        "#]],
    );
    check_act(
        running(),
        Action::Resume,
        expect![[r#"
            refused: rollout 7 is running; only a paused rollout can be resumed
        "#]],
    );
    check_act(
        running()
            .rollout(|r| r.state = RolloutState::Paused)
            .site("bravo", 1, SiteState::Failed),
        Action::Resume,
        expect![[r#"
            rollout: running, wave 1 open, 1 failures acknowledged
            log carol resumed: 1 failed sites acknowledged
        "#]],
    );
    check_act(
        running().site("bravo", 2, SiteState::Waiting),
        Action::Cancel,
        expect![[r#"
            rollout: cancelled, wave 1 open
              reason: cancelled by carol
            site bravo: cancelled, finished
              cancelled by carol
            step acme-web/database: cancelled
              cancelled by carol
            step acme-web/ecommerce: cancelled
              cancelled by carol
            log carol cancelled: nothing new starts; running installs finish
        "#]],
    );
    check_act(
        running().rollout(|r| r.state = RolloutState::Succeeded),
        Action::Cancel,
        expect![[r#"
            refused: rollout 7 is succeeded; it cannot be cancelled
        "#]],
    );
}

#[test]
fn retry_starts_failed_sites_again_once_nothing_of_theirs_runs() {
    let failed = || {
        half_updated(json!({}))
            .with_site("acme", |s| {
                s.state = SiteState::Failed;
                s.finished_at = Some(now());
            })
            .rollout(|r| r.state = RolloutState::Paused)
    };
    check_act(
        failed(),
        Action::Retry,
        expect![[r#"
            rollout: running, wave 1 open
            site acme: scheduled
              retried by carol
            step acme-web/ecommerce: pending
              retried by carol
            log carol retried: sites acme
        "#]],
    );
    check_act(
        failed().install("c1", InstallState::Running, Some("POSTINSTALL"), ""),
        Action::Retry,
        expect![[r#"
            refused: ecommerce on acme-web still running; retry once it has ended
        "#]],
    );
    check_act(
        acme(json!({})),
        Action::Retry,
        expect![[r#"
            refused: rollout 7 (running) has no failed site to retry
        "#]],
    );
}

#[test]
fn exclude_leaves_a_servers_steps_not_started_out_and_abandons_an_offline_ones() {
    let ordered = || {
        acme(json!({})).with_step("acme-web/database", |s| {
            s.state = StepState::Running;
            s.command_id = Some("c1".into());
        })
    };
    check_act(
        ordered(),
        Action::Exclude("acme-web".into()),
        expect![[r#"
            step acme-web/ecommerce: excluded
              excluded by carol
            log carol excluded a server: server acme-web: 1 modules left out
        "#]],
    );
    check_act(
        ordered().with_server("acme-web", |s| s.online = false),
        Action::Exclude("acme-web".into()),
        expect![[r#"
            step acme-web/database: excluded
              abandoned by carol while the server was offline
            step acme-web/ecommerce: excluded
              excluded by carol
            log carol excluded a server: server acme-web: 2 modules left out
        "#]],
    );
    check_act(
        ordered(),
        Action::Exclude("bravo-web".into()),
        expect![[r#"
            refused: server bravo-web is not part of rollout 7
        "#]],
    );
}

#[test]
fn an_operator_rolls_back_a_failed_cancelled_or_finished_site_not_a_running_one() {
    check_act(
        half_updated(json!({})).with_site("acme", |s| s.state = SiteState::Failed),
        Action::RollbackSite("acme".into()),
        expect![[r#"
            site acme: rolling_back
              rolled back by carol
            log carol rolled a site back: site acme
        "#]],
    );
    check_act(
        world(json!({}))
            .site("acme", 1, SiteState::Succeeded)
            .rollout(|r| {
                r.state = RolloutState::Succeeded;
                r.finished_at = Some(now());
            }),
        Action::RollbackSite("acme".into()),
        expect![[r#"
            rollout: failed, wave 1 open
              reason: site acme rolled back by carol
            site acme: rolling_back
              rolled back by carol
            log carol rolled a site back: site acme
        "#]],
    );
    check_act(
        acme(json!({})),
        Action::RollbackSite("acme".into()),
        expect![[r#"
            refused: site acme is running; only a failed, cancelled or finished site can be rolled back
        "#]],
    );
}

// ---- agents' answers -----------------------------------------------------------------------

#[test]
fn an_agents_answer_moves_its_step_and_a_stale_one_is_ignored() {
    check_answer(
        ordered_step(StepState::Starting),
        "acme-web/database",
        Ordered::Install,
        Ok("accepted"),
        expect![[r#"
            step acme-web/database: running, attempt 1
              accepted
        "#]],
    );
    check_answer(
        ordered_step(StepState::Starting),
        "acme-web/database",
        Ordered::Install,
        Err(OrderError::NoAnswer("acme-web".into())),
        expect![[r#"
            step acme-web/database: starting, attempt 1
              the agent did not answer the order; waiting for word of the install
        "#]],
    );
    check_answer(
        ordered_step(StepState::Starting),
        "acme-web/database",
        Ordered::Install,
        Err(OrderError::Offline("acme-web".into())),
        expect![[r#"
            step acme-web/database: pending, attempt 1, next at +30s
              attempt 1 failed: server acme-web is not connected; an install can only be ordered from a connected agent; trying again in 30 s
            log flotilla retry: database on acme-web: attempt 1 failed: server acme-web is not connected; an install can only be ordered from a connected agent
        "#]],
    );
    // A customized database is refused before any install starts: the
    // step waits for its review, with no failed install recorded.
    check_answer(
        ordered_step(StepState::Starting),
        "acme-web/database",
        Ordered::Install,
        Err(OrderError::Refused {
            server: "acme-web".into(),
            message: "the database of database is customized (2 differences from the standard 1.0.0: column added)".into(),
        }),
        expect![[r#"
            step acme-web/database: review, next at +10s
              waiting for a database review: the database of database is customized (2 differences from the standard 1.0.0: column added)
            log flotilla database_review: database on acme-web: the database is customized; waiting for a database review
        "#]],
    );
    check_answer(
        ordered_step(StepState::Running),
        "acme-web/database",
        Ordered::Install,
        Ok("accepted"),
        expect![[r#"
            ignored
        "#]],
    );
    let restoring = || {
        ordered_step(StepState::RollingBack).with_step("acme-web/database", |s| {
            s.rollback_command_id = Some("c1".into())
        })
    };
    check_answer(
        restoring(),
        "acme-web/database",
        Ordered::Restore,
        Err(OrderError::Offline("acme-web".into())),
        expect![[r#"
            step acme-web/database: rolling_back, attempt 1, next at +10s
              server acme-web is not connected; an install can only be ordered from a connected agent; the restore is ordered again when it is back
        "#]],
    );
    check_answer(
        restoring(),
        "acme-web/database",
        Ordered::Restore,
        Err(OrderError::Refused {
            server: "acme-web".into(),
            message: "no backup of 1.0.0".into(),
        }),
        expect![[r#"
            step acme-web/database: rollback_failed, attempt 1, finished
              the rollback could not be ordered: server acme-web refused: no backup of 1.0.0
            log flotilla rollback_failed: database on acme-web: server acme-web refused: no backup of 1.0.0
        "#]],
    );
}

#[test]
fn a_notices_outcome_is_kept_on_its_site() {
    let w = world(json!({})).site("acme", 1, SiteState::Scheduled);
    let changes = noticed(&w.rows, "acme", "delivered (200 OK)").unwrap();
    let mut text = String::new();
    render_changes(&mut text, &changes);
    expect![[r#"
        site acme: scheduled
        log flotilla notice: site acme: users' notice delivered (200 OK)
    "#]]
    .assert_eq(&text);
    assert!(noticed(&w.rows, "nowhere", "delivered").is_none());
}

#[test]
fn a_rollout_holds_the_servers_of_its_sites_not_settled() {
    let w = world(json!({}))
        .site("acme", 1, SiteState::Running)
        .site("bravo", 1, SiteState::Succeeded)
        .step("acme", "acme-web/ecommerce", 0, StepState::Running)
        .step("acme", "acme-db/database", 0, StepState::Excluded)
        .step("bravo", "bravo-web/ecommerce", 0, StepState::Succeeded);
    let held: Vec<String> = holds(&w.rows).iter().map(|s| s.to_string()).collect();
    assert_eq!(held, ["acme-web"]);
}
