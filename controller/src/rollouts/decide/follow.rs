//! What became of the installs and restores a rollout ordered.

use chrono::{DateTime, Utc};

use super::{
    ALREADY_INSTALLED, DATABASE_REVIEW, Pass, RECONNECT_GRACE, REVIEW_RECHECK, retry_or_fail,
};
use crate::db::{CommandInstall, RolloutStepRecord};
use crate::rollouts::strategy;
use crate::states::{InstallState, StepState};

impl Pass<'_> {
    /// Reads what became of the installs and restores this rollout ordered.
    pub(super) fn follow_orders(&mut self) {
        for i in 0..self.steps.len() {
            let step = &self.steps[i];
            let rollback = step.state == StepState::RollingBack;
            let command = if rollback {
                &step.rollback_command_id
            } else {
                &step.command_id
            };
            let Some(command) = command.clone() else {
                continue;
            };
            if !(rollback || step.state.is_installing()) {
                continue;
            }
            match self.installs.get(&command).cloned() {
                Some(install) if install.state == InstallState::Running => {
                    self.install_running(i, rollback, &install)
                }
                Some(install) if install.state == InstallState::Succeeded => {
                    install_succeeded(&mut self.steps[i], rollback, &install, self.ctx.now);
                    self.files_back(i);
                }
                Some(install) if rollback => self.restore_failed(i, &install),
                Some(install) => self.install_failed(i, &install),
                None if self.in_flight.contains(&command) => {}
                None => self.no_word(i, rollback),
            }
        }
    }

    fn install_running(&mut self, i: usize, rollback: bool, install: &CommandInstall) {
        let now = self.ctx.now;
        let stuck_after = strategy::seconds(self.strategy.failure.stuck_after_seconds);
        let last = install.last_event_at.unwrap_or(install.started_at);
        let step = &mut self.steps[i];
        if !rollback {
            step.state = StepState::Running;
        }
        step.message = Some(install.phase.clone().unwrap_or_else(|| "installing".into()));
        if now - last > stuck_after {
            let cause = format!(
                "stuck: no progress for {} s (last in phase {})",
                (now - last).num_seconds(),
                install.phase.as_deref().unwrap_or("-")
            );
            self.stuck(i, rollback, cause);
        }
    }

    /// Gives up on an install or restore nobody hears of.
    fn stuck(&mut self, i: usize, rollback: bool, cause: String) {
        let now = self.ctx.now;
        let step = &mut self.steps[i];
        step.state = if rollback {
            StepState::RollbackFailed
        } else {
            StepState::Failed
        };
        step.finished_at = Some(now);
        step.message = Some(cause.clone());
        let detail = format!("{} on {}: {cause}", step.module, step.server_id);
        self.say("stuck", detail);
    }

    fn restore_failed(&mut self, i: usize, install: &CommandInstall) {
        let cause = failure(install);
        let step = &mut self.steps[i];
        // Already at the version it had (the server went back by itself,
        // or its inventory lagged when the restore was ordered): done.
        if install
            .message
            .as_deref()
            .is_some_and(|m| m.contains(ALREADY_INSTALLED))
        {
            step.state = StepState::RolledBack;
            step.finished_at = Some(self.ctx.now);
            step.message = Some(format!(
                "{} was already at {} on {}",
                step.module,
                step.from_version.as_deref().unwrap_or("the version it had"),
                step.server_id
            ));
            self.files_back(i);
            return;
        }
        step.state = StepState::RollbackFailed;
        step.finished_at = Some(self.ctx.now);
        step.message = Some(cause.clone());
        let detail = format!("{} on {}: {cause}", step.module, step.server_id);
        self.say("rollback_failed", detail);
    }

    fn install_failed(&mut self, i: usize, install: &CommandInstall) {
        let now = self.ctx.now;
        let refusal = install.message.as_deref().unwrap_or_default();
        if refusal.contains(DATABASE_REVIEW) {
            if let Some(detail) = wait_for_review(&mut self.steps[i], refusal, now) {
                self.say("database_review", detail);
            }
            return;
        }
        let cause = match &install.rollback_error {
            Some(e) => format!("{}; its own rollback failed too: {e}", failure(install)),
            None => failure(install),
        };
        let may_retry = self.rollout.state.is_live();
        let step = &mut self.steps[i];
        retry_or_fail(step, self.strategy, now, &cause, may_retry, &mut self.log);
        if step.state == StepState::Pending {
            step.command_id = None;
        }
    }

    /// An order accepted, or ordered by a controller that stopped before it
    /// heard back, and never reported. Agents report what they are doing
    /// when they reconnect: once a server has been back for a while since
    /// the order, look at what it has. Without any word for too long, it
    /// is stuck.
    fn no_word(&mut self, i: usize, rollback: bool) {
        let now = self.ctx.now;
        let stuck_after = strategy::seconds(self.strategy.failure.stuck_after_seconds);
        let step = &self.steps[i];
        let ordered = step.ordered_at.or(step.started_at).unwrap_or(now);
        let (server, module) = (step.server_id.clone(), step.module.clone());
        let target = if rollback {
            step.from_version.clone()
        } else {
            Some(step.to_version.clone())
        };
        let reconnected = self.ctx.servers.get(&server).is_some_and(|s| {
            s.online
                && s.connected_at
                    .is_some_and(|c| c > ordered && now - c >= RECONNECT_GRACE)
        });
        if !reconnected {
            if now - ordered > stuck_after {
                let cause = format!(
                    "stuck: no word of the {} for {} s since it was ordered",
                    if rollback { "restore" } else { "install" },
                    (now - ordered).num_seconds()
                );
                self.stuck(i, rollback, cause);
            }
            return;
        }
        let installed = self.installed(&server, &module);
        let step = &mut self.steps[i];
        if installed.is_some() && installed == target {
            step.state = if rollback {
                StepState::RolledBack
            } else {
                StepState::Succeeded
            };
            step.finished_at = Some(now);
            step.message = Some(format!(
                "{module} is at {} on {server}",
                installed.unwrap_or_default()
            ));
            self.files_back(i);
        } else if rollback {
            step.rollback_command_id = None;
            step.message = Some("the restore order was lost; ordering it again".into());
        } else {
            step.state = StepState::Pending;
            step.command_id = None;
            step.message = Some("the order was lost with the connection; ordering it again".into());
        }
    }
}

