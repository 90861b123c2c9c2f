//! Connections and disconnections, written together. Every caller queues
//! its change and whoever gets the writing turn writes everything queued in
//! one transaction (a group commit), so a caller waits for at most two
//! transactions however many come at once. SQLite has one writer: at a
//! reconnection storm, a transaction each queued thousands of them behind
//! each other through the pool, late, and lost at its timeouts (servers
//! left online with no connection).

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use crate::db::{Database, Presence};

/// The most changes written in one transaction.
const BATCH: usize = 5_000;

/// Why a change could not be recorded (its batch's error, in words: every
/// change of the batch gets it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PresenceError(String);

type Waiter = oneshot::Sender<Result<bool, PresenceError>>;

/// The queue of changes and the writing turn.
#[derive(Debug, Default)]
pub(super) struct Presences {
    queue: Mutex<Vec<(Presence, Waiter)>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Presences {
    /// Records `change`; whether it changed the server's row (a newer
    /// session already recorded wins).
    pub(super) async fn record(
        &self,
        db: &Database,
        change: Presence,
    ) -> Result<bool, PresenceError> {
        let (done, mut answer) = oneshot::channel();
        self.lock().push((change, done));
        loop {
            // The turn is fair: waiting for it, our change is written by
            // whoever holds it now or next, or by us.
            let turn = self.turn.clone().lock_owned().await;
            match answer.try_recv() {
                Ok(result) => return result,
                Err(TryRecvError::Closed) => {
                    return Err(PresenceError("the write was abandoned".to_owned()));
                }
                Err(TryRecvError::Empty) => {}
            }
            let batch: Vec<(Presence, Waiter)> = {
                let mut queue = self.lock();
                let first = queue.len().min(BATCH);
                let rest = queue.split_off(first);
                std::mem::replace(&mut *queue, rest)
            };
            // Written apart from this caller, which may be cancelled (its
            // agent gone) while the batch is everyone's; the turn is held
            // until it is written.
            let db = db.clone();
            tokio::spawn(async move {
                write(&db, batch).await;
                drop(turn);
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Presence, Waiter)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes a batch and answers each of its waiters.
async fn write(db: &Database, batch: Vec<(Presence, Waiter)>) {
    if batch.is_empty() {
        return;
    }
    let (changes, waiters): (Vec<Presence>, Vec<Waiter>) = batch.into_iter().unzip();
    match db.record_presence(&changes).await {
        Ok(changed) => {
            for (waiter, changed) in waiters.into_iter().zip(changed) {
                let _ = waiter.send(Ok(changed));
            }
        }
        Err(e) => {
            let error = PresenceError(e.to_string());
            for waiter in waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
    }
}
