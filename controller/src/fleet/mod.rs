//! The live side of the fleet: which agents are connected right now, when
//! each was last heard from, and who is told when something changes.
//!
//! Heartbeats are kept in memory and flushed to the database in batches;
//! connections and disconnections are written together as they come
//! ([`presence`]); state changes are announced on the event channel that
//! feeds the dashboard's live updates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flotilla_proto::domain::{ModuleName, ModuleReport, Problem, ServerId};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use flotilla_proto::tls::AgentCertificate;

use flotilla_proto::link::{InstallProgress, InstallResult, PackageOffer, ToAgent};

use crate::db::{Database, Presence, ServerHello};

/// Something a watcher of the fleet (the dashboard) should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    /// A server's record changed: re-read it.
    ServerChanged(ServerId),
    /// A line of an install's progress.
    InstallProgress {
        server: ServerId,
        install_id: String,
        module: String,
        phase: Option<String>,
        kind: String,
        text: String,
    },
    /// A rollout changed: re-read it.
    RolloutChanged(i64),
}

/// How long agents wait between heartbeats, and how long the controller waits
/// before calling a silent agent offline.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeats {
    pub interval: Duration,
    pub timeout: Duration,
}

/// One connected agent.
#[derive(Debug)]
struct Live {
    /// Which connection this is; a newer one from the same server replaces it.
    session: u64,
    last_seen: DateTime<Utc>,
    last_seen_at: Instant,
    /// Whether `last_seen` changed since the last flush.
    dirty: bool,
    /// Cancelled to end this connection's stream.
    kick: CancellationToken,
    /// Commands for this connection's agent.
    commands: mpsc::Sender<ToAgent>,
    /// The certificate it proved itself with; `None` in plain text.
    certificate: Option<AgentCertificate>,
    /// Where it connects from.
    peer: String,
    /// What it downloads packages with, for this connection only.
    download_token: String,
    /// The platform its agent packages are built for (`linux-x86_64`).
    platform: String,
}

/// The connected agents, the database, and the event channel.
#[derive(Debug)]
pub struct Fleet {
    pub db: Database,
    pub heartbeats: Heartbeats,
    /// This controller's HTTP address as agents reach it, for download URLs.
    pub public_url: String,
    /// Fleet changes, for live views. Lagging receivers resynchronise.
    events: broadcast::Sender<FleetEvent>,
    /// Connected agents by server id. A std mutex: held for map operations
    /// only, never across an await.
    live: Mutex<HashMap<ServerId, Live>>,
    /// The next connection's session number: above every number stored, so
    /// that a newer connection's state always wins over an older one's.
    next_session: AtomicU64,
    /// Commands sent and waiting for the agent's outcome, by command id,
    /// with the connection they were sent to: only it may answer.
    awaiting: Mutex<HashMap<String, Awaiting>>,
    /// Servers held by a rollout, with the rollout's description.
    holds: Mutex<HashMap<ServerId, String>>,
    /// Connections and disconnections waiting to be written.
    presences: presence::Presences,
    /// With other controllers on the same database: how to reach them.
    relay: std::sync::OnceLock<relay::Relay>,
}

/// Why a connection was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "server {server} is already connected (from {from}, heard {silent_ms} ms ago); a second connection is taken only once the first misses its heartbeats"
    )]
    AlreadyConnected {
        server: ServerId,
        from: String,
        silent_ms: u128,
    },
    #[error("cannot record the connection: {0}")]
    Store(#[from] presence::PresenceError),
}

/// A connected agent's handle, owned by its stream.
#[derive(Debug)]
pub struct Session {
    pub server: ServerId,
    id: u64,
    /// Cancelled when the controller ends this connection (heartbeat timeout,
    /// replaced by a newer connection, shutdown).
    pub kicked: CancellationToken,
    /// Commands to forward to the agent.
    pub commands: mpsc::Receiver<ToAgent>,
    /// The secret the agent downloads packages with on this connection.
    pub download_token: String,
    /// When the agent process started, if it says.
    agent_started_at: Option<DateTime<Utc>>,
    /// The platform its agent packages are built for (`linux-x86_64`).
    pub platform: String,
}

/// `announcement` without the agent packages built for platforms other
/// than `platform` (an agent of the previous version would take any).
pub fn for_platform(announcement: &ToAgent, platform: &str) -> ToAgent {
    match announcement {
        ToAgent::Announce {
            packages,
            withdrawn,
        } => ToAgent::Announce {
            packages: packages
                .iter()
                .filter(|p| p.platform.is_empty() || p.platform == platform)
                .cloned()
                .collect(),
            withdrawn: withdrawn.clone(),
        },
        other => other.clone(),
    }
}

