//! The rollout engine: one task that moves every active rollout forward.
//!
//! The state machine lives in SQLite. Each pass reads a rollout's rows,
//! decides ([`super::decide`], pure), and writes what changed in one
//! transaction *before* ordering anything, so a controller killed at any
//! point resumes from the rows: an install ordered but not heard of is found
//! by its command id when the agent reports (agents resend their results on
//! reconnect), and a module already at its target version is never
//! installed twice.
//!
//! The engine is the only writer of rollout rows: new rollouts, operators'
//! actions and the outcomes of orders reach it through its inbox.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use chrono::Utc;
use flotilla_proto::domain::ServerId;
use flotilla_proto::link::DatabaseAnswer;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Answer, Context, Job, Notice, Ordered};
use super::strategy::{Schedule, Strategy};
use crate::db::{AuditRecord, Driver, RolloutChanges, RolloutRows};
use crate::fleet::{Fleet, FleetEvent, Order, OrderError};

pub use super::decide::{Action, ENGINE};

/// How often the engine looks at active rollouts when nothing wakes it.
/// With no active rollout it does not look at all.
const TICK: StdDuration = StdDuration::from_millis(500);

/// How often an idle engine looks for rollouts when other controllers
/// share the database.
const IDLE_LOOK: StdDuration = StdDuration::from_secs(2);

/// The least time between two passes that something woke: a burst of
/// fleet changes (a wave of installs ending, agents reconnecting) or of
/// orders' outcomes is one pass, not one each.
const COALESCE: StdDuration = StdDuration::from_millis(100);

/// Why an action or a new rollout was refused.
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
    Create {
        rows: Box<RolloutRows>,
        detail: String,
        reply: oneshot::Sender<Result<i64, ActionError>>,
    },
    Act {
        id: i64,
        action: Action,
        actor: String,
        reply: oneshot::Sender<Result<(), ActionError>>,
    },
    Ordered {
        rollout: i64,
        answer: Box<Answer>,
    },
    Noticed {
        rollout: i64,
        site: String,
        result: String,
    },
    /// Something the engine reads changed (a site's windows): pass now.
    Wake,
}

/// The handle the API holds.
#[derive(Debug, Clone)]
pub struct Rollouts {
    pub fleet: Arc<Fleet>,
    inbox: mpsc::Sender<Request>,
    /// Whether this controller drives the rollouts (always, alone on its
    /// database; the holder of the lock when several share one).
    driving: Arc<AtomicBool>,
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
            .dns_resolver(crate::releases::PublicOnly)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(certificates) = ca_pem
            .as_deref()
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(pem.as_bytes()).ok())
        {
            http = http.tls_certs_merge(certificates);
        }
        // Room for a wave of answers (a preflight of thousands of servers)
        // to queue while a batch of them is written: they are decided
        // together, a read of the rollout each batch.
        let (inbox, requests) = mpsc::channel(ANSWERS_AT_ONCE);
        let driving = Arc::new(AtomicBool::new(false));
        let engine = Engine {
            fleet: fleet.clone(),
            inbox: inbox.clone(),
            in_flight: HashSet::new(),
            active: true,
            http: http.build().unwrap_or_default(),
            driver: Driver::default(),
            driving: driving.clone(),
        };
        let task = tokio::spawn(engine.run(requests, stop));
        let rollouts = Rollouts {
            fleet,
            inbox,
            driving,
        };
        (rollouts, task)
    }

    /// Stores a new rollout, unless one of its servers has work in another
    /// unfinished rollout (a conflict naming them); returns its id.
    pub async fn create(&self, rows: RolloutRows, detail: String) -> Result<i64, ActionError> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Create {
            rows: Box::new(rows),
            detail,
            reply,
        })
        .await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Applies an operator's action; through the controller that drives
    /// the rollouts when it is another.
    pub async fn act(&self, id: i64, action: Action, actor: &str) -> Result<(), ActionError> {
        if let Some(relay) = self.fleet.relay()
            && !self.driving()
        {
            if let Some(done) = super::relayed::act(relay, &self.fleet.db, id, &action, actor).await
            {
                return done;
            }
            tracing::info!(
                rollout = id,
                "no controller drives the rollouts: acting here"
            );
        }
        self.act_here(id, action, actor).await
    }

    /// Whether this controller drives the rollouts now.
    pub fn driving(&self) -> bool {
        self.driving.load(Ordering::SeqCst)
    }

    /// [`Rollouts::act`] by this controller's engine.
    pub async fn act_here(&self, id: i64, action: Action, actor: &str) -> Result<(), ActionError> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Act {
            id,
            action,
            actor: actor.to_owned(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| shutting_down())?
    }

    /// Asks for a pass now, here and on the controller that drives the
    /// rollouts.
    pub async fn wake(&self) {
        if let Some(relay) = self.fleet.relay() {
            relay.note("w".to_owned());
        }
        self.wake_here().await;
    }

    /// Asks this controller's engine for a pass now.
    pub async fn wake_here(&self) {
        let _ = self.ask(Request::Wake).await;
    }

    async fn ask(&self, request: Request) -> Result<(), ActionError> {
        self.inbox.send(request).await.map_err(|_| shutting_down())
    }
}

