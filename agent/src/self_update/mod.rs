//! The agent updates itself, side by side. Each version lives in its own
//! folder (`<data>/bin/agent/versions/<version>/flotilla-agent[.exe]`); the
//! service runs the current one (Linux: through the `<data>/bin/agent/current`
//! link; Windows: the service control manager runs that version's own
//! executable, and `current.txt` names it); the running executable is never
//! overwritten, and the previous version is kept.
//!
//! An update is a trial that the old version runs and the new one must
//! pass. The old agent waits for any install to end, writes the trial
//! (`trial.json`, fsynced), checks the package (a trusted signature, an
//! agent for this platform, an executable that answers `--version` with its
//! version), unpacks it beside itself, stops its own work and starts the
//! new version as its child ([`supervise::supervise`]). The child must
//! connect with this server's certificate and stay connected for the settle
//! time within the budget; it says so on its output. Then the old one
//! commits (the service pointed at the new version, its end kept, the trial
//! removed), tells the child, which reports the update done, and stays only
//! as its parent. Otherwise (the child exits, never connects, crashes after
//! connecting, the budget passes) the old one ends it, runs again itself,
//! and reports why; so too when the child, made the service's, fails
//! before its budget has passed. The rollback is the old binary's own code: nothing only
//! the new version has can break it. A power cut leaves one whole version
//! to start: during the trial the old one, which finds the trial and
//! reports it failed; once the service runs the new one, the new one,
//! which finds the trial or the kept end and reports it done ([`at_start`]).
//! `home.rs`: the versions' folder and which version the service runs;
//! `supervise.rs`: the old version's side of the trial.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::{AGENT_MODULE, ModuleName, Version, platform};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::install::{Event, EventKind, Failure, Outcome};
pub use crate::state::Trial;
use crate::state::{Agent, InstallView};

mod home;
pub mod supervise;

pub use home::{EXE, Home};

/// What a child on trial prints once it has proved itself.
const PROVED: &str = "flotilla-agent trial: proved";

/// The environment variable that tells a child it is on trial, and for
/// which version.
const ON_TRIAL: &str = "FLOTILLA_TRIAL";

/// Whether this process is a new version on trial (its supervisor, the old
/// version, started it).
pub fn on_trial() -> bool {
    std::env::var_os(ON_TRIAL).is_some()
}

/// How the last update ended, kept so that it is reported after restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ended {
    trial: Trial,
    ok: bool,
    message: String,
    finished_at: DateTime<Utc>,
}

fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let written = path.with_extension("json.new");
    let mut file = std::fs::File::create(&written)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&written, path)?;
    // The rename made durable (Unix; Windows has no directory handle for it).
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!("{} cannot be read, left aside: {e}", path.display());
            let _ = std::fs::rename(path, path.with_extension("json.unreadable"));
            None
        }
    }
}

