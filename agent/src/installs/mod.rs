//! The agent's side of installs: which packages are pending for which
//! modules, starting one install at a time (from the portal, the CLI or the
//! controller), and keeping each module's last install for whoever watches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::{AGENT_MODULE, Version};

use crate::applications::{self, ModuleDeclaration};
use crate::install::package::Package;
use crate::install::{Event, Failure, Install, Outcome, Progress, maintenance};
use crate::inventory::installed_version;
use crate::pending::Trust;
use crate::state::{Agent, InstallNotice, InstallView};

mod sources;

pub use sources::{Kept, Source, backups, declaration};
use sources::{Resolved, Restoring, resolve, resolve_package};

/// Why an install could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("an install of {0} is already running on this server; wait for it to finish")]
    Busy(String),
    #[error("the agent is stopping; install again once it has started")]
    Stopping,
    #[error("no module named {0} is declared on this server")]
    UnknownModule(String),
    #[error("no package is pending for {0}")]
    NothingPending(String),
    #[error(
        "this server is part of {0}, run from the controller; local installs and restores are refused until it ends"
    )]
    Held(String),
    #[error("the pending package of {module} is {pending}, not {expected}; wait for the download")]
    NotThatVersion {
        module: String,
        pending: String,
        expected: String,
    },
    #[error("no backup of {module}{} is kept on this server", .version.as_ref().map(|v| format!(" {v}")).unwrap_or_default())]
    NoBackup {
        module: String,
        version: Option<String>,
    },
    #[error(
        "no package of {module} with sha256 {sha256} is in this agent's packages folder (packages are named by their sha256, never by a path)"
    )]
    NoSuchPackage { module: String, sha256: String },
    #[error("the agent does not update itself: {0}")]
    SelfUpdate(String),
    #[error("the package {version} of {module} is not installed: {why}")]
    NotTrusted {
        module: String,
        version: String,
        why: String,
    },
}

/// Who asked for an install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// Someone on the server: the portal or the command line.
    #[default]
    Local,
    /// The controller, with what its order expects.
    Controller {
        command_id: String,
        /// The version the pending package must be.
        expected_version: Option<String>,
        /// When the site's planned maintenance ends, for the maintenance page.
        planned_end: Option<DateTime<Utc>>,
        /// The agent's own update: its trial budget, when the rollout sets one.
        update_budget: Option<std::time::Duration>,
    },
}

