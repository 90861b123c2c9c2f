//! How a simulated agent answers the controller when it is asked to
//! ([`Answering`]): as a real agent does, in messages, without touching a
//! disk. A published package "downloads" in a set time; an install or a
//! restore reports the six phases spread over a set time, then its result
//! and the new version; a doctor run finds nothing wrong; a database
//! question is answered "no backup kept".

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use flotilla_proto::v1::{
    AgentMessage, AvailablePackages, Command, CommandOutcome, ControllerMessage, DatabaseAnswer,
    DatabaseRefusal, DoctorCheck, DoctorReport, InstallProgress, InstallResult, Inventory,
    InventoryChange, Module, agent_message::Body, command::Kind, controller_message,
    database_answer,
};
use tokio::sync::mpsc;

/// What an answering simulated agent does with what it is asked.
#[derive(Debug, Clone)]
pub struct Answering {
    /// How long an install or a restore takes, its phases evenly spread.
    pub install: Duration,
    /// How long a published package takes to reach the server.
    pub download: Duration,
    /// What every simulated agent answering with these counts.
    pub tally: Arc<Tally>,
}

impl Answering {
    pub fn new(install: Duration, download: Duration) -> Answering {
        Answering {
            install,
            download,
            tally: Arc::new(Tally::default()),
        }
    }
}

/// Counts over a simulated fleet.
#[derive(Debug, Default)]
pub struct Tally {
    pub commands: AtomicUsize,
    pub doctor_runs: AtomicUsize,
    pub installs_started: AtomicUsize,
    pub installs_done: AtomicUsize,
    pub downloads: AtomicUsize,
}

