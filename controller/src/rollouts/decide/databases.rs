//! A site rollback and its databases. The files of a database module go
//! back with the rest of the site; its database, upgraded by the update,
//! does not by itself: restoring the backup taken before the upgrade throws
//! away what the application wrote since. The site waits for an operator
//! to restore the backup or keep the database, having seen what a restore
//! would discard, unless the strategy decided in advance. Every restore is
//! in the rollout log (and, by the engine, the audit trail) with what it
//! discarded.

use chrono::{DateTime, Duration, Utc};

use super::{ENGINE, Job, Pass, command_id};
use crate::db::{RolloutSiteRecord, RolloutStepRecord};
use crate::fleet::{Order, OrderError};
use crate::rollouts::strategy::DatabaseOnRollback;
use crate::states::{SiteState, StepState};

use super::operator::{Answer, Ordered};

/// How long before a database order that could not reach its server is
/// tried again.
const RETRY: Duration = Duration::seconds(10);

/// How often what a restore would discard is read again while the site
/// waits for its decision.
const REPROBE: Duration = Duration::minutes(5);

impl Pass<'_> {
    /// A database module's files are back: its database waits for a
    /// decision (other modules are simply rolled back).
    pub(super) fn files_back(&mut self, i: usize) {
        let step = &self.steps[i];
        if step.state != StepState::RolledBack || !self.is_database(&step.server_id, &step.module) {
            return;
        }
        let step = &mut self.steps[i];
        step.state = StepState::DatabaseDecision;
        step.rollback_command_id = None;
        step.database_decided_by = None;
        step.finished_at = None;
        step.message = Some(format!(
            "files back at {}; its database stays at {} until its backup is restored or it is kept",
            step.from_version
                .as_deref()
                .unwrap_or("the version they had"),
            step.to_version
        ));
    }

    /// Once every file is back: the site's databases as the strategy or
    /// an operator decides, then the site is rolled back.
    pub(super) fn settle_databases(&mut self, i: usize) {
        let site = self.sites[i].site.clone();
        let choice = self.strategy.database;
        for j in self.site_step_indexes(&site).to_vec() {
            if self.steps[j].state != StepState::DatabaseDecision {
                continue;
            }
            // A decision already taken whose outcome is unknown is not
            // taken again by the strategy: an operator looks first.
            let undecided = self.steps[j].database_decided_by.is_none();
            match choice {
                _ if !undecided => {}
                DatabaseOnRollback::Ask => self.probe(j),
                DatabaseOnRollback::Restore => {
                    restore(&mut self.steps[j], ENGINE, "as the rollout's strategy says")
                }
                DatabaseOnRollback::Keep => {
                    let detail = keep(
                        &mut self.steps[j],
                        self.ctx.now,
                        "as the rollout's strategy says",
                    );
                    self.say("database_kept", detail);
                }
            }
        }
        let mut restoring = Vec::new();
        for j in self.site_step_indexes(&site).to_vec() {
            if self.steps[j].state == StepState::RestoringDatabase {
                self.order_database_restore(j);
                let step = &self.steps[j];
                if step.state == StepState::RestoringDatabase {
                    restoring.push(format!("{} on {}", step.module, step.server_id));
                }
            }
        }
        let waiting: Vec<String> = self
            .site_steps(&site)
            .filter(|s| s.state == StepState::DatabaseDecision)
            .map(|s| {
                format!(
                    "{} on {} (at {}, upgraded from {})",
                    s.module,
                    s.server_id,
                    s.to_version,
                    s.from_version.as_deref().unwrap_or("-")
                )
            })
            .collect();
        let record = &mut self.sites[i];
        if !restoring.is_empty() {
            record.state = SiteState::RollingBack;
            set(
                record,
                format!("restoring the database of {}", restoring.join(", ")),
            );
        } else if !waiting.is_empty() {
            let first = record.state != SiteState::DatabaseDecision;
            record.state = SiteState::DatabaseDecision;
            let waiting = waiting.join(", ");
            set(
                record,
                format!(
                    "the files are back; these databases stay at the new version until an operator \
                     restores their backups (what was written since is lost) or keeps them: {waiting}"
                ),
            );
            if first {
                self.say(
                    "database_decision",
                    format!(
                        "site {site}: waiting for an operator to restore or keep these databases: {waiting}"
                    ),
                );
            }
        } else {
            self.rolled_back(i);
        }
    }

    /// Asks the server, once, what a restore would discard: the operator
    /// reads it with the decision, and a database the update did not
    /// upgrade (no backup kept) needs none.
    fn probe(&mut self, j: usize) {
        let step = &self.steps[j];
        // Asked and not answered yet; an order no longer in flight was lost
        // (the controller restarted) and is asked again.
        if step
            .rollback_command_id
            .as_ref()
            .is_some_and(|c| self.in_flight.contains(c))
            || step.next_attempt_at.is_some_and(|t| t > self.ctx.now)
            || !self.online(&step.server_id)
        {
            return;
        }
        let Some(version) = step.from_version.clone() else {
            return;
        };
        self.order(j, "discard", Order::DatabaseDiscard { version });
    }

    /// Orders the restore an operator or the strategy decided, once the
    /// server is there; a restore whose answer was lost (the controller
    /// restarted) is not ordered again blindly.
    fn order_database_restore(&mut self, j: usize) {
        let now = self.ctx.now;
        let step = &self.steps[j];
        if let Some(command) = &step.rollback_command_id {
            if !self.in_flight.contains(command) {
                let step = &mut self.steps[j];
                step.state = StepState::DatabaseDecision;
                step.message = Some(
                    "the controller restarted while its database was being restored: whether the restore \
                     happened is unknown. Read the module's database history on its server, then decide again"
                        .into(),
                );
                let detail = format!(
                    "{} on {}: the answer to the database restore was lost",
                    step.module, step.server_id
                );
                self.say("database_restore_unknown", detail);
            }
            return;
        }
        if step.next_attempt_at.is_some_and(|t| t > now) {
            return;
        }
        if !self.online(&step.server_id) {
            self.steps[j].message =
                Some("waiting for the server to reconnect to restore its database".into());
            return;
        }
        let (Some(version), by) = (
            step.from_version.clone(),
            step.database_decided_by
                .clone()
                .unwrap_or_else(|| ENGINE.to_owned()),
        ) else {
            return;
        };
        self.order(
            j,
            "database-restore",
            Order::DatabaseRestore { version, by },
        );
    }

    fn order(&mut self, j: usize, what: &str, order: Order) {
        let now = self.ctx.now;
        let step = &mut self.steps[j];
        let id = command_id(
            &step.server_id,
            &format!("{}-{what}", step.module),
            now,
            step.attempts,
        );
        step.rollback_command_id = Some(id.clone());
        step.ordered_at = Some(now);
        step.next_attempt_at = None;
        self.jobs.push(Job {
            server: step.server_id.clone(),
            module: step.module.clone(),
            command_id: id,
            order,
        });
    }
}

