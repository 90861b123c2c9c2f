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

use crate::db::{Heard, NOTES_CHANNEL, Notifications, RELAY_CHANNEL, REPLY_CHANNEL};
use crate::enrollment::Enrollment;
use crate::fleet::relay::{Relay, Relayed};
use crate::fleet::{Fleet, FleetEvent, OrderError, Reply};
use crate::rollouts::Rollouts;

/// How often requests that no notification announced are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// The most bytes of notes sent in one notification (PostgreSQL's limit is
/// 8,000).
const NOTES_BYTES: usize = 7_000;

/// What the task reaches here on the others' behalf.
#[derive(Debug, Clone)]
struct Here {
    fleet: Arc<Fleet>,
    rollouts: Rollouts,
    /// Agents' identities, when agents connect over mutual TLS.
    enrollment: Option<Arc<Enrollment>>,
}

/// Joins the other controllers on the database, if it is shared; the task
/// runs until `stop` is cancelled.
pub fn start(
    fleet: Arc<Fleet>,
    rollouts: Rollouts,
    enrollment: Option<Arc<Enrollment>>,
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
    let here = Here {
        fleet,
        rollouts,
        enrollment,
    };
    Some(tokio::spawn(run(here, notes_rx, stop)))
}

async fn run(here: Here, mut notes: mpsc::UnboundedReceiver<String>, stop: CancellationToken) {
    let fleet = &here.fleet;
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
                Ok(Heard::Note(channel, payload)) => heard_of(&here, &channel, &payload).await,
                Ok(Heard::Reconnected) => {
                    tracing::warn!("the other controllers' notifications were cut off: catching up");
                    catch_up(&here).await;
                }
                Err(e) => {
                    tracing::warn!("lost the other controllers' notifications: {e}");
                    listening = None;
                    tokio::time::sleep(SWEEP).await;
                }
            },
            Some(first) = notes.recv() => send_notes(fleet, first, &mut notes).await,
            _ = sweep.tick() => match fleet.db.relay_waiting().await {
                Ok(targets) => {
                    for target in targets {
                        take(&here, &target).await;
                    }
                }
                Err(e) => tracing::warn!("cannot read the relayed requests: {e}"),
            },
        }
    }
}

/// What notifications lost while the listener was cut off would have said:
/// a rollout to drive, what is published, what is revoked. (Relayed
/// requests are found by the sweep.)
async fn catch_up(here: &Here) {
    here.rollouts.wake_here().await;
    announce(here);
    reload_revocations(here, None).await;
}

/// The next notification, or never without a listener.
async fn next(listening: &mut Option<Notifications>) -> sqlx::Result<Heard> {
    match listening {
        Some(notifications) => notifications.next().await,
        None => std::future::pending().await,
    }
}

async fn heard_of(here: &Here, channel: &str, payload: &str) {
    let Some(relay) = here.fleet.relay() else {
        return;
    };
    match channel {
        RELAY_CHANNEL => take(here, payload).await,
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
                changed_elsewhere(here, note).await;
            }
        }
        _ => {}
    }
}

/// A note from another controller: tells live views here, wakes the
/// engine for a rollout to drive, or tells agents here what is published.
async fn changed_elsewhere(here: &Here, note: &str) {
    let (fleet, rollouts) = (&here.fleet, &here.rollouts);
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
        Some(("v", server)) => reload_revocations(here, Some(server)).await,
        _ if note == "w" => rollouts.wake_here().await,
        // A release was published or withdrawn there.
        _ if note == "a" => announce(here),
        _ => {}
    }
}

/// Takes the requests waiting for `target` if this controller can carry
/// them out: its server is connected here, or it drives the rollouts.
/// Tells agents connected here what is published, without waiting on them.
fn announce(here: &Here) {
    let fleet = here.fleet.clone();
    tokio::spawn(async move {
        match fleet.announcement().await {
            Ok(announcement) => fleet.push_here(announcement).await,
            Err(e) => tracing::warn!("cannot read what is published to tell agents: {e}"),
        }
    });
}

/// Reads what is revoked again and, for a server revoked through another
/// controller, ends its connection here.
async fn reload_revocations(here: &Here, revoked: Option<&str>) {
    let Some(enrollment) = &here.enrollment else {
        return;
    };
    if let Err(e) = enrollment.reload(&here.fleet.db).await {
        tracing::error!("cannot read what is revoked: {e}");
    }
    if let Some(server) = revoked.and_then(|s| ServerId::parse(s).ok()) {
        here.fleet
            .end_connection(&server, "revoked through another controller")
            .await;
    }
}

async fn take(here: &Here, target: &str) {
    let (fleet, rollouts) = (&here.fleet, &here.rollouts);
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
            tracing::info!("carrying out an operator's action relayed by another controller");
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
