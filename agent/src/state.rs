//! What the agent's tasks share: its settings, the latest scan, the link's
//! state, the installs and downloads, and the notices for the portal. The
//! tasks themselves are started by [`crate::run`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use flotilla_proto::link::PackageOffer;
use tokio::sync::{Notify, watch};

use crate::config::Settings;
use crate::install::{CrashPoints, Event, Failure, Outcome};
use crate::inventory::Inventory;
use crate::pending::PackageTrust;

impl Agent {
    /// The state of an agent on `settings` that has not scanned, connected
    /// or installed anything yet; its portal at `portal_address`.
    pub fn new(
        settings: Settings,
        portal_address: std::net::SocketAddr,
        crash_points: Arc<dyn CrashPoints>,
    ) -> Agent {
        Agent {
            settings,
            inventory: watch::Sender::new(Inventory::default()),
            last_check: watch::Sender::new(Utc::now()),
            link: watch::Sender::new(LinkStatus::Connecting),
            rescan: Notify::new(),
            installs: Installs::new(crash_points),
            downloads: Downloads::default(),
            notices: Mutex::new(Vec::new()),
            started_at: Utc::now(),
            last_heartbeat: Mutex::new(None),
            portal_address,
            portal_token: flotilla_proto::web::random_secret(),
            local: crate::local_access::Local::default(),
            hand_over: watch::Sender::new(None),
        }
    }

    /// Which packages this agent installs, as its settings and the
    /// controller's withdrawals say now.
    pub fn trust(&self) -> PackageTrust {
        PackageTrust {
            keys: self.settings.trusted_keys.clone(),
            allow_unsigned: self.settings.allow_unsigned_local_packages,
            withdrawn: self.downloads.withdrawn(),
        }
    }
}

/// How the link to the controller stands, for the portal and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// Dialling for the first time.
    Connecting,
    Connected {
        since: DateTime<Utc>,
        /// How far the controller's clock is ahead of this server's (ms),
        /// as its welcome said; `None` from an older controller.
        clock_skew_ms: Option<i64>,
        /// How often heartbeats go, as the controller asked.
        heartbeat_every_ms: u64,
    },
    /// The controller is away; the agent keeps retrying with backoff.
    Disconnected { since: DateTime<Utc>, error: String },
    /// The controller refused this agent (incompatible protocol, ...).
    Refused {
        since: DateTime<Utc>,
        message: String,
    },
}

/// What the agent's tasks share.
#[derive(Debug)]
pub struct Agent {
    pub settings: Settings,
    /// The latest scan; the link sends its changes, the portal shows it.
    pub inventory: watch::Sender<Inventory>,
    /// When the latest scan that changed something ran.
    pub last_check: watch::Sender<DateTime<Utc>>,
    /// The controller link's state, shown on the portal.
    pub link: watch::Sender<LinkStatus>,
    /// Wakes the scanner before its interval, e.g. on the controller's request.
    pub rescan: Notify,
    /// Installs running and done.
    pub installs: Installs,
    /// Published packages pushed by the controller, and their downloads.
    pub downloads: Downloads,
    /// What the agent repaired or recovered at start, shown on the portal.
    pub notices: std::sync::Mutex<Vec<String>>,
    /// When this process started.
    pub started_at: DateTime<Utc>,
    /// When the last heartbeat went to the controller.
    pub last_heartbeat: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Where the portal listens (the configured address, with the port the
    /// system chose when it was 0).
    pub portal_address: std::net::SocketAddr,
    /// The token the portal's own forms carry, new at each start: a form
    /// posted from any other page lacks it.
    pub portal_token: String,
    /// Who may change something through the portal: the local token, and
    /// the browsers signed in with a one-time link.
    pub local: crate::local_access::Local,
    /// Set when a new version of the agent is ready to take over: the agent
    /// stops its work and [`crate::run`] ends with it
    /// ([`crate::self_update`]).
    pub hand_over: watch::Sender<Option<Trial>>,
}

/// An update under way: what the old version hands over to the new one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    pub install_id: String,
    /// The controller's order, if it ordered the update.
    pub command_id: Option<String>,
    pub from: String,
    pub to: String,
    pub started_at: DateTime<Utc>,
    pub budget_ms: u64,
    pub settle_ms: u64,
}