fn set(record: &mut RolloutSiteRecord, message: String) {
    if record.message.as_deref() != Some(&message) {
        record.message = Some(message);
    }
}

/// The step's database is to be restored, as `by` decided.
fn restore(step: &mut RolloutStepRecord, by: &str, why: &str) {
    step.state = StepState::RestoringDatabase;
    step.database_decided_by = Some(by.to_owned());
    step.rollback_command_id = None;
    step.next_attempt_at = None;
    step.message = Some(format!("restoring its database, {why}"));
}

/// The step's database stays at the new version; the log line's detail.
fn keep(step: &mut RolloutStepRecord, now: DateTime<Utc>, why: &str) -> String {
    step.state = StepState::RolledBack;
    step.finished_at = Some(now);
    step.message = Some(format!(
        "files back at {}; its database kept at {}, {why}",
        step.from_version
            .as_deref()
            .unwrap_or("the version they had"),
        step.to_version
    ));
    format!(
        "{} on {}: its database stays at {}, {why}",
        step.module, step.server_id, step.to_version
    )
}

/// An operator's decision on a site waiting for one: every database of
/// the site waiting is restored, or kept. The log line's detail.
pub(super) fn decide(
    now: DateTime<Utc>,
    sites: &mut [RolloutSiteRecord],
    steps: &mut [RolloutStepRecord],
    site: &str,
    restore_them: bool,
    actor: &str,
) -> Result<String, String> {
    let Some(record) = sites.iter_mut().find(|s| s.site == site) else {
        return Err(format!("site {site} is not part of this rollout"));
    };
    if record.state != SiteState::DatabaseDecision {
        return Err(format!(
            "site {site} is {}; only a site waiting for a database decision can restore or keep its databases",
            record.state
        ));
    }
    let why = format!("as {actor} decided");
    let mut decided = Vec::new();
    for step in steps
        .iter_mut()
        .filter(|s| s.site == site && s.state == StepState::DatabaseDecision)
    {
        if restore_them {
            // What it discards is logged when the server has done it.
            restore(step, actor, &why);
            decided.push(format!(
                "{} on {}: restoring the backup taken when it was upgraded from {}",
                step.module,
                step.server_id,
                step.from_version.as_deref().unwrap_or("-")
            ));
        } else {
            decided.push(keep(step, now, &why));
        }
    }
    record.state = SiteState::RollingBack;
    record.message = Some(format!(
        "{} its databases, {why}",
        if restore_them { "restoring" } else { "keeping" }
    ));
    Ok(format!("site {site}: {}", decided.join("; ")))
}