impl Fleet {
    /// The fleet over `db`, whose connections so far were numbered up to
    /// `last_session` ([`Database::last_session`]).
    pub fn new(
        db: Database,
        heartbeats: Heartbeats,
        public_url: String,
        last_session: u64,
    ) -> Self {
        Self {
            db,
            heartbeats,
            public_url: public_url.trim_end_matches('/').to_owned(),
            events: broadcast::Sender::new(1024),
            live: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(last_session + 1),
            awaiting: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            presences: presence::Presences::default(),
            relay: std::sync::OnceLock::new(),
        }
    }

    /// A new connection's session number: above every earlier one here, and
    /// at least the time in microseconds, so that with several controllers
    /// on one database an agent that moves to another gets a higher number
    /// there too (their clocks agreeing, as NTP keeps them).
    fn new_session(&self) -> u64 {
        let now = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
        let mut current = self.next_session.load(Ordering::Relaxed);
        loop {
            let id = current.max(now);
            match self.next_session.compare_exchange_weak(
                current,
                id + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return id,
                Err(seen) => current = seen,
            }
        }
    }

    /// Shares the database with other controllers through `relay`: commands
    /// for agents connected to them go through it, and what changes here is
    /// told to them.
    pub fn join_relay(&self, relay: relay::Relay) {
        let _ = self.relay.set(relay);
    }

    /// How to reach the other controllers, if any share the database.
    pub fn relay(&self) -> Option<&relay::Relay> {
        self.relay.get()
    }

    /// Whether `server` is connected to this controller.
    pub fn is_here(&self, server: &str) -> bool {
        ServerId::parse(server).is_ok_and(|id| self.live().contains_key(&id))
    }

