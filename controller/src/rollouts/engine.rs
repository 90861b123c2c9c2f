//! The rollout engine: one task that moves every active rollout forward.
//!
//! The state machine lives in SQLite. Each pass reads a rollout's rows,
//! decides, and writes what changed in one transaction *before* ordering
//! anything, so a controller killed at any point resumes from the rows: an
//! install ordered but not heard of is found by its command id when the
//! agent reports (agents resend their results on reconnect), and a module
//! already at its target version is never installed twice.
//!
//! The engine is the only writer of rollout rows: operators' actions and the
//! outcomes of orders reach it through its inbox.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use flotilla_proto::domain::{ServerId, Version};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::Estimates;
use super::strategy::{Calendar, Gate, Schedule, SiteFailure, Strategy};
use crate::db::{
    CommandInstall, RolloutChanges, RolloutRecord, RolloutSiteRecord, RolloutState,
    RolloutStepRecord, ServerRecord,
};
use crate::fleet::{Fleet, FleetEvent, Order, OrderError};

/// The actor the engine records its own transitions under.
pub const ENGINE: &str = "flotilla";

/// How often the engine looks at active rollouts when nothing wakes it.
/// With no active rollout it does not look at all.
const TICK: StdDuration = StdDuration::from_millis(500);

/// The least time between two passes that something woke: a burst of
/// fleet changes (a wave of installs ending, agents reconnecting) or of
/// orders' outcomes is one pass, not one each.
const COALESCE: StdDuration = StdDuration::from_millis(100);

/// How long a reconnected server is given to resend what it did while the
/// controller was away, before an order nobody heard of is given up.
const RECONNECT_GRACE: Duration = Duration::seconds(5);

/// What an agent's refusal to upgrade a customized database says.
const DATABASE_REVIEW: &str = "is customized";

/// How often a step waiting for a database review asks the server again
/// whether the guided upgrade is done.
const REVIEW_RECHECK: Duration = Duration::seconds(10);

/// What an operator asks of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no rollout {0}")]
    NotFound(i64),
    #[error("{0}")]
    Conflict(String),
    #[error("the controller cannot read or write its database: {0}")]
    Database(#[from] sqlx::Error),
}

enum Request {
    Act {
        id: i64,
        action: Action,
        actor: String,
        reply: oneshot::Sender<Result<(), ActionError>>,
    },
    Ordered {
        rollout: i64,
        server: String,
        module: String,
        command_id: String,
        rollback: bool,
        result: Result<String, OrderError>,
    },
    Noticed {
        rollout: i64,
        site: String,
        result: String,
    },
    Wake,
}

/// The handle the API holds.
#[derive(Debug, Clone)]
pub struct Rollouts {
    pub fleet: Arc<Fleet>,
    inbox: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

impl Rollouts {
    /// Starts the engine; it runs until `stop` is cancelled.
    pub fn start(
        fleet: Arc<Fleet>,
        ca_pem: Option<String>,
        stop: CancellationToken,
    ) -> (Rollouts, tokio::task::JoinHandle<()>) {
        let mut http = reqwest::Client::builder()
            .timeout(StdDuration::from_secs(10))
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(certificates) = ca_pem
            .as_deref()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(pem.as_bytes()).ok())
        {
            http = http.tls_certs_merge(certificates);
        }
        let (inbox, requests) = mpsc::channel(256);
        let engine = Engine {
            fleet: fleet.clone(),
            inbox: inbox.clone(),
            in_flight: HashSet::new(),
            active: true,
            http: http.build().unwrap_or_default(),
        };
        let task = tokio::spawn(engine.run(requests, stop));
        (Rollouts { fleet, inbox }, task)
    }

    /// Applies an operator's action.
    pub async fn act(&self, id: i64, action: Action, actor: &str) -> Result<(), ActionError> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .send(Request::Act {
                id,
                action,
                actor: actor.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ActionError::Conflict("the controller is shutting down".into()))?;
        answer
            .await
            .map_err(|_| ActionError::Conflict("the controller is shutting down".into()))?
    }

    /// Asks for a pass now (a rollout was created).
    pub async fn wake(&self) {
        let _ = self.inbox.send(Request::Wake).await;
    }
}

struct Engine {
    fleet: Arc<Fleet>,
    inbox: mpsc::Sender<Request>,
    /// Orders sent and not yet answered, by command id.
    in_flight: HashSet<String>,
    /// Whether the last pass found an unfinished rollout. Without one, the
    /// clock and fleet changes wake nothing; only a request does.
    active: bool,
    http: reqwest::Client,
}

/// What woke the engine.
enum Woken {
    Stop,
    Request(Request),
    /// A server changed, or the engine missed some changes.
    Fleet,
    /// Nothing that needs a pass.
    Nothing,
    /// A pass is due.
    Due,
}

/// What one pass knows about the fleet.
struct Context {
    now: DateTime<Utc>,
    servers: HashMap<String, ServerRecord>,
    calendars: HashMap<String, Calendar>,
    history: Vec<crate::db::Estimate>,
}

/// When the next pass runs once something woke the engine: as planned if
/// sooner, otherwise as soon as [`COALESCE`] after the last one allows.
fn soon(due: Option<Instant>, last_pass: Instant) -> Option<Instant> {
    let at = (last_pass + COALESCE).max(Instant::now());
    Some(due.map_or(at, |due| due.min(at)))
}

/// An order to send once the pass is written.
struct Job {
    server: String,
    module: String,
    command_id: String,
    order: Order,
}

const DONE: [&str; 3] = ["succeeded", "skipped", "excluded"];
const SETTLED: [&str; 5] = [
    "succeeded",
    "failed",
    "rolled_back",
    "rollback_failed",
    "cancelled",
];
const FAILED_SITE: [&str; 4] = ["failed", "rolling_back", "rolled_back", "rollback_failed"];

fn active_step(step: &RolloutStepRecord) -> bool {
    matches!(step.state.as_str(), "starting" | "running")
        || (step.state == "rolling_back" && step.rollback_command_id.is_some())
}

