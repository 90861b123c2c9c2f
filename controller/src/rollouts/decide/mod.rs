//! The rollout engine's decisions: given a rollout's rows, what the fleet
//! reports and the time, what happens next. Nothing here reads or writes
//! anything: [`super::engine`] loads the rows, calls [`pass`] (or [`act`],
//! [`ordered`], [`noticed`]), writes the [`Decisions`]' changes in one
//! transaction, then sends their orders and notices.
//!
//! The tests at the bottom are tables in the style of rust-analyzer's:
//! rows and a time in, the decisions rendered as text out.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use flotilla_proto::domain::ServerId;

use super::plan::Estimates;
use super::strategy::{self, Calendar, Strategy};
use crate::db::{
    CommandInstall, Estimate, RolloutChanges, RolloutRecord, RolloutRows, RolloutSiteRecord,
    RolloutStepRecord, ServerRecord,
};
use crate::fleet::Order;
use crate::states::{InstallState, StepState};

mod databases;
mod follow;
mod operator;
pub mod preflight;
mod sites;
mod steps;
#[cfg(test)]
mod tests;

pub use operator::{Action, Answer, Ordered, act, noticed, ordered, ordered_all};

/// The actor the engine records its own transitions under.
pub const ENGINE: &str = "flotilla";

/// How long a reconnected server is given to resend what it did while the
/// controller was away, before an order nobody heard of is given up.
const RECONNECT_GRACE: Duration = Duration::seconds(5);

/// What an agent's refusal to upgrade a customized database says.
const DATABASE_REVIEW: &str = "is customized";

/// What an agent says of an install (or restore) of the version already
/// there: it refused before touching anything.
const ALREADY_INSTALLED: &str = "is already installed";

/// How often a step waiting for a database review asks the server again
/// whether the guided upgrade is done.
const REVIEW_RECHECK: Duration = Duration::seconds(10);

/// What the decisions know of the world beyond a rollout's rows.
#[derive(Debug, Clone)]
pub struct Context {
    pub now: DateTime<Utc>,
    /// The rollouts' servers, by id.
    pub servers: HashMap<String, ServerRecord>,
    /// Sites' maintenance windows; a site without one is always open.
    pub calendars: HashMap<String, Calendar>,
    /// Past installs, for estimates.
    pub history: Vec<Estimate>,
}

/// An order to send once the decisions are written.
#[derive(Debug)]
pub struct Job {
    pub server: String,
    pub module: String,
    pub command_id: String,
    pub order: Order,
}

/// A users' notice to post to a site's webhook.
#[derive(Debug)]
pub struct Notice {
    pub site: String,
    pub url: String,
    pub body: serde_json::Value,
}

/// What one decision changes, orders and posts.
#[derive(Debug, Default)]
pub struct Decisions {
    pub changes: RolloutChanges,
    pub jobs: Vec<Job>,
    pub notices: Vec<Notice>,
}

/// An install or restore is ordered or running on the step's server.
fn active_step(step: &RolloutStepRecord) -> bool {
    step.state.is_installing()
        || (matches!(
            step.state,
            StepState::RollingBack | StepState::RestoringDatabase
        ) && step.rollback_command_id.is_some())
}

/// Whether an install a rollout ordered is still running.
fn still_running(installs: &HashMap<String, CommandInstall>, command: Option<&String>) -> bool {
    command
        .and_then(|c| installs.get(c))
        .is_some_and(|i| i.state == InstallState::Running)
}

fn failed_sites(sites: &[RolloutSiteRecord]) -> i64 {
    i64::try_from(sites.iter().filter(|s| s.state.is_failed()).count()).unwrap_or(i64::MAX)
}

/// Each site's steps, by index.
fn index_by_site(steps: &[RolloutStepRecord]) -> HashMap<String, Vec<usize>> {
    let mut by_site: HashMap<String, Vec<usize>> = HashMap::new();
    for (j, step) in steps.iter().enumerate() {
        by_site.entry(step.site.clone()).or_default().push(j);
    }
    by_site
}

/// The rows as changed, less the rows as read: what to write. A pass keeps
/// the rows in their order, so each is compared with the one read at its
/// place (comparing each with every row read cost rows x rows).
fn changes(
    before: &RolloutRows,
    rollout: RolloutRecord,
    sites: Vec<RolloutSiteRecord>,
    steps: Vec<RolloutStepRecord>,
    log: Vec<(String, String, String)>,
) -> RolloutChanges {
    RolloutChanges {
        rollout: (rollout != before.0).then_some(rollout),
        sites: changed(sites, &before.1),
        steps: changed(steps, &before.2),
        log,
    }
}

/// The rows of `after` that differ from the row at their place in `before`.
fn changed<T: PartialEq>(after: Vec<T>, before: &[T]) -> Vec<T> {
    after
        .into_iter()
        .enumerate()
        .filter(|(i, row)| before.get(*i) != Some(row))
        .map(|(_, row)| row)
        .collect()
}

/// The servers a rollout holds: those with work in a site not settled.
pub fn holds(rows: &RolloutRows) -> Vec<ServerId> {
    let (_, sites, steps) = rows;
    sites
        .iter()
        .filter(|site| !site.state.is_settled())
        .flat_map(|site| {
            steps
                .iter()
                .filter(move |s| s.site == site.site && s.state != StepState::Excluded)
        })
        .filter_map(|step| ServerId::parse(&step.server_id).ok())
        .collect()
}