fn install_succeeded(
    step: &mut RolloutStepRecord,
    rollback: bool,
    install: &CommandInstall,
    now: DateTime<Utc>,
) {
    step.state = if rollback {
        StepState::RolledBack
    } else {
        StepState::Succeeded
    };
    step.finished_at = Some(install.finished_at.unwrap_or(now));
    step.message = Some(format!(
        "{} in {} s, {} ms out of service",
        if rollback { "restored" } else { "installed" },
        install
            .finished_at
            .map_or(0, |f| (f - install.started_at).num_seconds()),
        install.downtime_ms.unwrap_or(0)
    ));
}

/// "failed in phase P: message" of an install that failed.
/// A customized database: nothing runs by itself. The step waits for the
/// guided upgrade and asks again (the agent refuses the order before any
/// install starts while it is customized). The log line, the first time.
pub(super) fn wait_for_review(
    step: &mut RolloutStepRecord,
    refusal: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    let first = step.state != StepState::Review;
    step.state = StepState::Review;
    step.command_id = None;
    step.attempts = (step.attempts - 1).max(0);
    step.next_attempt_at = Some(now + REVIEW_RECHECK);
    step.message = Some(format!("waiting for a database review: {refusal}"));
    first.then(|| {
        format!(
            "{} on {}: the database is customized; waiting for a database review",
            step.module, step.server_id
        )
    })
}

fn failure(install: &CommandInstall) -> String {
    let mut text = format!(
        "failed{}: {}",
        install
            .phase
            .as_deref()
            .map(|p| format!(" in phase {p}"))
            .unwrap_or_default(),
        install.message.as_deref().unwrap_or("no message")
    );
    // The last words of the failing hook, so the log tells the story
    // without opening the install.
    let stderr: Vec<&str> = install
        .hook_output
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if !stderr.is_empty() {
        let last: Vec<String> = stderr[stderr.len().saturating_sub(STDERR_LINES)..]
            .iter()
            .map(|line| shorten(line, 200))
            .collect();
        text.push_str(&format!("; its stderr ended: {}", last.join(" | ")));
    }
    text
}

/// How many of a failing hook's last stderr lines the log repeats.
const STDERR_LINES: usize = 5;

/// `line`, cut to `max` characters with an ellipsis.
fn shorten(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}