impl Engine {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, stop: CancellationToken) {
        use tokio::sync::broadcast::error::RecvError;
        let mut events = self.fleet.subscribe();
        // The rows may hold rollouts a previous controller left unfinished.
        let mut due = Some(Instant::now());
        let mut last_pass = Instant::now();
        loop {
            let woken = tokio::select! {
                _ = stop.cancelled() => Woken::Stop,
                request = requests.recv() => request.map_or(Woken::Stop, Woken::Request),
                event = events.recv() => match event {
                    // Progress lines and the engine's own changes need no
                    // pass: stuck installs are found by the clock.
                    Ok(FleetEvent::RolloutChanged(_) | FleetEvent::InstallProgress { .. }) => {
                        Woken::Nothing
                    }
                    Ok(FleetEvent::ServerChanged(_)) | Err(RecvError::Lagged(_)) => Woken::Fleet,
                    Err(RecvError::Closed) => Woken::Stop,
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    Woken::Due
                }
            };
            match woken {
                Woken::Stop => return,
                Woken::Nothing => {}
                Woken::Request(request) => {
                    self.handle(request).await;
                    due = soon(due, last_pass);
                }
                Woken::Fleet if self.active => due = soon(due, last_pass),
                Woken::Fleet => {}
                Woken::Due => {
                    if let Err(e) = self.pass().await {
                        tracing::error!("rollout engine: {e}");
                        // Try again on the clock.
                        self.active = true;
                    }
                    last_pass = Instant::now();
                    due = self.active.then(|| last_pass + TICK);
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Act {
                id,
                action,
                actor,
                reply,
            } => {
                let result = self.act(id, action, &actor).await;
                let _ = reply.send(result);
            }
            Request::Ordered {
                rollout,
                server,
                module,
                command_id,
                rollback,
                result,
            } => {
                self.in_flight.remove(&command_id);
                if let Err(e) = self
                    .ordered(rollout, &server, &module, &command_id, rollback, result)
                    .await
                {
                    tracing::error!(rollout, "cannot record an order's outcome: {e}");
                }
            }
            Request::Noticed {
                rollout,
                site,
                result,
            } => {
                if let Err(e) = self.noticed(rollout, &site, result).await {
                    tracing::error!(rollout, "cannot record a notice's outcome: {e}");
                }
            }
            Request::Wake => {}
        }
    }

    /// What the pass over these rollouts needs to know of the fleet: their
    /// servers, their sites' calendars, past installs for estimates.
    async fn context(&self, rollouts: &[RolloutState]) -> sqlx::Result<Context> {
        let db = &self.fleet.db;
        let servers: BTreeSet<&str> = rollouts
            .iter()
            .flat_map(|(_, _, steps)| steps.iter().map(|step| step.server_id.as_str()))
            .collect();
        let modules: BTreeSet<&str> = rollouts
            .iter()
            .flat_map(|(_, _, steps)| steps.iter().map(|step| step.module.as_str()))
            .collect();
        let sites: BTreeSet<&str> = rollouts
            .iter()
            .flat_map(|(_, sites, _)| sites.iter().map(|site| site.site.as_str()))
            .collect();
        let servers = db
            .servers_with_ids(&servers.into_iter().collect::<Vec<_>>())
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut calendars = HashMap::new();
        for schedule in db
            .schedules_of(&sites.into_iter().collect::<Vec<_>>())
            .await?
        {
            let parsed = serde_json::from_str(&schedule.windows)
                .ok()
                .map(|windows| Schedule {
                    time_zone: schedule.time_zone.clone(),
                    windows,
                })
                .and_then(|s| s.calendar().ok());
            match parsed {
                Some(calendar) => {
                    calendars.insert(schedule.site, calendar);
                }
                None => tracing::error!(
                    site = schedule.site,
                    "the stored schedule does not parse; treating the site as always open"
                ),
            }
        }
        Ok(Context {
            now: Utc::now(),
            servers,
            calendars,
            history: db
                .estimates_of(&modules.into_iter().collect::<Vec<_>>())
                .await?,
        })
    }

    /// One pass over every active rollout; reads nothing else when there is none.
    async fn pass(&mut self) -> sqlx::Result<()> {
        let mut rollouts: Vec<RolloutState> = Vec::new();
        for id in self.fleet.db.active_rollouts().await? {
            if let Some(loaded) = self.fleet.db.rollout_state(id).await? {
                rollouts.push(loaded);
            }
        }
        self.active = !rollouts.is_empty();
        if rollouts.is_empty() {
            self.fleet.set_holds(HashMap::new());
            return Ok(());
        }
        let ctx = self.context(&rollouts).await?;
        let mut holds: HashMap<ServerId, String> = HashMap::new();
        for (rollout, sites, steps) in rollouts {
            let id = rollout.id;
            let installs = self.fleet.db.rollout_installs(id).await?;
            let strategy: Strategy = match serde_json::from_str(&rollout.strategy) {
                Ok(strategy) => strategy,
                Err(e) => {
                    tracing::error!(rollout = id, "the stored strategy does not parse: {e}");
                    continue;
                }
            };
            let mut pass = Pass::new(
                &ctx,
                &strategy,
                rollout,
                sites,
                steps,
                installs,
                &self.in_flight,
            );
            pass.advance();
            for site in &pass.sites {
                if !SETTLED.contains(&site.state.as_str()) {
                    for step in pass
                        .steps
                        .iter()
                        .filter(|s| s.site == site.site && s.state != "excluded")
                    {
                        if let Ok(server) = ServerId::parse(&step.server_id) {
                            holds.insert(
                                server,
                                format!("rollout {id} (release {})", pass.rollout.release),
                            );
                        }
                    }
                }
            }
            let (changes, jobs, notices) = pass.finish();
            if !changes.is_empty() {
                self.fleet.db.save_rollout(id, ctx.now, &changes).await?;
                self.fleet.rollout_changed(id);
            }
            for job in jobs {
                self.send(id, job);
            }
            for (site, body, url) in notices {
                self.notify(id, site, url, body);
            }
        }
        self.fleet.set_holds(holds);
        Ok(())
    }

    /// Sends an order in the background; its outcome comes back to the inbox.
    fn send(&mut self, rollout: i64, job: Job) {
        self.in_flight.insert(job.command_id.clone());
        let fleet = self.fleet.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let rollback = matches!(job.order, Order::Rollback { .. });
            let result = fleet
                .order_as(&job.server, &job.module, job.order, job.command_id.clone())
                .await
                .map(|(_, message)| message);
            let _ = inbox
                .send(Request::Ordered {
                    rollout,
                    server: job.server,
                    module: job.module,
                    command_id: job.command_id,
                    rollback,
                    result,
                })
                .await;
        });
    }

    /// Posts a site's notice to the webhook in the background.
    fn notify(&self, rollout: i64, site: String, url: String, body: serde_json::Value) {
        let http = self.http.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let mut result = String::new();
            for attempt in 1..=3u32 {
                match http.post(&url).json(&body).send().await {
                    Ok(response) if response.status().is_success() => {
                        result = format!("delivered ({})", response.status());
                        break;
                    }
                    Ok(response) => result = format!("the webhook answered {}", response.status()),
                    Err(e) => {
                        result = format!("the webhook could not be reached: {}", without_url(&e))
                    }
                }
                tokio::time::sleep(StdDuration::from_secs(u64::from(attempt))).await;
            }
            let _ = inbox
                .send(Request::Noticed {
                    rollout,
                    site,
                    result,
                })
                .await;
        });
    }

    async fn ordered(
        &mut self,
        id: i64,
        server: &str,
        module: &str,
        command_id: &str,
        rollback: bool,
        result: Result<String, OrderError>,
    ) -> sqlx::Result<()> {
        let Some((rollout, _, steps)) = self.fleet.db.rollout_state(id).await? else {
            return Ok(());
        };
        let strategy: Strategy = serde_json::from_str(&rollout.strategy).unwrap_or_default();
        let Some(mut step) = steps
            .into_iter()
            .find(|s| s.server_id == server && s.module == module)
        else {
            return Ok(());
        };
        let now = Utc::now();
        let mut changes = RolloutChanges::default();
        if rollback {
            if step.rollback_command_id.as_deref() != Some(command_id) {
                return Ok(());
            }
            match result {
                Ok(message) => step.message = Some(message),
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
                    step.message =
                        Some(format!("{e}; the restore is ordered again when it is back"));
                }
                Err(e) => {
                    step.state = "rollback_failed".into();
                    step.message = Some(format!("the rollback could not be ordered: {e}"));
                    step.finished_at = Some(now);
                    changes.log.push((
                        ENGINE.into(),
                        "rollback_failed".into(),
                        format!("{module} on {server}: {e}"),
                    ));
                }
            }
        } else {
            if step.command_id.as_deref() != Some(command_id) || step.state != "starting" {
                return Ok(());
            }
            match result {
                Ok(message) => {
                    step.state = "running".into();
                    step.message = Some(message);
                }
                // Unknown: the agent may have accepted late; its report, or
                // the stuck rule, decides.
                Err(OrderError::NoAnswer(_)) => {
                    step.message = Some(
                        "the agent did not answer the order; waiting for word of the install"
                            .into(),
                    )
                }
                Err(e) => {
                    let cause = e.to_string();
                    retry_or_fail(
                        &mut step,
                        &strategy,
                        now,
                        &cause,
                        rollout.state == "running" || rollout.state == "paused",
                        &mut changes.log,
                    );
                }
            }
        }
        changes.steps.push(step);
        self.fleet.db.save_rollout(id, now, &changes).await?;
        self.fleet.rollout_changed(id);
        Ok(())
    }

    async fn noticed(&mut self, id: i64, site: &str, result: String) -> sqlx::Result<()> {
        let Some((_, sites, _)) = self.fleet.db.rollout_state(id).await? else {
            return Ok(());
        };
        let Some(mut record) = sites.into_iter().find(|s| s.site == site) else {
            return Ok(());
        };
        record.notice_result = Some(result.clone());
        let changes = RolloutChanges {
            sites: vec![record],
            log: vec![(
                ENGINE.into(),
                "notice".into(),
                format!("site {site}: users' notice {result}"),
            )],
            ..RolloutChanges::default()
        };
        self.fleet.db.save_rollout(id, Utc::now(), &changes).await?;
        self.fleet.rollout_changed(id);
        Ok(())
    }

    async fn act(&mut self, id: i64, action: Action, actor: &str) -> Result<(), ActionError> {
        let (mut rollout, mut sites, mut steps, _) = self
            .fleet
            .db
            .rollout(id)
            .await?
            .ok_or(ActionError::NotFound(id))?;
        let before = (rollout.clone(), sites.clone(), steps.clone());
        let now = Utc::now();
        let conflict = |m: String| Err(ActionError::Conflict(m));
        let detail: String;
        match &action {
            Action::Pause => {
                if rollout.state != "running" {
                    return conflict(format!(
                        "rollout {id} is {}; only a running rollout can be paused",
                        rollout.state
                    ));
                }
                rollout.state = "paused".into();
                rollout.reason = Some(format!("paused by {actor}"));
                detail = "no new site starts; sites under way finish".into();
            }
            Action::Resume => {
                if rollout.state != "paused" {
                    return conflict(format!(
                        "rollout {id} is {}; only a paused rollout can be resumed",
                        rollout.state
                    ));
                }
                rollout.state = "running".into();
                rollout.reason = None;
                rollout.acknowledged_failures = failed_sites(&sites);
                detail = format!(
                    "{} failed sites acknowledged",
                    rollout.acknowledged_failures
                );
            }
            Action::Cancel => {
                if !matches!(rollout.state.as_str(), "running" | "paused") {
                    return conflict(format!(
                        "rollout {id} is {}; it cannot be cancelled",
                        rollout.state
                    ));
                }
                rollout.state = "cancelled".into();
                rollout.reason = Some(format!("cancelled by {actor}"));
                for step in steps
                    .iter_mut()
                    .filter(|s| matches!(s.state.as_str(), "pending" | "review"))
                {
                    step.state = "cancelled".into();
                    step.message = Some(format!("cancelled by {actor}"));
                }
                for site in sites
                    .iter_mut()
                    .filter(|s| matches!(s.state.as_str(), "waiting" | "scheduled" | "failed"))
                {
                    site.state = "cancelled".into();
                    site.message = Some(format!("cancelled by {actor}"));
                    site.finished_at = Some(now);
                }
                detail = "nothing new starts; running installs finish".into();
            }
            Action::Retry => {
                let failed: Vec<String> = sites
                    .iter()
                    .filter(|s| {
                        matches!(
                            s.state.as_str(),
                            "failed" | "rolled_back" | "rollback_failed"
                        )
                    })
                    .map(|s| s.site.clone())
                    .collect();
                let installs: HashMap<String, CommandInstall> = self
                    .fleet
                    .db
                    .rollout_installs(id)
                    .await?
                    .into_iter()
                    .map(|i| (i.command_id.clone(), i))
                    .collect();
                let running: Vec<String> = steps
                    .iter()
                    .filter(|s| failed.contains(&s.site))
                    .filter(|s| {
                        active_step(s)
                            || s.command_id
                                .as_ref()
                                .and_then(|c| installs.get(c))
                                .is_some_and(|i| i.state == "running")
                    })
                    .map(|s| format!("{} on {}", s.module, s.server_id))
                    .collect();
                if !running.is_empty() {
                    return conflict(format!(
                        "{} still running; retry once {} ended",
                        running.join(", "),
                        if running.len() == 1 {
                            "it has"
                        } else {
                            "they have"
                        }
                    ));
                }
                if failed.is_empty()
                    || !matches!(rollout.state.as_str(), "running" | "paused" | "failed")
                {
                    return conflict(format!(
                        "rollout {id} ({}) has no failed site to retry",
                        rollout.state
                    ));
                }
                for site in sites.iter_mut().filter(|s| failed.contains(&s.site)) {
                    site.state = "scheduled".into();
                    site.message = Some(format!("retried by {actor}"));
                    site.planned_start = None;
                    site.planned_end = None;
                    site.notice_sent_at = None;
                    site.notice_result = None;
                    site.started_at = None;
                    site.finished_at = None;
                }
                for step in steps
                    .iter_mut()
                    .filter(|s| failed.contains(&s.site) && !DONE.contains(&s.state.as_str()))
                {
                    step.state = "pending".into();
                    step.attempts = 0;
                    step.next_attempt_at = None;
                    step.command_id = None;
                    step.rollback_command_id = None;
                    step.message = Some(format!("retried by {actor}"));
                    step.finished_at = None;
                }
                rollout.state = "running".into();
                rollout.reason = None;
                rollout.finished_at = None;
                rollout.acknowledged_failures = 0;
                detail = format!("sites {}", failed.join(", "));
            }
            Action::Exclude(server) => {
                if !steps.iter().any(|s| &s.server_id == server) {
                    return conflict(format!("server {server} is not part of rollout {id}"));
                }
                if !matches!(rollout.state.as_str(), "running" | "paused") {
                    return conflict(format!(
                        "rollout {id} is {}; nothing to exclude",
                        rollout.state
                    ));
                }
                // An offline server's orders under way are abandoned too:
                // nothing waits for a server that may never come back.
                let offline = !self
                    .fleet
                    .db
                    .server(server)
                    .await?
                    .is_some_and(|s| s.online);
                let mut n = 0;
                for step in steps.iter_mut().filter(|s| &s.server_id == server) {
                    let abandoned = offline && (active_step(step) || step.state == "rolling_back");
                    if matches!(step.state.as_str(), "pending" | "review") || abandoned {
                        step.state = "excluded".into();
                        step.message = Some(if abandoned {
                            format!("abandoned by {actor} while the server was offline")
                        } else {
                            format!("excluded by {actor}")
                        });
                        n += 1;
                    }
                }
                detail = format!("server {server}: {n} modules left out");
            }
            Action::RollbackSite(site) => {
                let Some(record) = sites.iter_mut().find(|s| &s.site == site) else {
                    return conflict(format!("site {site} is not part of rollout {id}"));
                };
                if !matches!(record.state.as_str(), "failed" | "cancelled" | "succeeded") {
                    return conflict(format!(
                        "site {site} is {}; only a failed, cancelled or finished site can be rolled back",
                        record.state
                    ));
                }
                record.state = "rolling_back".into();
                record.message = Some(format!("rolled back by {actor}"));
                record.finished_at = None;
                // The engine's next pass finds what reached the new version.
                for step in steps
                    .iter_mut()
                    .filter(|s| &s.site == site && matches!(s.state.as_str(), "pending" | "review"))
                {
                    step.state = "cancelled".into();
                }
                if rollout.state == "succeeded" {
                    rollout.state = "failed".into();
                }
                if rollout.finished_at.is_some() {
                    rollout.finished_at = None;
                    rollout.reason = Some(format!("site {site} rolled back by {actor}"));
                }
                detail = format!("site {site}");
            }
        }
        let changes = RolloutChanges {
            rollout: (rollout != before.0).then_some(rollout),
            sites: sites
                .into_iter()
                .filter(|s| !before.1.contains(s))
                .collect(),
            steps: steps
                .into_iter()
                .filter(|s| !before.2.contains(s))
                .collect(),
            log: vec![(actor.to_owned(), action.name().to_owned(), detail)],
        };
        self.fleet.db.save_rollout(id, now, &changes).await?;
        self.fleet.rollout_changed(id);
        // Act on it now rather than at the next tick.
        if let Err(e) = self.pass().await {
            tracing::error!("rollout engine: {e}");
        }
        Ok(())
    }
}