/// Starts installing `module` from `source` in the background; refuses if
/// an install is already running, or if it is local while a rollout holds
/// the server. Returns the version being installed.
pub fn start(
    agent: &Arc<Agent>,
    module: &str,
    source: Source,
    origin: Origin,
) -> Result<String, StartError> {
    let closing = || {
        agent
            .installs
            .closing
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    if closing() {
        return Err(StartError::Stopping);
    }
    if origin == Origin::Local
        && let Some(rollout) = agent
            .installs
            .hold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    {
        return Err(StartError::Held(rollout));
    }
    let (command_id, expected_version, planned_end, update_budget) = match origin {
        Origin::Local => (None, None, None, None),
        Origin::Controller {
            command_id,
            expected_version,
            planned_end,
            update_budget,
        } => (
            Some(command_id),
            expected_version,
            planned_end,
            update_budget,
        ),
    };
    // Flotilla's own agent updates itself, side by side.
    if module == AGENT_MODULE {
        if matches!(source, Source::Backup { .. }) {
            return Err(StartError::SelfUpdate(
                "the agent's earlier version is put back by a rollout (or an install) of that version's package".to_owned(),
            ));
        }
        let (resolved, to) = resolve_package(agent, module, source, expected_version)?;
        let Resolved::Package { path, sha256, .. } = resolved else {
            return Err(StartError::NothingPending(module.to_owned()));
        };
        let version = Version::parse(&to).map_err(|e| StartError::SelfUpdate(e.to_string()))?;
        let budget = update_budget.unwrap_or(agent.settings.update_budget);
        crate::self_update::start(agent, path, sha256, &version, command_id, budget)
            .map_err(StartError::SelfUpdate)?;
        return Ok(to);
    }
    let declaration =
        declaration(agent, module).ok_or_else(|| StartError::UnknownModule(module.to_owned()))?;
    let restore = matches!(source, Source::Backup { .. });
    let (resolved, to) = resolve(agent, &declaration, source, expected_version)?;
    let mut refused = None;
    agent.installs.running.send_if_modified(|running| {
        refused = if closing() {
            Some(StartError::Stopping)
        } else {
            running.clone().map(StartError::Busy)
        };
        if refused.is_none() {
            *running = Some(module.to_owned());
        }
        refused.is_none()
    });
    if let Some(refused) = refused {
        return Err(refused);
    }
    let started_at = Utc::now();
    let from = installed_version(&declaration, agent.settings.layout.root()).map(|v| v.to_string());
    agent
        .installs
        .views
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            module.to_owned(),
            InstallView {
                install_id: format!("{module}-{}", started_at.timestamp_millis()),
                command_id,
                module: module.to_owned(),
                from,
                restore,
                to: to.clone(),
                started_at,
                finished_at: None,
                events: Vec::new(),
                result: None,
            },
        );
    let agent = agent.clone();
    tokio::spawn(async move {
        let result = run(&agent, &declaration, resolved, planned_end).await;
        finished(&agent, &declaration.name.to_string(), result);
    });
    Ok(to)
}

/// An install ended: its view says how, the link is told, the next one may
/// start, and the modules are scanned again.
fn finished(agent: &Agent, module: &str, result: Result<Outcome, Failure>) {
    match &result {
        Ok(outcome) => {
            tracing::info!(module, to = %outcome.to, downtime_ms = outcome.downtime.as_millis(), "installed")
        }
        Err(failure) => tracing::error!(module, "{failure}"),
    }
    // Recorded before the result is shown: whoever sees the result finds
    // the downtime the next estimate uses.
    if let Ok(outcome) = &result {
        record_downtime(agent, module, outcome.downtime);
    }
    let view = {
        let mut views = agent
            .installs
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        views.get_mut(module).map(|view| {
            view.result = Some(result);
            view.finished_at = Some(Utc::now());
            view.clone()
        })
    };
    if let Some(entry) = view.as_ref().and_then(crate::history::Entry::of)
        && let Ok(name) = flotilla_proto::domain::ModuleName::parse(module)
        && let Err(e) = crate::history::record(&agent.settings.layout.updates_dir(), &name, entry)
    {
        tracing::warn!("cannot record the install of {module} in its history: {e}");
    }
    if let Some(view) = view {
        let _ = agent
            .installs
            .notices
            .send(InstallNotice::Finished(Box::new(view)));
    }
    agent.installs.running.send_replace(None);
    agent.rescan.notify_one();
}

async fn run(
    agent: &Arc<Agent>,
    declaration: &ModuleDeclaration,
    resolved: Resolved,
    planned_end: Option<DateTime<Utc>>,
) -> Result<Outcome, Failure> {
    let allow_downgrade = match &resolved {
        Resolved::Backup { .. } => true,
        Resolved::Package {
            allow_downgrade, ..
        } => *allow_downgrade,
    };
    let module = declaration.name.to_string();
    let progress = progress_of(agent, &module);
    let restoring = match &resolved {
        Resolved::Backup { keep_database, .. } => Some(Restoring {
            keep_database: *keep_database,
        }),
        Resolved::Package { .. } => None,
    };
    if let Resolved::Package { path, sha256, .. } = &resolved {
        check_signature(agent, path, sha256, &progress).map_err(|why| refused(&module, why))?;
    }
    let package = open(declaration, resolved).await?;
    let database = database_first(agent, declaration, &package, restoring, &progress).await?;
    let from = installed_version(declaration, agent.settings.layout.root());
    let install = Install {
        settings: &agent.settings.install,
        module: declaration.name.clone(),
        kind: declaration.kind,
        live: declaration.install_dir(agent.settings.layout.root()),
        version_file: declaration.version_file.clone(),
        from,
        control: declaration.control.clone(),
        crash_points: agent.installs.crash_points.as_ref(),
        expected_downtime: planned_end
            .and_then(|end| (end - Utc::now()).to_std().ok())
            .unwrap_or_else(|| expected_downtime(agent, &module)),
        allow_downgrade,
    };
    let result = install.run(&package, progress).await;
    match database {
        Some(applied) => database_after(agent, &module, result, applied).await,
        None => result,
    }
}

