//! A site rollback and its databases: the files go back, an upgraded
//! database waits for a decision (an operator's, or the strategy's), and
//! every restore is logged with what it discarded.

use expect_test::expect;
use serde_json::json;

use super::*;

/// Acme rolled back: its files are back, its database module's database
/// waits for a decision.
fn deciding(mut strategy: serde_json::Value) -> World {
    // One failed site is within the threshold: the rollout goes on.
    strategy["failure"] = json!({"max_failed_sites": 1});
    half_updated(strategy)
        .with_site("acme", |s| s.state = SiteState::DatabaseDecision)
        .with_step("acme-web/database", |s| {
            s.state = StepState::DatabaseDecision;
            s.rollback_command_id = Some("c1".into());
        })
        .with_step("acme-web/ecommerce", |s| s.state = StepState::RolledBack)
        .with_server("acme-web", |s| {
            s.modules[0].installed_version = Some("1.0.0".into())
        })
}

const DISCARDED: &str = "rows written since 2026-12-01 09:00:00 UTC: public.orders 12 inserted, 3 updated, 0 deleted; backup database_1.0.0.dump";

#[test]
fn a_database_the_rollback_left_upgraded_waits_for_an_operator_who_reads_what_a_restore_discards() {
    // The server says what a restore would discard.
    check_answer(
        deciding(json!({})),
        "acme-web/database",
        Ordered::DatabaseDiscard,
        Ok(DISCARDED),
        expect![[r#"
            step acme-web/database: database_decision, attempt 1, next at +300s
              files back at 1.0.0; its database stays at 2.0.0. A restore of its backup would discard rows written since 2026-12-01 09:00:00 UTC: public.orders 12 inserted, 3 updated, 0 deleted; backup database_1.0.0.dump
        "#]],
    );
    // No backup kept: the update did not upgrade it; nothing to decide.
    check_answer(
        deciding(json!({})),
        "acme-web/database",
        Ordered::DatabaseDiscard,
        Err(OrderError::NotFound {
            server: "acme-web".into(),
            message: "no database backup of database 1.0.0 is kept".into(),
        }),
        expect![[r#"
            step acme-web/database: rolled_back, attempt 1, finished
              files back at 1.0.0; nothing to decide for its database: no database backup of database 1.0.0 is kept
        "#]],
    );
    // The server is away: asked again later.
    check_answer(
        deciding(json!({})),
        "acme-web/database",
        Ordered::DatabaseDiscard,
        Err(OrderError::Offline("acme-web".into())),
        expect![[r#"
            step acme-web/database: database_decision, attempt 1, next at +10s
        "#]],
    );
    // Waiting, nothing more happens until an operator decides.
    let mut asked = deciding(json!({}));
    asked.in_flight.insert("c1".into());
    check(
        asked,
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
        "#]],
    );
    // A question lost with a controller restart is asked again.
    check(
        deciding(json!({})),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1
            order database discard database 1.0.0 on acme-web
        "#]],
    );
}

#[test]
fn an_operator_restores_the_databases_or_keeps_them_and_the_site_is_rolled_back() {
    check_act(
        deciding(json!({})),
        Action::Database {
            site: "acme".into(),
            restore: true,
        },
        expect![[r#"
            site acme: rolling_back
              restoring its databases, as carol decided
            step acme-web/database: restoring_database, attempt 1, database decided by carol
              restoring its database, as carol decided
            log carol database_restore: site acme: database on acme-web: restoring the backup taken when it was upgraded from 1.0.0
        "#]],
    );
    // The next pass orders the restore, in the decider's name.
    check(
        deciding(json!({}))
            .with_site("acme", |s| s.state = SiteState::RollingBack)
            .with_step("acme-web/database", |s| {
                s.state = StepState::RestoringDatabase;
                s.rollback_command_id = None;
                s.database_decided_by = Some("carol".into());
            }),
        expect![[r#"
            site acme: rolling_back
              restoring the database of database on acme-web
            step acme-web/database: restoring_database, attempt 1, database decided by carol
            order database restore database 1.0.0 on acme-web by carol
        "#]],
    );
    check_act(
        deciding(json!({})),
        Action::Database {
            site: "acme".into(),
            restore: false,
        },
        expect![[r#"
            site acme: rolling_back
              keeping its databases, as carol decided
            step acme-web/database: rolled_back, attempt 1, finished
              files back at 1.0.0; its database kept at 2.0.0, as carol decided
            log carol database_kept: site acme: database on acme-web: its database stays at 2.0.0, as carol decided
        "#]],
    );
    // Kept: the site is rolled back at the next pass.
    check(
        deciding(json!({}))
            .with_site("acme", |s| s.state = SiteState::RollingBack)
            .with_step("acme-web/database", |s| s.state = StepState::RolledBack),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rolled_back, finished
              every server is back at the versions it had
            log flotilla site_rolled_back: site acme
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
    // Only a site waiting for the decision takes one.
    check_act(
        half_updated(json!({})).with_site("acme", |s| s.state = SiteState::Failed),
        Action::Database {
            site: "acme".into(),
            restore: true,
        },
        expect![[r#"
            refused: site acme is failed; only a site waiting for a database decision can restore or keep its databases
        "#]],
    );
}

#[test]
fn a_restore_is_logged_with_what_it_discarded_or_why_it_did_not_happen() {
    let restoring = || {
        deciding(json!({}))
            .with_site("acme", |s| s.state = SiteState::RollingBack)
            .with_step("acme-web/database", |s| {
                s.state = StepState::RestoringDatabase;
                s.database_decided_by = Some("carol".into());
            })
    };
    check_answer(
        restoring(),
        "acme-web/database",
        Ordered::DatabaseRestore,
        Ok(DISCARDED),
        expect![[r#"
            step acme-web/database: rolled_back, attempt 1, finished, database decided by carol
              files back at 1.0.0; its database restored from the backup taken before the upgrade, discarding rows written since 2026-12-01 09:00:00 UTC: public.orders 12 inserted, 3 updated, 0 deleted; backup database_1.0.0.dump
            log flotilla database_restored: database on acme-web: restored to 1.0.0; discarded rows written since 2026-12-01 09:00:00 UTC: public.orders 12 inserted, 3 updated, 0 deleted; backup database_1.0.0.dump
        "#]],
    );
    check_answer(
        restoring(),
        "acme-web/database",
        Ordered::DatabaseRestore,
        Err(OrderError::Refused {
            server: "acme-web".into(),
            message: "pg_restore: connection refused".into(),
        }),
        expect![[r#"
            step acme-web/database: rollback_failed, attempt 1, finished, database decided by carol
              its database could not be restored: server acme-web refused: pg_restore: connection refused
            log flotilla database_restore_failed: database on acme-web: server acme-web refused: pg_restore: connection refused
        "#]],
    );
    // No answer in time: it may have happened; never ordered twice blindly.
    check_answer(
        restoring(),
        "acme-web/database",
        Ordered::DatabaseRestore,
        Err(OrderError::NoAnswer("acme-web".into())),
        expect![[r#"
            step acme-web/database: database_decision, attempt 1, database decided by carol
              server acme-web did not answer in time: whether its database was restored is unknown. Read the module's database history on its server, then decide again
            log flotilla database_restore_unknown: database on acme-web: server acme-web did not answer in time
        "#]],
    );
    // The controller restarted with the restore ordered and no answer:
    // an operator looks, even where the strategy said to restore.
    check(
        restoring(),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1, database decided by carol
              the controller restarted while its database was being restored: whether the restore happened is unknown. Read the module's database history on its server, then decide again
            log flotilla database_restore_unknown: database on acme-web: the answer to the database restore was lost
            log flotilla database_decision: site acme: waiting for an operator to restore or keep these databases: database on acme-web (at 2.0.0, upgraded from 1.0.0)
        "#]],
    );
    check(
        restoring()
            .with_strategy(json!({"database": "restore", "failure": {"max_failed_sites": 1}})),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1, database decided by carol
              the controller restarted while its database was being restored: whether the restore happened is unknown. Read the module's database history on its server, then decide again
            log flotilla database_restore_unknown: database on acme-web: the answer to the database restore was lost
            log flotilla database_decision: site acme: waiting for an operator to restore or keep these databases: database on acme-web (at 2.0.0, upgraded from 1.0.0)
        "#]],
    );
}

#[test]
fn a_strategy_may_decide_in_advance_to_restore_or_keep() {
    let files_back = |strategy| {
        deciding(strategy)
            .with_site("acme", |s| s.state = SiteState::RollingBack)
            .with_step("acme-web/database", |s| s.rollback_command_id = None)
    };
    check(
        files_back(json!({"database": "restore"})),
        expect![[r#"
            site acme: rolling_back
              restoring the database of database on acme-web
            step acme-web/database: restoring_database, attempt 1, database decided by flotilla
              restoring its database, as the rollout's strategy says
            order database restore database 1.0.0 on acme-web by flotilla
        "#]],
    );
    check(
        files_back(json!({"database": "keep"})),
        expect![[r#"
            rollout: failed, wave 1 open, finished
              reason: 1 of 1 sites did not update
            site acme: rolled_back, finished
              every server is back at the versions it had
            step acme-web/database: rolled_back, attempt 1, finished
              files back at 1.0.0; its database kept at 2.0.0, as the rollout's strategy says
            log flotilla database_kept: database on acme-web: its database stays at 2.0.0, as the rollout's strategy says
            log flotilla site_rolled_back: site acme
            log flotilla failed: 1 of 1 sites did not update
        "#]],
    );
    // By default an operator decides, having read what a restore discards.
    check(
        files_back(json!({})),
        expect![[r#"
            site acme: database_decision
              the files are back; these databases stay at the new version until an operator restores their backups (what was written since is lost) or keeps them: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            step acme-web/database: database_decision, attempt 1
            log flotilla database_decision: site acme: waiting for an operator to restore or keep these databases: database on acme-web (at 2.0.0, upgraded from 1.0.0)
            order database discard database 1.0.0 on acme-web
        "#]],
    );
}

#[test]
fn an_offline_server_excluded_while_its_database_waits_for_a_restore_releases_the_site() {
    let waiting = || {
        deciding(json!({}))
            .with_site("acme", |s| s.state = SiteState::RollingBack)
            .with_step("acme-web/database", |s| {
                s.state = StepState::RestoringDatabase;
                s.rollback_command_id = None;
                s.database_decided_by = Some("carol".into());
            })
            .with_server("acme-web", |s| s.online = false)
    };
    check(
        waiting(),
        expect![[r#"
            site acme: rolling_back
              restoring the database of database on acme-web
            step acme-web/database: restoring_database, attempt 1, database decided by carol
              waiting for the server to reconnect to restore its database
        "#]],
    );
    check_act(
        waiting(),
        Action::Exclude("acme-web".into()),
        expect![[r#"
            step acme-web/database: excluded, attempt 1, database decided by carol
              abandoned by carol while the server was offline
            log carol excluded a server: server acme-web: 1 modules left out
        "#]],
    );
}

#[test]
fn a_retried_site_forgets_who_decided_for_its_database() {
    check_act(
        deciding(json!({}))
            .with_site("acme", |s| s.state = SiteState::RolledBack)
            .with_step("acme-web/database", |s| {
                s.state = StepState::RolledBack;
                s.database_decided_by = Some("carol".into());
            }),
        Action::Retry,
        expect![[r#"
            site acme: scheduled
              retried by carol
            step acme-web/database: pending
              retried by carol
            step acme-web/ecommerce: pending
              retried by carol
            log carol retried: sites acme
        "#]],
    );
}
