//! What operators ask of a rollout, and what agents and webhooks answer to
//! the engine's orders and notices.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::{
    Context, DATABASE_REVIEW, ENGINE, active_step, changes, failed_sites, retry_or_fail,
    still_running,
};
use crate::db::{
    CommandInstall, RolloutChanges, RolloutRecord, RolloutRows, RolloutSiteRecord,
    RolloutStepRecord,
};
use crate::fleet::{Order, OrderError};
use crate::rollouts::strategy::Strategy;
use crate::states::{Allowed, RolloutState, SiteState, StepState};

/// What an operator asks of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// No new site starts; sites under way finish.
    Pause,
    Resume,
    /// Nothing new starts; running installs finish (or roll back) cleanly.
    Cancel,
    /// Failed sites try again from their first unfinished module.
    Retry,
    /// The server's modules not yet started are left out.
    Exclude(String),
    /// Roll a failed or cancelled site back to the versions it had.
    RollbackSite(String),
    /// A rolled-back site's upgraded databases: restore their backups
    /// (`true`) or keep them at the new version.
    Database {
        site: String,
        restore: bool,
    },
    /// A site whose preflight failed starts anyway.
    OverridePreflight(String),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Cancel => "cancelled",
            Action::Retry => "retried",
            Action::Exclude(_) => "excluded a server",
            Action::RollbackSite(_) => "rolled a site back",
            Action::Database { restore: true, .. } => "database_restore",
            Action::Database { restore: false, .. } => "database_kept",
            Action::OverridePreflight(_) => "preflight_overridden",
        }
    }
}

/// An operator's action on a rollout's rows: what changes, or why it is
/// refused (a conflict, in words for the operator).
pub fn act(
    ctx: &Context,
    rows: &RolloutRows,
    installs: &[CommandInstall],
    action: &Action,
    actor: &str,
) -> Result<RolloutChanges, String> {
    let (mut rollout, mut sites, mut steps) = rows.clone();
    let detail = match action {
        Action::Pause => pause(&mut rollout, actor)?,
        Action::Resume => resume(&mut rollout, &sites)?,
        Action::Cancel => cancel(ctx.now, &mut rollout, &mut sites, &mut steps, actor)?,
        Action::Retry => {
            let installs = installs
                .iter()
                .map(|i| (i.command_id.clone(), i.clone()))
                .collect();
            retry(&mut rollout, &mut sites, &mut steps, &installs, actor)?
        }
        Action::Exclude(server) => {
            let online = ctx.servers.get(server).is_some_and(|s| s.online);
            exclude(&rollout, &mut steps, server, online, actor)?
        }
        Action::RollbackSite(site) => roll_back(&mut rollout, &mut sites, &mut steps, site, actor)?,
        Action::Database { site, restore } => {
            super::databases::decide(ctx.now, &mut sites, &mut steps, site, *restore, actor)?
        }
        Action::OverridePreflight(site) => {
            super::preflight::override_failed(&mut sites, site, actor)?
        }
    };
    let log = vec![(actor.to_owned(), action.name().to_owned(), detail)];
    Ok(changes(rows, rollout, sites, steps, log))
}

fn pause(rollout: &mut RolloutRecord, actor: &str) -> Result<String, String> {
    if rollout.state != RolloutState::Running {
        return Err(format!(
            "rollout {} is {}; only a running rollout can be paused",
            rollout.id, rollout.state
        ));
    }
    rollout.state = RolloutState::Paused;
    rollout.reason = Some(format!("paused by {actor}"));
    Ok("no new site starts; sites under way finish".into())
}

fn resume(rollout: &mut RolloutRecord, sites: &[RolloutSiteRecord]) -> Result<String, String> {
    if rollout.state != RolloutState::Paused {
        return Err(format!(
            "rollout {} is {}; only a paused rollout can be resumed",
            rollout.id, rollout.state
        ));
    }
    rollout.state = RolloutState::Running;
    rollout.reason = None;
    rollout.acknowledged_failures = failed_sites(sites);
    Ok(format!(
        "{} failed sites acknowledged",
        rollout.acknowledged_failures
    ))
}