/// Reports an install's events on its view and to the link's watchers.
fn progress_of(agent: &Arc<Agent>, module: &str) -> Progress {
    let agent = agent.clone();
    let module = module.to_owned();
    Arc::new(move |event: Event| {
        let notice = {
            let mut views = agent
                .installs
                .views
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            views.get_mut(&module).map(|view| {
                view.events.push(event.clone());
                InstallNotice::Progress {
                    install_id: view.install_id.clone(),
                    command_id: view.command_id.clone(),
                    module: view.module.clone(),
                    to: view.to.clone(),
                    event,
                }
            })
        };
        if let Some(notice) = notice {
            let _ = agent.installs.notices.send(notice);
        }
    })
}

/// Every package but the agent's own backups carries a trusted signature,
/// checked again here, or is an unsigned one the configuration allows; why
/// it is not installed otherwise.
fn check_signature(
    agent: &Agent,
    path: &Path,
    sha256: &str,
    progress: &Progress,
) -> Result<(), String> {
    let trust = agent.trust();
    let signature = std::fs::read_to_string(format!("{}.sig", path.display())).ok();
    let standing = trust.check(sha256, signature.as_deref().map(str::trim));
    if let Some(why) = trust.refusal(&standing) {
        return Err(format!("the package is not installed: {why}"));
    }
    let (kind, text) = match standing {
        Trust::Signed(key) => (
            crate::install::EventKind::Step,
            format!("signature verified: publisher key {key}"),
        ),
        _ => (
            crate::install::EventKind::Warning,
            "unsigned package, installed because allow_unsigned_local_packages = true".to_owned(),
        ),
    };
    progress(Event {
        at: Utc::now(),
        phase: None,
        kind,
        text,
    });
    Ok(())
}

/// Opens the package, or the backup as one, off the async threads.
async fn open(declaration: &ModuleDeclaration, resolved: Resolved) -> Result<Package, Failure> {
    let module = declaration.name.to_string();
    let (name, kind) = (declaration.name.clone(), declaration.kind);
    let opened = tokio::task::spawn_blocking(move || match resolved {
        Resolved::Package { path, sha256, .. } => Package::open(&path, &sha256),
        Resolved::Backup { path, .. } => Package::from_backup(&path, &name, kind),
    })
    .await;
    match opened {
        Ok(Ok(package)) => Ok(package),
        Ok(Err(e)) => Err(refused(&module, e.to_string())),
        Err(e) => Err(refused(&module, e.to_string())),
    }
}

