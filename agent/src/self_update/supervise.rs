//! The old version's side of the trial: it runs the new one as its child,
//! commits it once it has proved itself, and puts itself back otherwise.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[cfg(windows)]
use super::home::point_service_at;
use super::{Ended, Home, ON_TRIAL, PROVED, Trial, write_json};
use crate::config::DataLayout;
use crate::install::CrashPoints;

/// How a supervised update ended.
#[derive(Debug)]
pub enum Supervised {
    /// The new version proved itself and runs; it ended with this status
    /// (the service manager restarts what fails).
    Ended(std::process::ExitStatus),
    /// Stopped while the new version was on trial or running.
    Stopped,
    /// The new version failed its trial: the old one must run again.
    RolledBack,
}

/// Runs the new version of `trial` as this process's child on trial, with
/// the configuration `config`; commits it once it has proved itself, puts
/// the old one back otherwise (see the module's documentation).
pub async fn supervise(
    layout: &DataLayout,
    config: &Path,
    trial: Trial,
    crash_points: &dyn CrashPoints,
    stop: &CancellationToken,
) -> anyhow::Result<Supervised> {
    let home = Home::of(layout);
    let mut child = tokio::process::Command::new(home.exe(&trial.to))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env(ON_TRIAL, &trial.to)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child.as_mut() {
        Ok(_) => child?,
        Err(e) => {
            let why = format!("version {} could not be started: {e}", trial.to);
            roll_back(&home, trial, why);
            return Ok(Supervised::RolledBack);
        }
    };
    // Windows: the new version and what it started end with this process,
    // whatever ends it, as in a power cut (Linux has the service's control
    // group); the old version never runs beside a new one it lost.
    #[cfg(windows)]
    let _tree = crate::install::platform::ProcessTree::holding(&child);
    let mut input = child.stdin.take();
    let mut output = child.stdout.take().map(|out| BufReader::new(out).lines());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(trial.budget_ms);
    let mut committed = false;
    loop {
        tokio::select! {
            line = async { match output.as_mut() { Some(lines) => lines.next_line().await, None => std::future::pending().await } } => match line {
                Ok(Some(line)) => {
                    if !committed && line.starts_with(PROVED) {
                        if let Err(why) = commit(&home, config, &trial, crash_points) {
                            end_child(&mut child, &mut input, Duration::from_secs(60)).await;
                            let why = format!("version {} proved itself but could not be made the service's: {why}", trial.to);
                            roll_back(&home, trial, why);
                            return Ok(Supervised::RolledBack);
                        }
                        committed = true;
                        if let Some(input) = input.as_mut() {
                            let _ = input.write_all(b"committed\n").await;
                            let _ = input.flush().await;
                        }
                    } else {
                        println!("{line}");
                    }
                }
                _ => output = None,
            },
            status = child.wait() => {
                let status = status?;
                // Made the service's, it still answers to its budget: one
                // that fails within it is taken back too (a crash loop on
                // the new version would otherwise need a person).
                if committed && !status.success() && tokio::time::Instant::now() < deadline {
                    match take_back(&home, config, &trial) {
                        Ok(()) => {
                            let why = format!(
                                "version {} proved itself, then ended ({status}) within its {} s budget",
                                trial.to,
                                trial.budget_ms / 1000
                            );
                            roll_back(&home, trial, why);
                            return Ok(Supervised::RolledBack);
                        }
                        Err(e) => tracing::error!("cannot take the update back: {e}"),
                    }
                }
                if committed {
                    return Ok(Supervised::Ended(status));
                }
                let why = format!("version {} ended before it proved itself ({status})", trial.to);
                roll_back(&home, trial, why);
                return Ok(Supervised::RolledBack);
            }
            _ = tokio::time::sleep_until(deadline), if !committed => {
                // It had its chance: a few seconds to stop, then it is ended.
                end_child(&mut child, &mut input, Duration::from_secs(5)).await;
                let why = format!(
                    "version {} did not connect and stay connected {} s within {} s",
                    trial.to, trial.settle_ms / 1000, trial.budget_ms / 1000
                );
                roll_back(&home, trial, why);
                return Ok(Supervised::RolledBack);
            }
            _ = stop.cancelled() => {
                // A running install finishes or rolls back first.
                end_child(&mut child, &mut input, Duration::from_secs(30 * 60)).await;
                return Ok(Supervised::Stopped);
            }
        }
    }
}

/// The new version proved itself: the service runs it from now on (on
/// Windows the service control manager is pointed at it first), its end is
/// kept, the trial ends. A power cut at any point leaves one whole version
/// to start: the old one, which finds the trial and reports it failed, or
/// the new one, which finds the trial or its end and reports it done.
fn commit(
    home: &Home,
    config: &Path,
    trial: &Trial,
    crash_points: &dyn CrashPoints,
) -> Result<(), String> {
    #[cfg(windows)]
    point_service_at(home, config, &trial.to)?;
    #[cfg(not(windows))]
    let _ = config;
    if let Err(e) = home.point_at(&trial.to) {
        #[cfg(windows)]
        if let Err(back) = point_service_at(home, config, &trial.from) {
            tracing::error!("cannot point the service back at {}: {back}", trial.from);
        }
        return Err(format!("cannot make {} the current version: {e}", trial.to));
    }
    crash_points.reached("agent-switched");
    let ended = Ended {
        trial: trial.clone(),
        ok: true,
        message: String::new(),
        finished_at: Utc::now(),
    };
    if let Err(e) = write_json(&home.outcome_file(), &ended) {
        tracing::warn!("cannot keep how the update of the agent ended: {e}");
    }
    if let Err(e) = std::fs::remove_file(home.trial_file()) {
        tracing::warn!("cannot remove {}: {e}", home.trial_file().display());
    }
    crash_points.reached("agent-committed");
    tracing::info!(from = %trial.from, to = %trial.to, "the new version of the agent proved itself: it is the service's now");
    Ok(())
}

/// The new version failed within its budget after the commit: the service
/// runs the previous one again (on Windows pointed back at it first).
fn take_back(home: &Home, config: &Path, trial: &Trial) -> Result<(), String> {
    #[cfg(windows)]
    point_service_at(home, config, &trial.from)?;
    #[cfg(not(windows))]
    let _ = config;
    home.point_at(&trial.from)
        .map_err(|e| format!("cannot make {} the current version again: {e}", trial.from))
}

/// Asks the child to stop (its input closed: it lets a running install
/// end), then ends it if it has not within `grace`.
async fn end_child(
    child: &mut tokio::process::Child,
    input: &mut Option<tokio::process::ChildStdin>,
    grace: Duration,
) {
    input.take();
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The trial failed: kept as the last update's end (the old version, about
/// to run again, reports it), the trial removed.
fn roll_back(home: &Home, trial: Trial, why: String) {
    tracing::error!("the update of the agent is rolled back: {why}");
    let ended = Ended {
        trial,
        ok: false,
        message: format!("{why}; version {} runs again", crate::VERSION),
        finished_at: Utc::now(),
    };
    if let Err(e) = write_json(&home.outcome_file(), &ended) {
        tracing::warn!("cannot keep how the update of the agent ended: {e}");
    }
    let _ = std::fs::remove_file(home.trial_file());
}