fn cancel(
    now: DateTime<Utc>,
    rollout: &mut RolloutRecord,
    sites: &mut [RolloutSiteRecord],
    steps: &mut [RolloutStepRecord],
    actor: &str,
) -> Result<String, String> {
    if !rollout.state.is_live() {
        return Err(format!(
            "rollout {} is {}; it cannot be cancelled",
            rollout.id, rollout.state
        ));
    }
    rollout.state = RolloutState::Cancelled;
    rollout.reason = Some(format!("cancelled by {actor}"));
    for step in steps.iter_mut().filter(|s| s.state.is_waiting()) {
        step.state = StepState::Cancelled;
        step.message = Some(format!("cancelled by {actor}"));
    }
    for site in sites
        .iter_mut()
        .filter(|s| s.state.is_not_started() || s.state == SiteState::Failed)
    {
        site.state = SiteState::Cancelled;
        site.message = Some(format!("cancelled by {actor}"));
        site.finished_at = Some(now);
    }
    Ok("nothing new starts; running installs finish".into())
}

fn retry(
    rollout: &mut RolloutRecord,
    sites: &mut [RolloutSiteRecord],
    steps: &mut [RolloutStepRecord],
    installs: &HashMap<String, CommandInstall>,
    actor: &str,
) -> Result<String, String> {
    let failed: Vec<String> = sites
        .iter()
        .filter(|s| s.state.allows().contains(&Allowed::Retry))
        .map(|s| s.site.clone())
        .collect();
    let running: Vec<String> = steps
        .iter()
        .filter(|s| failed.contains(&s.site))
        .filter(|s| active_step(s) || still_running(installs, s.command_id.as_ref()))
        .map(|s| format!("{} on {}", s.module, s.server_id))
        .collect();
    if !running.is_empty() {
        return Err(format!(
            "{} still running; retry once {} ended",
            running.join(", "),
            if running.len() == 1 {
                "it has"
            } else {
                "they have"
            }
        ));
    }
    if failed.is_empty() || !rollout.state.allows().contains(&Allowed::Retry) {
        return Err(format!(
            "rollout {} ({}) has no failed site to retry",
            rollout.id, rollout.state
        ));
    }
    for site in sites.iter_mut().filter(|s| failed.contains(&s.site)) {
        let preflight_only = site.state == SiteState::PreflightFailed;
        site.state = SiteState::Scheduled;
        site.message = Some(format!("retried by {actor}"));
        site.preflight = None;
        site.preflight_at = None;
        site.preflight_override_by = None;
        if preflight_only {
            // Nothing of it was touched, and its users were warned of this
            // maintenance already: its servers are asked again now.
            continue;
        }
        site.planned_start = None;
        site.planned_end = None;
        site.notice_sent_at = None;
        site.notice_result = None;
        site.started_at = None;
        site.finished_at = None;
    }
    for step in steps
        .iter_mut()
        .filter(|s| failed.contains(&s.site) && !s.state.is_done())
    {
        step.state = StepState::Pending;
        step.attempts = 0;
        step.next_attempt_at = None;
        step.command_id = None;
        step.rollback_command_id = None;
        step.database_decided_by = None;
        step.message = Some(format!("retried by {actor}"));
        step.finished_at = None;
    }
    rollout.state = RolloutState::Running;
    rollout.reason = None;
    rollout.finished_at = None;
    rollout.acknowledged_failures = 0;
    Ok(format!("sites {}", failed.join(", ")))
}