/// One module's latest install, as shown on the portal.
#[derive(Debug, Clone)]
pub struct InstallView {
    /// Unique on this agent: `<module>-<start in Unix ms>`.
    pub install_id: String,
    /// The controller command that ordered it, if it did.
    pub command_id: Option<String>,
    pub module: String,
    /// The version installed when it started, if any.
    pub from: Option<String>,
    /// A kept backup put back, rather than a package installed.
    pub restore: bool,
    pub to: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub events: Vec<Event>,
    /// `None` while it runs.
    pub result: Option<Result<Outcome, Failure>>,
}

/// What watchers of installs (the controller link) are told.
#[derive(Debug, Clone)]
pub enum InstallNotice {
    Progress {
        install_id: String,
        command_id: Option<String>,
        module: String,
        to: String,
        event: Event,
    },
    Finished(Box<InstallView>),
}

/// Installs in progress and past, one at a time per agent.
#[derive(Debug)]
pub struct Installs {
    /// Every install's events and ends, as they happen.
    pub notices: tokio::sync::broadcast::Sender<InstallNotice>,
    pub(crate) views: Mutex<HashMap<String, InstallView>>,
    /// The module being installed now, if any.
    pub(crate) running: tokio::sync::watch::Sender<Option<String>>,
    /// Set when the agent stops: no install starts any more.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// The controller's rollout this server is part of, if any: local
    /// installs are refused while it runs.
    pub(crate) hold: Mutex<Option<String>>,
    /// The engine's crash points; none outside the test harness's binary.
    pub(crate) crash_points: Arc<dyn CrashPoints>,
}

impl Installs {
    pub fn new(crash_points: Arc<dyn CrashPoints>) -> Self {
        Installs {
            notices: tokio::sync::broadcast::Sender::new(1024),
            views: Mutex::new(HashMap::new()),
            running: tokio::sync::watch::Sender::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            hold: Mutex::new(None),
            crash_points,
        }
    }

    /// Holds the server for a controller's rollout (`Some`), or releases it.
    pub fn set_hold(&self, rollout: Option<String>) {
        *self.hold.lock().unwrap_or_else(|p| p.into_inner()) = rollout;
    }

    pub fn view(&self, module: &str) -> Option<InstallView> {
        self.views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(module)
            .cloned()
    }

    /// Every module's latest install.
    pub fn views(&self) -> Vec<InstallView> {
        let mut views: Vec<InstallView> = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        views.sort_by_key(|v| v.started_at);
        views
    }

    pub fn running(&self) -> Option<String> {
        self.running.borrow().clone()
    }

    /// Takes the agent for work outside an install (a database restored
    /// alone, named by `what`) while nothing else runs: no install starts,
    /// and a stop waits, until the claim is dropped. Refused with what runs
    /// (or that the agent stops).
    pub fn claim(&self, what: &str) -> Result<Claim<'_>, String> {
        let mut refused = None;
        self.running.send_if_modified(|running| {
            refused = if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                Some("the agent is stopping".to_owned())
            } else {
                running.clone()
            };
            if refused.is_none() {
                *running = Some(what.to_owned());
            }
            refused.is_none()
        });
        match refused {
            Some(busy) => Err(busy),
            None => Ok(Claim { installs: self }),
        }
    }

    /// Refuses new installs, then waits until the running one, if any, has
    /// finished or rolled back; returns the module it waited for.
    pub async fn close(&self) -> Option<String> {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let waited = self.running();
        if let Some(module) = &waited {
            tracing::info!(
                module,
                "waiting for the install of {module} to finish before stopping"
            );
        }
        let _ = self.running.subscribe().wait_for(Option::is_none).await;
        waited
    }
}

