//! Commands to a connected agent and their answers: an order is sent to
//! the server's current connection, and only that connection's answer
//! counts (an older connection answering late, or another server, is
//! ignored).

use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::ServerId;
use flotilla_proto::link::{AgentCommand, DatabaseAnswer, ToAgent};
use tokio::sync::oneshot;

use super::{Fleet, Session};

/// What an operator asks a server to do with a module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Order {
    Install {
        /// One of the agent's packages by its sha256; `None` for the pending one.
        sha256: Option<String>,
        allow_downgrade: bool,
        /// The version the pending package must be (a rollout's).
        version: Option<String>,
        /// When the site's planned maintenance ends, for the maintenance page.
        planned_end: Option<DateTime<Utc>>,
        /// The module flotilla-agent: the new version's trial budget
        /// (seconds), when the rollout sets one. Left out when absent, for a
        /// controller of the previous version on the same database.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_update_budget_seconds: Option<u32>,
    },
    Rollback {
        to: Option<String>,
        /// A database module: its files only, the database left as it is.
        keep_database: bool,
    },
    /// The review of the module's pending database upgrade.
    DatabaseReview,
    /// What restoring the database backup at `version` would throw away.
    DatabaseDiscard { version: String },
    /// Restore the database alone from its backup at `version`.
    DatabaseRestore { version: String, by: String },
    /// The agent's self-diagnosis; `preflight`: only what can make an
    /// install of `modules` fail.
    Doctor {
        preflight: bool,
        modules: Vec<String>,
    },
    /// Run one script of a guided database upgrade, or mark it applied.
    DatabaseScript {
        script: String,
        by: String,
        mark_applied: bool,
    },
}

impl Order {
    /// The command that carries this order out on `module`.
    fn command(self, module: &str) -> AgentCommand {
        let module = module.to_owned();
        match self {
            Order::Install {
                sha256,
                allow_downgrade,
                version,
                planned_end,
                agent_update_budget_seconds,
            } => AgentCommand::Install {
                module,
                sha256,
                allow_downgrade,
                version,
                planned_end,
                agent_update_budget_seconds,
            },
            Order::Rollback { to, keep_database } => AgentCommand::Rollback {
                module,
                to,
                keep_database,
            },
            Order::DatabaseReview => AgentCommand::DatabaseReview { module },
            Order::Doctor { preflight, modules } => AgentCommand::Doctor { preflight, modules },
            Order::DatabaseDiscard { version } => AgentCommand::DatabaseDiscard { module, version },
            Order::DatabaseRestore { version, by } => AgentCommand::DatabaseRestore {
                module,
                version,
                by,
            },
            Order::DatabaseScript {
                script,
                by,
                mark_applied,
            } => AgentCommand::DatabaseScript {
                module,
                script,
                by,
                mark_applied,
            },
        }
    }

    /// How long the agent may take to answer.
    pub(super) fn patience(&self) -> Duration {
        match self {
            Order::DatabaseReview | Order::DatabaseDiscard { .. } => Duration::from_secs(60),
            // Holders, disk and database checks may take a while.
            Order::Doctor { .. } => Duration::from_secs(120),
            // A script may run for a while; the answer says how it ended.
            Order::DatabaseScript { .. } | Order::DatabaseRestore { .. } => {
                Duration::from_secs(600)
            }
            _ => Duration::from_secs(15),
        }
    }
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum OrderError {
    #[error("server {0} is not connected; an install can only be ordered from a connected agent")]
    Offline(String),
    #[error("server {server} refused: {message}")]
    Refused { server: String, message: String },
    #[error("server {0} did not answer in time")]
    NoAnswer(String),
    /// What the order needs is not there (no backup of that version kept).
    #[error("server {server}: {message}")]
    NotFound { server: String, message: String },
}

/// A command waiting for its outcome.
#[derive(Debug)]
pub(super) struct Awaiting {
    server: ServerId,
    session: u64,
    answer: oneshot::Sender<Reply>,
}

/// How an agent answered a command.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// Accepted (or done), or refused, in words.
    Outcome { ok: bool, message: String },
    /// A database command's typed answer.
    Database(DatabaseAnswer),
    /// A doctor's report.
    Doctor(flotilla_proto::doctor::Report),
}

impl Fleet {
    /// A new command id: unique, and unpredictable, so that nobody can
    /// answer a command they were not sent.
    pub fn command_id(&self, server: &str, module: &str) -> String {
        let random = flotilla_proto::web::random_secret();
        format!("{server}-{module}-{}", &random[..32])
    }

    /// Orders a connected agent to install or restore a module, and waits
    /// for the agent to accept or refuse. Returns the command id and the
    /// agent's answer.
    pub async fn order(
        &self,
        server: &str,
        module: &str,
        order: Order,
    ) -> Result<(String, String), OrderError> {
        let command_id = self.command_id(server, module);
        self.order_as(server, module, order, command_id).await
    }

