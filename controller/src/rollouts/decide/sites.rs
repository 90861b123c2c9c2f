//! Sites and the rollout: waves, users' notices, maintenance windows,
//! failures, thresholds and the end.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;

use super::{Notice, Pass, failed_sites};
use crate::rollouts::strategy::{self, Calendar, Gate, SiteFailure, Slot};
use crate::states::{RolloutState, SiteState, StepState};

impl Pass<'_> {
    pub(super) fn advance_site(&mut self, i: usize) {
        let running = self.rollout.state == RolloutState::Running;
        let cancelled = self.rollout.state == RolloutState::Cancelled;
        match self.sites[i].state {
            SiteState::Waiting if running && self.sites[i].wave <= self.rollout.opened_wave => {
                self.sites[i].state = SiteState::Scheduled;
                self.schedule(i);
            }
            SiteState::Waiting | SiteState::Scheduled | SiteState::PreflightFailed if cancelled => {
                self.sites[i].state = SiteState::Cancelled;
                self.sites[i].finished_at = Some(self.ctx.now);
            }
            SiteState::Scheduled | SiteState::PreflightFailed if running => self.schedule(i),
            SiteState::Running => self.run_site(i),
            SiteState::RollingBack | SiteState::DatabaseDecision => self.roll_back_site(i),
            SiteState::Waiting
            | SiteState::Scheduled
            | SiteState::PreflightFailed
            | SiteState::Succeeded
            | SiteState::Failed
            | SiteState::RolledBack
            | SiteState::RollbackFailed
            | SiteState::Cancelled => {}
        }
    }

    /// The site's whole update: (duration, downtime).
    fn site_estimate(&self, site: &str) -> (Duration, Duration) {
        let mut layers: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for step in self.site_steps(site).filter(|s| !s.state.is_done()) {
            layers
                .entry(step.layer)
                .or_default()
                .insert(step.module.clone());
        }
        let layers: Vec<Vec<String>> = layers
            .into_values()
            .map(|l| l.into_iter().collect())
            .collect();
        self.estimates.site(layers.iter().map(Vec::as_slice))
    }

    /// Settles a site with nothing left to install.
    fn site_succeeded(&mut self, i: usize, message: Option<&str>) {
        let record = &mut self.sites[i];
        record.state = SiteState::Succeeded;
        record.finished_at = Some(self.ctx.now);
        record.message = message.map(str::to_owned);
        let site = record.site.clone();
        self.say(
            "site_succeeded",
            match message {
                Some(_) => format!("site {site}: nothing to install"),
                None => format!("site {site}"),
            },
        );
    }

    /// A site whose wave has come: warn its users, wait for its window.
    fn schedule(&mut self, i: usize) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        if self.site_steps(&site).all(|s| s.state.is_done()) {
            self.site_succeeded(
                i,
                Some("nothing to install: every server is at the release's versions"),
            );
            return;
        }
        let calendar = self.calendar(&site);
        let (need, _) = self.site_estimate(&site);
        let lead = self
            .strategy
            .notice
            .as_ref()
            .map(|n| strategy::seconds(n.lead_seconds));
        if let (Some(lead), None) = (lead, self.sites[i].notice_sent_at) {
            self.warn_users(i, &calendar, need, lead);
            return;
        }
        if self.sites[i].planned_start.is_some_and(|p| p > now) {
            return;
        }
        match calendar.slot(now, need) {
            Some(slot) if slot.start == now => {
                if !self.preflight_passed(i) {
                    return;
                }
                let record = &mut self.sites[i];
                record.state = SiteState::Running;
                record.started_at = Some(now);
                record.planned_start.get_or_insert(now);
                record.planned_end = Some(record.planned_end.unwrap_or(now + need).max(now + need));
                record.message = None;
                let wave = record.wave;
                self.say("site_started", format!("site {site}: wave {wave}"));
                self.run_site(i);
            }
            Some(slot) => {
                let record = &mut self.sites[i];
                let message = format!(
                    "waiting for the maintenance window opening at {} (needs about {} s)",
                    calendar.local(slot.start),
                    need.num_seconds()
                );
                if record.message.as_deref() != Some(&message) {
                    // Users warned of another start (a window missed while
                    // its servers were not ready) are warned again.
                    if record.notice_sent_at.is_some()
                        && record.planned_start.is_some_and(|p| p != slot.start)
                    {
                        record.notice_sent_at = None;
                        record.notice_result = None;
                    }
                    record.planned_start = Some(slot.start);
                    record.planned_end = Some(slot.start + need);
                    record.message = Some(message);
                }
            }
            None => self.no_window(i, need),
        }
    }

    /// Users are warned `lead` ahead: the earliest start is that far off. A
    /// start already planned stands while it still fits.
    fn warn_users(&mut self, i: usize, calendar: &Calendar, need: Duration, lead: Duration) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        let planned = self.sites[i]
            .planned_start
            .filter(|&p| p >= now && calendar.slot(p, need).is_some_and(|s| s.start == p));
        let Some(start) = planned.or_else(|| calendar.slot(now + lead, need).map(|s| s.start))
        else {
            self.no_window(i, need);
            return;
        };
        let slot = Slot { start, end: None };
        let record = &mut self.sites[i];
        record.planned_start = Some(slot.start);
        record.planned_end = Some(slot.start + need);
        if slot.start - lead > now {
            record.message = Some(format!(
                "users will be warned at {}; starts at {}",
                calendar.local(slot.start - lead),
                calendar.local(slot.start)
            ));
            return;
        }
        record.notice_sent_at = Some(now);
        record.message = Some(format!(
            "users warned; starts at {}",
            calendar.local(slot.start)
        ));
        let modules: BTreeSet<String> = self.site_steps(&site).map(|s| s.module.clone()).collect();
        let body = serde_json::json!({
            "rollout": self.rollout.id,
            "release": self.rollout.release,
            "site": site,
            "modules": modules,
            "planned_start": slot.start,
            "planned_end": slot.start + need,
            "time_zone": calendar.time_zone().name(),
            "planned_start_local": calendar.local(slot.start),
            "planned_end_local": calendar.local(slot.start + need),
        });
        if let Some(notice) = &self.strategy.notice {
            self.notices.push(Notice {
                site: site.clone(),
                url: notice.webhook_url.clone(),
                body,
            });
        }
        self.say(
            "notice",
            format!(
                "site {site}: users warned of the maintenance from {} to {}",
                calendar.local(slot.start),
                calendar.local(slot.start + need)
            ),
        );
    }

    fn no_window(&mut self, i: usize, need: Duration) {
        let message = format!(
            "no maintenance window in the next eight days is long enough for its estimated {} s",
            need.num_seconds()
        );
        let record = &mut self.sites[i];
        record.planned_start = None;
        record.planned_end = None;
        record.message = Some(message);
    }

    /// A site under way: settle it when done or failed, else start what is ready.
    fn run_site(&mut self, i: usize) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        let active = self.site_steps(&site).any(|s| self.busy(s));
        let failed = self.describe(&site, StepState::Failed);
        if !failed.is_empty() {
            self.site_failed(i, &failed, active);
            return;
        }
        if self.site_steps(&site).all(|s| s.state.is_done()) {
            self.site_succeeded(i, None);
            return;
        }
        let reviews: Vec<String> = self
            .site_steps(&site)
            .filter(|s| s.state == StepState::Review)
            .map(|s| format!("{} on {}", s.module, s.server_id))
            .collect();
        let record = &mut self.sites[i];
        if !reviews.is_empty() {
            record.message = Some(format!(
                "waiting for a database review of {}: the database is customized; run its scripts one by one (dashboard or portal)",
                reviews.join(", ")
            ));
        } else if record
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("waiting for a database review"))
        {
            record.message = None;
        }
        if self.rollout.state == RolloutState::Cancelled {
            if !active {
                let done = self
                    .site_steps(&site)
                    .filter(|s| s.state == StepState::Succeeded)
                    .count();
                let all = self.site_steps(&site).count();
                let record = &mut self.sites[i];
                record.state = SiteState::Cancelled;
                record.finished_at = Some(now);
                record.message = Some(format!("cancelled with {done} of {all} modules updated"));
            }
            return;
        }
        self.start_ready(i);
    }

    /// A step of the site failed: once nothing runs, roll the site back or
    /// stop for an operator, as the strategy says.
    fn site_failed(&mut self, i: usize, failed: &[String], active: bool) {
        let site = self.sites[i].site.clone();
        let failed = failed.join("; ");
        if active {
            self.sites[i].message = Some(format!(
                "{failed}; waiting for the running installs to end before {}",
                match self.strategy.failure.site {
                    SiteFailure::Rollback => "rolling back",
                    SiteFailure::Stop => "stopping for an operator",
                }
            ));
            return;
        }
        match self.strategy.failure.site {
            SiteFailure::Rollback => {
                for step in self.steps.iter_mut().filter(|s| s.site == site) {
                    if step.state.is_waiting() {
                        step.state = StepState::Cancelled;
                    }
                }
                self.sites[i].state = SiteState::RollingBack;
                self.sites[i].message = Some(format!("{failed}; rolling the site back"));
                self.say(
                    "site_failed",
                    format!("site {site}: {failed}; rolling every server back"),
                );
                self.roll_back_site(i);
            }
            SiteFailure::Stop => {
                let record = &mut self.sites[i];
                record.state = SiteState::Failed;
                record.finished_at = Some(self.ctx.now);
                record.message = Some(format!(
                    "{failed}; waiting for an operator (retry or roll back)"
                ));
                self.say(
                    "site_failed",
                    format!("site {site}: {failed}; stopped for an operator"),
                );
            }
        }
    }
}

