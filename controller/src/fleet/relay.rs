//! Reaching what another controller holds, when several share one
//! PostgreSQL database: a command for an agent connected to another
//! controller goes through the database's relay table and comes back with
//! the agent's answer, as if it were connected here; what changed here
//! (servers, rollouts) is told to the others in batches. `cluster.rs`
//! carries out the requests other controllers send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use super::orders::{Order, OrderError, Reply};
use crate::db::Database;

/// A request carried from one controller to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Relayed {
    /// Send this command to the agent connected there.
    Command {
        server: String,
        module: String,
        order: Order,
        command_id: String,
    },
    /// An operator's action on a rollout, for the controller that drives
    /// them (the action as JSON: rollouts' own type).
    Engine { request: String },
}

/// A request that went unanswered: nobody could carry it out, or not in
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// Nobody took it (its server is connected nowhere, no controller
    /// drives the rollouts).
    NotTaken,
    /// Taken, not answered in time.
    NoAnswer,
    /// The database could not be reached.
    Database(String),
}

/// How long a request may wait for a controller to take it.
const TAKEN_WITHIN: Duration = Duration::from_secs(3);

/// How much longer than the controller carrying a request out the sender
/// waits: the answer's way back.
const WAY_BACK: Duration = Duration::from_secs(5);

/// A sender's place in [`Relay`]'s waiting list, left when it is dropped
/// (answered, given up, or its own caller gone).
struct Waiting<'a> {
    relay: &'a Relay,
    id: i64,
}

impl<'a> Waiting<'a> {
    fn new(relay: &'a Relay, id: i64, woken: Arc<Notify>) -> Self {
        relay
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, woken);
        Waiting { relay, id }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.relay
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The relay's state in this controller: who waits for which answer, and
/// the notes to send.
#[derive(Debug)]
pub struct Relay {
    /// This controller's name in the relay table.
    pub me: String,
    waiting: Mutex<HashMap<i64, Arc<Notify>>>,
    notes: mpsc::UnboundedSender<String>,
}

impl Relay {
    pub fn new(me: String, notes: mpsc::UnboundedSender<String>) -> Self {
        Self {
            me,
            waiting: Mutex::new(HashMap::new()),
            notes,
        }
    }

    /// Tells the other controllers, in the next batch, that `note`
    /// (`s:<server>`, `r:<rollout>`, `w`: a rollout to drive, `a`: what is
    /// published) changed.
    pub fn note(&self, note: String) {
        let _ = self.notes.send(note);
    }

    /// A request's answer came: wakes whoever waits for it.
    pub fn answered(&self, id: i64) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(waiter) = waiter {
            waiter.notify_one();
        }
    }

    /// Sends `request` to `target` (`server:<id>`, which must be online, or
    /// `engine`) and waits for its answer: as long as `patience` (what the
    /// controller carrying it out waits) and a little more for the way back.
    pub async fn request(
        &self,
        db: &Database,
        target: &str,
        server: Option<&str>,
        request: &Relayed,
        patience: Duration,
    ) -> Result<String, Unanswered> {
        let database = |e: sqlx::Error| Unanswered::Database(e.to_string());
        let body =
            serde_json::to_string(request).map_err(|e| Unanswered::Database(e.to_string()))?;
        let id = db
            .relay_send(target, &body, patience, server)
            .await
            .map_err(database)?
            .ok_or(Unanswered::NotTaken)?;
        let woken = Arc::new(Notify::new());
        let _waiting = Waiting::new(self, id, woken.clone());
        let answer = self.wait(db, id, &woken, patience + WAY_BACK).await;
        if let Err(e) = db.relay_forget(id).await {
            tracing::warn!(relay = id, "cannot forget a relayed request: {e}");
        }
        answer
    }

    /// Waits for request `id`'s answer: woken by its notification, or
    /// reading it each second should a notification be lost; read once more
    /// at the deadline.
    async fn wait(
        &self,
        db: &Database,
        id: i64,
        woken: &Notify,
        patience: Duration,
    ) -> Result<String, Unanswered> {
        let started = tokio::time::Instant::now();
        let deadline = started + patience;
        loop {
            let last = tokio::select! {
                _ = woken.notified() => false,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                _ = tokio::time::sleep_until(deadline) => true,
            };
            let state = db
                .relay_state(id)
                .await
                .map_err(|e| Unanswered::Database(e.to_string()))?;
            match state {
                Some(state) if state.reply.is_some() => {
                    return Ok(state.reply.unwrap_or_default());
                }
                Some(state) if state.taken_by.is_none() && started.elapsed() > TAKEN_WITHIN => {
                    // Withdrawn unless a controller took it meanwhile: then
                    // its answer is awaited.
                    if db
                        .relay_withdraw(id)
                        .await
                        .map_err(|e| Unanswered::Database(e.to_string()))?
                    {
                        return Err(Unanswered::NotTaken);
                    }
                }
                Some(_) | None if last => return Err(Unanswered::NoAnswer),
                Some(_) => {}
                None => return Err(Unanswered::NoAnswer),
            }
        }
    }

    /// Sends `order` to the controller `server` is connected to and waits
    /// for the agent's answer.
    pub async fn command(
        &self,
        db: &Database,
        server: &str,
        module: &str,
        order: Order,
        command_id: &str,
    ) -> Result<Reply, OrderError> {
        let patience = order.patience();
        let request = Relayed::Command {
            server: server.to_owned(),
            module: module.to_owned(),
            order,
            command_id: command_id.to_owned(),
        };
        let answer = self
            .request(
                db,
                &format!("server:{server}"),
                Some(server),
                &request,
                patience,
            )
            .await;
        match answer {
            Ok(reply) => {
                serde_json::from_str::<Result<Reply, OrderError>>(&reply).unwrap_or_else(|e| {
                    Err(OrderError::Refused {
                        server: server.to_owned(),
                        message: format!("the other controller's answer does not read: {e}"),
                    })
                })
            }
            Err(Unanswered::NotTaken) => Err(OrderError::Offline(server.to_owned())),
            Err(Unanswered::NoAnswer) => Err(OrderError::NoAnswer(server.to_owned())),
            Err(Unanswered::Database(e)) => {
                tracing::warn!(server, "cannot relay a command through the database: {e}");
                Err(OrderError::NoAnswer(server.to_owned()))
            }
        }
    }
}
