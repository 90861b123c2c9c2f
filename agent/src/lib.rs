//! The Flotilla agent: one per server.
//!
//! Layout:
//! - [`config`]: the TOML settings and the data folder's layout.
//! - [`applications`]: `applicationspath.config`, which modules live here.
//! - [`state`]: what the tasks share ([`Agent`]).
//! - [`inventory`]: scanning modules on disk, the difference between scans,
//!   each module's pending package; [`pending`]: the packages waiting and
//!   which of them this agent trusts.
//! - [`status_file`]: `status.xml`, what the last check found.
//! - [`downloads`]: pre-downloading the packages the controller pushes,
//!   resumable, verified (sha256, trusted signature), downgrades refused.
//! - [`link`]: the one long-lived gRPC stream to the controller, with
//!   reconnection; the only module that sees wire types. [`dial`]: the
//!   controller's endpoint, which the link and the doctor dial.
//! - [`install`]: the install engine (packages, hooks, maintenance page,
//!   journal, rollback, recovery); [`installs`]: the one install running at
//!   a time; [`databases`]: database modules' upgrades.
//! - [`doctor`]: the procedure's troubleshooting checks, which the link,
//!   the portal and the CLI run; it depends on neither the link nor the
//!   portal.
//! - [`portal`]: the local web portal on `127.0.0.1:8080`; [`html`]: text
//!   made safe for its pages and the doctor's.
//! - [`cli`]: `flotilla-agent install|rollback`, clients of the portal's API;
//!   [`join`]: `flotilla-agent join|leave`, a server in or out of the fleet
//!   in one command, and the agent's service.
//!
//! [`run`] starts them all on an already-bound portal listener and stops them
//! when the shutdown future resolves. `main` only reads the configuration.

pub mod applications;
pub mod cli;
pub mod config;
pub mod databases;
pub mod dial;
pub mod doctor;
pub mod downloads;
pub mod history;
pub mod hook_names;
pub mod html;
pub mod identity;
pub mod install;
pub mod installs;
pub mod inventory;
pub mod join;
pub mod link;
pub mod local_access;
pub mod pending;
pub mod portal;
pub mod self_update;
pub mod service_spec;
pub mod state;
pub mod status_file;

pub use state::{Agent, LinkStatus};

/// The version this agent reports: `FLOTILLA_BUILD_VERSION` when it was
/// set while compiling, else the crate's (see `build.rs`).
pub const VERSION: &str = env!("FLOTILLA_AGENT_VERSION");

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::inventory::Inventory;

/// How [`run`] ended.
#[derive(Debug)]
pub enum Ended {
    /// Asked to stop.
    Stopped,
    /// A new version of the agent is ready to take over
    /// ([`self_update::supervise`] runs it).
    HandOver(self_update::Trial),
}