impl Pass<'_> {
    pub(super) fn advance_rollout(&mut self) {
        if self.rollout.state == RolloutState::Running {
            self.check_threshold();
        }
        if self.rollout.state == RolloutState::Running {
            self.open_next_wave();
        }
        let all_settled = self.sites.iter().all(|s| s.state.is_settled())
            && !self.steps.iter().any(|s| self.busy(s));
        if all_settled && self.rollout.finished_at.is_none() {
            self.finish();
        }
    }

    /// Too many failed sites (beyond those an operator resumed past): pause.
    fn check_threshold(&mut self) {
        let total = u32::try_from(self.sites.len()).unwrap_or(u32::MAX);
        let failed = failed_sites(&self.sites);
        let beyond =
            u32::try_from((failed - self.rollout.acknowledged_failures).max(0)).unwrap_or(0);
        if beyond == 0 || !self.strategy.failure.tripped(beyond, total) {
            return;
        }
        let limit = match (
            self.strategy.failure.max_failed_sites,
            self.strategy.failure.max_failed_percent,
        ) {
            (None, None) => "any failed site".to_owned(),
            (c, p) => [
                c.map(|c| format!("at most {c} sites")),
                p.map(|p| format!("at most {p}%")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        };
        let reason = format!(
            "{failed} of {total} sites failed, past the threshold ({limit}); no new site starts. Resume to go on, retry the failed sites, or cancel"
        );
        self.rollout.state = RolloutState::Paused;
        self.rollout.reason = Some(reason.clone());
        self.say("paused", reason);
    }

    /// Once every open wave's sites are settled, the next wave opens: at
    /// once, after the strategy's pause, or when an operator resumes.
    fn open_next_wave(&mut self) {
        let now = self.ctx.now;
        let opened = self.rollout.opened_wave;
        let last_wave = self.sites.iter().map(|s| s.wave).max().unwrap_or(0);
        let opened_settled = self
            .sites
            .iter()
            .filter(|s| s.wave <= opened)
            .all(|s| s.state.is_settled());
        if !opened_settled || opened >= last_wave {
            return;
        }
        let next = opened + 1;
        let pause = strategy::seconds(self.strategy.waves.pause_seconds);
        if self.strategy.waves.gate == Gate::Manual {
            self.rollout.opened_wave = next;
            self.rollout.state = RolloutState::Paused;
            let reason = format!("wave {next} is ready; resume to start it");
            self.rollout.reason = Some(reason.clone());
            self.say("gate", reason);
        } else if pause > Duration::zero() && self.rollout.wave_ready_at.is_none() {
            self.rollout.wave_ready_at = Some(now + pause);
            self.rollout.reason = Some(format!("wave {next} starts in {} s", pause.num_seconds()));
        } else if self.rollout.wave_ready_at.is_none_or(|t| t <= now) {
            self.rollout.opened_wave = next;
            self.rollout.wave_ready_at = None;
            self.rollout.reason = None;
            self.say("wave", format!("wave {next} starts"));
            for i in 0..self.sites.len() {
                if self.sites[i].wave == next {
                    self.advance_site(i);
                }
            }
        }
    }

    /// Every site settled and nothing runs: the rollout ends.
    fn finish(&mut self) {
        let now = self.ctx.now;
        let total = self.sites.len();
        let last_wave = self.sites.iter().map(|s| s.wave).max().unwrap_or(0);
        match self.rollout.state {
            RolloutState::Running | RolloutState::Paused
                if self.rollout.opened_wave >= last_wave =>
            {
                let failed = self
                    .sites
                    .iter()
                    .filter(|s| s.state != SiteState::Succeeded)
                    .count();
                self.rollout.finished_at = Some(now);
                if failed == 0 {
                    self.rollout.state = RolloutState::Succeeded;
                    self.rollout.reason = None;
                    self.say("succeeded", format!("{total} sites updated"));
                } else {
                    self.rollout.state = RolloutState::Failed;
                    let reason = format!("{failed} of {total} sites did not update");
                    self.rollout.reason = Some(reason.clone());
                    self.say("failed", reason);
                }
            }
            RolloutState::Cancelled | RolloutState::Failed => {
                self.rollout.finished_at = Some(now);
                let state = self.rollout.state;
                self.say(
                    "finished",
                    format!("{state}; the last running installs and restores ended"),
                );
            }
            RolloutState::Running | RolloutState::Paused | RolloutState::Succeeded => {}
        }
    }
}
