//! Several controllers on one PostgreSQL database. Each listens to the
//! database's notifications and carries out what the others relay to it:
//! a command for an agent connected here ([`Fleet::ask_here`]), an
//! operator's action when it drives the rollouts. It tells the others, in
//! batches, which servers and rollouts changed here (their live views
//! follow), and when a rollout needs driving. The lock that decides who
//! drives is the engine's ([`crate::db::Driver`]).
//!
//! With SQLite nothing starts: one controller owns its file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::domain::ServerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{NOTES_CHANNEL, Notifications, RELAY_CHANNEL, REPLY_CHANNEL};
use crate::fleet::relay::{Relay, Relayed};
use crate::fleet::{Fleet, FleetEvent, OrderError, Reply};
use crate::rollouts::Rollouts;

/// How often requests that no notification announced are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// The most bytes of notes sent in one notification (PostgreSQL's limit is
/// 8,000).
const NOTES_BYTES: usize = 7_000;

/// Joins the other controllers on the database, if it is shared; the task
/// runs until `stop` is cancelled.
pub fn start(
    fleet: Arc<Fleet>,
    rollouts: Rollouts,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !fleet.db.shared() {
        return None;
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let random = flotilla_proto::web::random_secret();
    let me = format!("{host}:{}:{}", std::process::id(), &random[..8]);
    tracing::info!(controller = %me, "sharing the database with any other controller on it");
    let (notes, notes_rx) = mpsc::unbounded_channel();
    fleet.join_relay(Relay::new(me, notes));
    Some(tokio::spawn(run(fleet, rollouts, notes_rx, stop)))
}

async fn run(
    fleet: Arc<Fleet>,
    rollouts: Rollouts,
    mut notes: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
) {
    let mut listening: Option<Notifications> = None;
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        if listening.is_none() {
            match fleet.db.listen().await {
                Ok(notifications) => listening = Some(notifications),
                Err(e) => tracing::warn!("cannot listen to the other controllers: {e}"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            heard = next(&mut listening) => match heard {
                Ok((channel, payload)) => heard_of(&fleet, &rollouts, &channel, &payload).await,
                Err(e) => {
                    tracing::warn!("lost the other controllers' notifications: {e}");
                    listening = None;
                    tokio::time::sleep(SWEEP).await;
                }
            },
            Some(first) = notes.recv() => send_notes(&fleet, first, &mut notes).await,
            _ = sweep.tick() => match fleet.db.relay_waiting().await {
                Ok(targets) => {
                    for target in targets {
                        take(&fleet, &rollouts, &target).await;
                    }
                }
                Err(e) => tracing::warn!("cannot read the relayed requests: {e}"),
            },
        }
    }
}

/// The next notification, or never without a listener.
async fn next(listening: &mut Option<Notifications>) -> sqlx::Result<(String, String)> {
    match listening {
        Some(notifications) => notifications.next().await,
        None => std::future::pending().await,
    }
}

async fn heard_of(fleet: &Arc<Fleet>, rollouts: &Rollouts, channel: &str, payload: &str) {
    let Some(relay) = fleet.relay() else {
        return;
    };
    match channel {
        RELAY_CHANNEL => take(fleet, rollouts, payload).await,
        REPLY_CHANNEL => {
            if let Ok(id) = payload.parse() {
                relay.answered(id);
            }
        }
        NOTES_CHANNEL => {
            let mut lines = payload.lines();
            if lines.next() == Some(relay.me.as_str()) {
                return;
            }
            for note in lines {
                changed_elsewhere(fleet, rollouts, note).await;
            }
        }
        _ => {}
    }
}

/// A note from another controller: tells live views here, wakes the
/// engine for a rollout to drive, or tells agents here what is published.
async fn changed_elsewhere(fleet: &Fleet, rollouts: &Rollouts, note: &str) {
    match note.split_once(':') {
        Some(("s", server)) => {
            if let Ok(server) = ServerId::parse(server) {
                fleet.changed_elsewhere(FleetEvent::ServerChanged(server));
            }
        }
        Some(("r", id)) => {
            if let Ok(id) = id.parse() {
                fleet.changed_elsewhere(FleetEvent::RolloutChanged(id));
            }
        }
        _ if note == "w" => rollouts.wake_here().await,
        // A release was published or withdrawn there.
        _ if note == "a" => match fleet.announcement().await {
            Ok(announcement) => fleet.push_here(announcement).await,
            Err(e) => tracing::warn!("cannot read what is published to tell agents: {e}"),
        },
        _ => {}
    }
}

/// Takes the requests waiting for `target` if this controller can carry
/// them out: its server is connected here, or it drives the rollouts.
async fn take(fleet: &Arc<Fleet>, rollouts: &Rollouts, target: &str) {
    let ours = match target.strip_prefix("server:") {
        Some(server) => fleet.is_here(server),
        None => target == "engine" && rollouts.driving(),
    };
    let Some(relay) = fleet.relay().filter(|_| ours) else {
        return;
    };
    let taken = match fleet.db.relay_take(target, &relay.me).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(target, "cannot take relayed requests: {e}");
            return;
        }
    };
    for (id, request) in taken {
        let (fleet, rollouts) = (fleet.clone(), rollouts.clone());
        tokio::spawn(async move {
            let reply = carry_out(&fleet, &rollouts, &request).await;
            if let Err(e) = fleet.db.relay_answer(id, &reply).await {
                tracing::warn!(relay = id, "cannot answer a relayed request: {e}");
            }
        });
    }
}

/// Carries out a relayed request; its answer as relayed.
async fn carry_out(fleet: &Fleet, rollouts: &Rollouts, request: &str) -> String {
    match serde_json::from_str::<Relayed>(request) {
        Ok(Relayed::Command {
            server,
            module,
            order,
            command_id,
        }) => {
            let reply: Result<Reply, OrderError> =
                fleet.ask_here(&server, &module, order, &command_id).await;
            serde_json::to_string(&reply).unwrap_or_default()
        }
        Ok(Relayed::Engine { request }) => {
            crate::rollouts::relayed::carry_out(rollouts, &request).await
        }
        Err(e) => {
            tracing::warn!("a relayed request does not read: {e}");
            String::new()
        }
    }
}

/// Sends `first` and the notes queued behind it, each once, in
/// notifications of at most [`NOTES_BYTES`].
async fn send_notes(fleet: &Fleet, first: String, queued: &mut mpsc::UnboundedReceiver<String>) {
    let Some(relay) = fleet.relay() else {
        return;
    };
    // A burst (a wave of installs ending) is one batch.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut notes = BTreeSet::from([first]);
    while let Ok(note) = queued.try_recv() {
        notes.insert(note);
    }
    let mut payload = relay.me.clone();
    for note in notes {
        if payload.len() + note.len() + 1 > NOTES_BYTES {
            notify(fleet, &payload).await;
            payload = relay.me.clone();
        }
        payload.push('\n');
        payload.push_str(&note);
    }
    notify(fleet, &payload).await;
}

async fn notify(fleet: &Fleet, payload: &str) {
    if let Err(e) = fleet.db.notify(NOTES_CHANNEL, payload).await {
        tracing::warn!("cannot tell the other controllers what changed: {e}");
    }
}