fn exclude(
    rollout: &RolloutRecord,
    steps: &mut [RolloutStepRecord],
    server: &str,
    online: bool,
    actor: &str,
) -> Result<String, String> {
    if !steps.iter().any(|s| s.server_id == server) {
        return Err(format!(
            "server {server} is not part of rollout {}",
            rollout.id
        ));
    }
    if !rollout.state.is_live() {
        return Err(format!(
            "rollout {} is {}; nothing to exclude",
            rollout.id, rollout.state
        ));
    }
    // An offline server's orders under way are abandoned too: nothing
    // waits for a server that may never come back.
    let mut n = 0;
    for step in steps.iter_mut().filter(|s| s.server_id == server) {
        let abandoned = !online && (active_step(step) || step.state.is_restoring());
        if step.state.is_waiting() || abandoned {
            step.state = StepState::Excluded;
            step.message = Some(if abandoned {
                format!("abandoned by {actor} while the server was offline")
            } else {
                format!("excluded by {actor}")
            });
            n += 1;
        }
    }
    Ok(format!("server {server}: {n} modules left out"))
}

fn roll_back(
    rollout: &mut RolloutRecord,
    sites: &mut [RolloutSiteRecord],
    steps: &mut [RolloutStepRecord],
    site: &str,
    actor: &str,
) -> Result<String, String> {
    let Some(record) = sites.iter_mut().find(|s| s.site == site) else {
        return Err(format!("site {site} is not part of rollout {}", rollout.id));
    };
    if !record.state.allows().contains(&Allowed::Rollback) {
        return Err(format!(
            "site {site} is {}; only a failed, cancelled or finished site can be rolled back",
            record.state
        ));
    }
    record.state = SiteState::RollingBack;
    record.message = Some(format!("rolled back by {actor}"));
    record.finished_at = None;
    // The engine's next pass finds what reached the new version.
    for step in steps
        .iter_mut()
        .filter(|s| s.site == site && s.state.is_waiting())
    {
        step.state = StepState::Cancelled;
    }
    if rollout.state == RolloutState::Succeeded {
        rollout.state = RolloutState::Failed;
    }
    if rollout.finished_at.is_some() {
        rollout.finished_at = None;
        rollout.reason = Some(format!("site {site} rolled back by {actor}"));
    }
    Ok(format!("site {site}"))
}

/// [`ordered`] for answers that came together (a preflight asks every
/// server of every starting site at once), over one read of the rows: each
/// is decided on the rows as the answers before it left them, and the
/// changes of all of them are written together.
pub fn ordered_all(
    rows: &RolloutRows,
    strategy: &Strategy,
    now: DateTime<Utc>,
    answers: &[&Answer],
) -> Option<RolloutChanges> {
    let mut current = rows.clone();
    let sites: HashMap<String, usize> = current
        .1
        .iter()
        .enumerate()
        .map(|(i, s)| (s.site.clone(), i))
        .collect();
    let steps: HashMap<(String, String), usize> = current
        .2
        .iter()
        .enumerate()
        .map(|(j, s)| ((s.server_id.clone(), s.module.clone()), j))
        .collect();
    let mut log = Vec::new();
    for answer in answers {
        let Some(decided) = ordered(&current, strategy, now, answer) else {
            continue;
        };
        if let Some(rollout) = decided.rollout {
            current.0 = rollout;
        }
        for site in decided.sites {
            if let Some(&i) = sites.get(&site.site) {
                current.1[i] = site;
            }
        }
        for step in decided.steps {
            if let Some(&j) = steps.get(&(step.server_id.clone(), step.module.clone())) {
                current.2[j] = step;
            }
        }
        log.extend(decided.log);
    }
    let (rollout, sites, steps) = current;
    let all = changes(rows, rollout, sites, steps, log);
    (!all.is_empty()).then_some(all)
}