/// A server's answer to a database order of a site rollback: the step's
/// changes, with the log lines; `None` when the step no longer waits for it.
pub(super) fn answered(
    step: &mut RolloutStepRecord,
    now: DateTime<Utc>,
    answer: &Answer,
    log: &mut Vec<(String, String, String)>,
) -> Option<()> {
    let expected = match answer.kind {
        Ordered::DatabaseDiscard => StepState::DatabaseDecision,
        _ => StepState::RestoringDatabase,
    };
    if step.state != expected
        || step.rollback_command_id.as_deref() != Some(answer.command_id.as_str())
    {
        return None;
    }
    let at = format!("{} on {}", step.module, step.server_id);
    let from = step.from_version.clone().unwrap_or_default();
    let to = step.to_version.clone();
    let mut say = |action: &str, detail: String| {
        log.push((ENGINE.into(), action.into(), format!("{at}: {detail}")))
    };
    match (answer.kind, &answer.result) {
        // Not done: asked again when the server is there.
        (Ordered::DatabaseDiscard, Err(OrderError::Offline(_) | OrderError::NoAnswer(_)))
        | (_, Err(OrderError::Offline(_))) => {
            step.rollback_command_id = None;
            step.next_attempt_at = Some(now + RETRY);
        }
        (Ordered::DatabaseDiscard, Ok(discard)) => {
            step.message = Some(format!(
                "files back at {from}; its database stays at {to}. A restore of its backup would discard {discard}"
            ));
            // Read again from time to time: the writes go on.
            step.rollback_command_id = None;
            step.next_attempt_at = Some(now + REPROBE);
        }
        (Ordered::DatabaseDiscard, Err(OrderError::NotFound { message, .. })) => {
            step.state = StepState::RolledBack;
            step.finished_at = Some(now);
            step.message = Some(format!(
                "files back at {from}; nothing to decide for its database: {message}"
            ));
        }
        (Ordered::DatabaseDiscard, Err(e)) => {
            step.message = Some(format!(
                "files back at {from}; its database stays at {to}. What a restore would discard is unknown: {e}"
            ));
            step.rollback_command_id = None;
            step.next_attempt_at = Some(now + RETRY);
        }
        (_, Ok(discarded)) => {
            step.state = StepState::RolledBack;
            step.finished_at = Some(now);
            step.message = Some(format!(
                "files back at {from}; its database restored from the backup taken before the upgrade, discarding {discarded}"
            ));
            say(
                "database_restored",
                format!("restored to {from}; discarded {discarded}"),
            );
        }
        (_, Err(OrderError::NotFound { message, .. })) => {
            step.state = StepState::RolledBack;
            step.finished_at = Some(now);
            step.message = Some(format!(
                "files back at {from}; its database was not restored: {message}"
            ));
            say("database_not_restored", message.clone());
        }
        // A restore the agent did not answer in time may still run: not
        // ordered again blindly.
        (_, Err(e @ OrderError::NoAnswer(_))) => {
            step.state = StepState::DatabaseDecision;
            step.message = Some(format!(
                "{e}: whether its database was restored is unknown. Read the module's database history on its server, then decide again"
            ));
            say("database_restore_unknown", e.to_string());
        }
        (_, Err(e)) => {
            step.state = StepState::RollbackFailed;
            step.finished_at = Some(now);
            step.message = Some(format!("its database could not be restored: {e}"));
            say("database_restore_failed", e.to_string());
        }
    }
    Some(())
}