/// Unpacks the agent package at `package` (checked: a trusted signature,
/// this platform) as version `to`, and checks its executable answers
/// `--version` with `to`. Refused before anything runs otherwise.
pub async fn unpack(home: &Home, package: &Path, sha256: &str, to: &str) -> Result<(), String> {
    let opened = {
        let (package, sha256) = (package.to_path_buf(), sha256.to_owned());
        tokio::task::spawn_blocking(move || {
            crate::install::package::Package::open(&package, &sha256).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let manifest = &opened.manifest;
    if manifest.platform.as_deref() != Some(platform().as_str()) {
        return Err(format!(
            "the package is built for {}, this server is {}",
            manifest.platform.as_deref().unwrap_or("no platform"),
            platform()
        ));
    }
    let folder = home.versions().join(to);
    let partial = home.versions().join(format!(".{to}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    {
        let (opened, partial) = (opened.clone(), partial.clone());
        tokio::task::spawn_blocking(move || {
            opened
                .unpack(&partial, crate::install::package::Limits::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
    }
    let exe = partial.join(EXE);
    if !exe.is_file() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!("the package holds no {EXE} at its top"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&exe)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let said = match answer {
        Ok(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(Ok(output)) => format!("exit status {}", output.status),
        Ok(Err(e)) => format!("it cannot run: {e}"),
        Err(_) => "no answer within 30 s".to_owned(),
    };
    if said != format!("flotilla-agent {to}") {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!(
            "its executable does not answer --version with flotilla-agent {to}: {said}"
        ));
    }
    // The target may already be on disk (an earlier attempt, a rollback):
    // the new bytes replace it, whole.
    if folder.exists() {
        std::fs::remove_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    }
    // Windows may hold the executable just asked `--version` a moment
    // longer (or an antivirus scanning it): a few tries over five seconds.
    let mut tries = 0;
    loop {
        match std::fs::rename(&partial, &folder) {
            Ok(()) => return Ok(()),
            Err(_) if cfg!(windows) && tries < 25 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(format!("{}: {e}", folder.display()));
            }
        }
    }
}

/// Starts the update to the agent package `package` (`to`, `sha256`) in the
/// background: it waits for any install to end, unpacks and checks the new
/// version, writes the trial, and hands the agent over ([`Agent::hand_over`]).
/// The new version has `budget` to prove itself. Refused at once when this
/// agent does not run from its versions folder.
pub fn start(
    agent: &Arc<Agent>,
    package: PathBuf,
    sha256: String,
    to: &Version,
    command_id: Option<String>,
    budget: Duration,
) -> Result<(), String> {
    let home = Home::of(&agent.settings.layout);
    if !home.runs_this_process() {
        return Err(format!(
            "this agent runs from {}, not from {}: install its service again (`flotilla-agent service install`, or `join`) so that it can update itself",
            std::env::current_exe()
                .map(|e| e.display().to_string())
                .unwrap_or_default(),
            home.versions().display()
        ));
    }
    if to.as_str() == crate::VERSION {
        return Err(format!("this agent is already version {to}"));
    }
    let started_at = Utc::now();
    let trial = Trial {
        install_id: format!("{AGENT_MODULE}-{}", started_at.timestamp_millis()),
        command_id,
        from: crate::VERSION.to_owned(),
        to: to.to_string(),
        started_at,
        budget_ms: budget.as_millis() as u64,
        settle_ms: agent.settings.update_settle.as_millis() as u64,
    };
    show(agent, &trial, None);
    let agent = agent.clone();
    tokio::spawn(async move {
        say(
            &agent,
            &trial,
            format!(
                "waiting for any install to end, then updating the agent to {}",
                trial.to
            ),
        );
        // Never interrupts an install: waits for it, then holds the agent.
        let mut running = agent.installs.running.subscribe();
        loop {
            let _ = running.wait_for(Option::is_none).await;
            let taken = agent.installs.running.send_if_modified(|now| {
                let free = now.is_none();
                if free {
                    *now = Some(AGENT_MODULE.to_owned());
                }
                free
            });
            if taken {
                break;
            }
        }
        // The trial is written first: a power cut from here on is found at
        // the next start and reported.
        let prepared = async {
            std::fs::create_dir_all(home.versions()).map_err(|e| e.to_string())?;
            write_json(&home.trial_file(), &trial).map_err(|e| e.to_string())?;
            unpack(&home, &package, &sha256, &trial.to).await?;
            say(
                &agent,
                &trial,
                format!("{} unpacked and answers with its version", trial.to),
            );
            Ok::<(), String>(())
        }
        .await;
        agent.installs.running.send_replace(None);
        match prepared {
            Ok(()) => {
                say(
                    &agent,
                    &trial,
                    format!(
                        "handing over to {}: it must connect and stay connected {} s within {} s",
                        trial.to,
                        trial.settle_ms / 1000,
                        trial.budget_ms / 1000
                    ),
                );
                agent.hand_over.send_replace(Some(trial));
            }
            Err(why) => {
                let _ = std::fs::remove_file(home.trial_file());
                let ended = Ended {
                    trial,
                    ok: false,
                    message: format!(
                        "the update of the agent was refused before anything changed: {why}"
                    ),
                    finished_at: Utc::now(),
                };
                record(&agent, &home, &ended);
            }
        }
    });
    Ok(())
}

/// `trial` as the latest install of the agent's module (`ended` once it
/// has).
fn view_of(trial: &Trial, ended: Option<&Ended>) -> InstallView {
    let result = match ended {
        None => None,
        Some(ended) if ended.ok => Some(Ok(Outcome {
            from: Some(trial.from.clone()),
            to: trial.to.clone(),
            downtime: Duration::ZERO,
            backup: None,
            warnings: Vec::new(),
        })),
        Some(ended) => Some(Err(Failure {
            module: AGENT_MODULE.to_owned(),
            to: trial.to.clone(),
            phase: None,
            step: "updating the agent".to_owned(),
            cause: ended.message.clone(),
            hook_output: Vec::new(),
            rolled_back: true,
            rollback_error: None,
        })),
    };
    InstallView {
        install_id: trial.install_id.clone(),
        command_id: trial.command_id.clone(),
        module: AGENT_MODULE.to_owned(),
        from: Some(trial.from.clone()),
        restore: false,
        to: trial.to.clone(),
        started_at: trial.started_at,
        finished_at: ended.map(|e| e.finished_at),
        events: Vec::new(),
        result,
    }
}

/// Shows `trial` on the portal and to the controller (`ended` once it
/// has).
fn show(agent: &Agent, trial: &Trial, ended: Option<&Ended>) {
    let view = view_of(trial, ended);
    let finished = view.result.is_some();
    agent
        .installs
        .views
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(AGENT_MODULE.to_owned(), view.clone());
    if finished {
        let _ = agent
            .installs
            .notices
            .send(crate::state::InstallNotice::Finished(Box::new(view)));
    }
}

/// A step of the update, on its view and to the controller.
fn say(agent: &Agent, trial: &Trial, text: String) {
    tracing::info!("{text}");
    let event = Event {
        at: Utc::now(),
        phase: None,
        kind: EventKind::Step,
        text,
    };
    let mut views = agent
        .installs
        .views
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(view) = views.get_mut(AGENT_MODULE) {
        view.events.push(event.clone());
    }
    drop(views);
    let _ = agent
        .installs
        .notices
        .send(crate::state::InstallNotice::Progress {
            install_id: trial.install_id.clone(),
            command_id: trial.command_id.clone(),
            module: AGENT_MODULE.to_owned(),
            to: trial.to.clone(),
            event,
        });
}

/// Keeps how the update ended (reported again after restarts), in the
/// module's history, and shows it.
fn record(agent: &Agent, home: &Home, ended: &Ended) {
    if let Err(e) = write_json(&home.outcome_file(), ended) {
        tracing::warn!("cannot keep how the update of the agent ended: {e}");
    }
    if ended.ok {
        tracing::info!(from = %ended.trial.from, to = %ended.trial.to, "the agent updated itself");
    } else {
        tracing::error!(to = %ended.trial.to, "the update of the agent failed: {}", ended.message);
    }
    show(agent, &ended.trial, Some(ended));
    in_history_once(agent, ended);
}

/// The update's end in the agent module's history, unless it is there
/// (a rollback is kept by the old version's supervisor, which has no
/// agent to record it, and recorded at the next start).
fn in_history_once(agent: &Agent, ended: &Ended) {
    let updates = agent.settings.layout.updates_dir();
    let Ok(name) = ModuleName::parse(AGENT_MODULE) else {
        return;
    };
    let known = crate::history::read(&updates, &name)
        .map(|entries| {
            // The same update done, then taken back within its budget, is
            // kept twice: its end changed.
            entries
                .iter()
                .any(|e| e.install_id == ended.trial.install_id && e.ending.ok() == ended.ok)
        })
        .unwrap_or(false);
    if known {
        return;
    }
    if let Some(entry) = crate::history::Entry::of(&view_of(&ended.trial, Some(ended)))
        && let Err(e) = crate::history::record(&updates, &name, entry)
    {
        tracing::warn!("cannot record the update of the agent in its history: {e}");
    }
}

/// At the start of an agent: the last update's end is shown again (the
/// controller ignores what it has); a trial left by a power cut is ended:
/// as done when `current` already is this version, as failed when this is
/// the old one; a child on trial proves itself ([`prove`]).
pub fn at_start(agent: &Arc<Agent>, stop: &CancellationToken) {
    let home = Home::of(&agent.settings.layout);
    if let Some(ended) = read_json::<Ended>(&home.outcome_file()) {
        show(agent, &ended.trial, Some(&ended));
    }
    if let Some(ended) = read_json::<Ended>(&home.outcome_file()) {
        in_history_once(agent, &ended);
    }
    let Some(trial) = read_json::<Trial>(&home.trial_file()) else {
        return;
    };
    let on_trial = std::env::var(ON_TRIAL).ok();
    if trial.to == crate::VERSION && on_trial.as_deref() == Some(crate::VERSION) {
        show(agent, &trial, None);
        tokio::spawn(prove(agent.clone(), trial, stop.clone()));
        return;
    }
    // Windows: the service control manager started this version, so it
    // was pointed at it; a power cut kept `current.txt` from following.
    #[cfg(windows)]
    if trial.to == crate::VERSION
        && home.runs_this_process()
        && home.current_version().as_deref() != Some(crate::VERSION)
        && let Err(e) = home.point_at(crate::VERSION)
    {
        tracing::warn!(
            "cannot record {} as the current version: {e}",
            crate::VERSION
        );
    }
    let ended = if trial.to == crate::VERSION
        && home.current_version().as_deref() == Some(crate::VERSION)
    {
        Ended {
            trial,
            ok: true,
            message: String::new(),
            finished_at: Utc::now(),
        }
    } else if trial.from == crate::VERSION {
        Ended {
            message: format!(
                "the update to {} was interrupted (the agent or the server stopped during its trial); version {} runs",
                trial.to, trial.from
            ),
            trial,
            ok: false,
            finished_at: Utc::now(),
        }
    } else {
        return;
    };
    let _ = std::fs::remove_file(home.trial_file());
    record(agent, &home, &ended);
}

/// A child on trial: once its link has stayed up `settle`, it says so on
/// its output; told `committed` on its input, it reports the update done.
/// Its input closing means its parent wants it to stop.
async fn prove(agent: Arc<Agent>, trial: Trial, stop: CancellationToken) {
    let (committed_tx, committed) = tokio::sync::oneshot::channel::<()>();
    let stdin_stop = stop.clone();
    // The parent's word comes on standard input, read on a thread of its own.
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut committed_tx = Some(committed_tx);
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(line) if line.trim() == "committed" => {
                    if let Some(tx) = committed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        stdin_stop.cancel();
    });
    let settle = Duration::from_millis(trial.settle_ms);
    let mut link = agent.link.subscribe();
    loop {
        let connected = matches!(
            *link.borrow_and_update(),
            crate::LinkStatus::Connected { .. }
        );
        if connected {
            tokio::select! {
                _ = tokio::time::sleep(settle) => break,
                _ = link.changed() => continue,
                _ = stop.cancelled() => return,
            }
        }
        tokio::select! {
            changed = link.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
    println!("{PROVED} {}", crate::VERSION);
    let _ = std::io::stdout().flush();
    tokio::select! {
        done = committed => if done.is_ok() {
            let home = Home::of(&agent.settings.layout);
            let ended = Ended { trial, ok: true, message: String::new(), finished_at: Utc::now() };
            record(&agent, &home, &ended);
        },
        _ = stop.cancelled() => {}
    }
}
