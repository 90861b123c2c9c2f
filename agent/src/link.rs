//! The agent's side of the gRPC stream to the controller.
//!
//! The agent dials out, says hello, sends its full inventory once welcomed,
//! then its changes as the scanner finds them, and a heartbeat at the interval
//! the controller asked for. When the controller is away the agent retries
//! with exponential backoff and jitter, and keeps working meanwhile: scans,
//! `status.xml` and the portal do not depend on the link. This is the only
//! module of the agent that sees wire types.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use flotilla_proto::PROTOCOL_VERSION;
use flotilla_proto::link::{self, AgentCommand, ToAgent};
use flotilla_proto::process::error_chain;
use flotilla_proto::v1::{
    self, AgentMessage, ControllerMessage, Heartbeat, Hello, agent_link_client::AgentLinkClient,
    agent_message::Body, controller_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;
use tonic::{Code, Status};

use crate::install::EventKind;
use crate::install::hooks::Stream;
use crate::installs;
use crate::inventory::{Inventory, InventoryChange};
use crate::state::{Agent, LinkStatus};
use crate::state::{InstallNotice, InstallView};

/// How a session with the controller ended.
#[derive(Debug)]
enum SessionEnd {
    /// The agent is shutting down.
    Shutdown,
    /// The stream broke or was closed after a welcome: reconnect promptly.
    Lost(String),
}

/// Why a session could not be established.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("controller refused this agent: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
}

