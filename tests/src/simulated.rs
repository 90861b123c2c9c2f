//! Simulated agents: clients of the real agent protocol, many to one process,
//! for the tests and benches that need hundreds or thousands of servers.
//!
//! Each simulated agent opens its own TCP connection and its own `Session`
//! stream, says hello, sends its inventory, heartbeats at the interval the
//! controller's welcome asks for, and reports version changes. It answers no
//! command: it stands for a server that is connected and idle.

use std::time::Duration;

use flotilla_proto::PROTOCOL_VERSION;
use flotilla_proto::v1::{
    AgentMessage, Heartbeat, Hello, Inventory, InventoryChange, Module, ModuleKind, ModuleState,
    agent_link_client::AgentLinkClient, agent_message::Body, controller_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::ModuleSpec;

/// A connected simulated agent. Dropping it cuts its connection.
#[derive(Debug)]
pub struct SimulatedAgent {
    pub id: String,
    pub site: String,
    modules: Vec<Module>,
    outbound: mpsc::Sender<AgentMessage>,
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
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            match Self::try_connect(grpc_url, site, id, modules).await {
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

    /// One try of [`SimulatedAgent::connect`].
    pub async fn try_connect(
        grpc_url: &str,
        site: &str,
        id: &str,
        modules: &[ModuleSpec<'_>],
    ) -> anyhow::Result<SimulatedAgent> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(grpc_url.to_owned())?;
        if grpc_url.starts_with("https://") {
            endpoint = endpoint.tls_config(crate::tls::ca().grpc_as(site, id))?;
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
        let reader = tokio::spawn(async move {
            // Commands, holds and package lists: read and ignored.
            while let Ok(Some(_)) = inbound.message().await {}
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
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.modules.iter().map(|m| m.name.as_str())
    }

    /// Reports that `module` is now at `version`, as an agent's scan would.
    pub async fn set_version(&mut self, module: &str, version: &str) -> anyhow::Result<()> {
        let Some(changed) = self.modules.iter_mut().find(|m| m.name == module) else {
            anyhow::bail!("{} hosts no module {module}", self.id);
        };
        changed.installed_version = version.to_owned();
        let change = AgentMessage {
            body: Some(Body::InventoryChange(InventoryChange {
                upserted: vec![changed.clone()],
                removed: Vec::new(),
                problems: Vec::new(),
            })),
        };
        self.outbound.send(change).await?;
        Ok(())
    }
}