fn shutting_down() -> ActionError {
    ActionError::Conflict("the controller is shutting down".into())
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
    /// The lock that makes this controller the one that drives rollouts.
    driver: Driver,
    driving: Arc<AtomicBool>,
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

/// A pass longer than this is logged with where its time went.
const SLOW_PASS: StdDuration = StdDuration::from_millis(200);

/// The most answers decided together.
const ANSWERS_AT_ONCE: usize = 5_000;

/// When the next pass runs once something woke the engine: as planned if
/// sooner, otherwise as soon as [`COALESCE`] after the last one allows.
fn soon(due: Option<Instant>, last_pass: Instant) -> Option<Instant> {
    let at = (last_pass + COALESCE).max(Instant::now());
    Some(due.map_or(at, |due| due.min(at)))
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
                Woken::Request(Request::Ordered { rollout, answer }) => {
                    // Answers come in waves (a preflight asks every server
                    // of every starting site at once): those already
                    // queued are decided together, over one read.
                    let mut answers = vec![(rollout, answer)];
                    let mut next = None;
                    while answers.len() < ANSWERS_AT_ONCE {
                        match requests.try_recv() {
                            Ok(Request::Ordered { rollout, answer }) => {
                                answers.push((rollout, answer))
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.ordered(answers).await;
                    if let Some(request) = next {
                        self.handle(request).await;
                    }
                    due = soon(due, last_pass);
                }
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
                    due = match (self.active, self.fleet.db.shared()) {
                        (true, _) => Some(last_pass + TICK),
                        // Another controller's new rollout is told by a
                        // notification, which a lost connection loses: look.
                        (false, true) => Some(last_pass + IDLE_LOOK),
                        (false, false) => None,
                    };
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Create {
                rows,
                detail,
                reply,
            } => {
                let _ = reply.send(self.create(*rows, &detail).await);
            }
            Request::Act {
                id,
                action,
                actor,
                reply,
            } => {
                let _ = reply.send(self.act(id, action, &actor).await);
            }
            Request::Ordered { rollout, answer } => self.ordered(vec![(rollout, answer)]).await,
            Request::Noticed {
                rollout,
                site,
                result,
            } => {
                if let Err(e) = self.noticed(rollout, &site, &result).await {
                    tracing::error!(rollout, "cannot record a notice's outcome: {e}");
                }
            }
            Request::Wake => {}
        }
    }

    async fn create(&mut self, rows: RolloutRows, detail: &str) -> Result<i64, ActionError> {
        let id = match self.fleet.db.create_rollout(&rows, detail).await? {
            Ok(id) => id,
            Err(clashes) => {
                let clashes: BTreeSet<String> = clashes
                    .into_iter()
                    .map(|(server, id, release)| {
                        format!("{server} (rollout {id}, release {release})")
                    })
                    .collect();
                return Err(ActionError::Conflict(format!(
                    "servers already part of an unfinished rollout: {}; wait for it, cancel it or exclude them",
                    clashes.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        };
        tracing::info!(rollout = id, release = %rows.0.release, "rollout started by {}", rows.0.created_by);
        self.fleet.rollout_changed(id);
        // The controller that drives rollouts may be another, and idle.
        if let Some(relay) = self.fleet.relay() {
            relay.note("w".to_owned());
        }
        Ok(id)
    }

    /// What a pass over these rollouts needs to know of the fleet: their
    /// servers, their sites' calendars, past installs for estimates.
    async fn context(&self, rollouts: &[RolloutRows]) -> sqlx::Result<Context> {
        let db = &self.fleet.db;
        let steps = || rollouts.iter().flat_map(|(_, _, steps)| steps.iter());
        let servers: BTreeSet<&str> = steps().map(|step| step.server_id.as_str()).collect();
        let modules: BTreeSet<&str> = steps().map(|step| step.module.as_str()).collect();
        let sites: BTreeSet<&str> = rollouts
            .iter()
            .flat_map(|(_, sites, _)| sites.iter().map(|site| site.site.as_str()))
            .collect();
        let servers = db
            .rollout_servers(Some(&servers.into_iter().collect::<Vec<_>>()))
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
    /// A slow pass (over [`SLOW_PASS`]) is logged with where its time went.
    async fn pass(&mut self) -> sqlx::Result<()> {
        let started = Instant::now();
        let mut rollouts: Vec<RolloutRows> = Vec::new();
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
        if !self.drive().await {
            // Another controller drives them: this one tells its own
            // agents which rollout holds them, and nothing else.
            self.fleet.set_holds(holds_of(&rollouts));
            return Ok(());
        }
        let read = started.elapsed();
        let ctx = self.context(&rollouts).await?;
        let context = started.elapsed() - read;
        let (mut deciding, mut saving, mut jobs) = (StdDuration::ZERO, StdDuration::ZERO, 0);
        let holds = holds_of(&rollouts);
        for rows in rollouts {
            let id = rows.0.id;
            let Some(strategy) = strategy_of(&rows) else {
                continue;
            };
            let at = Instant::now();
            let installs = self.fleet.db.rollout_installs(id).await?;
            let decisions = decide::pass(&ctx, &strategy, &rows, &installs, &self.in_flight);
            deciding += at.elapsed();
            let at = Instant::now();
            // The lock may have gone since the pass began.
            if self.fleet.db.shared() && !self.drive().await {
                return Ok(());
            }
            self.save(id, ctx.now, &decisions.changes).await?;
            saving += at.elapsed();
            jobs += decisions.jobs.len();
            for job in decisions.jobs {
                self.send(id, job);
            }
            for notice in decisions.notices {
                self.notify(id, notice);
            }
        }
        self.fleet.set_holds(holds);
        let took = started.elapsed();
        if took > SLOW_PASS {
            tracing::info!(
                took_ms = took.as_millis(),
                read_ms = read.as_millis(),
                context_ms = context.as_millis(),
                decide_ms = deciding.as_millis(),
                save_ms = saving.as_millis(),
                orders = jobs,
                "slow rollout pass"
            );
        }
        Ok(())
    }

    /// Whether this controller drives the rollouts: holds (or takes) the
    /// lock; says so when that changes.
    async fn drive(&mut self) -> bool {
        let driving = self.driver.hold(&self.fleet.db).await;
        let was = self.driving.swap(driving, Ordering::SeqCst);
        if driving != was && self.fleet.db.shared() {
            if driving {
                tracing::info!("this controller now drives the rollouts");
            } else {
                tracing::warn!("this controller no longer drives the rollouts");
            }
        }
        driving
    }

    /// Writes a decision's changes, if any, and tells live views.
    async fn save(
        &self,
        id: i64,
        now: chrono::DateTime<Utc>,
        changes: &RolloutChanges,
    ) -> sqlx::Result<()> {
        if !changes.is_empty() {
            self.fleet.db.save_rollout(id, now, changes).await?;
            self.fleet.rollout_changed(id);
        }
        Ok(())
    }

    /// Sends an order in the background; its outcome comes back to the inbox.
    fn send(&mut self, rollout: i64, job: Job) {
        self.in_flight.insert(job.command_id.clone());
        let fleet = self.fleet.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let kind = Ordered::of(&job.order);
            let mut report = None;
            let result = match job.order {
                Order::Doctor { preflight, modules } => {
                    let asked = preflight.then_some(modules);
                    fleet.ask_doctor(&job.server, asked).await.map(|found| {
                        report = Some(found);
                        "answered".to_owned()
                    })
                }
                order @ (Order::DatabaseDiscard { .. } | Order::DatabaseRestore { .. }) => fleet
                    .ask_database(&job.server, &job.module, order)
                    .await
                    .and_then(|answer| database_answer(&job.server, answer)),
                order => fleet
                    .order_as(&job.server, &job.module, order, job.command_id.clone())
                    .await
                    .map(|(_, message)| message),
            };
            let answer = Answer {
                server: job.server,
                module: job.module,
                command_id: job.command_id,
                kind,
                result,
                report,
            };
            let _ = inbox
                .send(Request::Ordered {
                    rollout,
                    answer: Box::new(answer),
                })
                .await;
        });
    }

    /// Posts a site's notice to the webhook in the background.
    fn notify(&self, rollout: i64, notice: Notice) {
        let http = self.http.clone();
        let inbox = self.inbox.clone();
        tokio::spawn(async move {
            let mut result = String::new();
            for attempt in 1..=3u32 {
                match http.post(&notice.url).json(&notice.body).send().await {
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
            let site = notice.site;
            let _ = inbox
                .send(Request::Noticed {
                    rollout,
                    site,
                    result,
                })
                .await;
        });
    }

    /// Records what agents answered to orders, each rollout's answers over
    /// one read of its rows.
    async fn ordered(&mut self, answers: Vec<(i64, Box<Answer>)>) {
        let started = Instant::now();
        let count = answers.len();
        let mut by_rollout: BTreeMap<i64, Vec<Box<Answer>>> = BTreeMap::new();
        for (rollout, answer) in answers {
            self.in_flight.remove(&answer.command_id);
            by_rollout.entry(rollout).or_default().push(answer);
        }
        for (rollout, answers) in by_rollout {
            if let Err(e) = self.ordered_in(rollout, &answers).await {
                tracing::error!(
                    rollout,
                    "cannot record {} orders' outcomes: {e}",
                    answers.len()
                );
            }
        }
        let took = started.elapsed();
        if took > SLOW_PASS {
            tracing::info!(
                took_ms = took.as_millis(),
                answers = count,
                "slow recording of orders' outcomes"
            );
        }
    }

    async fn ordered_in(&mut self, id: i64, answers: &[Box<Answer>]) -> sqlx::Result<()> {
        // Another controller took over the rollouts: it reads what became
        // of the orders from the installs.
        if self.fleet.db.shared() && !self.drive().await {
            return Ok(());
        }
        let Some(rows) = self.fleet.db.rollout_state(id).await? else {
            return Ok(());
        };
        let strategy = strategy_of(&rows).unwrap_or_default();
        let now = Utc::now();
        let all: Vec<&Answer> = answers.iter().map(Box::as_ref).collect();
        let Some(changes) = decide::ordered_all(&rows, &strategy, now, &all) else {
            return Ok(());
        };
        self.save(id, now, &changes).await?;
        for answer in all {
            if answer.kind == Ordered::DatabaseRestore {
                self.audit_restore(id, &rows, answer, now).await?;
            }
        }
        Ok(())
    }

    /// A database restore a rollout ordered goes to the audit trail under
    /// the name of whoever decided it, with what it discarded.
    async fn audit_restore(
        &self,
        id: i64,
        rows: &RolloutRows,
        answer: &Answer,
        now: chrono::DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let decided_by = rows
            .2
            .iter()
            .find(|s| s.server_id == answer.server && s.module == answer.module)
            .and_then(|s| s.database_decided_by.clone())
            .unwrap_or_else(|| decide::ENGINE.to_owned());
        let (outcome, detail) = match &answer.result {
            Ok(discarded) => (200, format!("restored; discarded {discarded}")),
            // It may have happened: the agent's database history says.
            Err(e @ OrderError::NoAnswer(_)) => (
                504,
                format!(
                    "outcome unknown: {e}; the database's history on the server records a restore"
                ),
            ),
            Err(e) => (502, format!("not restored: {e}")),
        };
        let entry = AuditRecord {
            seq: 0,
            at: now,
            actor: decided_by,
            action: format!("database restore (rollout {id})"),
            target: format!(
                "/api/v1/servers/{}/modules/{}/database",
                answer.server, answer.module
            ),
            outcome,
            source: "rollout engine".into(),
            detail: Some(detail),
        };
        self.fleet.db.audit(&entry).await
    }

    async fn noticed(&mut self, id: i64, site: &str, result: &str) -> sqlx::Result<()> {
        if self.fleet.db.shared() && !self.drive().await {
            return Ok(());
        }
        let Some(rows) = self.fleet.db.rollout_state(id).await? else {
            return Ok(());
        };
        match decide::noticed(&rows, site, result) {
            Some(changes) => self.save(id, Utc::now(), &changes).await,
            None => Ok(()),
        }
    }

    async fn act(&mut self, id: i64, action: Action, actor: &str) -> Result<(), ActionError> {
        // Only the driver writes rollout rows; it is asked first
        // (`Rollouts::act`), and this controller may take the lock if
        // nobody holds it.
        if self.fleet.db.shared() && !self.drive().await {
            return Err(ActionError::Conflict(
                "another controller drives the rollouts and did not take the action; try again"
                    .into(),
            ));
        }
        let rows = self
            .fleet
            .db
            .rollout_state(id)
            .await?
            .ok_or(ActionError::NotFound(id))?;
        let ctx = self.context(std::slice::from_ref(&rows)).await?;
        let installs = self.fleet.db.rollout_installs(id).await?;
        let changes =
            decide::act(&ctx, &rows, &installs, &action, actor).map_err(ActionError::Conflict)?;
        self.save(id, ctx.now, &changes).await?;
        // Act on it now rather than at the next tick.
        if let Err(e) = self.pass().await {
            tracing::error!("rollout engine: {e}");
        }
        Ok(())
    }
}

/// A database command's answer, as an order's result: what a restore would
/// discard (or did), or why not.
fn database_answer(server: &str, answer: DatabaseAnswer) -> Result<String, OrderError> {
    let server = server.to_owned();
    match answer {
        DatabaseAnswer::Discard(d) | DatabaseAnswer::Restored(d) => Ok(d.summary()),
        DatabaseAnswer::Refused {
            status: 404,
            message,
            ..
        } => Err(OrderError::NotFound { server, message }),
        DatabaseAnswer::Refused { message, .. } => Err(OrderError::Refused { server, message }),
        other => Err(OrderError::Refused {
            server,
            message: format!("unexpected answer: {other:?}"),
        }),
    }
}

/// A rollout's stored strategy; `None` (logged) when it does not parse.
fn strategy_of(rows: &RolloutRows) -> Option<Strategy> {
    serde_json::from_str(&rows.0.strategy)
        .inspect_err(|e| {
            tracing::error!(
                rollout = rows.0.id,
                "the stored strategy does not parse: {e}"
            )
        })
        .ok()
}

/// A reqwest error and its causes, without the URL, which may carry a token.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = flotilla_proto::process::error_chain(e);
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook>");
    }
    text
}

/// Which rollout holds each server of `rollouts`, in words.
fn holds_of(rollouts: &[RolloutRows]) -> HashMap<ServerId, String> {
    let mut holds = HashMap::new();
    for rows in rollouts {
        let (id, release) = (rows.0.id, &rows.0.release);
        holds.extend(
            decide::holds(rows)
                .into_iter()
                .map(|server| (server, format!("rollout {id} (release {release})"))),
        );
    }
    holds
}
