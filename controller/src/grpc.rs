//! The agents' gRPC endpoint: one bidirectional stream per agent. The only
//! module of the controller that sees wire types; it validates what agents
//! send into domain types and hands them to the [`Fleet`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::domain::{ModuleName, ModuleReport, Problem, ServerId, SiteName};
use flotilla_proto::link::{
    CommandOutcome, DatabaseAnswer, InstallProgress, InstallResult, ToAgent,
};
use flotilla_proto::tls::AgentCertificate;
use flotilla_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use flotilla_proto::v1::{
    AgentMessage, ControllerMessage, LeaveReply, LeaveRequest, RenewReply, RenewRequest, Welcome,
    agent_message, controller_message,
};
use flotilla_proto::{PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS, is_supported};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::db::ServerHello;
use crate::enrollment::Enrollment;
use crate::fleet::{ConnectError, Fleet, Reply, Session};

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The agents' endpoint until `stop`: mutual TLS with the enrollment's
/// CA, or plain text when there is none.
pub async fn serve(
    listener: TcpListener,
    fleet: Arc<Fleet>,
    enrollment: Option<(Arc<Enrollment>, rustls::ServerConfig)>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (enrollment, config) = enrollment.unzip();
    let service = AgentLinkService::new(fleet, enrollment, stop.clone());
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(
            AgentLinkServer::new(service)
                .max_decoding_message_size(flotilla_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(flotilla_proto::MAX_MESSAGE_BYTES),
        );
    match config {
        Some(config) => {
            router
                .serve_with_incoming_shutdown(
                    crate::tls::grpc_incoming(listener, config, stop.clone()),
                    stop.cancelled_owned(),
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await
        }
    }
}

/// The `AgentLink` service.
#[derive(Debug, Clone)]
pub struct AgentLinkService {
    fleet: Arc<Fleet>,
    /// Agents' certificates; `None` in plain text, where agents say who
    /// they are.
    enrollment: Option<Arc<Enrollment>>,
    /// Cancelled at shutdown: ends every agent stream so the server can stop.
    shutdown: CancellationToken,
}

impl AgentLinkService {
    pub fn new(
        fleet: Arc<Fleet>,
        enrollment: Option<Arc<Enrollment>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            fleet,
            enrollment,
            shutdown,
        }
    }

    /// What a new connection is told first: the welcome, the rollout that
    /// holds the server (always: an empty hold releases a server whose
    /// rollout ended while it was away), and everything published so far
    /// (the agent works out what it lacks).
    async fn greeting(&self, server: &ServerId, session: &Session) -> Vec<ControllerMessage> {
        let welcome = ControllerMessage {
            body: Some(controller_message::Body::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                controller_version: env!("CARGO_PKG_VERSION").to_owned(),
                heartbeat_interval_ms: u32::try_from(self.fleet.heartbeats.interval.as_millis())
                    .unwrap_or(u32::MAX),
                download_token: session.download_token.clone(),
                download_base: self.fleet.public_url.clone(),
                controller_time_unix_ms: chrono::Utc::now().timestamp_millis(),
            })),
        };
        let hold = ControllerMessage::from(ToAgent::Hold(self.fleet.hold_of(server)));
        let mut greeting = vec![welcome, hold];
        match self.fleet.announcement().await {
            Ok(announcement) => greeting.push(ControllerMessage::from(crate::fleet::for_platform(
                &announcement,
                &session.platform,
            ))),
            Err(e) => {
                tracing::error!(server = %server, "cannot list the published packages: {e}")
            }
        }
        greeting
    }

    /// The agent a request's client certificate proves; `Ok(None)` in
    /// plain text. A refusal is logged with its reason.
    fn certificate<T>(&self, request: &Request<T>) -> Result<Option<AgentCertificate>, Status> {
        let Some(enrollment) = &self.enrollment else {
            return Ok(None);
        };
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let certificates = request.peer_certs();
        let Some(der) = certificates.as_ref().and_then(|c| c.first()) else {
            tracing::warn!(%peer, "refused an agent: no client certificate");
            return Err(Status::unauthenticated(
                "no client certificate: enroll this agent (flotilla-agent enroll)",
            ));
        };
        match enrollment.admit(der.as_ref()) {
            Ok(certificate) => Ok(Some(certificate)),
            Err(refusal) => {
                tracing::warn!(%peer, "refused an agent: {refusal}");
                Err(Status::permission_denied(refusal.to_string()))
            }
        }
    }
}