/// Keeps a session with the controller open until `stop` is cancelled.
pub async fn run(agent: Arc<Agent>, stop: CancellationToken) {
    let settings = &agent.settings;
    let new_backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(settings.reconnect_min)
            .with_max_delay(settings.reconnect_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    // Which of the controllers is tried: the next one after a failure, so
    // that the agents of a controller that died go to the others.
    let mut turn = 0;
    loop {
        let controller = &settings.controller_urls[turn % settings.controller_urls.len()];
        let ended = session(&agent, controller, &stop).await;
        if !matches!(
            ended,
            Ok(SessionEnd::Shutdown) | Err(SessionError::Refused(_))
        ) {
            turn += 1;
        }
        match ended {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Lost(why)) => {
                tracing::warn!(controller = %controller, "lost the controller: {why}");
                agent.link.send_replace(LinkStatus::Disconnected {
                    since: Utc::now(),
                    error: why,
                });
                // The session was healthy: start the backoff over.
                backoff = new_backoff();
            }
            Err(SessionError::Refused(message)) => {
                tracing::error!(controller = %controller, "controller refused this agent: {message}");
                agent.link.send_replace(LinkStatus::Refused {
                    since: Utc::now(),
                    message,
                });
            }
            Err(SessionError::Unreachable(why)) => {
                tracing::warn!(controller = %controller, "cannot reach the controller: {why}");
                agent.link.send_if_modified(|status| match status {
                    LinkStatus::Disconnected { error, .. } => {
                        *error = why;
                        true
                    }
                    _ => {
                        *status = LinkStatus::Disconnected {
                            since: Utc::now(),
                            error: why,
                        };
                        true
                    }
                });
            }
        }
        let delay = backoff.next().unwrap_or(settings.reconnect_max);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn session(
    agent: &Arc<Agent>,
    controller: &str,
    stop: &CancellationToken,
) -> Result<SessionEnd, SessionError> {
    let settings = &agent.settings;
    let unreachable = |e: &dyn std::fmt::Display| SessionError::Unreachable(e.to_string());
    let (endpoint, identity) =
        crate::dial::endpoint(settings, controller).map_err(|e| unreachable(&e))?;
    let channel = tokio::select! {
        _ = stop.cancelled() => return Ok(SessionEnd::Shutdown),
        channel = endpoint.connect() => channel.map_err(|e| unreachable(&error_chain(&e)))?,
    };
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(flotilla_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(flotilla_proto::MAX_MESSAGE_BYTES);
    let (outbound, outbound_rx) = mpsc::channel::<AgentMessage>(64);
    outbound
        .send(message(Body::Hello(hello(agent))))
        .await
        .map_err(|e| unreachable(&e))?;
    let opened = tokio::select! {
        _ = stop.cancelled() => return Ok(SessionEnd::Shutdown),
        opened = client.session(ReceiverStream::new(outbound_rx)) => opened,
    };
    let mut inbound = opened.map_err(status_error)?.into_inner();
    let welcome = match inbound.message().await.map_err(status_error)? {
        Some(ControllerMessage {
            body: Some(controller_message::Body::Welcome(welcome)),
        }) => welcome,
        other => {
            return Err(SessionError::Unreachable(format!(
                "expected a welcome from the controller, got {other:?}"
            )));
        }
    };
    let heartbeat_every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    agent.downloads.set_credentials(
        welcome.download_base.clone(),
        welcome.download_token.clone(),
    );
    tracing::info!(
        controller = %controller,
        controller_version = %welcome.controller_version,
        heartbeat_ms = heartbeat_every.as_millis(),
        "connected to the controller"
    );
    let now = Utc::now();
    let clock_skew_ms = (welcome.controller_time_unix_ms > 0)
        .then(|| welcome.controller_time_unix_ms - now.timestamp_millis());
    agent.link.send_replace(LinkStatus::Connected {
        since: now,
        clock_skew_ms,
        heartbeat_every_ms: u64::try_from(heartbeat_every.as_millis()).unwrap_or(u64::MAX),
    });
    let link = Link {
        agent,
        stop,
        client,
        outbound,
        identity,
        heartbeat_every,
    };
    link.converse(inbound).await
}

/// Who this agent is, for the controller.
fn hello(agent: &Agent) -> Hello {
    let settings = &agent.settings;
    Hello {
        protocol_version: PROTOCOL_VERSION,
        server_id: settings.server_id.to_string(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        agent_version: crate::VERSION.to_owned(),
        site: settings.site.to_string(),
        started_at_unix_ms: agent.started_at.timestamp_millis(),
    }
}

/// A welcomed session, until it ends.
struct Link<'a> {
    agent: &'a Arc<Agent>,
    stop: &'a CancellationToken,
    client: AgentLinkClient<tonic::transport::Channel>,
    outbound: mpsc::Sender<AgentMessage>,
    /// The identity's file and the identity, to renew it.
    identity: Option<(std::path::PathBuf, Identity)>,
    heartbeat_every: Duration,
}

impl Link<'_> {
    /// Sends the inventory and the latest installs, then the changes, the
    /// installs' progress, heartbeats and answers, until the stream ends.
    async fn converse(
        mut self,
        mut inbound: tonic::Streaming<ControllerMessage>,
    ) -> Result<SessionEnd, SessionError> {
        let agent = self.agent;
        let mut inventory_rx = agent.inventory.subscribe();
        let mut installs_rx = agent.installs.notices.subscribe();
        let mut sent: Inventory = inventory_rx.borrow_and_update().clone();
        let lost = |e: &dyn std::fmt::Display| SessionEnd::Lost(e.to_string());
        for report in catch_up(agent, &sent) {
            if let Err(e) = self.outbound.send(report).await {
                return Ok(lost(&e));
            }
        }
        // When to renew the certificate; checked again after each try.
        let mut renewal = self
            .identity
            .as_ref()
            .map(|(_, ours)| tokio::time::Instant::now() + ours.until_renewal());
        // Answers that take a while (a database review) come back here.
        let (late_tx, mut late_rx) = mpsc::channel::<AgentMessage>(16);
        let mut heartbeat = tokio::time::interval(self.heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            let to_send = tokio::select! {
                _ = self.stop.cancelled() => return Ok(self.close(installs_rx, inbound).await),
                changed = inventory_rx.changed() => {
                    if changed.is_err() {
                        return Ok(SessionEnd::Shutdown);
                    }
                    let now = inventory_rx.borrow_and_update().clone();
                    let change = sent.change_to(&now);
                    sent = now;
                    if change.is_empty() {
                        continue;
                    }
                    message(Body::InventoryChange(inventory_change(&change, &sent)))
                }
                Some(answer) = late_rx.recv() => answer,
                notice = installs_rx.recv() => match notice {
                    Ok(notice) => install_message(notice),
                    // Progress lines lost to a slow link; the result follows anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(SessionEnd::Shutdown),
                },
                _ = sleep_until(renewal) => {
                    renewal = self.renew().await;
                    continue;
                }
                _ = heartbeat.tick() => {
                    let now = Utc::now();
                    *agent.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                    message(Body::Heartbeat(Heartbeat {
                        sent_at_unix_ms: now.timestamp_millis(),
                    }))
                }
                received = inbound.message() => match received {
                    Ok(Some(received)) => match handle(agent, received, &sent, &late_tx) {
                        Some(reply) => reply,
                        None => continue,
                    },
                    Ok(None) => return Ok(SessionEnd::Lost("the controller closed the stream".into())),
                    Err(status) => return Ok(SessionEnd::Lost(status.message().to_owned())),
                },
            };
            if let Err(e) = self.outbound.send(to_send).await {
                return Ok(lost(&e));
            }
        }
    }

    /// Ends the session when the agent stops or hands over to a new
    /// version: what the installs said last (an update's last steps) is
    /// sent, then the stream is closed and the controller's end awaited
    /// for a moment, so that nothing said just before is lost with the
    /// connection.
    async fn close(
        self,
        mut installs_rx: tokio::sync::broadcast::Receiver<InstallNotice>,
        mut inbound: tonic::Streaming<ControllerMessage>,
    ) -> SessionEnd {
        while let Ok(notice) = installs_rx.try_recv() {
            if self.outbound.send(install_message(notice)).await.is_err() {
                return SessionEnd::Shutdown;
            }
        }
        drop(self.outbound);
        let _ = tokio::time::timeout(CLOSING, async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        SessionEnd::Shutdown
    }

    /// Renews the certificate; when to try next.
    async fn renew(&mut self) -> Option<tokio::time::Instant> {
        let (file, _) = self.identity.as_ref()?;
        Some(match renew(&mut self.client, file).await {
            Ok(renewed) => {
                tracing::info!(
                    not_after = renewed.certificate.not_after,
                    "renewed this agent's certificate"
                );
                tokio::time::Instant::now() + renewed.until_renewal().max(RENEWAL_RETRY / 4)
            }
            Err(e) => {
                tracing::warn!("cannot renew this agent's certificate yet: {e}");
                tokio::time::Instant::now() + RENEWAL_RETRY
            }
        })
    }
}

/// What the controller may have missed while away: the whole inventory,
/// and the latest install of each module (it ignores what it already has).
/// An install still running says so (it may have been ordered just before
/// the link dropped): the controller then waits for its result.
fn catch_up(agent: &Agent, inventory: &Inventory) -> Vec<AgentMessage> {
    let mut reports = vec![message(Body::Inventory(full_inventory(inventory)))];
    for view in agent.installs.views() {
        reports.push(if view.result.is_some() {
            message(Body::InstallResult(install_result(&view).into()))
        } else {
            install_message(InstallNotice::Progress {
                install_id: view.install_id.clone(),
                command_id: view.command_id.clone(),
                module: view.module.clone(),
                to: view.to.clone(),
                event: crate::install::Event {
                    at: Utc::now(),
                    phase: view.events.last().and_then(|e| e.phase),
                    kind: EventKind::Step,
                    text: "still running after the link to the controller came back".into(),
                },
            })
        });
    }
    reports
}

/// How long after a failed renewal the agent tries again (and, a quarter
/// of it, the least time between two renewals).
const RENEWAL_RETRY: Duration = Duration::from_secs(60);
/// How long a closing session waits for the controller to have read
/// everything it was sent.
const CLOSING: Duration = Duration::from_secs(2);

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Asks the controller for a certificate for a new key, and replaces the
/// identity file with it.
/// This server leaves the fleet: the controller revokes the identity of
/// the certificate it is asked with (`flotilla-agent leave`). Tries each
/// controller in turn; the server revoked, or why none could be asked.
pub async fn leave(settings: &crate::config::Settings) -> Result<String, String> {
    let mut failures = Vec::new();
    for url in &settings.controller_urls {
        let asked = async {
            let (endpoint, _) = crate::dial::endpoint(settings, url).map_err(|e| e.to_string())?;
            let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
            AgentLinkClient::new(channel)
                .leave(v1::LeaveRequest {})
                .await
                .map(|reply| reply.into_inner().server_id)
                .map_err(|status| format!("{}: {}", status.code(), status.message()))
        };
        match asked.await {
            Ok(server) => return Ok(server),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(failures.join("; "))
}

async fn renew(
    client: &mut AgentLinkClient<tonic::transport::Channel>,
    file: &std::path::Path,
) -> anyhow::Result<Identity> {
    let (csr_pem, key_pem) = crate::identity::new_request()?;
    let reply = client
        .renew(v1::RenewRequest { csr_pem })
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner();
    Ok(Identity::save(file, &reply.certificate_pem, &key_pem)?)
}

/// Acts on a message from the controller; returns what to answer, if anything.
fn handle(
    agent: &Arc<Agent>,
    received: ControllerMessage,
    current: &Inventory,
    late: &mpsc::Sender<AgentMessage>,
) -> Option<AgentMessage> {
    match ToAgent::try_from(received).ok()? {
        ToAgent::Hold(rollout) => {
            hold(agent, rollout);
            None
        }
        ToAgent::Announce {
            packages,
            withdrawn,
        } => {
            agent.downloads.offer(packages, withdrawn);
            agent.rescan.notify_one();
            None
        }
        ToAgent::Command { id, command: None } => {
            let message = format!(
                "this agent (version {}) does not know this command; upgrade the agent",
                crate::VERSION
            );
            Some(outcome(id, false, message))
        }
        ToAgent::Command {
            id,
            command: Some(command),
        } => obey(agent, id, command, current, late),
    }
}

/// Refuses local installs while `rollout` holds the server; allows them
/// again when it is none.
fn hold(agent: &Agent, rollout: Option<String>) {
    match &rollout {
        Some(rollout) => {
            tracing::info!("held by {rollout}: local installs are refused until it ends")
        }
        None => tracing::info!("no longer held by a rollout: local installs are allowed"),
    }
    agent.installs.set_hold(rollout);
}

/// Carries out the controller's command `id`; returns its answer, or
/// nothing when the answer takes a while and comes later through `late`.
fn obey(
    agent: &Arc<Agent>,
    id: String,
    command: AgentCommand,
    current: &Inventory,
    late: &mpsc::Sender<AgentMessage>,
) -> Option<AgentMessage> {
    match command {
        AgentCommand::RefreshInventory => {
            agent.rescan.notify_one();
            // The full picture now; whatever the rescan finds follows as changes.
            Some(message(Body::Inventory(full_inventory(current))))
        }
        AgentCommand::Install {
            module,
            sha256,
            allow_downgrade,
            version,
            planned_end,
            agent_update_budget_seconds,
        } => {
            let source = match sha256 {
                None => installs::Source::Pending,
                Some(sha256) => installs::Source::Package {
                    sha256,
                    allow_downgrade,
                },
            };
            let origin = installs::Origin::Controller {
                command_id: id.clone(),
                expected_version: version,
                planned_end,
                update_budget: agent_update_budget_seconds
                    .map(|s| std::time::Duration::from_secs(u64::from(s))),
            };
            install(agent, id, module, source, origin, late)
        }
        AgentCommand::Rollback {
            module,
            to,
            keep_database,
        } => {
            let (ok, text) = roll_back(agent, &id, &module, to, keep_database);
            Some(outcome(id, ok, text))
        }
        AgentCommand::Doctor { preflight, modules } => {
            answer_later(late, doctor(agent.clone(), id, preflight, modules));
            None
        }
        command @ (AgentCommand::DatabaseReview { .. }
        | AgentCommand::DatabaseScript { .. }
        | AgentCommand::DatabaseDiscard { .. }
        | AgentCommand::DatabaseRestore { .. }) => {
            answer_later(late, database(agent.clone(), id, command));
            None
        }
    }
}

/// Sends what `answer` comes to through `late`, once it has, without
/// holding up the link meanwhile.
fn answer_later(
    late: &mpsc::Sender<AgentMessage>,
    answer: impl Future<Output = AgentMessage> + Send + 'static,
) {
    let late = late.clone();
    tokio::spawn(async move {
        let _ = late.send(answer.await).await;
    });
}

/// Starts the install the controller ordered as command `id`. A module
/// with a database is first checked for customizations, which refuse it
/// before anything starts: its answer then waits for the check and comes
/// through `late`.
fn install(
    agent: &Arc<Agent>,
    id: String,
    module: String,
    source: installs::Source,
    origin: installs::Origin,
    late: &mpsc::Sender<AgentMessage>,
) -> Option<AgentMessage> {
    if !agent.settings.databases.contains_key(&module) {
        let (ok, text) = start_install(agent, &module, source, origin);
        return Some(outcome(id, ok, text));
    }
    let agent = agent.clone();
    answer_later(late, async move {
        let (ok, text) = match crate::databases::refuse_customized(&agent, &module).await {
            Err(why) => (false, why),
            Ok(()) => start_install(&agent, &module, source, origin),
        };
        outcome(id, ok, text)
    });
    None
}

/// Starts the restore of `module` that the controller ordered as command
/// `id`: from its kept backup of `to` (else the newest of another version),
/// its files only when `keep_database`. The outcome in words.
fn roll_back(
    agent: &Arc<Agent>,
    id: &str,
    module: &str,
    to: Option<String>,
    keep_database: bool,
) -> (bool, String) {
    let origin = installs::Origin::Controller {
        command_id: id.to_owned(),
        expected_version: None,
        planned_end: None,
        update_budget: None,
    };
    let source = installs::Source::Backup {
        version: to,
        file: None,
        keep_database,
    };
    match installs::start(agent, module, source, origin) {
        Ok(to) => (true, format!("restore of {module} {to} started")),
        Err(e) => (false, e.to_string()),
    }
}

/// The doctor's report for command `id`: every check, or a rollout's
/// preflight of `modules`.
async fn doctor(
    agent: Arc<Agent>,
    id: String,
    preflight: bool,
    modules: Vec<String>,
) -> AgentMessage {
    let report = if preflight {
        crate::doctor::preflight(&agent, &modules).await
    } else {
        crate::doctor::run(&agent).await
    };
    message(Body::DoctorReport(v1::DoctorReport::from((id, report))))
}

/// The answer to the database command `id` (a review, a script of a guided
/// upgrade, a restore or its discard).
async fn database(agent: Arc<Agent>, id: String, command: AgentCommand) -> AgentMessage {
    let answer = crate::databases::answer(&agent, command).await;
    message(Body::DatabaseAnswer(v1::DatabaseAnswer::from((id, answer))))
}

/// Starts an install the controller ordered; the outcome in words.
fn start_install(
    agent: &Arc<Agent>,
    module: &str,
    source: installs::Source,
    origin: installs::Origin,
) -> (bool, String) {
    match installs::start(agent, module, source, origin) {
        Ok(to) => (true, format!("install of {module} {to} started")),
        Err(e) => (false, e.to_string()),
    }
}

/// A command's outcome, for the controller.
fn outcome(command_id: String, ok: bool, message: String) -> AgentMessage {
    let outcome = link::CommandOutcome {
        command_id,
        ok,
        message,
    };
    self::message(Body::CommandOutcome(outcome.into()))
}

/// An install's progress or end, for the controller.
fn install_message(notice: InstallNotice) -> AgentMessage {
    match notice {
        InstallNotice::Progress {
            install_id,
            command_id,
            module,
            to,
            event,
        } => {
            let progress = link::InstallProgress {
                install_id,
                module,
                to_version: to,
                command_id,
                phase: event.phase.map(|p| p.as_str().to_owned()),
                kind: match event.kind {
                    EventKind::Phase => "phase",
                    EventKind::Step => "step",
                    EventKind::Hook(Stream::Stdout) => "stdout",
                    EventKind::Hook(Stream::Stderr) => "stderr",
                    EventKind::Warning => "warning",
                }
                .to_owned(),
                text: event.text,
                at: event.at,
            };
            message(Body::InstallProgress(progress.into()))
        }
        InstallNotice::Finished(view) => message(Body::InstallResult(install_result(&view).into())),
    }
}

fn install_result(view: &InstallView) -> link::InstallResult {
    let mut result = link::InstallResult {
        install_id: view.install_id.clone(),
        module: view.module.clone(),
        from_version: None,
        to_version: view.to.clone(),
        command_id: view.command_id.clone(),
        ok: false,
        downtime_ms: 0,
        message: String::new(),
        phase: None,
        hook_output: Vec::new(),
        rolled_back: false,
        rollback_error: None,
        warnings: Vec::new(),
        started_at: view.started_at,
        finished_at: view.finished_at.unwrap_or(view.started_at),
    };
    match &view.result {
        Some(Ok(outcome)) => {
            result.ok = true;
            result.from_version = outcome.from.clone();
            result.downtime_ms = u64::try_from(outcome.downtime.as_millis()).unwrap_or(u64::MAX);
            result.message = format!(
                "installed {} {} with {} ms out of service",
                view.module,
                outcome.to,
                outcome.downtime.as_millis()
            );
            for warning in &outcome.warnings {
                result.message.push_str(&format!("; warning: {warning}"));
            }
            result.warnings = outcome.warnings.clone();
        }
        Some(Err(failure)) => {
            result.message = failure.to_string();
            result.phase = failure.phase.map(|p| p.as_str().to_owned());
            result.hook_output = failure.hook_output.clone();
            result.rolled_back = failure.rolled_back;
            result.rollback_error = failure.rollback_error.clone();
        }
        None => {}
    }
    result
}

fn message(body: Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn full_inventory(inventory: &Inventory) -> v1::Inventory {
    v1::Inventory {
        modules: inventory.modules.iter().map(Into::into).collect(),
        problems: inventory.problems.iter().map(Into::into).collect(),
    }
}

/// The wire change always carries the whole current problem list, which
/// replaces the controller's.
fn inventory_change(change: &InventoryChange, current: &Inventory) -> v1::InventoryChange {
    v1::InventoryChange {
        upserted: change.upserted.iter().map(Into::into).collect(),
        removed: change.removed.iter().map(|name| name.to_string()).collect(),
        problems: current.problems.iter().map(Into::into).collect(),
    }
}

fn status_error(status: Status) -> SessionError {
    match status.code() {
        Code::FailedPrecondition | Code::PermissionDenied | Code::Unauthenticated => {
            SessionError::Refused(status.message().to_owned())
        }
        _ => SessionError::Unreachable(format!("{}: {}", status.code(), status.message())),
    }
}