impl Tally {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

/// One agent's state shared by its reader and its installs.
#[derive(Debug)]
pub(super) struct Answerer {
    pub(super) modules: Arc<Mutex<Vec<Module>>>,
    pub(super) outbound: mpsc::Sender<AgentMessage>,
    pub(super) answering: Answering,
    /// When the first command reached it.
    pub(super) first_command: Arc<OnceLock<Instant>>,
    busy: AtomicBool,
}

/// The six phases, as the procedure names them.
const PHASES: [&str; 6] = [
    "STARTUPDATE",
    "PREBACKUP",
    "POSTBACKUP",
    "PREINSTALL",
    "POSTINSTALL",
    "ENDUPDATE",
];

fn body(body: Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Answerer {
    pub(super) fn new(
        modules: Arc<Mutex<Vec<Module>>>,
        outbound: mpsc::Sender<AgentMessage>,
        answering: Answering,
        first_command: Arc<OnceLock<Instant>>,
    ) -> Arc<Answerer> {
        Arc::new(Answerer {
            modules,
            outbound,
            answering,
            first_command,
            busy: AtomicBool::new(false),
        })
    }

    /// Answers one message of the controller.
    pub(super) async fn answer(self: &Arc<Self>, message: ControllerMessage) {
        match message.body {
            Some(controller_message::Body::AvailablePackages(offer)) => self.offered(offer),
            Some(controller_message::Body::Command(command)) => self.command(command).await,
            _ => {}
        }
    }

    fn send(self: &Arc<Self>, message: AgentMessage) {
        let outbound = self.outbound.clone();
        tokio::spawn(async move {
            let _ = outbound.send(message).await;
        });
    }

    /// Published packages newer than what it has become pending once
    /// "downloaded".
    fn offered(self: &Arc<Self>, offer: AvailablePackages) {
        let newer: Vec<(String, String)> = {
            let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            offer
                .packages
                .into_iter()
                .filter(|p| {
                    modules.iter().any(|m| {
                        m.name == p.module
                            && m.pending_version != p.version
                            && newer_than(&p.version, &m.installed_version)
                    })
                })
                .map(|p| (p.module, p.version))
                .collect()
        };
        if newer.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.answering.download).await;
            let upserted: Vec<Module> = {
                let mut modules = this.modules.lock().unwrap_or_else(|p| p.into_inner());
                modules
                    .iter_mut()
                    .filter_map(|m| {
                        let (_, version) = newer.iter().find(|(name, _)| *name == m.name)?;
                        m.pending_version.clone_from(version);
                        m.download_state = "done".into();
                        m.download_version.clone_from(version);
                        Some(m.clone())
                    })
                    .collect()
            };
            this.answering
                .tally
                .downloads
                .fetch_add(1, Ordering::Relaxed);
            let _ = this.outbound.send(change(upserted)).await;
        });
    }

    async fn command(self: &Arc<Self>, command: Command) {
        self.first_command.get_or_init(Instant::now);
        let tally = &self.answering.tally;
        tally.commands.fetch_add(1, Ordering::Relaxed);
        let id = command.command_id;
        match command.kind {
            Some(Kind::InstallModule(install)) => {
                let to = if install.version.is_empty() {
                    self.pending_of(&install.module)
                } else {
                    Some(install.version)
                };
                self.start(id, install.module, to);
            }
            Some(Kind::RollbackModule(rollback)) => {
                let to = Some(rollback.to_version).filter(|v| !v.is_empty());
                self.start(id, rollback.module, to);
            }
            Some(Kind::Doctor(_)) => {
                tally.doctor_runs.fetch_add(1, Ordering::Relaxed);
                self.send(body(Body::DoctorReport(DoctorReport {
                    command_id: id,
                    at_unix_ms: now_ms(),
                    checks: vec![DoctorCheck {
                        check: "simulated".into(),
                        status: "ok".into(),
                        subject: "this simulated server".into(),
                        finding: "nothing to check: a simulated agent".into(),
                        fix: String::new(),
                        blocks_install: false,
                    }],
                })));
            }
            Some(Kind::RefreshInventory(_)) => {
                let modules = self
                    .modules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                self.send(body(Body::Inventory(Inventory {
                    modules,
                    problems: Vec::new(),
                })));
            }
            Some(
                Kind::DatabaseReview(_)
                | Kind::DatabaseScript(_)
                | Kind::DatabaseDiscard(_)
                | Kind::DatabaseRestore(_),
            ) => self.send(body(Body::DatabaseAnswer(DatabaseAnswer {
                command_id: id,
                body: Some(database_answer::Body::Refusal(DatabaseRefusal {
                    status: 404,
                    code: "not_found".into(),
                    message: "a simulated agent keeps no database backup".into(),
                })),
            }))),
            None => self.send(outcome(id, false, "unknown command".into())),
        }
    }

    fn pending_of(&self, module: &str) -> Option<String> {
        let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        modules
            .iter()
            .find(|m| m.name == module && !m.pending_version.is_empty())
            .map(|m| m.pending_version.clone())
    }

    /// Starts an install or a restore to `to`, one at a time.
    fn start(self: &Arc<Self>, id: String, module: String, to: Option<String>) {
        let from = {
            let modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            modules
                .iter()
                .find(|m| m.name == module)
                .map(|m| m.installed_version.clone())
        };
        let (Some(from), Some(to)) = (from, to) else {
            let why = format!("no module {module}, or nothing to install for it");
            self.send(outcome(id, false, why));
            return;
        };
        if self.busy.swap(true, Ordering::SeqCst) {
            let why = "an install is already running on this server".to_owned();
            self.send(outcome(id, false, why));
            return;
        }
        self.answering
            .tally
            .installs_started
            .fetch_add(1, Ordering::Relaxed);
        self.send(outcome(
            id.clone(),
            true,
            format!("install of {module} {to} started"),
        ));
        let this = self.clone();
        tokio::spawn(async move {
            let started = now_ms();
            let install_id = format!("{module}-{started}");
            let step = this.answering.install / PHASES.len() as u32;
            for phase in PHASES {
                let progress = InstallProgress {
                    install_id: install_id.clone(),
                    module: module.clone(),
                    to_version: to.clone(),
                    phase: phase.into(),
                    kind: "phase".into(),
                    text: format!("{phase} (simulated)"),
                    at_unix_ms: now_ms(),
                    command_id: id.clone(),
                };
                if this
                    .outbound
                    .send(body(Body::InstallProgress(progress)))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(step).await;
            }
            let upserted = {
                let mut modules = this.modules.lock().unwrap_or_else(|p| p.into_inner());
                modules
                    .iter_mut()
                    .filter(|m| m.name == module)
                    .map(|m| {
                        m.installed_version.clone_from(&to);
                        m.pending_version.clear();
                        m.download_state.clear();
                        m.download_version.clear();
                        m.clone()
                    })
                    .collect()
            };
            let result = InstallResult {
                install_id,
                module: module.clone(),
                from_version: from,
                to_version: to.clone(),
                ok: true,
                downtime_ms: 1,
                message: format!("installed {module} {to} (simulated)"),
                started_at_unix_ms: started,
                finished_at_unix_ms: now_ms(),
                command_id: id,
                ..InstallResult::default()
            };
            this.busy.store(false, Ordering::SeqCst);
            this.answering
                .tally
                .installs_done
                .fetch_add(1, Ordering::Relaxed);
            let _ = this.outbound.send(body(Body::InstallResult(result))).await;
            let _ = this.outbound.send(change(upserted)).await;
        });
    }
}

/// Whether `offered` is a newer version than `installed` (numeric parts).
fn newer_than(offered: &str, installed: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(offered) > parts(installed)
}

fn outcome(command_id: String, ok: bool, message: String) -> AgentMessage {
    body(Body::CommandOutcome(CommandOutcome {
        command_id,
        ok,
        message,
    }))
}

fn change(upserted: Vec<Module>) -> AgentMessage {
    body(Body::InventoryChange(InventoryChange {
        upserted,
        removed: Vec::new(),
        problems: Vec::new(),
    }))
}