    /// [`Fleet::order`] under a command id the caller recorded beforehand.
    pub async fn order_as(
        &self,
        server: &str,
        module: &str,
        order: Order,
        command_id: String,
    ) -> Result<(String, String), OrderError> {
        match self.ask(server, module, order, &command_id).await? {
            Reply::Outcome { ok: true, message } => Ok((command_id, message)),
            Reply::Outcome { ok: false, message } => Err(OrderError::Refused {
                server: server.to_owned(),
                message,
            }),
            Reply::Database(_) | Reply::Doctor(_) => Ok((command_id, "answered".to_owned())),
        }
    }

    /// Asks a connected agent a database command (a review, a script to
    /// run or mark) and waits for its typed answer.
    pub async fn ask_database(
        &self,
        server: &str,
        module: &str,
        order: Order,
    ) -> Result<DatabaseAnswer, OrderError> {
        let command_id = self.command_id(server, module);
        match self.ask(server, module, order, &command_id).await? {
            Reply::Database(answer) => Ok(answer),
            // An agent that does not know the command says so.
            Reply::Outcome { message, .. } => Err(OrderError::Refused {
                server: server.to_owned(),
                message,
            }),
            Reply::Doctor(_) => Err(OrderError::Refused {
                server: server.to_owned(),
                message: "answered a database command with a doctor's report".to_owned(),
            }),
        }
    }

    /// Asks a connected agent for its doctor's report: every check, or
    /// (`preflight` with the modules to install) only those that can make
    /// their install fail.
    pub async fn ask_doctor(
        &self,
        server: &str,
        preflight: Option<Vec<String>>,
    ) -> Result<flotilla_proto::doctor::Report, OrderError> {
        let command_id = self.command_id(server, "doctor");
        let order = Order::Doctor {
            preflight: preflight.is_some(),
            modules: preflight.unwrap_or_default(),
        };
        match self.ask(server, "", order, &command_id).await? {
            Reply::Doctor(report) => Ok(report),
            Reply::Outcome { message, .. } => Err(OrderError::Refused {
                server: server.to_owned(),
                message,
            }),
            Reply::Database(_) => Err(OrderError::Refused {
                server: server.to_owned(),
                message: "answered a doctor with a database answer".to_owned(),
            }),
        }
    }

    /// Sends `order` to the server's current connection under `command_id`
    /// and waits, as long as the order deserves, for that connection's
    /// reply; through the controller it is connected to when that is
    /// another.
    async fn ask(
        &self,
        server: &str,
        module: &str,
        order: Order,
        command_id: &str,
    ) -> Result<Reply, OrderError> {
        if let Some(relay) = self.relay()
            && !self.is_here(server)
        {
            return relay
                .command(&self.db, server, module, order, command_id)
                .await;
        }
        self.ask_here(server, module, order, command_id).await
    }

    /// [`Fleet::ask`] of an agent connected here (another controller's
    /// request, relayed).
    pub async fn ask_here(
        &self,
        server: &str,
        module: &str,
        order: Order,
        command_id: &str,
    ) -> Result<Reply, OrderError> {
        let (id, sender, session) = ServerId::parse(server)
            .ok()
            .and_then(|id| {
                let found = self
                    .live()
                    .get(&id)
                    .map(|l| (l.commands.clone(), l.session));
                found.map(|(sender, session)| (id, sender, session))
            })
            .ok_or_else(|| OrderError::Offline(server.to_owned()))?;
        let patience = order.patience();
        let (answer_tx, answer) = oneshot::channel();
        let forget = || {
            self.awaiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(command_id);
        };
        self.awaiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                command_id.to_owned(),
                Awaiting {
                    server: id,
                    session,
                    answer: answer_tx,
                },
            );
        let command = ToAgent::Command {
            id: command_id.to_owned(),
            command: Some(order.command(module)),
        };
        if sender.send(command).await.is_err() {
            forget();
            return Err(OrderError::Offline(server.to_owned()));
        }
        let answered = tokio::time::timeout(patience, answer).await;
        forget();
        match answered {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(OrderError::NoAnswer(server.to_owned())),
        }
    }

    /// An agent answered a command: taken only from the connection the
    /// command was sent to.
    pub fn answered(&self, session: &Session, command_id: &str, reply: Reply) {
        let waiting = {
            let mut awaiting = self.awaiting.lock().unwrap_or_else(|p| p.into_inner());
            match awaiting.get(command_id) {
                Some(w) if w.server == session.server && w.session == session.id => {
                    awaiting.remove(command_id)
                }
                Some(w) => {
                    tracing::warn!(server = %session.server, command = command_id, sent_to = %w.server, "ignored an answer to a command sent to another connection");
                    None
                }
                None => None,
            }
        };
        if let Some(waiting) = waiting {
            let _ = waiting.answer.send(reply);
        }
    }
}
