//! Simulated agents: clients of the real agent protocol, many to one process,
//! for the tests and benches that need hundreds or thousands of servers.
//!
//! Each simulated agent opens its own TCP connection and its own `Session`
//! stream, says hello, sends its inventory, heartbeats at the interval the
//! controller's welcome asks for, and reports version changes. Unless told
//! to answer ([`Answering`], in [`answers`]), it answers no command: it
//! stands for a server that is connected and idle.

mod answers;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use answers::{Answering, Tally};

use flotilla_proto::PROTOCOL_VERSION;
use flotilla_proto::v1::{
    AgentMessage, Heartbeat, Hello, Inventory, InventoryChange, Module, ModuleKind, ModuleState,
    agent_link_client::AgentLinkClient, agent_message::Body, controller_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::ModuleSpec;
use crate::tls::TestCa;

/// A customer site's servers, as in the procedure: the database, the API hub
/// with the back office, and two web servers.
pub const SITE: [(&str, &[ModuleSpec<'static>]); 4] = [
    ("db", &[("database", "database", "5.8.0")]),
    (
        "app",
        &[
            ("integration", "service", "5.8.0"),
            ("gestioncommerciale", "web", "5.8.0"),
        ],
    ),
    (
        "web1",
        &[
            ("ecommerce", "web", "5.8.0"),
            ("phygitalapi", "web", "2.1.3"),
        ],
    ),
    ("web2", &[("ecommerce", "web", "5.8.0")]),
];

/// Server `n` of a simulated fleet of [`SITE`]s named `prefix-00000`…: its
/// site, id and modules.
pub fn fleet_server(prefix: &str, n: usize) -> (String, String, &'static [ModuleSpec<'static>]) {
    let site = format!("{prefix}-{:05}", n / SITE.len());
    let (role, modules) = SITE[n % SITE.len()];
    let id = format!("{site}-{role}");
    (site, id, modules)
}

/// Where and how simulated agents connect.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The controller's gRPC URL.
    pub url: String,
    /// The CA that issues their certificates and that they trust: the
    /// controller's own (over `https://`).
    pub ca: &'static TestCa,
    /// How they answer the controller; `None`: connected and idle.
    pub answering: Option<Answering>,
}

impl Dial {
    /// Idle agents of a test controller.
    pub fn idle(url: &str) -> Dial {
        Dial {
            url: url.to_owned(),
            ca: crate::tls::ca(),
            answering: None,
        }
    }
}

/// A connected simulated agent. Dropping it cuts its connection.
#[derive(Debug)]
pub struct SimulatedAgent {
    pub id: String,
    pub site: String,
    modules: Arc<Mutex<Vec<Module>>>,
    outbound: mpsc::Sender<AgentMessage>,
    first_command: Arc<OnceLock<Instant>>,
    /// Holds the connection open while the agent lives.
    _connection: tonic::transport::Channel,
    /// Reads what the controller sends and heartbeats; aborted on drop.
    tasks: [JoinHandle<()>; 2],
}

impl Drop for SimulatedAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The wire form of a module spec, installed at `version`.
fn module(site: &str, id: &str, (name, kind, version): &ModuleSpec<'_>) -> Module {
    let kind = match *kind {
        "web" => ModuleKind::Web,
        "service" => ModuleKind::Service,
        _ => ModuleKind::Database,
    };
    Module {
        name: (*name).to_owned(),
        kind: kind.into(),
        install_path: format!("/srv/{site}/{id}/{name}"),
        installed_version: (*version).to_owned(),
        state: ModuleState::Installed.into(),
        ..Module::default()
    }
}

impl SimulatedAgent {
    /// Connects as server `id` of `site` hosting `modules`; returns once the
    /// controller has welcomed it (its connection is recorded). While the
    /// controller still holds an earlier connection of the same server (it
    /// has not yet seen it end), it retries, as a real agent does.
    pub async fn connect(
        grpc_url: &str,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
    ) -> anyhow::Result<SimulatedAgent> {
        Self::connect_with(&Dial::idle(grpc_url), site, id, modules).await
    }

    /// [`SimulatedAgent::connect`] as `dial` says.
    pub async fn connect_with(
        dial: &Dial,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
    ) -> anyhow::Result<SimulatedAgent> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            match Self::try_connect_with(dial, site, id, modules).await {
                Err(e)
                    if started.elapsed() < crate::PATIENCE
                        && e.downcast_ref::<tonic::Status>()
                            .is_some_and(|s| s.code() == tonic::Code::AlreadyExists) =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                connected => return connected,
            }
        }
    }

    /// [`SimulatedAgent::connect_with`], tried again as a real agent does
    /// (a delay doubling from 50 ms up to 5 s, the first failure said on
    /// stderr) until `patience` has passed since the first try; the agent
    /// and how many tries failed.
    pub async fn connect_retrying(
        dial: &Dial,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
        patience: Duration,
    ) -> anyhow::Result<(SimulatedAgent, usize)> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut failures = 0;
        loop {
            match Self::connect_with(dial, site, id, modules).await {
                Ok(agent) => return Ok((agent, failures)),
                Err(e) if started.elapsed() < patience => {
                    failures += 1;
                    if failures == 1 {
                        eprintln!("{id}: {e}; trying again");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One try of [`SimulatedAgent::connect`].
    pub async fn try_connect(
        grpc_url: &str,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
    ) -> anyhow::Result<SimulatedAgent> {
        Self::try_connect_with(&Dial::idle(grpc_url), site, id, modules).await
    }

    /// One try of [`SimulatedAgent::connect_with`].
    pub async fn try_connect_with(
        dial: &Dial,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
    ) -> anyhow::Result<SimulatedAgent> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(dial.url.clone())?;
        if dial.url.starts_with("https://") {
            endpoint = endpoint.tls_config(dial.ca.grpc_as(site, id))?;
        }
        let channel = endpoint.connect().await?;
        let mut client = AgentLinkClient::new(channel.clone());
        let modules: Vec<Module> = modules.iter().map(|m| module(site, id, m)).collect();
        let (outbound, requests) = mpsc::channel(16);
        outbound
            .send(AgentMessage {
                body: Some(Body::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                    server_id: id.to_owned(),
                    hostname: format!("{id}.sim"),
                    os: "simulated".to_owned(),
                    agent_version: "0.0.0-simulated".to_owned(),
                    site: site.to_owned(),
                    started_at_unix_ms: 0,
                })),
            })
            .await?;
        let mut inbound = client
            .session(ReceiverStream::new(requests))
            .await?
            .into_inner();
        let welcome = match inbound.message().await? {
            Some(flotilla_proto::v1::ControllerMessage {
                body: Some(controller_message::Body::Welcome(welcome)),
            }) => welcome,
            other => anyhow::bail!("expected a welcome, got {other:?}"),
        };
        outbound
            .send(AgentMessage {
                body: Some(Body::Inventory(Inventory {
                    modules: modules.clone(),
                    problems: Vec::new(),
                })),
            })
            .await?;
        let modules = Arc::new(Mutex::new(modules));
        let first_command = Arc::new(OnceLock::new());
        let answerer = dial.answering.clone().map(|answering| {
            answers::Answerer::new(
                modules.clone(),
                outbound.clone(),
                answering,
                first_command.clone(),
            )
        });
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                // Idle: commands, holds and package lists are read and ignored.
                if let Some(answerer) = &answerer {
                    answerer.answer(message).await;
                }
            }
        });
        let every = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
        let heartbeats = {
            let outbound = outbound.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let beat = AgentMessage {
                        body: Some(Body::Heartbeat(Heartbeat {
                            sent_at_unix_ms: chrono::Utc::now().timestamp_millis(),
                        })),
                    };
                    if outbound.send(beat).await.is_err() {
                        return;
                    }
                }
            })
        };
        Ok(SimulatedAgent {
            id: id.to_owned(),
            site: site.to_owned(),
            modules,
            outbound,
            first_command,
            _connection: channel,
            tasks: [reader, heartbeats],
        })
    }

    /// Stops its heartbeats but keeps its connection open: an agent that
    /// hangs, or whose network went away without a word.
    pub fn go_silent(&self) {
        self.tasks[1].abort();
    }

    /// The names of the modules it hosts.
    pub fn modules(&self) -> Vec<String> {
        self.lock_modules().iter().map(|m| m.name.clone()).collect()
    }

    /// When the first command reached it (answering agents only).
    pub fn first_command(&self) -> Option<Instant> {
        self.first_command.get().copied()
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, Vec<Module>> {
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports that `module` is now at `version`, as an agent's scan would.
    pub async fn set_version(&mut self, module: &str, version: &str) -> anyhow::Result<()> {
        let changed = {
            let mut modules = self.lock_modules();
            let Some(changed) = modules.iter_mut().find(|m| m.name == module) else {
                anyhow::bail!("{} hosts no module {module}", self.id);
            };
            changed.installed_version = version.to_owned();
            changed.clone()
        };
        let change = AgentMessage {
            body: Some(Body::InventoryChange(InventoryChange {
                upserted: vec![changed],
                removed: Vec::new(),
                problems: Vec::new(),
            })),
        };
        self.outbound.send(change).await?;
        Ok(())
    }
}