/// A database module's database goes first: checked, and upgraded when
/// standard (what was applied, to undo if the files fail); a customized
/// one stops the install before anything changes. A restore restores it.
async fn database_first(
    agent: &Arc<Agent>,
    declaration: &ModuleDeclaration,
    package: &Package,
    restoring: Option<Restoring>,
    progress: &Progress,
) -> Result<Option<crate::databases::Applied>, Failure> {
    if declaration.kind != flotilla_proto::domain::ModuleKind::Database {
        return Ok(None);
    }
    let module = declaration.name.to_string();
    let say = {
        let progress = progress.clone();
        move |text: String| {
            progress(crate::install::Event {
                at: Utc::now(),
                phase: None,
                kind: crate::install::EventKind::Step,
                text,
            })
        }
    };
    let version = package.manifest.version.to_string();
    let failed = |step: &str, cause: String| Failure {
        module: module.clone(),
        to: version.clone(),
        phase: None,
        step: step.into(),
        cause,
        hook_output: Vec::new(),
        rolled_back: false,
        rollback_error: None,
    };
    if let Some(restoring) = restoring {
        if restoring.keep_database {
            say(format!(
                "the database of {module} is left as it is (kept at its version): only the files go back to {version}"
            ));
        } else {
            crate::databases::before_restore(agent, &module, &version, &say)
                .await
                .map_err(|cause| failed("restoring the database", cause))?;
        }
        return Ok(None);
    }
    let applied = crate::databases::before_install(agent, package, &say)
        .await
        .map_err(|cause| failed("checking and upgrading the database", cause))?;
    agent.installs.crash_points.reached("database_upgraded");
    Ok(applied)
}

/// After the files: the upgraded database stays when they reached the new
/// version, and goes back with them when they did not.
async fn database_after(
    agent: &Agent,
    module: &str,
    result: Result<Outcome, Failure>,
    applied: crate::databases::Applied,
) -> Result<Outcome, Failure> {
    let mut failure = match result {
        Ok(outcome) => {
            applied.forget(agent);
            return Ok(outcome);
        }
        Err(failure) => failure,
    };
    let undone = "the upgrade of the install that failed";
    if let Err(e) = crate::databases::restore(agent, module, &applied, "flotilla", undone).await {
        let e = format!(
            "the database could not be restored from {}: {e}",
            applied.backup.display()
        );
        failure.rollback_error = Some(match failure.rollback_error {
            Some(files) => format!("{files}; {e}"),
            None => e,
        });
    } else {
        applied.forget(agent);
    }
    Err(failure)
}

fn refused(module: &str, cause: String) -> Failure {
    Failure {
        module: module.to_owned(),
        to: String::new(),
        phase: None,
        step: "checking the package".into(),
        cause,
        hook_output: Vec::new(),
        rolled_back: false,
        rollback_error: None,
    }
}

/// At start: finish or roll back interrupted installs, then repair leftover
/// maintenance pages no install owns. Returns what was done, to report.
pub async fn recover_at_start(agent: &Agent) -> Vec<String> {
    let declarations = applications::load(&agent.settings.layout.applications_config()).modules;
    let control_of = |module: &str| {
        declarations
            .iter()
            .find(|d| d.name.as_str() == module)
            .map(|d| d.control.clone())
            .unwrap_or(crate::install::platform::Control::None)
    };
    let mut notes: Vec<String> = crate::install::recover(&agent.settings.install, control_of)
        .await
        .into_iter()
        .map(|r| match r.problem {
            None => format!(
                "the interrupted install of {} {} was {}",
                r.module, r.to_version, r.outcome
            ),
            Some(problem) => format!(
                "the interrupted install of {} {} could not be recovered: {problem}",
                r.module, r.to_version
            ),
        })
        .collect();
    // After the files: a database is kept or restored by where they ended.
    notes.extend(crate::databases::recover(agent).await);
    for declaration in declarations
        .iter()
        .filter(|d| d.kind == flotilla_proto::domain::ModuleKind::Web)
    {
        let dir = declaration.install_dir(agent.settings.layout.root());
        match maintenance::repair(&dir) {
            Ok(repairs) => notes.extend(
                repairs
                    .into_iter()
                    .map(|r| format!("{}: {r}", declaration.name)),
            ),
            Err(e) => notes.push(format!(
                "{}: cannot repair a leftover maintenance page: {e}",
                declaration.name
            )),
        }
    }
    for note in &notes {
        tracing::warn!("{note}");
    }
    notes
}