fn failed_sites(sites: &[RolloutSiteRecord]) -> i64 {
    i64::try_from(
        sites
            .iter()
            .filter(|s| FAILED_SITE.contains(&s.state.as_str()))
            .count(),
    )
    .unwrap_or(i64::MAX)
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
            step.state = "pending".into();
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
            step.state = "failed".into();
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

/// One pass over one rollout: decisions in memory, written by the caller.
struct Pass<'a> {
    ctx: &'a Context,
    strategy: &'a Strategy,
    rollout: RolloutRecord,
    sites: Vec<RolloutSiteRecord>,
    steps: Vec<RolloutStepRecord>,
    before: (
        RolloutRecord,
        Vec<RolloutSiteRecord>,
        Vec<RolloutStepRecord>,
    ),
    installs: HashMap<String, CommandInstall>,
    in_flight: &'a HashSet<String>,
    estimates: Estimates,
    log: Vec<(String, String, String)>,
    jobs: Vec<Job>,
    /// (site, body, url)
    notices: Vec<(String, serde_json::Value, String)>,
}

impl<'a> Pass<'a> {
    fn new(
        ctx: &'a Context,
        strategy: &'a Strategy,
        rollout: RolloutRecord,
        sites: Vec<RolloutSiteRecord>,
        steps: Vec<RolloutStepRecord>,
        installs: Vec<CommandInstall>,
        in_flight: &'a HashSet<String>,
    ) -> Pass<'a> {
        let estimates = Estimates::new(
            &ctx.history,
            super::strategy::seconds(strategy.default_install_seconds),
        );
        Pass {
            ctx,
            strategy,
            before: (rollout.clone(), sites.clone(), steps.clone()),
            rollout,
            sites,
            steps,
            installs: installs
                .into_iter()
                .map(|i| (i.command_id.clone(), i))
                .collect(),
            in_flight,
            estimates,
            log: Vec::new(),
            jobs: Vec::new(),
            notices: Vec::new(),
        }
    }

    fn say(&mut self, action: &str, detail: String) {
        self.log.push((ENGINE.into(), action.into(), detail));
    }

    fn finish(
        self,
    ) -> (
        RolloutChanges,
        Vec<Job>,
        Vec<(String, serde_json::Value, String)>,
    ) {
        let (r, sites, steps) = self.before;
        let changes = RolloutChanges {
            rollout: (self.rollout != r).then_some(self.rollout),
            sites: self
                .sites
                .into_iter()
                .filter(|s| !sites.contains(s))
                .collect(),
            steps: self
                .steps
                .into_iter()
                .filter(|s| !steps.contains(s))
                .collect(),
            log: self.log,
        };
        (changes, self.jobs, self.notices)
    }

    fn calendar(&self, site: &str) -> Calendar {
        self.ctx
            .calendars
            .get(site)
            .cloned()
            .unwrap_or_else(Calendar::always)
    }

    fn advance(&mut self) {
        self.follow_orders();
        for i in 0..self.sites.len() {
            self.advance_site(i);
        }
        self.advance_rollout();
    }

    /// Reads what became of the installs and restores this rollout ordered.
    fn follow_orders(&mut self) {
        let now = self.ctx.now;
        let stuck_after = super::strategy::seconds(self.strategy.failure.stuck_after_seconds);
        let may_retry = matches!(self.rollout.state.as_str(), "running" | "paused");
        for i in 0..self.steps.len() {
            let step = &self.steps[i];
            let rollback = step.state == "rolling_back";
            let command = if rollback {
                &step.rollback_command_id
            } else {
                &step.command_id
            };
            let Some(command) = command.clone() else {
                continue;
            };
            if !(rollback || matches!(step.state.as_str(), "starting" | "running")) {
                continue;
            }
            let install = self.installs.get(&command).cloned();
            let mut log = Vec::new();
            let step = &mut self.steps[i];
            match install {
                Some(install) if install.state == "running" => {
                    let last = install.last_event_at.unwrap_or(install.started_at);
                    if !rollback {
                        step.state = "running".into();
                    }
                    step.message = Some(match &install.phase {
                        Some(phase) => phase.clone(),
                        None => "installing".into(),
                    });
                    if now - last > stuck_after {
                        let cause = format!(
                            "stuck: no progress for {} s (last in phase {})",
                            (now - last).num_seconds(),
                            install.phase.as_deref().unwrap_or("-")
                        );
                        step.state = if rollback {
                            "rollback_failed"
                        } else {
                            "failed"
                        }
                        .into();
                        step.finished_at = Some(now);
                        step.message = Some(cause.clone());
                        log.push((
                            ENGINE.into(),
                            "stuck".into(),
                            format!("{} on {}: {cause}", step.module, step.server_id),
                        ));
                    }
                }
                Some(install) if install.state == "succeeded" => {
                    step.state = if rollback { "rolled_back" } else { "succeeded" }.into();
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
                Some(install) => {
                    let cause = format!(
                        "failed{}: {}",
                        install
                            .phase
                            .as_deref()
                            .map(|p| format!(" in phase {p}"))
                            .unwrap_or_default(),
                        install.message.as_deref().unwrap_or("no message")
                    );
                    if rollback {
                        step.state = "rollback_failed".into();
                        step.finished_at = Some(now);
                        step.message = Some(cause.clone());
                        log.push((
                            ENGINE.into(),
                            "rollback_failed".into(),
                            format!("{} on {}: {cause}", step.module, step.server_id),
                        ));
                    } else if install
                        .message
                        .as_deref()
                        .is_some_and(|m| m.contains(DATABASE_REVIEW))
                    {
                        // A customized database: nothing runs by itself. The
                        // step waits for the guided upgrade and asks again.
                        if step.state != "review" {
                            log.push((
                                ENGINE.into(),
                                "database_review".into(),
                                format!(
                                    "{} on {}: the database is customized; waiting for a database review",
                                    step.module, step.server_id
                                ),
                            ));
                        }
                        step.state = "review".into();
                        step.command_id = None;
                        step.attempts = (step.attempts - 1).max(0);
                        step.next_attempt_at = Some(now + REVIEW_RECHECK);
                        step.message = Some(format!(
                            "waiting for a database review: {}",
                            install.message.as_deref().unwrap_or_default()
                        ));
                    } else {
                        let cause = match &install.rollback_error {
                            Some(e) => format!("{cause}; its own rollback failed too: {e}"),
                            None => cause,
                        };
                        retry_or_fail(step, self.strategy, now, &cause, may_retry, &mut log);
                        step.command_id = if step.state == "pending" {
                            None
                        } else {
                            step.command_id.clone()
                        };
                    }
                }
                None if self.in_flight.contains(&command) => {}
                None => {
                    // Accepted, or ordered by a controller that stopped before
                    // it heard back, and never reported. Agents report what
                    // they are doing when they reconnect: once a server has
                    // been back for a while since the order, look at what it
                    // has. Without any word for too long, it is stuck.
                    let ordered = step.ordered_at.or(step.started_at).unwrap_or(now);
                    let server = step.server_id.clone();
                    let module = step.module.clone();
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
                            let step = &mut self.steps[i];
                            step.state = if rollback {
                                "rollback_failed"
                            } else {
                                "failed"
                            }
                            .into();
                            step.finished_at = Some(now);
                            step.message = Some(cause.clone());
                            log.push((
                                ENGINE.into(),
                                "stuck".into(),
                                format!("{module} on {server}: {cause}"),
                            ));
                        }
                        self.log.extend(log);
                        continue;
                    }
                    let installed = self.ctx.servers.get(&server).and_then(|s| {
                        s.modules
                            .iter()
                            .find(|m| m.name == module)
                            .and_then(|m| m.installed_version.clone())
                    });
                    let step = &mut self.steps[i];
                    if installed.is_some() && installed == target {
                        step.state = if rollback { "rolled_back" } else { "succeeded" }.into();
                        step.finished_at = Some(now);
                        step.message = Some(format!(
                            "{module} is at {} on {server}",
                            installed.unwrap_or_default()
                        ));
                    } else if rollback {
                        step.rollback_command_id = None;
                        step.message = Some("the restore order was lost; ordering it again".into());
                    } else {
                        step.state = "pending".into();
                        step.command_id = None;
                        step.message = Some(
                            "the order was lost with the connection; ordering it again".into(),
                        );
                    }
                }
            }
            self.log.extend(log);
        }
    }

    /// Whether the step has an order or an install under way on its server
    /// (also one the rollout already gave up on as stuck).
    fn busy(&self, step: &RolloutStepRecord) -> bool {
        active_step(step)
            || (step.state == "failed"
                && step
                    .command_id
                    .as_ref()
                    .and_then(|c| self.installs.get(c))
                    .is_some_and(|i| i.state == "running"))
    }

    fn site_steps(&self, site: &str) -> impl Iterator<Item = &RolloutStepRecord> {
        self.steps.iter().filter(move |s| s.site == site)
    }

    fn advance_site(&mut self, i: usize) {
        let now = self.ctx.now;
        let running = self.rollout.state == "running";
        match self.sites[i].state.as_str() {
            "waiting" if running && self.sites[i].wave <= self.rollout.opened_wave => {
                self.sites[i].state = "scheduled".into();
                self.schedule(i);
            }
            "waiting" | "scheduled" if self.rollout.state == "cancelled" => {
                self.sites[i].state = "cancelled".into();
                self.sites[i].finished_at = Some(now);
            }
            "scheduled" if running => self.schedule(i),
            "running" => self.run_site(i),
            "rolling_back" => self.roll_back_site(i),
            _ => {}
        }
    }

    /// The site's whole update: (duration, downtime).
    fn site_estimate(&self, site: &str) -> (Duration, Duration) {
        let mut layers: std::collections::BTreeMap<i64, BTreeSet<String>> = Default::default();
        for step in self
            .site_steps(site)
            .filter(|s| !DONE.contains(&s.state.as_str()))
        {
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

    /// A site whose wave has come: warn its users, wait for its window.
    fn schedule(&mut self, i: usize) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        if self
            .site_steps(&site)
            .all(|s| DONE.contains(&s.state.as_str()))
        {
            let record = &mut self.sites[i];
            record.state = "succeeded".into();
            record.finished_at = Some(now);
            record.message =
                Some("nothing to install: every server is at the release's versions".into());
            self.say("site_succeeded", format!("site {site}: nothing to install"));
            return;
        }
        let calendar = self.calendar(&site);
        let (need, _) = self.site_estimate(&site);
        let lead = self
            .strategy
            .notice
            .as_ref()
            .map(|n| super::strategy::seconds(n.lead_seconds));
        let record = &self.sites[i];
        if let (Some(lead), None) = (lead, record.notice_sent_at) {
            // Users are warned `lead` ahead: the earliest start is that far
            // off. A start already planned stands while it still fits.
            let planned = record
                .planned_start
                .filter(|&p| p >= now && calendar.slot(p, need).is_some_and(|s| s.start == p));
            let Some(start) = planned.or_else(|| calendar.slot(now + lead, need).map(|s| s.start))
            else {
                self.no_window(i, need);
                return;
            };
            let slot = super::strategy::Slot { start, end: None };
            let record = &mut self.sites[i];
            record.planned_start = Some(slot.start);
            record.planned_end = Some(slot.start + need);
            if slot.start - lead <= now {
                record.notice_sent_at = Some(now);
                record.message = Some(format!(
                    "users warned; starts at {}",
                    calendar.local(slot.start)
                ));
                let modules: BTreeSet<String> =
                    self.site_steps(&site).map(|s| s.module.clone()).collect();
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
                    self.notices
                        .push((site.clone(), body, notice.webhook_url.clone()));
                }
                self.say(
                    "notice",
                    format!(
                        "site {site}: users warned of the maintenance from {} to {}",
                        calendar.local(slot.start),
                        calendar.local(slot.start + need)
                    ),
                );
            } else {
                record.message = Some(format!(
                    "users will be warned at {}; starts at {}",
                    calendar.local(slot.start - lead),
                    calendar.local(slot.start)
                ));
            }
            return;
        }
        if self.sites[i].planned_start.is_some_and(|p| p > now) {
            return;
        }
        match calendar.slot(now, need) {
            Some(slot) if slot.start == now => {
                let record = &mut self.sites[i];
                record.state = "running".into();
                record.started_at = Some(now);
                record.planned_start.get_or_insert(now);
                record.planned_end = Some(record.planned_end.unwrap_or(now + need).max(now + need));
                record.message = None;
                self.say(
                    "site_started",
                    format!("site {site}: wave {}", self.sites[i].wave),
                );
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
                    record.planned_start = Some(slot.start);
                    record.planned_end = Some(slot.start + need);
                    record.message = Some(message);
                }
            }
            None => self.no_window(i, need),
        }
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
        let failed: Vec<String> = self
            .site_steps(&site)
            .filter(|s| s.state == "failed")
            .map(|s| {
                format!(
                    "{} on {}: {}",
                    s.module,
                    s.server_id,
                    s.message.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !failed.is_empty() {
            if active {
                self.sites[i].message = Some(format!(
                    "{}; waiting for the running installs to end before {}",
                    failed.join("; "),
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
                        if matches!(step.state.as_str(), "pending" | "review") {
                            step.state = "cancelled".into();
                        }
                    }
                    self.sites[i].state = "rolling_back".into();
                    self.sites[i].message =
                        Some(format!("{}; rolling the site back", failed.join("; ")));
                    self.say(
                        "site_failed",
                        format!(
                            "site {site}: {}; rolling every server back",
                            failed.join("; ")
                        ),
                    );
                    self.roll_back_site(i);
                }
                SiteFailure::Stop => {
                    let record = &mut self.sites[i];
                    record.state = "failed".into();
                    record.finished_at = Some(now);
                    record.message = Some(format!(
                        "{}; waiting for an operator (retry or roll back)",
                        failed.join("; ")
                    ));
                    self.say(
                        "site_failed",
                        format!(
                            "site {site}: {}; stopped for an operator",
                            failed.join("; ")
                        ),
                    );
                }
            }
            return;
        }
        if self
            .site_steps(&site)
            .all(|s| DONE.contains(&s.state.as_str()))
        {
            let record = &mut self.sites[i];
            record.state = "succeeded".into();
            record.finished_at = Some(now);
            record.message = None;
            self.say("site_succeeded", format!("site {site}"));
            return;
        }
        let reviews: Vec<String> = self
            .site_steps(&site)
            .filter(|s| s.state == "review")
            .map(|s| format!("{} on {}", s.module, s.server_id))
            .collect();
        if !reviews.is_empty() {
            self.sites[i].message = Some(format!(
                "waiting for a database review of {}: the database is customized; run its scripts one by one (dashboard or portal)",
                reviews.join(", ")
            ));
        } else if self.sites[i]
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("waiting for a database review"))
        {
            self.sites[i].message = None;
        }
        if self.rollout.state == "cancelled" {
            if !active {
                let done = self
                    .site_steps(&site)
                    .filter(|s| s.state == "succeeded")
                    .count();
                let all = self.site_steps(&site).count();
                let record = &mut self.sites[i];
                record.state = "cancelled".into();
                record.finished_at = Some(now);
                record.message = Some(format!("cancelled with {done} of {all} modules updated"));
            }
            return;
        }
        self.start_ready(i);
    }

    /// Orders the installs whose modules' dependencies are done on every
    /// server of the site, one per server at a time.
    fn start_ready(&mut self, i: usize) {
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
                    .all(|s| DONE.contains(&s.state.as_str()))
            })
            .cloned()
            .collect();
        let mut busy: HashSet<String> = self
            .steps
            .iter()
            .filter(|s| active_step(s))
            .map(|s| s.server_id.clone())
            .collect();
        let planned_end = self.sites[i].planned_end;
        for j in 0..self.steps.len() {
            let step = &self.steps[j];
            if step.site != site
                || !matches!(step.state.as_str(), "pending" | "review")
                || step.next_attempt_at.is_some_and(|t| t > now)
            {
                continue;
            }
            if !deps
                .get(&step.module)
                .is_none_or(|d| d.is_subset(&done_modules))
            {
                let waiting: Vec<&String> = deps[&step.module].difference(&done_modules).collect();
                let message = format!(
                    "waits for {}",
                    waiting
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.steps[j].message = Some(message);
                continue;
            }
            let server = self.ctx.servers.get(&step.server_id);
            let module = server.and_then(|s| s.modules.iter().find(|m| m.name == step.module));
            let version = |v: &Option<String>| v.as_deref().and_then(|v| Version::parse(v).ok());
            let target = Version::parse(&step.to_version).ok();
            let message = match (server, module) {
                (None, _) => Some("the server is no longer known to the controller".to_owned()),
                (Some(s), _) if !s.online => Some("waiting for the server to reconnect".to_owned()),
                (_, None) => Some("the server no longer reports this module".to_owned()),
                (_, Some(m)) if target.is_some() && version(&m.installed_version) >= target => {
                    let installed = m.installed_version.clone().unwrap_or_default();
                    let step = &mut self.steps[j];
                    step.state = "skipped".into();
                    step.finished_at = Some(now);
                    step.message = Some(format!("already at {installed}"));
                    continue;
                }
                (_, Some(m)) if target.is_some() && version(&m.pending_version) > target => {
                    // Agents keep only the newest published package.
                    let cause = format!(
                        "the server now has {} {} pending, newer than this release's {}; roll out the newer release",
                        step.module,
                        m.pending_version.clone().unwrap_or_default(),
                        step.to_version
                    );
                    let mut log = Vec::new();
                    let step = &mut self.steps[j];
                    step.attempts += 1;
                    retry_or_fail(step, self.strategy, now, &cause, false, &mut log);
                    self.log.extend(log);
                    continue;
                }
                (_, Some(m)) if m.pending_version.as_deref() != Some(step.to_version.as_str()) => {
                    Some(match (&m.download_state, &m.download_detail) {
                        (Some(state), Some(detail)) => {
                            format!("waiting for the package: download {state}: {detail}")
                        }
                        _ => format!(
                            "waiting for {} {} to download to the server",
                            step.module, step.to_version
                        ),
                    })
                }
                _ if busy.contains(&step.server_id) => {
                    Some("waiting for the server's current install".to_owned())
                }
                _ => None,
            };
            if let Some(message) = message {
                if self.steps[j].message.as_deref() != Some(&message) {
                    self.steps[j].message = Some(message);
                }
                continue;
            }
            let need = self.estimates.install(&step.module);
            match calendar.slot(now, need) {
                Some(slot) if slot.start == now => {}
                slot => {
                    let message = match slot {
                        Some(slot) => format!(
                            "waiting for the maintenance window opening at {}",
                            calendar.local(slot.start)
                        ),
                        None => "no maintenance window is long enough for this install".to_owned(),
                    };
                    self.steps[j].message = Some(message);
                    continue;
                }
            }
            let step = &mut self.steps[j];
            let command_id = self_command_id(&step.server_id, &step.module, now, step.attempts);
            step.state = "starting".into();
            step.attempts += 1;
            step.command_id = Some(command_id.clone());
            step.ordered_at = Some(now);
            step.next_attempt_at = None;
            step.started_at.get_or_insert(now);
            step.message = Some(format!("ordered (attempt {})", step.attempts));
            busy.insert(step.server_id.clone());
            self.jobs.push(Job {
                server: step.server_id.clone(),
                module: step.module.clone(),
                command_id,
                order: Order::Install {
                    sha256: None,
                    allow_downgrade: false,
                    version: Some(step.to_version.clone()),
                    planned_end,
                },
            });
        }
    }

    /// Restores the site's updated modules, the last layer first.
    fn roll_back_site(&mut self, i: usize) {
        let now = self.ctx.now;
        let site = self.sites[i].site.clone();
        // An install still running (one found stuck, say) ends first: the
        // agent is busy until then, and what to undo depends on how it ends.
        let running: Vec<String> = self
            .site_steps(&site)
            .filter(|s| s.state != "rolling_back" && self.busy(s))
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
        let failed_layer = self.site_steps(&site).any(|s| s.state == "rollback_failed");
        if failed_layer {
            for step in self.steps.iter_mut().filter(|s| {
                s.site == site && s.state == "rolling_back" && s.rollback_command_id.is_none()
            }) {
                step.state = "succeeded".into();
                step.message =
                    Some("not rolled back: a restore above it in the order failed".into());
            }
        }
        // Undo whatever reached the new version, by what the servers report.
        for j in 0..self.steps.len() {
            let step = &self.steps[j];
            if failed_layer
                || step.site != site
                || !matches!(step.state.as_str(), "succeeded" | "failed")
            {
                continue;
            }
            let installed = self
                .ctx
                .servers
                .get(&step.server_id)
                .and_then(|s| s.modules.iter().find(|m| m.name == step.module))
                .and_then(|m| m.installed_version.clone());
            // A succeeded install counts until the server reports the old
            // version again (its inventory may lag behind the result); a
            // failed one only if it got there after all (found stuck, then
            // finished).
            let finished_late = step
                .command_id
                .as_ref()
                .and_then(|c| self.installs.get(c))
                .is_some_and(|i| i.state == "succeeded");
            let updated = match step.state.as_str() {
                "succeeded" => installed.is_none() || installed != step.from_version,
                _ => finished_late || installed.as_ref() == Some(&step.to_version),
            };
            if updated && step.from_version.as_ref() != Some(&step.to_version) {
                let step = &mut self.steps[j];
                step.state = "rolling_back".into();
                step.rollback_command_id = None;
            }
        }
        let rolling: Vec<usize> = (0..self.steps.len())
            .filter(|&j| self.steps[j].site == site && self.steps[j].state == "rolling_back")
            .collect();
        if rolling.is_empty() {
            if self.site_steps(&site).any(|s| self.busy(s)) {
                return;
            }
            let failed: Vec<String> = self
                .site_steps(&site)
                .filter(|s| s.state == "rollback_failed")
                .map(|s| {
                    format!(
                        "{} on {}: {}",
                        s.module,
                        s.server_id,
                        s.message.as_deref().unwrap_or("")
                    )
                })
                .collect();
            let record = &mut self.sites[i];
            record.finished_at = Some(now);
            if failed.is_empty() {
                record.state = "rolled_back".into();
                record.message = Some("every server is back at the versions it had".into());
                self.say("site_rolled_back", format!("site {site}"));
            } else {
                record.state = "rollback_failed".into();
                record.message = Some(format!(
                    "the rollback failed: {}; an operator is needed",
                    failed.join("; ")
                ));
                self.say(
                    "site_rollback_failed",
                    format!("site {site}: {}", failed.join("; ")),
                );
            }
            return;
        }
        let top = rolling
            .iter()
            .map(|&j| self.steps[j].layer)
            .max()
            .unwrap_or(0);
        let mut busy: HashSet<String> = self
            .steps
            .iter()
            .filter(|s| active_step(s))
            .map(|s| s.server_id.clone())
            .collect();
        for j in rolling {
            let step = &self.steps[j];
            if step.layer != top
                || step.rollback_command_id.is_some()
                || step.next_attempt_at.is_some_and(|t| t > now)
            {
                continue;
            }
            let online = self
                .ctx
                .servers
                .get(&step.server_id)
                .is_some_and(|s| s.online);
            if !online || busy.contains(&step.server_id) {
                let message = if online {
                    "waiting for the server's current install"
                } else {
                    "waiting for the server to reconnect to roll back"
                };
                self.steps[j].message = Some(message.into());
                continue;
            }
            let Some(to) = step.from_version.clone() else {
                let step = &mut self.steps[j];
                step.state = "rollback_failed".into();
                step.message = Some("the version it had is unknown; restore it by hand".into());
                continue;
            };
            let step = &mut self.steps[j];
            let command_id = self_command_id(
                &step.server_id,
                &format!("{}-rollback", step.module),
                now,
                step.attempts,
            );
            step.rollback_command_id = Some(command_id.clone());
            step.ordered_at = Some(now);
            step.next_attempt_at = None;
            step.message = Some(format!("restoring {to}"));
            busy.insert(step.server_id.clone());
            self.jobs.push(Job {
                server: step.server_id.clone(),
                module: step.module.clone(),
                command_id,
                order: Order::Rollback { to: Some(to) },
            });
        }
    }

    fn advance_rollout(&mut self) {
        let now = self.ctx.now;
        let total = u32::try_from(self.sites.len()).unwrap_or(u32::MAX);
        let settled = |s: &RolloutSiteRecord| SETTLED.contains(&s.state.as_str());
        if self.rollout.state == "running" {
            let failed = failed_sites(&self.sites);
            let beyond =
                u32::try_from((failed - self.rollout.acknowledged_failures).max(0)).unwrap_or(0);
            if beyond > 0 && self.strategy.failure.tripped(beyond, total) {
                let reason = format!(
                    "{failed} of {total} sites failed, past the threshold ({}); no new site starts. Resume to go on, retry the failed sites, or cancel",
                    match (
                        self.strategy.failure.max_failed_sites,
                        self.strategy.failure.max_failed_percent
                    ) {
                        (None, None) => "any failed site".to_owned(),
                        (c, p) => [
                            c.map(|c| format!("at most {c} sites")),
                            p.map(|p| format!("at most {p}%"))
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(", "),
                    }
                );
                self.rollout.state = "paused".into();
                self.rollout.reason = Some(reason.clone());
                self.say("paused", reason);
            }
        }
        if self.rollout.state == "running" {
            let opened = self.rollout.opened_wave;
            let last_wave = self.sites.iter().map(|s| s.wave).max().unwrap_or(0);
            let opened_settled = self.sites.iter().filter(|s| s.wave <= opened).all(settled);
            if opened_settled && opened < last_wave {
                let next = opened + 1;
                let pause = super::strategy::seconds(self.strategy.waves.pause_seconds);
                if self.strategy.waves.gate == Gate::Manual {
                    self.rollout.opened_wave = next;
                    self.rollout.state = "paused".into();
                    let reason = format!("wave {next} is ready; resume to start it");
                    self.rollout.reason = Some(reason.clone());
                    self.say("gate", reason);
                } else if pause > Duration::zero() && self.rollout.wave_ready_at.is_none() {
                    self.rollout.wave_ready_at = Some(now + pause);
                    self.rollout.reason =
                        Some(format!("wave {next} starts in {} s", pause.num_seconds()));
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
        }
        let all_settled =
            self.sites.iter().all(settled) && !self.steps.iter().any(|s| self.busy(s));
        if all_settled && self.rollout.finished_at.is_none() {
            match self.rollout.state.as_str() {
                "running" | "paused"
                    if self.rollout.opened_wave
                        >= self.sites.iter().map(|s| s.wave).max().unwrap_or(0) =>
                {
                    let failed = self.sites.iter().filter(|s| s.state != "succeeded").count();
                    self.rollout.finished_at = Some(now);
                    if failed == 0 {
                        self.rollout.state = "succeeded".into();
                        self.rollout.reason = None;
                        self.say("succeeded", format!("{total} sites updated"));
                    } else {
                        self.rollout.state = "failed".into();
                        let reason = format!("{failed} of {total} sites did not update");
                        self.rollout.reason = Some(reason.clone());
                        self.say("failed", reason);
                    }
                }
                "cancelled" | "failed" => {
                    self.rollout.finished_at = Some(now);
                    self.say(
                        "finished",
                        format!(
                            "{}; the last running installs and restores ended",
                            self.rollout.state
                        ),
                    );
                }
                _ => {}
            }
        }
    }
}

/// A command id for a rollout's order: unique per server, module and
/// attempt, and unpredictable.
fn self_command_id(server: &str, module: &str, now: DateTime<Utc>, attempts: i64) -> String {
    let random = flotilla_proto::web::random_secret();
    format!(
        "rollout-{server}-{module}-{}-{attempts}-{}",
        now.timestamp_millis(),
        &random[..16]
    )
}

/// A reqwest error and its causes, without the URL, which may carry a token.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook>");
    }
    text
}