    /// Tells live views here what another controller said changed.
    pub fn changed_elsewhere(&self, event: FleetEvent) {
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<FleetEvent> {
        self.events.subscribe()
    }

    fn announce(&self, server: &ServerId) {
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(FleetEvent::ServerChanged(server.clone()));
        if let Some(relay) = self.relay.get() {
            relay.note(format!("s:{server}"));
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<ServerId, Live>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An agent said hello: record it and hand back its session.
    ///
    /// A server already connected keeps its connection unless it has
    /// missed its heartbeats: a second connection with the same identity
    /// is refused until then. The new session is registered in memory
    /// first, then recorded with its number; the older connection's
    /// writes, conditioned on its own number, can no longer change the row.
    pub async fn connect(
        &self,
        hello: &ServerHello,
        certificate: Option<AgentCertificate>,
        shutdown: &CancellationToken,
    ) -> Result<Session, ConnectError> {
        let now = Utc::now();
        let id = self.new_session();
        let kicked = shutdown.child_token();
        let (commands_tx, commands) = mpsc::channel(16);
        let download_token = flotilla_proto::web::random_secret();
        let entry = Live {
            session: id,
            last_seen: now,
            last_seen_at: Instant::now(),
            dirty: false,
            kick: kicked.clone(),
            commands: commands_tx,
            certificate,
            peer: hello.peer_address.clone().unwrap_or_default(),
            download_token: download_token.clone(),
            platform: flotilla_proto::domain::platform_of_os(&hello.os),
        };
        let previous = {
            let mut live = self.live();
            if let Some(existing) = live.get(&hello.id) {
                let silent = existing.last_seen_at.elapsed();
                if silent < self.heartbeats.interval * 2 {
                    return Err(ConnectError::AlreadyConnected {
                        server: hello.id.clone(),
                        from: existing.peer.clone(),
                        silent_ms: silent.as_millis(),
                    });
                }
            }
            live.insert(hello.id.clone(), entry)
        };
        if let Some(previous) = &previous {
            tracing::warn!(server = %hello.id, from = %previous.peer, "a new connection replaces the previous one from the same server, silent for {:?}", previous.last_seen_at.elapsed());
            previous.kick.cancel();
        }
        let session = Session {
            server: hello.id.clone(),
            id,
            kicked,
            commands,
            download_token,
            agent_started_at: hello.agent_started_at,
            platform: flotilla_proto::domain::platform_of_os(&hello.os),
        };
        let connected = Presence::Connected {
            hello: hello.clone(),
            session: id,
            at: now,
        };
        match self.presences.record(&self.db, connected).await {
            Ok(_) => {
                self.announce(&hello.id);
                Ok(session)
            }
            Err(e) => {
                self.forget(&session);
                // The replaced connection ended, and nothing else will say so.
                if let Some(previous) = previous {
                    let reason =
                        "a new connection replaced it, which the controller could not record";
                    self.go_offline(&hello.id, previous.session, previous.last_seen, reason)
                        .await;
                }
                Err(e.into())
            }
        }
    }

    /// The connected server whose download token `token` is.
    pub fn downloader(&self, token: &str) -> Option<ServerId> {
        if token.len() != 64 {
            return None;
        }
        self.live()
            .iter()
            .find(|(_, l)| flotilla_proto::web::same_secret(token, &l.download_token))
            .map(|(id, _)| id.clone())
    }

    /// The certificate a connected server proved itself with.
    pub fn certificate_of(&self, server: &ServerId) -> Option<AgentCertificate> {
        self.live().get(server).and_then(|l| l.certificate.clone())
    }

    /// Ends a server's connection, if it has one, and records it offline
    /// for `reason`. Whether it was connected.
    pub async fn end_connection(&self, server: &ServerId, reason: &str) -> bool {
        let entry = self.live().remove(server);
        let Some(entry) = entry else {
            return false;
        };
        entry.kick.cancel();
        self.go_offline(server, entry.session, entry.last_seen, reason)
            .await;
        true
    }

    /// Removes the session from the connected agents if it is still the
    /// server's current one; returns its entry.
    fn forget(&self, session: &Session) -> Option<Live> {
        let mut live = self.live();
        match live.get(&session.server) {
            Some(entry) if entry.session == session.id => live.remove(&session.server),
            _ => None,
        }
    }

    /// The agent said something: it is alive.
    pub fn seen(&self, session: &Session) {
        if let Some(live) = self
            .live()
            .get_mut(&session.server)
            .filter(|l| l.session == session.id)
        {
            live.last_seen = Utc::now();
            live.last_seen_at = Instant::now();
            live.dirty = true;
        }
    }

    /// When a connected server was last heard from, fresher than the database.
    pub fn last_seen(&self, server: &str) -> Option<DateTime<Utc>> {
        let id = ServerId::parse(server).ok()?;
        self.live().get(&id).map(|live| live.last_seen)
    }

    pub async fn inventory(
        &self,
        session: &Session,
        modules: &[ModuleReport],
        problems: &[Problem],
    ) -> sqlx::Result<()> {
        let now = Utc::now();
        self.db
            .replace_inventory(&session.server, modules, problems, now)
            .await?;
        if let Some(started) = session.agent_started_at {
            let closed = self
                .db
                .close_interrupted_installs(&session.server, started, now)
                .await?;
            if closed > 0 {
                tracing::info!(server = %session.server, "{closed} installs were interrupted by an agent restart and recovered at its start");
            }
        }
        self.announce(&session.server);
        Ok(())
    }

    pub async fn inventory_change(
        &self,
        session: &Session,
        upserted: &[ModuleReport],
        removed: &[ModuleName],
        problems: &[Problem],
    ) -> sqlx::Result<()> {
        self.db
            .apply_change(&session.server, upserted, removed, problems, Utc::now())
            .await?;
        self.announce(&session.server);
        Ok(())
    }

    /// Records an install's progress line and tells live views.
    pub async fn install_progress(
        &self,
        session: &Session,
        progress: &InstallProgress,
    ) -> sqlx::Result<()> {
        self.db.install_progress(&session.server, progress).await?;
        let _ = self.events.send(FleetEvent::InstallProgress {
            server: session.server.clone(),
            install_id: progress.install_id.clone(),
            module: progress.module.clone(),
            phase: progress.phase.clone(),
            kind: progress.kind.clone(),
            text: progress.text.clone(),
        });
        Ok(())
    }

    /// Records how an install ended.
    pub async fn install_result(
        &self,
        session: &Session,
        result: &InstallResult,
    ) -> sqlx::Result<()> {
        self.db.install_result(&session.server, result).await?;
        self.announce(&session.server);
        Ok(())
    }

    /// Every published package, with absolute download URLs.
    pub async fn available(&self) -> sqlx::Result<Vec<PackageOffer>> {
        let mut available = Vec::new();
        // Oldest release first: a package in several releases keeps the newest's notes.
        for release in self
            .db
            .releases()
            .await?
            .into_iter()
            .rev()
            .filter(|r| r.withdrawn.is_none())
        {
            for package in release.packages {
                let url = package.url.clone().unwrap_or_else(|| {
                    format!(
                        "{}/api/v1/packages/{}/file",
                        self.public_url, package.sha256
                    )
                });
                let Ok(version) = flotilla_proto::domain::Version::parse(&package.version) else {
                    tracing::error!(
                        sha256 = package.sha256,
                        "a stored package's version does not parse: {}",
                        package.version
                    );
                    continue;
                };
                available.retain(|a: &PackageOffer| a.sha256 != package.sha256);
                available.push(PackageOffer {
                    module: package.module,
                    version,
                    kind: package.kind,
                    sha256: package.sha256,
                    signature: package.signature,
                    url,
                    size: package
                        .size
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    release_version: release.version.clone(),
                    release_notes: release.notes.clone(),
                    platform: package.platform,
                });
            }
        }
        Ok(available)
    }

    /// What agents are told at connection and after a withdrawal: every
    /// package published and not withdrawn, and the withdrawn ones.
    pub async fn announcement(&self) -> sqlx::Result<ToAgent> {
        Ok(ToAgent::Announce {
            packages: self.available().await?,
            withdrawn: self.db.withdrawn_packages().await?,
        })
    }

    /// Pushes `announcement` to every connected agent, and has the other
    /// controllers on the database push theirs.
    pub async fn push(&self, announcement: ToAgent) {
        if let Some(relay) = self.relay.get() {
            relay.note("a".to_owned());
        }
        self.push_here(announcement).await;
    }

    /// Pushes `announcement` to every agent connected here.
    pub async fn push_here(&self, announcement: ToAgent) {
        let senders: Vec<(mpsc::Sender<ToAgent>, String)> = self
            .live()
            .values()
            .map(|l| (l.commands.clone(), l.platform.clone()))
            .collect();
        for (sender, platform) in senders {
            let _ = sender.send(for_platform(&announcement, &platform)).await;
        }
    }

    /// Tells live views that a rollout changed.
    pub fn rollout_changed(&self, id: i64) {
        let _ = self.events.send(FleetEvent::RolloutChanged(id));
        if let Some(relay) = self.relay.get() {
            relay.note(format!("r:{id}"));
        }
    }

    /// The rollout holding a server, if any.
    pub fn hold_of(&self, server: &ServerId) -> Option<String> {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(server)
            .cloned()
    }

    /// Sets which servers rollouts hold; tells the connected agents whose
    /// hold changed.
    pub fn set_holds(&self, holds: HashMap<ServerId, String>) {
        let changed: Vec<(ServerId, Option<String>)> = {
            let mut current = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed: Vec<(ServerId, Option<String>)> = current
                .iter()
                .filter(|(server, _)| !holds.contains_key(*server))
                .map(|(server, _)| (server.clone(), None))
                .collect();
            changed.extend(
                holds
                    .iter()
                    .filter(|(server, hold)| current.get(*server) != Some(hold))
                    .map(|(server, hold)| (server.clone(), Some(hold.clone()))),
            );
            *current = holds;
            changed
        };
        for (server, hold) in changed {
            let sender = self.live().get(&server).map(|l| l.commands.clone());
            // Never wait on one slow agent; it gets its hold at its next connection.
            if let Some(sender) = sender
                && sender.try_send(ToAgent::Hold(hold)).is_err()
            {
                tracing::warn!(server = %server, "the agent's command queue is full; its hold follows at its next connection");
            }
        }
    }

    /// The agent's stream ended. If it was still the current connection, the
    /// server goes offline, silent since it was last heard from.
    pub async fn disconnected(&self, session: &Session, reason: &str) {
        if let Some(entry) = self.forget(session) {
            self.go_offline(&session.server, entry.session, entry.last_seen, reason)
                .await;
        }
    }

    /// Records that `session` of `server` ended, unless a newer one has
    /// been recorded since. Tried again on failure: a lost write would
    /// leave the server shown online with no connection (until
    /// [`Fleet::reconcile`] finds it).
    async fn go_offline(
        &self,
        server: &ServerId,
        session: u64,
        silent_since: DateTime<Utc>,
        reason: &str,
    ) {
        let offline = Presence::Offline {
            server: server.clone(),
            session,
            silent_since,
            reason: reason.to_owned(),
        };
        let mut delay = Duration::from_millis(100);
        for attempt in 1.. {
            match self.presences.record(&self.db, offline.clone()).await {
                Ok(true) => {
                    tracing::info!(server = %server, %silent_since, "server offline: {reason}");
                    self.announce(server);
                }
                Ok(false) => {
                    tracing::debug!(server = %server, "an ended connection was already replaced: {reason}")
                }
                Err(e) if attempt < 5 => {
                    tracing::warn!(server = %server, "cannot record that the server went offline ({e}); trying again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
                Err(e) => {
                    tracing::error!(server = %server, "cannot record that the server went offline: {e}")
                }
            }
            return;
        }
    }

    /// Marks offline the servers recorded online whose connection this
    /// controller no longer holds and has not heard from for longer than
    /// the heartbeat timeout: a disconnection whose write was lost.
    /// Returns how many.
    pub async fn reconcile(&self) -> usize {
        let recorded = match self.db.online_sessions().await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::error!("cannot read which servers are recorded online: {e}");
                return 0;
            }
        };
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.heartbeats.timeout).unwrap_or(chrono::Duration::MAX);
        let stale: Vec<(ServerId, u64, DateTime<Utc>)> = {
            let live = self.live();
            recorded
                .into_iter()
                .filter(|(id, session, last_seen)| {
                    *last_seen < cutoff && live.get(id).is_none_or(|l| l.session != *session)
                })
                .collect()
        };
        for (server, session, last_seen) in &stale {
            tracing::warn!(server = %server, "recorded online with no connection: marking it offline");
            self.go_offline(
                server,
                *session,
                *last_seen,
                "the connection ended (found by the controller's check)",
            )
            .await;
        }
        stale.len()
    }

    /// Ends the connections of agents silent for longer than the timeout and
    /// marks them offline. Returns how many went offline.
    pub async fn sweep(&self) -> usize {
        let timeout = self.heartbeats.timeout;
        let expired: Vec<(ServerId, Live)> = {
            let mut live = self.live();
            let silent: Vec<ServerId> = live
                .iter()
                .filter(|(_, l)| l.last_seen_at.elapsed() > timeout)
                .map(|(id, _)| id.clone())
                .collect();
            silent
                .into_iter()
                .filter_map(|id| live.remove(&id).map(|l| (id, l)))
                .collect()
        };
        for (server, entry) in &expired {
            entry.kick.cancel();
            let reason = format!("no heartbeat for {} ms", timeout.as_millis());
            self.go_offline(server, entry.session, entry.last_seen, &reason)
                .await;
        }
        expired.len()
    }

    /// Writes the last-seen times that changed since the previous flush;
    /// a connected server's row found offline is put back online.
    pub async fn flush_last_seen(&self) {
        let batch: Vec<(ServerId, u64, DateTime<Utc>)> = self
            .live()
            .iter_mut()
            .filter(|(_, l)| l.dirty)
            .map(|(id, l)| {
                l.dirty = false;
                (id.clone(), l.session, l.last_seen)
            })
            .collect();
        match self.db.record_last_seen(&batch).await {
            Ok(repaired) => {
                for server in repaired {
                    tracing::warn!(server = %server, "a connected server was recorded offline; it is online again");
                    if let Ok(server) = ServerId::parse(&server) {
                        self.announce(&server);
                    }
                }
            }
            Err(e) => tracing::error!("cannot record last-seen times: {e}"),
        }
    }

    /// Sweeps silent agents and flushes heartbeats until `stop` is cancelled.
    pub async fn housekeeping(&self, stop: CancellationToken) {
        let tick =
            (self.heartbeats.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut ticker = tokio::time::interval(tick);
        let mut last_flush = Instant::now();
        let mut last_reconcile = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.flush_last_seen().await;
                    return;
                }
                _ = ticker.tick() => {}
            }
            self.sweep().await;
            if last_flush.elapsed() >= self.heartbeats.interval {
                self.flush_last_seen().await;
                last_flush = Instant::now();
            }
            if last_reconcile.elapsed() >= self.heartbeats.timeout * 2 {
                self.reconcile().await;
                last_reconcile = Instant::now();
            }
        }
    }
}

mod orders;
mod presence;
pub mod relay;

use orders::Awaiting;
pub use orders::{Order, OrderError, Reply};

#[cfg(test)]
mod tests;