/// The agent taken for one piece of work; released when dropped.
#[derive(Debug)]
pub struct Claim<'a> {
    installs: &'a Installs,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.installs.running.send_replace(None);
    }
}

/// Where a module's download stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadState {
    Downloading {
        version: String,
        received: u64,
        total: u64,
    },
    /// Verified and waiting in the packages folder.
    Ready {
        version: String,
    },
    Failed {
        version: String,
        why: String,
    },
    /// Failed its checks (checksum, signature, manifest): not fetched again.
    Refused {
        version: String,
        why: String,
    },
}

/// The agent's downloads.
#[derive(Debug, Default)]
pub struct Downloads {
    /// The published packages, as last pushed.
    pub(crate) offers: Mutex<Vec<PackageOffer>>,
    /// Per module.
    pub(crate) states: Mutex<HashMap<String, DownloadState>>,
    /// Wakes the downloader when offers or the inventory change.
    pub(crate) wake: Notify,
    /// The sha256 of packages whose release was withdrawn.
    pub(crate) withdrawn: Mutex<HashSet<String>>,
    /// The controller's download base and this connection's token.
    pub(crate) credentials: Mutex<Option<(String, String)>>,
}

impl Downloads {
    /// Adds packages pushed by the controller (newer releases last), and
    /// forgets those whose release was withdrawn (the downloader then drops
    /// them from the packages folder).
    pub fn offer(&self, offers: Vec<PackageOffer>, withdrawn: Vec<String>) {
        let withdrawn = {
            let mut all = self.withdrawn.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(withdrawn.into_iter().map(|sha| sha.to_ascii_lowercase()));
            all.clone()
        };
        {
            let mut known = self.offers.lock().unwrap_or_else(|p| p.into_inner());
            // An agent package built for another platform is not this
            // server's to download (a release carries one per platform).
            let here = flotilla_proto::domain::platform();
            for offer in offers
                .into_iter()
                .filter(|o| o.platform.is_empty() || o.platform == here)
            {
                known.retain(|o| o.sha256 != offer.sha256);
                known.push(offer);
            }
            known.retain(|o| !withdrawn.contains(&o.sha256.to_ascii_lowercase()));
        }
        self.wake.notify_one();
    }

    /// What the controller's Welcome said to download with: the token is
    /// sent only to URLs under `base`, the controller's own.
    pub fn set_credentials(&self, base: String, token: String) {
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) =
            (!base.is_empty() && !token.is_empty()).then_some((base, token));
    }

    /// The token to send for `url`, if it is the controller's.
    pub(crate) fn token_for(&self, url: &str) -> Option<String> {
        self.credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(base, _)| url.starts_with(&format!("{}/", base.trim_end_matches('/'))))
            .map(|(_, token)| token.clone())
    }

    /// The sha256 of packages whose release was withdrawn.
    pub fn withdrawn(&self) -> HashSet<String> {
        self.withdrawn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn states(&self) -> HashMap<String, DownloadState> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, module: &str, state: DownloadState) {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(module.to_owned(), state);
    }

    /// The release notes of the package `module` `version`, if pushed.
    pub fn notes(&self, module: &str, version: &str) -> Option<(String, String)> {
        self.offers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|o| o.module == module && o.version.as_str() == version)
            .map(|o| (o.release_version.clone(), o.release_notes.clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_claim_at_a_time_and_none_once_the_agent_stops() {
        let installs = Installs::new(Arc::new(crate::install::NoCrashPoints));
        let claim = installs
            .claim("the restore of the database of shop")
            .unwrap();
        assert_eq!(
            installs.running().as_deref(),
            Some("the restore of the database of shop")
        );
        assert_eq!(
            installs.claim("another").unwrap_err(),
            "the restore of the database of shop"
        );
        drop(claim);
        assert_eq!(installs.running(), None);
        installs
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(installs.claim("late").unwrap_err(), "the agent is stopping");
    }
}