/// Runs the agent until `shutdown` resolves, or until a new version of the
/// agent is ready to take over. `crash_points` is
/// [`install::NoCrashPoints`] in the agent binary; `local` the portal's
/// local token, already in its file ([`local_access::Local::write`]).
pub async fn run(
    settings: Settings,
    portal_listener: TcpListener,
    crash_points: Arc<dyn install::CrashPoints>,
    local: local_access::Local,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Ended> {
    flotilla_proto::tls::install_crypto_provider();
    let portal_address = portal_listener.local_addr()?;
    let mut agent = Agent::new(settings, portal_address, crash_points);
    agent.local = local;
    let agent = Arc::new(agent);
    if matches!(
        agent.settings.controller_trust,
        config::ControllerTrust::Plaintext
    ) {
        tracing::warn!(
            controller = %agent.settings.controller_url,
            "insecure_plaintext: the controller link and downloads are plain text; anyone on the network can read and change them"
        );
    }
    let stop = CancellationToken::new();
    // Before anything looks at the modules: no half-installed module and no
    // orphan maintenance page survives a restart.
    let notices = installs::recover_at_start(&agent).await;
    agent
        .notices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(notices);
    // How the last update of the agent ended; a trial a power cut left.
    let trial_stop = CancellationToken::new();
    self_update::at_start(&agent, &trial_stop);
    // The first scan completes before anything is reported, so the controller
    // and the portal never see an empty server that is not.
    scan_once(&agent, &mut None).await;

    let scanner = tokio::spawn(scanner(agent.clone(), stop.clone()));
    let link = tokio::spawn(link::run(agent.clone(), stop.clone()));
    let portal = tokio::spawn(portal::serve(agent.clone(), portal_listener, stop.clone()));
    let downloader = tokio::spawn(downloads::run(agent.clone(), stop.clone()));

    let mut hand_over = agent.hand_over.subscribe();
    let ended = tokio::select! {
        () = shutdown => Ended::Stopped,
        () = trial_stop.cancelled() => Ended::Stopped,
        trial = hand_over.wait_for(Option::is_some) => match trial.ok().and_then(|t| t.clone()) {
            Some(trial) => Ended::HandOver(trial),
            None => Ended::Stopped,
        },
    };
    tracing::info!("shutting down");
    // A running install is never cut: it finishes or rolls back, and its
    // result reaches the controller, before anything stops.
    if let Some(module) = agent.installs.close().await {
        tracing::info!(module, "the install of {module} ended; stopping");
    }
    stop.cancel();
    let (scanner, link, portal, downloader) = tokio::join!(scanner, link, portal, downloader);
    downloader?;
    scanner?;
    link?;
    portal??;
    Ok(ended)
}

/// Runs the agent on `settings` (read from `config`) until `shutdown`;
/// `ready` once its portal listens; prints where its portal is. `crash_points`
/// is [`install::NoCrashPoints`] in the agent binary. When a new version of the agent is
/// ready to take over, this process runs it as its child on trial, and
/// runs again itself if it fails ([`self_update`]).
pub async fn serve(
    config: &std::path::Path,
    settings: Settings,
    crash_points: Arc<dyn install::CrashPoints>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    use self_update::supervise::{Supervised, supervise};
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let mut ready = Some(ready);
    loop {
        let listener = tokio::net::TcpListener::bind(settings.portal_listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {} for the local portal: {e}",
                    settings.portal_listen
                )
            })?;
        let portal = listener.local_addr()?;
        tracing::info!(
            server = %settings.server_id,
            site = %settings.site,
            data = %settings.layout.root().display(),
            version = VERSION,
            "agent starting"
        );
        // The local token, in its file before anyone is told where the
        // portal is.
        identity::keep_private(&settings.layout.identity_dir());
        let local = local_access::Local::default();
        local.write(&settings.layout)?;
        // The one line a person (or a test) needs: where the portal is.
        println!(
            "flotilla-agent {} portal: http://{portal}/",
            settings.server_id
        );
        if let Some(ready) = ready.take() {
            ready();
        }
        let until = stop.clone().cancelled_owned();
        let trial = match run(
            settings.clone(),
            listener,
            crash_points.clone(),
            local,
            until,
        )
        .await?
        {
            Ended::Stopped => return Ok(()),
            Ended::HandOver(trial) => trial,
        };
        match supervise(&settings.layout, config, trial, &*crash_points, &stop).await? {
            Supervised::Ended(status) if status.success() => return Ok(()),
            Supervised::Ended(status) => anyhow::bail!("the agent's new version ended: {status}"),
            Supervised::Stopped => return Ok(()),
            Supervised::RolledBack => continue,
        }
    }
}

/// Rescans modules on the configured interval, or sooner when asked.
async fn scanner(agent: Arc<Agent>, stop: CancellationToken) {
    let mut previous = Some(agent.inventory.borrow().clone());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(agent.settings.scan_interval) => {}
            _ = agent.rescan.notified() => {}
        }
        scan_once(&agent, &mut previous).await;
    }
}

/// One scan: publishes the inventory and rewrites `status.xml` when something
/// changed since `previous`.
async fn scan_once(agent: &Arc<Agent>, previous: &mut Option<Inventory>) {
    let layout = agent.settings.layout.clone();
    let trust = agent.trust();
    let mut scanned =
        match tokio::task::spawn_blocking(move || inventory::scan(&layout, &trust)).await {
            Ok(scanned) => scanned,
            Err(e) => {
                tracing::error!("module scan failed: {e}");
                return;
            }
        };
    let downloads = agent.downloads.states();
    for module in &mut scanned.modules {
        module.download = downloads
            .get(module.name.as_str())
            .and_then(downloads::report);
    }
    if previous.as_ref() == Some(&scanned) {
        return;
    }
    for problem in &scanned.problems {
        tracing::error!("{problem}");
    }
    let now = Utc::now();
    let status_path = agent.settings.layout.status_file();
    let mut published = scanned.clone();
    if let Err(e) = status_file::write(&status_path, &scanned, now) {
        let problem = flotilla_proto::domain::Problem {
            file: Some(status_path.display().to_string()),
            line: None,
            message: format!(
                "cannot write the status file: {e} (does the agent's account have write access to this folder?)"
            ),
        };
        tracing::error!("{problem}");
        published.problems.push(problem);
    }
    for module in &scanned.modules {
        let version = module.installed_version.as_ref().map(|v| v.to_string());
        tracing::info!(
            module = %module.name,
            version = version.as_deref().unwrap_or("-"),
            state = module.state.as_str(),
            "module scanned"
        );
    }
    *previous = Some(scanned);
    agent.last_check.send_replace(now);
    agent.inventory.send_replace(published);
}