/// `<data>/bin/updates/downtimes.log`: one line per successful install,
/// `<module> <milliseconds out of service>`, to estimate the next one.
fn downtimes_file(agent: &Agent) -> PathBuf {
    agent.settings.layout.updates_dir().join("downtimes.log")
}

fn record_downtime(agent: &Agent, module: &str, downtime: std::time::Duration) {
    use std::io::Write;
    let line = format!("{module} {}\n", downtime.as_millis());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(downtimes_file(agent))
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!("cannot record the downtime of {module}: {e}");
    }
}

/// How long `module` is expected to stay out of service, for the
/// maintenance page: twice the longest of its last five installs, at least
/// 10 s; a minute when it was never installed here.
pub fn expected_downtime(agent: &Agent, module: &str) -> std::time::Duration {
    let text = std::fs::read_to_string(downtimes_file(agent)).unwrap_or_default();
    let recent: Vec<u64> = text
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(name, _)| *name == module)
        .filter_map(|(_, ms)| ms.trim().parse().ok())
        .collect();
    match recent.iter().rev().take(5).max() {
        Some(longest) => std::time::Duration::from_millis((longest * 2).max(10_000)),
        None => std::time::Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Settings;

    /// An agent on `root` whose scanner does not run: its inventory is what
    /// the caller puts there.
    fn agent_on(root: &Path) -> Arc<Agent> {
        let settings = Settings::parse(
            &root.join("agent.toml"),
            &format!(
                "site = \"acme\"\nserver_id = \"web-01\"\ncontroller_url = \"http://c:7000\"\ninsecure_plaintext = true\ndata_dir = {:?}\n",
                root.display().to_string()
            ),
        )
        .unwrap();
        Arc::new(Agent::new(
            settings,
            ([127, 0, 0, 1], 0).into(),
            Arc::new(crate::install::NoCrashPoints),
        ))
    }

    /// The controller orders a restore as soon as an install's result
    /// reaches it, before the agent's next scan: the restore goes by the
    /// version on disk, not by the scan taken before the install.
    #[tokio::test]
    async fn a_restore_right_after_an_install_goes_by_the_version_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let live = root.join("apps").join("ecommerce");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("version.txt"), "1.0.0\n").unwrap();
        std::fs::write(live.join("index.html"), "version one").unwrap();
        let config = root.join("bin").join("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("applicationspath.config"),
            format!(
                "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\" /></applications>",
                live.display()
            ),
        )
        .unwrap();
        let agent = agent_on(root);
        let backups = &agent.settings.install.backup_dir;
        std::fs::create_dir_all(backups).unwrap();
        crate::install::backup::compress(
            &live,
            &backups.join("ecommerce_1.0.0_20261201T100000Z.zip"),
        )
        .unwrap();
        // The last scan saw 1.0.0; then an install put 2.0.0 in place.
        agent.inventory.send_replace(crate::inventory::scan(
            &agent.settings.layout,
            &agent.trust(),
        ));
        std::fs::write(live.join("version.txt"), "2.0.0\n").unwrap();
        std::fs::write(live.join("index.html"), "version two").unwrap();

        let mut running = agent.installs.running.subscribe();
        let to = start(
            &agent,
            "ecommerce",
            Source::Backup {
                version: Some("1.0.0".into()),
                file: None,
                keep_database: true,
            },
            Origin::Local,
        )
        .unwrap();
        assert_eq!(to, "1.0.0");
        running.wait_for(Option::is_none).await.unwrap();

        let view = agent.installs.views.lock().unwrap()["ecommerce"].clone();
        assert!(
            matches!(view.result, Some(Ok(_))),
            "the restore ran: {:?}",
            view.result
        );
        assert_eq!(
            std::fs::read_to_string(live.join("version.txt")).unwrap(),
            "1.0.0\n"
        );
        assert_eq!(
            std::fs::read_to_string(live.join("index.html")).unwrap(),
            "version one"
        );
    }
}