/// What an agent answered to an order: the step's changes, or nothing when
/// the answer is for an order the step no longer waits for.
pub fn ordered(
    rows: &RolloutRows,
    strategy: &Strategy,
    now: DateTime<Utc>,
    answer: &Answer,
) -> Option<RolloutChanges> {
    let (rollout, sites, steps) = rows;
    if answer.kind == Ordered::Preflight {
        let site = super::preflight::answered(sites, steps, now, answer)?;
        return Some(RolloutChanges {
            sites: vec![site],
            ..RolloutChanges::default()
        });
    }
    let mut step = steps
        .iter()
        .find(|s| s.server_id == answer.server && s.module == answer.module)?
        .clone();
    let mut log = Vec::new();
    let (server, module) = (&answer.server, &answer.module);
    if matches!(
        answer.kind,
        Ordered::DatabaseDiscard | Ordered::DatabaseRestore
    ) {
        super::databases::answered(&mut step, now, answer, &mut log)?;
    } else if answer.kind == Ordered::Restore {
        if step.rollback_command_id.as_deref() != Some(answer.command_id.as_str()) {
            return None;
        }
        match &answer.result {
            Ok(message) => step.message = Some(message.clone()),
            // Unknown: the agent may have started it; its report decides.
            Err(OrderError::NoAnswer(_)) => {
                step.message = Some(
                    "the agent did not answer the restore order; waiting for word of it".into(),
                )
            }
            // Back when the server is.
            Err(e @ OrderError::Offline(_)) => {
                step.rollback_command_id = None;
                step.next_attempt_at = Some(now + Duration::seconds(10));
                step.message = Some(format!("{e}; the restore is ordered again when it is back"));
            }
            Err(e) => {
                step.state = StepState::RollbackFailed;
                step.message = Some(format!("the rollback could not be ordered: {e}"));
                step.finished_at = Some(now);
                log.push((
                    ENGINE.into(),
                    "rollback_failed".into(),
                    format!("{module} on {server}: {e}"),
                ));
            }
        }
    } else {
        if step.command_id.as_deref() != Some(answer.command_id.as_str())
            || step.state != StepState::Starting
        {
            return None;
        }
        match &answer.result {
            Ok(message) => {
                step.state = StepState::Running;
                step.message = Some(message.clone());
            }
            // Unknown: the agent may have accepted late; its report, or the
            // stuck rule, decides.
            Err(OrderError::NoAnswer(_)) => {
                step.message = Some(
                    "the agent did not answer the order; waiting for word of the install".into(),
                )
            }
            Err(OrderError::Refused { message, .. }) if message.contains(DATABASE_REVIEW) => {
                if let Some(detail) = super::follow::wait_for_review(&mut step, message, now) {
                    log.push((ENGINE.into(), "database_review".into(), detail));
                }
            }
            Err(e) => {
                let cause = e.to_string();
                let may_retry = rollout.state.is_live();
                retry_or_fail(&mut step, strategy, now, &cause, may_retry, &mut log);
            }
        }
    }
    Some(RolloutChanges {
        steps: vec![step],
        log,
        ..RolloutChanges::default()
    })
}

/// An agent's answer to an order the engine sent.
#[derive(Debug)]
pub struct Answer {
    pub server: String,
    pub module: String,
    pub command_id: String,
    pub kind: Ordered,
    pub result: Result<String, OrderError>,
    /// A preflight's report.
    pub report: Option<flotilla_proto::doctor::Report>,
}

/// What an order the engine sent was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordered {
    Install,
    /// A restore of the module's files.
    Restore,
    /// What restoring a database backup would discard.
    DatabaseDiscard,
    DatabaseRestore,
    /// The checks before a site is taken down.
    Preflight,
}

impl Ordered {
    pub fn of(order: &Order) -> Ordered {
        match order {
            Order::Rollback { .. } => Ordered::Restore,
            Order::DatabaseDiscard { .. } => Ordered::DatabaseDiscard,
            Order::DatabaseRestore { .. } => Ordered::DatabaseRestore,
            Order::Doctor { .. } => Ordered::Preflight,
            // A rollout orders nothing else.
            Order::Install { .. } | Order::DatabaseReview | Order::DatabaseScript { .. } => {
                Ordered::Install
            }
        }
    }
}

/// What became of a site's users' notice.
pub fn noticed(rows: &RolloutRows, site: &str, result: &str) -> Option<RolloutChanges> {
    let mut record = rows.1.iter().find(|s| s.site == site)?.clone();
    record.notice_result = Some(result.to_owned());
    Some(RolloutChanges {
        sites: vec![record],
        log: vec![(
            ENGINE.into(),
            "notice".into(),
            format!("site {site}: users' notice {result}"),
        )],
        ..RolloutChanges::default()
    })
}
