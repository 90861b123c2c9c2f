//! A site's steps: installs ordered in dependency order, one per server at
//! a time, and restores, the last layer first.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::Version;

use super::{Job, Pass, command_id, retry_or_fail};
use crate::fleet::Order;
use crate::states::{InstallState, SiteState, StepState};

impl Pass<'_> {
    /// Orders the installs whose modules' dependencies are done on every
    /// server of the site, one per server at a time.
    pub(super) fn start_ready(&mut self, i: usize) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        let calendar = self.calendar(&site);
        let modules: BTreeSet<String> = self.site_steps(&site).map(|s| s.module.clone()).collect();
        let deps = self.strategy.dependencies(&modules);
        let done_modules: BTreeSet<String> = modules
            .iter()
            .filter(|m| {
                self.site_steps(&site)
                    .filter(|s| &&s.module == m)
                    .all(|s| s.state.is_done())
            })
            .cloned()
            .collect();
        let mut busy = self.busy_servers(&site);
        let planned_end = self.sites[i].planned_end;
        for j in self.site_step_indexes(&site).to_vec() {
            let step = &self.steps[j];
            if step.site != site
                || !step.state.is_waiting()
                || step.next_attempt_at.is_some_and(|t| t > now)
            {
                continue;
            }
            if let Some(waiting) = deps
                .get(&step.module)
                .filter(|d| !d.is_subset(&done_modules))
            {
                let waiting: Vec<&str> = waiting
                    .difference(&done_modules)
                    .map(String::as_str)
                    .collect();
                self.steps[j].message = Some(format!("waits for {}", waiting.join(", ")));
                continue;
            }
            let blocked = match self.blocker(j) {
                Blocker::Skip(installed) => {
                    let step = &mut self.steps[j];
                    step.state = StepState::Skipped;
                    step.finished_at = Some(now);
                    step.message = Some(format!("already at {installed}"));
                    continue;
                }
                Blocker::Fail(cause) => {
                    let step = &mut self.steps[j];
                    step.attempts += 1;
                    retry_or_fail(step, self.strategy, now, &cause, false, &mut self.log);
                    continue;
                }
                Blocker::Wait(message) => Some(message),
                Blocker::None if busy.contains(&self.steps[j].server_id) => {
                    Some("waiting for the server's current install".to_owned())
                }
                Blocker::None => None,
            };
            if let Some(message) = blocked {
                if self.steps[j].message.as_deref() != Some(&message) {
                    self.steps[j].message = Some(message);
                }
                continue;
            }
            let need = self.estimates.install(&self.steps[j].module);
            match calendar.slot(now, need) {
                Some(slot) if slot.start == now => {}
                slot => {
                    self.steps[j].message = Some(match slot {
                        Some(slot) => format!(
                            "waiting for the maintenance window opening at {}",
                            calendar.local(slot.start)
                        ),
                        None => "no maintenance window is long enough for this install".to_owned(),
                    });
                    continue;
                }
            }
            busy.insert(self.steps[j].server_id.clone());
            self.order_install(j, planned_end);
        }
    }

    /// What keeps a step that may start from being ordered, by what its
    /// server reports.
    fn blocker(&self, j: usize) -> Blocker {
        let step = &self.steps[j];
        let server = self.ctx.servers.get(&step.server_id);
        let module = server.and_then(|s| s.modules.iter().find(|m| m.name == step.module));
        let version = |v: &Option<String>| v.as_deref().and_then(|v| Version::parse(v).ok());
        let target = Version::parse(&step.to_version).ok();
        match (server, module) {
            (None, _) => Blocker::Wait("the server is no longer known to the controller".into()),
            (Some(s), _) if !s.online => {
                Blocker::Wait("waiting for the server to reconnect".into())
            }
            (_, None) => Blocker::Wait("the server no longer reports this module".into()),
            (_, Some(m)) if target.is_some() && version(&m.installed_version) >= target => {
                Blocker::Skip(m.installed_version.clone().unwrap_or_default())
            }
            // Agents keep only the newest published package.
            (_, Some(m)) if target.is_some() && version(&m.pending_version) > target => {
                Blocker::Fail(format!(
                    "the server now has {} {} pending, newer than this release's {}; roll out the newer release",
                    step.module,
                    m.pending_version.clone().unwrap_or_default(),
                    step.to_version
                ))
            }
            (_, Some(m)) if m.pending_version.as_deref() != Some(step.to_version.as_str()) => {
                Blocker::Wait(match (&m.download_state, &m.download_detail) {
                    (Some(state), Some(detail)) => {
                        format!("waiting for the package: download {state}: {detail}")
                    }
                    _ => format!(
                        "waiting for {} {} to download to the server",
                        step.module, step.to_version
                    ),
                })
            }
            _ => Blocker::None,
        }
    }

    fn order_install(&mut self, j: usize, planned_end: Option<DateTime<Utc>>) {
        let now = self.ctx.now;
        let step = &mut self.steps[j];
        let id = command_id(&step.server_id, &step.module, now, step.attempts);
        step.state = StepState::Starting;
        step.attempts += 1;
        step.command_id = Some(id.clone());
        step.ordered_at = Some(now);
        step.next_attempt_at = None;
        step.started_at.get_or_insert(now);
        step.message = Some(format!("ordered (attempt {})", step.attempts));
        self.jobs.push(Job {
            server: step.server_id.clone(),
            module: step.module.clone(),
            command_id: id,
            order: Order::Install {
                sha256: None,
                allow_downgrade: false,
                version: Some(step.to_version.clone()),
                planned_end,
                agent_update_budget_seconds: (step.module == flotilla_proto::domain::AGENT_MODULE)
                    .then_some(self.strategy.agent_update_budget_seconds)
                    .flatten()
                    .map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            },
        });
    }

    /// Restores the site's updated modules, the last layer first.
    pub(super) fn roll_back_site(&mut self, i: usize) {
        let site = self.sites[i].site.clone();
        // An install still running (one found stuck, say) ends first: the
        // agent is busy until then, and what to undo depends on how it ends.
        let running: Vec<String> = self
            .site_steps(&site)
            .filter(|s| !s.state.is_restoring() && self.busy(s))
            .map(|s| format!("{} on {}", s.module, s.server_id))
            .collect();
        if !running.is_empty() {
            self.sites[i].message = Some(format!(
                "waiting for {} to end before rolling back",
                running.join(", ")
            ));
            return;
        }
        // A restore failed: the layers below stay as they are (reverse order
        // means nothing below goes back while something above did not).
        let failed_layer = self
            .site_steps(&site)
            .any(|s| s.state == StepState::RollbackFailed);
        if failed_layer {
            for step in self.steps.iter_mut().filter(|s| {
                s.site == site
                    && s.state == StepState::RollingBack
                    && s.rollback_command_id.is_none()
            }) {
                step.state = StepState::Succeeded;
                step.message =
                    Some("not rolled back: a restore above it in the order failed".into());
            }
        } else {
            self.mark_updated(&site);
        }
        let rolling: Vec<usize> = self
            .site_step_indexes(&site)
            .iter()
            .copied()
            .filter(|&j| self.steps[j].state == StepState::RollingBack)
            .collect();
        if rolling.is_empty() {
            if !self
                .site_steps(&site)
                .any(|s| s.state != StepState::RestoringDatabase && self.busy(s))
            {
                self.settle_databases(i);
            }
            return;
        }
        let top = rolling.iter().map(|&j| self.steps[j].layer).max();
        let mut busy = self.busy_servers(&site);
        for j in rolling {
            let step = &self.steps[j];
            if Some(step.layer) != top
                || step.rollback_command_id.is_some()
                || step.next_attempt_at.is_some_and(|t| t > self.ctx.now)
            {
                continue;
            }
            let online = self.online(&step.server_id);
            if !online || busy.contains(&step.server_id) {
                self.steps[j].message = Some(
                    if online {
                        "waiting for the server's current install"
                    } else {
                        "waiting for the server to reconnect to roll back"
                    }
                    .into(),
                );
                continue;
            }
            let server = step.server_id.clone();
            if self.order_restore(j) {
                busy.insert(server);
            }
        }
    }

    /// Marks for restoring whatever of the site reached the new version,
    /// by what the servers report.
    fn mark_updated(&mut self, site: &str) {
        for j in self.site_step_indexes(site).to_vec() {
            let step = &self.steps[j];
            if step.site != site
                || !matches!(step.state, StepState::Succeeded | StepState::Failed)
                || step.from_version.as_ref() == Some(&step.to_version)
            {
                continue;
            }
            let installed = self.installed(&step.server_id, &step.module);
            // A succeeded install counts until the server reports the old
            // version again (its inventory may lag behind the result); a
            // failed one only if it got there after all (found stuck, then
            // finished).
            let install = step.command_id.as_ref().and_then(|c| self.installs.get(c));
            let finished_late = install.is_some_and(|i| i.state == InstallState::Succeeded);
            // The agent put the previous version back itself: a new version
            // its inventory showed meanwhile is gone, whatever the
            // inventory says until its next report.
            let put_back = install.is_some_and(|i| {
                i.state == InstallState::Failed && i.rolled_back && i.rollback_error.is_none()
            });
            let updated = match step.state {
                StepState::Succeeded => installed.is_none() || installed != step.from_version,
                _ => finished_late || (!put_back && installed.as_ref() == Some(&step.to_version)),
            };
            if updated {
                let step = &mut self.steps[j];
                step.state = StepState::RollingBack;
                step.rollback_command_id = None;
            }
        }
    }

    /// Nothing is left to restore: the site is back, or an operator is needed.
    pub(super) fn rolled_back(&mut self, i: usize) {
        let site = self.sites[i].site.clone();
        let failed = self.describe(&site, StepState::RollbackFailed);
        let record = &mut self.sites[i];
        record.finished_at = Some(self.ctx.now);
        if failed.is_empty() {
            record.state = SiteState::RolledBack;
            record.message = Some("every server is back at the versions it had".into());
            self.say("site_rolled_back", format!("site {site}"));
        } else {
            let failed = failed.join("; ");
            record.state = SiteState::RollbackFailed;
            record.message = Some(format!(
                "the rollback failed: {failed}; an operator is needed"
            ));
            self.say("site_rollback_failed", format!("site {site}: {failed}"));
        }
    }

    /// Orders a step's restore; false when the version it had is unknown.
    fn order_restore(&mut self, j: usize) -> bool {
        let now = self.ctx.now;
        let step = &mut self.steps[j];
        let Some(to) = step.from_version.clone() else {
            step.state = StepState::RollbackFailed;
            step.message = Some("the version it had is unknown; restore it by hand".into());
            return false;
        };
        let id = command_id(
            &step.server_id,
            &format!("{}-rollback", step.module),
            now,
            step.attempts,
        );
        step.rollback_command_id = Some(id.clone());
        step.ordered_at = Some(now);
        step.next_attempt_at = None;
        step.message = Some(format!("restoring {to}"));
        self.jobs.push(Job {
            server: step.server_id.clone(),
            module: step.module.clone(),
            command_id: id,
            // A database stays as it is: what the application wrote since
            // the upgrade is not thrown away without a decision
            // ([`Pass::settle_databases`]).
            order: Order::Rollback {
                to: Some(to),
                keep_database: true,
            },
        });
        true
    }
}

/// What keeps a step from being ordered now.
enum Blocker {
    None,
    /// Wait, saying why.
    Wait(String),
    /// The server is already at this version (or beyond).
    Skip(String),
    /// It can never be done by this rollout.
    Fail(String),
}