type Outbound = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AgentLink for AgentLinkService {
    type SessionStream = Outbound;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let certificate = self.certificate(&request)?;
        let peer = request.remote_addr().map(|addr| addr.to_string());
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no hello within 10 s of opening the stream")
            })??;
        let Some(AgentMessage {
            body: Some(agent_message::Body::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message on the stream must be a Hello",
            ));
        };
        let hello = accepted(hello, peer.clone(), certificate.as_ref())?;
        let session = match self
            .fleet
            .connect(&hello, certificate, &self.shutdown)
            .await
        {
            Ok(session) => session,
            Err(e @ ConnectError::AlreadyConnected { .. }) => {
                tracing::warn!(server = %hello.id, peer = peer.as_deref().unwrap_or("unknown"), "refused a second connection: {e}");
                return Err(Status::already_exists(e.to_string()));
            }
            Err(ConnectError::Store(e)) => {
                tracing::error!(server = %hello.id, "cannot record the connection: {e}");
                return Err(Status::unavailable(
                    "the controller cannot record this connection right now; retry later",
                ));
            }
        };
        tracing::info!(server = %hello.id, site = %hello.site, agent = %hello.agent_version, "agent connected");

        let (outbound, outbound_rx) = mpsc::channel::<Result<ControllerMessage, Status>>(16);
        for message in self.greeting(&hello.id, &session).await {
            // Cannot fail: the receiver is right here and the buffer is large enough.
            let _ = outbound.send(Ok(message)).await;
        }
        tokio::spawn(serve_session(
            self.fleet.clone(),
            session,
            inbound,
            outbound,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<RenewReply>, Status> {
        let Some(certificate) = self.certificate(&request)? else {
            return Err(Status::failed_precondition(
                "the controller runs in plain text: there is no certificate to renew",
            ));
        };
        let Some(enrollment) = &self.enrollment else {
            return Err(Status::failed_precondition("no certificates in plain text"));
        };
        let issued = enrollment
            .renew(
                &self.fleet.db,
                &certificate,
                &request.get_ref().csr_pem,
            )
            .await
            .map_err(|e| {
                tracing::warn!(server = %certificate.identity.server, "cannot renew the certificate: {e}");
                match e {
                    crate::enrollment::RenewError::Revoked => Status::permission_denied(e.to_string()),
                    _ => Status::invalid_argument(e.to_string()),
                }
            })?;
        Ok(Response::new(RenewReply {
            certificate_pem: issued.chain_pem,
        }))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let Some(certificate) = self.certificate(&request)? else {
            return Err(Status::failed_precondition(
                "the controller runs in plain text: there is no certificate to revoke; remove the server on the dashboard",
            ));
        };
        let Some(enrollment) = &self.enrollment else {
            return Err(Status::failed_precondition("no certificates in plain text"));
        };
        let server = &certificate.identity.server;
        enrollment
            .revoke_server(
                &self.fleet,
                server,
                &format!("{server} (flotilla-agent leave)"),
            )
            .await
            .map_err(|e| {
                tracing::error!(%server, "cannot revoke a server that leaves: {e}");
                Status::internal("the revocation could not be recorded; try again")
            })?;
        Ok(Response::new(LeaveReply {
            server_id: server.to_string(),
        }))
    }
}

/// Reads the agent's messages until the stream ends or the controller ends it.
async fn serve_session(
    fleet: Arc<Fleet>,
    mut session: Session,
    mut inbound: Streaming<AgentMessage>,
    outbound: mpsc::Sender<Result<ControllerMessage, Status>>,
) {
    let reason = loop {
        let received = tokio::select! {
            _ = session.kicked.cancelled() => {
                let _ = outbound.send(Err(Status::unavailable("the controller ended this connection; reconnect"))).await;
                break None;
            }
            Some(command) = session.commands.recv() => {
                if outbound.send(Ok(ControllerMessage::from(command))).await.is_err() {
                    break Some("the connection closed".to_owned());
                }
                continue;
            }
            received = inbound.message() => received,
        };
        let message = match received {
            Ok(Some(message)) => message,
            Ok(None) => break Some("the agent closed the connection".to_owned()),
            Err(status) => break Some(format!("connection lost: {}", status.message())),
        };
        fleet.seen(&session);
        if let Err(status) = handle(&fleet, &session, message).await {
            tracing::warn!(server = %session.server, "closing the stream: {}", status.message());
            let _ = outbound.send(Err(status.clone())).await;
            break Some(status.message().to_owned());
        }
    };
    if let Some(reason) = reason {
        fleet.disconnected(&session, &reason).await;
    }
}

async fn handle(fleet: &Fleet, session: &Session, message: AgentMessage) -> Result<(), Status> {
    let store_error = |e: sqlx::Error| {
        tracing::error!(server = %session.server, "cannot store the inventory: {e}");
        Status::unavailable("the controller cannot store the inventory right now; reconnect later")
    };
    match message.body {
        Some(agent_message::Body::Inventory(inventory)) => {
            let modules = modules(inventory.modules)?;
            let problems = problems(inventory.problems);
            fleet
                .inventory(session, &modules, &problems)
                .await
                .map_err(store_error)
        }
        Some(agent_message::Body::InventoryChange(change)) => {
            let upserted = modules(change.upserted)?;
            let removed = change
                .removed
                .iter()
                .map(|name| ModuleName::parse(name))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let problems = problems(change.problems);
            fleet
                .inventory_change(session, &upserted, &removed, &problems)
                .await
                .map_err(store_error)
        }
        Some(agent_message::Body::Heartbeat(_)) => Ok(()),
        Some(agent_message::Body::CommandOutcome(outcome)) => {
            let outcome = CommandOutcome::from(outcome);
            tracing::info!(server = %session.server, command = %outcome.command_id, ok = outcome.ok, "{}", outcome.message);
            let reply = Reply::Outcome {
                ok: outcome.ok,
                message: outcome.message,
            };
            fleet.answered(session, &outcome.command_id, reply);
            Ok(())
        }
        Some(agent_message::Body::DatabaseAnswer(answer)) => {
            let (command_id, answer) = <(String, DatabaseAnswer)>::try_from(answer)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let said = match &answer {
                DatabaseAnswer::Review(review) => format!(
                    "review of {} {} -> {}: {} differences, done: {}",
                    review.module,
                    review.from_version,
                    review.to_version,
                    review.summary.len(),
                    review.done
                ),
                DatabaseAnswer::Run(run) => format!("{}: ok {}", run.script, run.ok),
                DatabaseAnswer::Marked { script } => format!("{script} marked applied"),
                DatabaseAnswer::Restored(d) => format!(
                    "database restored from {}; writes to {} table(s) discarded",
                    d.backup,
                    d.tables.len()
                ),
                DatabaseAnswer::Discard(d) => format!(
                    "a restore of {} would discard writes to {} table(s)",
                    d.backup,
                    d.tables.len()
                ),
                DatabaseAnswer::Refused {
                    status, message, ..
                } => format!("refused ({status}): {message}"),
            };
            tracing::info!(server = %session.server, command = %command_id, "{said}");
            fleet.answered(session, &command_id, Reply::Database(answer));
            Ok(())
        }
        Some(agent_message::Body::DoctorReport(report)) => {
            let (command_id, report) = report
                .into_report(session.server.to_string())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            tracing::info!(server = %session.server, command = %command_id, worst = report.worst().as_str(), "doctor's report");
            fleet.answered(session, &command_id, Reply::Doctor(report));
            Ok(())
        }
        Some(agent_message::Body::InstallProgress(p)) => fleet
            .install_progress(session, &InstallProgress::from(p))
            .await
            .map_err(store_error),
        Some(agent_message::Body::InstallResult(r)) => {
            let result = InstallResult::from(r);
            tracing::info!(server = %session.server, module = %result.module, ok = result.ok, "install ended: {}", result.message);
            fleet
                .install_result(session, &result)
                .await
                .map_err(store_error)
        }
        Some(agent_message::Body::Hello(_)) => {
            Err(Status::invalid_argument("hello sent twice on one stream"))
        }
        None => Ok(()),
    }
}

/// An agent's Hello, validated: a protocol version this controller speaks,
/// a server id and a site, and (with TLS) the same identity as its
/// certificate's.
fn accepted(
    hello: flotilla_proto::v1::Hello,
    peer: Option<String>,
    certificate: Option<&AgentCertificate>,
) -> Result<ServerHello, Status> {
    if !is_supported(hello.protocol_version) {
        tracing::warn!(
            server = %hello.server_id,
            version = hello.protocol_version,
            "refused an agent speaking an unsupported protocol version"
        );
        return Err(Status::failed_precondition(format!(
            "agent {} (version {}) speaks protocol version {}; this controller (version {}) supports protocol versions {}",
            hello.server_id,
            hello.agent_version,
            hello.protocol_version,
            env!("CARGO_PKG_VERSION"),
            SUPPORTED_PROTOCOL_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let hello = ServerHello {
        id: ServerId::parse(&hello.server_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?,
        site: SiteName::parse(&hello.site).map_err(|e| Status::invalid_argument(e.to_string()))?,
        hostname: hello.hostname,
        os: hello.os,
        agent_version: hello.agent_version,
        protocol_version: hello.protocol_version,
        peer_address: peer.clone(),
        agent_started_at: (hello.started_at_unix_ms > 0)
            .then(|| chrono::DateTime::from_timestamp_millis(hello.started_at_unix_ms))
            .flatten(),
    };
    if let Some(certificate) = certificate
        && (certificate.identity.server != hello.id || certificate.identity.site != hello.site)
    {
        tracing::warn!(
            peer = peer.as_deref().unwrap_or("unknown"),
            "refused an agent: its certificate is for {}, its Hello claimed server {} of site {}",
            certificate.identity,
            hello.id,
            hello.site
        );
        return Err(Status::permission_denied(format!(
            "this agent's certificate is for {}, but its Hello claimed server {} of site {}",
            certificate.identity, hello.id, hello.site
        )));
    }
    Ok(hello)
}

fn modules(wire: Vec<flotilla_proto::v1::Module>) -> Result<Vec<ModuleReport>, Status> {
    wire.into_iter()
        .map(|module| {
            ModuleReport::try_from(module).map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .collect()
}

fn problems(wire: Vec<flotilla_proto::v1::Problem>) -> Vec<Problem> {
    wire.into_iter().map(Problem::from).collect()
}