/// A failed attempt: pending again after the backoff, or failed for good.
fn retry_or_fail(
    step: &mut RolloutStepRecord,
    strategy: &Strategy,
    now: DateTime<Utc>,
    cause: &str,
    may_retry: bool,
    log: &mut Vec<(String, String, String)>,
) {
    let attempts = u32::try_from(step.attempts).unwrap_or(u32::MAX);
    match strategy.failure.retry_after(attempts).filter(|_| may_retry) {
        Some(delay) => {
            step.state = StepState::Pending;
            step.next_attempt_at = Some(now + delay);
            step.message = Some(format!(
                "attempt {attempts} failed: {cause}; trying again in {} s",
                delay.num_seconds()
            ));
            log.push((
                ENGINE.into(),
                "retry".into(),
                format!(
                    "{} on {}: attempt {attempts} failed: {cause}",
                    step.module, step.server_id
                ),
            ));
        }
        None => {
            step.state = StepState::Failed;
            step.finished_at = Some(now);
            step.message = Some(format!("failed after {attempts} attempts: {cause}"));
            log.push((
                ENGINE.into(),
                "install_failed".into(),
                format!("{} on {}: {cause}", step.module, step.server_id),
            ));
        }
    }
}

/// A command id for a rollout's order: unique per server, module and
/// attempt, and unpredictable.
fn command_id(server: &str, module: &str, now: DateTime<Utc>, attempts: i64) -> String {
    let random = flotilla_proto::web::random_secret();
    format!(
        "rollout-{server}-{module}-{}-{attempts}-{}",
        now.timestamp_millis(),
        &random[..16]
    )
}

/// One pass over one rollout: what became of its orders, then each site,
/// then the rollout itself.
pub fn pass(
    ctx: &Context,
    strategy: &Strategy,
    rows: &RolloutRows,
    installs: &[CommandInstall],
    in_flight: &HashSet<String>,
) -> Decisions {
    let (rollout, sites, steps) = rows.clone();
    let by_site = index_by_site(&steps);
    let mut pass = Pass {
        ctx,
        strategy,
        rollout,
        sites,
        steps,
        by_site,
        installs: installs
            .iter()
            .map(|i| (i.command_id.clone(), i.clone()))
            .collect(),
        in_flight,
        estimates: Estimates::new(
            &ctx.history,
            strategy::seconds(strategy.default_install_seconds),
        ),
        log: Vec::new(),
        jobs: Vec::new(),
        notices: Vec::new(),
    };
    pass.follow_orders();
    for i in 0..pass.sites.len() {
        pass.advance_site(i);
    }
    pass.advance_rollout();
    Decisions {
        changes: changes(rows, pass.rollout, pass.sites, pass.steps, pass.log),
        jobs: pass.jobs,
        notices: pass.notices,
    }
}

/// One pass's working copy of a rollout's rows and what it decided.
struct Pass<'a> {
    ctx: &'a Context,
    strategy: &'a Strategy,
    rollout: RolloutRecord,
    sites: Vec<RolloutSiteRecord>,
    steps: Vec<RolloutStepRecord>,
    /// Each site's steps, by their index in `steps` (a pass neither adds
    /// nor removes steps): a pass looks at one site's steps at a time, and
    /// a rollout of thousands of sites must not walk them all for each.
    by_site: HashMap<String, Vec<usize>>,
    installs: HashMap<String, CommandInstall>,
    in_flight: &'a HashSet<String>,
    estimates: Estimates,
    log: Vec<(String, String, String)>,
    jobs: Vec<Job>,
    notices: Vec<Notice>,
}

impl Pass<'_> {
    fn say(&mut self, action: &str, detail: String) {
        self.log.push((ENGINE.into(), action.into(), detail));
    }

    fn calendar(&self, site: &str) -> Calendar {
        self.ctx
            .calendars
            .get(site)
            .cloned()
            .unwrap_or_else(Calendar::always)
    }

    fn installed(&self, server: &str, module: &str) -> Option<String> {
        self.ctx
            .servers
            .get(server)
            .and_then(|s| s.modules.iter().find(|m| m.name == module))
            .and_then(|m| m.installed_version.clone())
    }

    /// Whether the server reports the module as a database module.
    fn is_database(&self, server: &str, module: &str) -> bool {
        self.ctx
            .servers
            .get(server)
            .and_then(|s| s.modules.iter().find(|m| m.name == module))
            .is_some_and(|m| m.kind == flotilla_proto::domain::ModuleKind::Database.as_str())
    }

    fn online(&self, server: &str) -> bool {
        self.ctx.servers.get(server).is_some_and(|s| s.online)
    }

    /// Whether the step has an order or an install under way on its server
    /// (also one the rollout already gave up on as stuck).
    fn busy(&self, step: &RolloutStepRecord) -> bool {
        active_step(step)
            || (step.state == StepState::Failed
                && still_running(&self.installs, step.command_id.as_ref()))
    }

    fn site_steps(&self, site: &str) -> impl Iterator<Item = &RolloutStepRecord> {
        self.site_step_indexes(site).iter().map(|&j| &self.steps[j])
    }

    /// The indexes in `steps` of the site's steps.
    fn site_step_indexes(&self, site: &str) -> &[usize] {
        self.by_site
            .get(site)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The site's servers with an install or restore ordered or running (a
    /// server belongs to one site).
    fn busy_servers(&self, site: &str) -> HashSet<String> {
        self.site_steps(site)
            .filter(|s| active_step(s))
            .map(|s| s.server_id.clone())
            .collect()
    }

    /// "module on server: message" for the site's steps in a state.
    fn describe(&self, site: &str, state: StepState) -> Vec<String> {
        self.site_steps(site)
            .filter(|s| s.state == state)
            .map(|s| {
                format!(
                    "{} on {}: {}",
                    s.module,
                    s.server_id,
                    s.message.as_deref().unwrap_or("")
                )
            })
            .collect()
    }
}
