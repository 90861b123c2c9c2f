//! The install state machine, its rollback, and crash recovery.

mod backups;
mod locks;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use flotilla_proto::domain::{ModuleKind, ModuleName, Version};

use super::files::{
    carry_over, check_space, health_check, rename_held, restore_old, staged_marker, sync_tree,
    unpack,
};
use super::hooks::{self, HookEnv, HookError, Phase};
use super::journal::{Journal, Plan, Step};
use super::package::Package;
use super::platform::Control;
use super::{CrashPoints, Event, EventKind, InstallSettings, Progress, backup, maintenance};

/// One install of one module.
#[derive(Debug)]
pub struct Install<'a> {
    pub settings: &'a InstallSettings,
    pub module: ModuleName,
    pub kind: ModuleKind,
    /// The module's live folder.
    pub live: PathBuf,
    /// The version file, relative to the module folder.
    pub version_file: String,
    /// The installed version, if known.
    pub from: Option<Version>,
    pub control: Control,
    pub crash_points: &'a dyn CrashPoints,
    /// How long the module is expected to be out of service, for the
    /// maintenance page's "back by".
    pub expected_downtime: Duration,
    /// Whether going to an older version is allowed (a rollback is; a
    /// package is not, unless a rollout says so).
    pub allow_downgrade: bool,
}

/// A successful install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub from: Option<String>,
    pub to: String,
    /// How long the module was out of service.
    pub downtime: Duration,
    /// The old version's backup zip.
    pub backup: Option<PathBuf>,
    /// What went wrong after the new version was in place, for a person:
    /// a backup that could not be written, and where the old version is.
    pub warnings: Vec<String>,
}

/// A failed install: where, why, what the hook said, and how the rollback went.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("install of {module} {to} failed {}: {cause}{}", where_(.phase, .step), rollback_text(.rolled_back, .rollback_error))]
pub struct Failure {
    pub module: String,
    pub to: String,
    pub phase: Option<Phase>,
    /// The engine step under way when it failed.
    pub step: String,
    pub cause: String,
    /// What the failing hook wrote to stderr, if a hook failed.
    pub hook_output: Vec<String>,
    /// Whether anything was changed and had to be rolled back.
    pub rolled_back: bool,
    /// Set when the rollback itself failed: the module is left out of service.
    pub rollback_error: Option<String>,
}

fn where_(phase: &Option<Phase>, step: &str) -> String {
    match phase {
        Some(phase) => format!("in phase {phase} ({step})"),
        None => format!("while {step}"),
    }
}

fn rollback_text(rolled_back: &bool, error: &Option<String>) -> String {
    match (rolled_back, error) {
        (_, Some(error)) => format!(
            "; ROLLBACK FAILED: {error}; the module is left out of service with its maintenance page"
        ),
        (true, None) => "; rolled back to the previous version".into(),
        (false, None) => "; nothing was changed".into(),
    }
}

/// The page left up when a rollback fails: the module must not serve a
/// half-installed version.
const FAILED_TEMPLATE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\
<body><h1>Under maintenance</h1><p>The update of {{module}} to {{version}} could not be completed and needs an operator.</p></body></html>\n";

/// How far an install got, which decides what a rollback undoes.
#[derive(Debug, Default)]
struct Reached {
    out_of_service: bool,
    /// The old version was renamed aside: only it can be the old version now.
    set_aside: bool,
    control_stopped: bool,
    back_in_service: bool,
    /// This install wrote the old version's backup zip.
    backup_written: bool,
}

/// The engine's state while it runs.
struct Run<'a, 'b> {
    install: &'b Install<'a>,
    progress: Progress,
    phase: Option<Phase>,
    step: &'static str,
    reached: Reached,
    /// The old version compressed while it was live.
    early: Option<backup::Early>,
}

type StepResult<T> = Result<T, (String, Vec<String>)>;

impl Install<'_> {
    /// Runs the install of `package`, reporting to `progress`.
    pub async fn run(&self, package: &Package, progress: Progress) -> Result<Outcome, Failure> {
        let to = package.manifest.version.to_string();
        let mut run = Run {
            install: self,
            progress,
            phase: None,
            step: "checking the package",
            reached: Reached::default(),
            early: None,
        };
        let fail = |(phase, step): (Option<Phase>, &str),
                    (cause, hook_output): (String, Vec<String>),
                    rolled_back,
                    rollback_error| Failure {
            module: self.module.to_string(),
            to: to.clone(),
            phase,
            step: step.to_owned(),
            cause,
            hook_output,
            rolled_back,
            rollback_error,
        };

        // Before any downtime: nothing changes if this fails.
        let plan = match run.prepare(package).await {
            Ok(plan) => plan,
            Err(e) => return Err(fail((run.phase, run.step), e, false, None)),
        };
        let mut journal = match Journal::begin(&self.settings.journal_dir, &plan) {
            Ok(journal) => journal,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&plan.staged);
                let _ = std::fs::remove_file(backup::early_path(&plan.backup_file));
                let cause = format!(
                    "cannot start the install journal in {}: {e}",
                    self.settings.journal_dir.display()
                );
                return Err(fail(
                    (run.phase, run.step),
                    (cause, Vec::new()),
                    false,
                    None,
                ));
            }
        };
        match run.execute(&plan, &mut journal, package).await {
            Ok(downtime) => {
                let (backup, warnings) = run.finish(&plan, journal).await;
                run.say(
                    EventKind::Step,
                    format!(
                        "installed {} {to}; out of service for {} ms",
                        self.module,
                        downtime.as_millis()
                    ),
                );
                Ok(Outcome {
                    from: plan.from_version.clone(),
                    to,
                    downtime,
                    backup,
                    warnings,
                })
            }
            Err(e) => {
                let failed_at = (run.phase, run.step);
                run.say(EventKind::Warning, format!("failed: {}; rolling back", e.0));
                let _ = journal.record(Step::Rollback {
                    reason: e.0.clone(),
                });
                match run.roll_back(&plan).await {
                    Ok(()) => {
                        let _ = journal.record(Step::Done {
                            outcome: "rolled back".into(),
                        });
                        let _ = journal.close();
                        run.say(
                            EventKind::Step,
                            format!(
                                "rolled back: {} is {} again",
                                self.module,
                                plan.from_version.as_deref().unwrap_or("as before")
                            ),
                        );
                        Err(fail(failed_at, e, true, None))
                    }
                    Err(rollback_error) => {
                        // Leave the journal: the next start tries again. The
                        // module stays out of service, saying so.
                        tracing::error!(module = %self.module, "ROLLBACK FAILED: {rollback_error}");
                        if self.kind == ModuleKind::Web && plan.live.is_dir() {
                            let page = maintenance::render(
                                FAILED_TEMPLATE,
                                &plan.module,
                                &plan.to_version,
                                Utc::now(),
                            );
                            let _ = maintenance::put(&plan.live, &page);
                        }
                        Err(fail(failed_at, e, true, Some(rollback_error)))
                    }
                }
            }
        }
    }
}

/// An I/O error of a step, saying what failed.
fn io_error(what: &str, e: io::Error) -> (String, Vec<String>) {
    (format!("{what}: {e}"), Vec::new())
}

/// Journals a step before it is taken.
fn record(journal: &mut Journal, step: Step) -> StepResult<()> {
    journal
        .record(step)
        .map_err(|e| (format!("cannot write the install journal: {e}"), Vec::new()))
}

impl Run<'_, '_> {
    fn say(&self, kind: EventKind, text: String) {
        match kind {
            EventKind::Warning => tracing::warn!(module = %self.install.module, "{text}"),
            EventKind::Hook(_) => {
                tracing::info!(module = %self.install.module, phase = ?self.phase, "hook: {text}")
            }
            _ => tracing::info!(module = %self.install.module, "{text}"),
        }
        (self.progress)(Event {
            at: Utc::now(),
            phase: self.phase,
            kind,
            text,
        });
    }

    fn point(&self, name: &str) {
        self.install.crash_points.reached(name);
    }

    /// Checks and stages everything before the module is touched.
    async fn prepare(&mut self, package: &Package) -> StepResult<Plan> {
        let install = self.install;
        let settings = install.settings;
        let plain = |e: String| (e, Vec::new());
        self.check(package).map_err(plain)?;
        self.step = "checking the backup folder";
        backup::check_writable(&settings.backup_dir).map_err(|e| {
            plain(format!(
                "the backup folder {} is not writable: {e}; nothing was changed",
                settings.backup_dir.display()
            ))
        })?;
        self.step = "checking free space";
        check_space(package, &install.live, settings)
            .await
            .map_err(plain)?;
        self.step = "repairing leftover maintenance pages";
        if install.kind == ModuleKind::Web {
            for repair in maintenance::repair(&install.live).map_err(|e| plain(e.to_string()))? {
                self.say(EventKind::Warning, repair.to_string());
            }
        }
        self.step = "checking for an earlier install's leftovers";
        let plan = self.plan(package).map_err(plain)?;
        if plan.aside.exists() {
            return Err(plain(format!(
                "{} exists: an earlier install left an old version there; move it away or delete it before installing",
                plan.aside.display()
            )));
        }
        self.stage(package, &plan).await.map_err(plain)?;
        sync_tree(&plan.staged).await;
        self.compress_early(&plan).await;
        Ok(plan)
    }

    /// The package is for this module, a version to go to, and the module
    /// folder is there.
    fn check(&self, package: &Package) -> Result<(), String> {
        let install = self.install;
        package
            .check_target(&install.module, install.kind)
            .map_err(|e| e.to_string())?;
        let to = &package.manifest.version;
        if let Some(from) = &install.from {
            if from == to {
                return Err(format!("{} {to} is already installed", install.module));
            }
            if to < from && !install.allow_downgrade {
                return Err(format!(
                    "{} {to} is older than the installed {from}: downgrade refused (restore a kept backup to go back)",
                    install.module
                ));
            }
        }
        if !install.live.is_dir() {
            return Err(format!(
                "the module folder {} does not exist",
                install.live.display()
            ));
        }
        Ok(())
    }

    /// Where everything goes: the staged new version, the old one set
    /// aside, a failed one discarded, the backup zip.
    fn plan(&self, package: &Package) -> Result<Plan, String> {
        let install = self.install;
        let parent = install
            .live
            .parent()
            .ok_or_else(|| format!("{} has no parent folder", install.live.display()))?;
        let to = &package.manifest.version;
        let from = install.from.as_ref().map(|v| v.to_string());
        let name = install.module.as_str();
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        Ok(Plan {
            module: name.to_owned(),
            kind: install.kind.as_str().to_owned(),
            from_version: from.clone(),
            to_version: to.to_string(),
            live: install.live.clone(),
            staged: parent.join(format!(".{name}.flotilla-staged-{to}")),
            aside: parent.join(format!(".{name}.flotilla-previous")),
            discard: parent.join(format!(".{name}.flotilla-failed-{to}")),
            backup_file: install.settings.backup_dir.join(format!(
                "{name}_{}_{stamp}.zip",
                from.as_deref().unwrap_or("unknown")
            )),
            had_bak: install.live.join(maintenance::BAK).exists(),
        })
    }

    /// The new version, unpacked beside the module (or as staged ahead of
    /// time), with its version file saying the manifest's version.
    async fn stage(&mut self, package: &Package, plan: &Plan) -> Result<(), String> {
        let install = self.install;
        let to = &package.manifest.version;
        let marker = staged_marker(&plan.staged);
        let prestaged = std::fs::read_to_string(&marker)
            .is_ok_and(|sha| sha.trim() == package.sha256)
            && plan.staged.is_dir();
        for leftover in [&plan.staged, &plan.discard] {
            if leftover.exists() && !(prestaged && leftover == &plan.staged) {
                std::fs::remove_dir_all(leftover)
                    .map_err(|e| format!("{}: {e}", leftover.display()))?;
            }
        }
        let _ = std::fs::remove_file(&marker);
        if prestaged {
            self.say(
                EventKind::Step,
                format!(
                    "using the new version staged ahead of time in {}",
                    plan.staged.display()
                ),
            );
        } else {
            self.step = "unpacking the package";
            let started = Instant::now();
            let (bytes, files) = unpack(package, &plan.staged, install.settings.limits).await?;
            self.say(
                EventKind::Step,
                format!(
                    "unpacked {files} files ({} MB) into {} in {} ms",
                    bytes / 1_000_000,
                    plan.staged.display(),
                    started.elapsed().as_millis()
                ),
            );
        }
        let version_file = plan.staged.join(&install.version_file);
        match std::fs::read_to_string(&version_file) {
            Ok(text)
                if Version::parse(text.lines().next().unwrap_or_default())
                    .ok()
                    .as_ref()
                    != Some(to) =>
            {
                let _ = std::fs::remove_dir_all(&plan.staged);
                Err(format!(
                    "the package's {} says \"{}\" but its manifest says {to}",
                    install.version_file,
                    text.trim()
                ))
            }
            Ok(_) => Ok(()),
            Err(_) => {
                if let Some(dir) = version_file.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                std::fs::write(&version_file, format!("{to}\n")).map_err(|e| e.to_string())
            }
        }
    }

    async fn hook(&mut self, phase: Phase, plan: &Plan) -> StepResult<()> {
        self.phase = Some(phase);
        self.step = "running hooks";
        self.say(EventKind::Phase, phase.to_string());
        self.point(phase.as_str());
        let settings = self.install.settings;
        let env = HookEnv {
            module: plan.module.clone(),
            module_path: plan.live.clone(),
            backup_path: settings.backup_dir.clone(),
            from_version: plan.from_version.clone().unwrap_or_default(),
            to_version: plan.to_version.clone(),
            powershell: settings.powershell.clone(),
        };
        for script in hooks::find(&settings.scripts_dir, phase, &plan.module) {
            self.say(EventKind::Step, format!("running {}", script.display()));
            let progress = self.progress.clone();
            let result = hooks::run(
                &script,
                phase,
                &env,
                settings.hook_timeout,
                |stream, line| {
                    progress(Event {
                        at: Utc::now(),
                        phase: Some(phase),
                        kind: EventKind::Hook(stream),
                        text: line,
                    })
                },
            )
            .await;
            if let Err(HookError {
                script,
                why,
                stderr,
            }) = result
            {
                return Err((format!("hook {script} {why}"), stderr));
            }
        }
        Ok(())
    }

    /// The downtime part. Returns how long the module was out of service.
    async fn execute(
        &mut self,
        plan: &Plan,
        journal: &mut Journal,
        package: &Package,
    ) -> StepResult<Duration> {
        self.hook(Phase::StartUpdate, plan).await?;
        let (page, down_since) = self.out_of_service(plan, journal).await?;
        self.hook(Phase::PreBackup, plan).await?;
        self.set_aside(plan, journal, package, &page).await?;
        self.hook(Phase::PostBackup, plan).await?;
        self.hook(Phase::PreInstall, plan).await?;
        self.swap_in(plan, journal).await?;
        self.hook(Phase::PostInstall, plan).await?;

        self.phase = None;
        self.step = "bringing the module back in service";
        self.point("back_in_service");
        self.back_in_service(plan)
            .await
            .map_err(|e| (e, Vec::new()))?;
        let downtime = down_since.elapsed();
        self.say(
            EventKind::Step,
            format!("back in service after {} ms", downtime.as_millis()),
        );
        if let Some(check) = &package.manifest.health_check {
            self.step = "checking health";
            health_check(&check.url, check.timeout)
                .await
                .map_err(|e| (e, Vec::new()))?;
            self.say(
                EventKind::Step,
                format!("health check {} answered", check.url),
            );
        }
        self.hook(Phase::EndUpdate, plan).await?;
        self.phase = None;
        self.step = "committing";
        record(journal, Step::Commit)?;
        self.point("commit");
        Ok(downtime)
    }

    /// Takes the module out of service: the maintenance page for a web
    /// module, its service or pool stopped otherwise; then waits for the
    /// processes holding its files. Returns the page, and when the module
    /// went out of service.
    async fn out_of_service(
        &mut self,
        plan: &Plan,
        journal: &mut Journal,
    ) -> StepResult<(String, Instant)> {
        let install = self.install;
        self.phase = None;
        self.step = "taking the module out of service";
        record(journal, Step::OutOfService)?;
        self.point("out_of_service");
        let page = maintenance::render(
            &install.settings.maintenance_template,
            &plan.module,
            &plan.to_version,
            Utc::now()
                + chrono::Duration::from_std(install.expected_downtime)
                    .unwrap_or(chrono::Duration::seconds(60)),
        );
        self.reached.out_of_service = true;
        let down_since = Instant::now();
        if install.kind == ModuleKind::Web {
            maintenance::put(&plan.live, &page)
                .map_err(|e| io_error("cannot put up the maintenance page", e))?;
            self.say(
                EventKind::Step,
                format!("maintenance page up in {}", plan.live.display()),
            );
        } else if !install.control.is_none() {
            self.say(
                EventKind::Step,
                format!("stopping {}", install.control.describe()),
            );
            install.control.stop().await.map_err(|e| (e, Vec::new()))?;
            self.reached.control_stopped = true;
        }
        self.step = "waiting for processes holding files";
        self.wait_for_holders(&plan.live).await?;
        Ok((page, down_since))
    }

    /// Sets the old version aside by a rename (a web module keeps its
    /// maintenance page up in an empty shell meanwhile), and carries the
    /// preserved files over to the new version.
    async fn set_aside(
        &mut self,
        plan: &Plan,
        journal: &mut Journal,
        package: &Package,
        page: &str,
    ) -> StepResult<()> {
        let web = self.install.kind == ModuleKind::Web;
        self.phase = None;
        self.step = "setting the old version aside";
        record(journal, Step::SetAside)?;
        self.point("set_aside");
        self.rename_held(&plan.live, &plan.aside)
            .await
            .map_err(|e| (self.not_renamed(&plan.live, &e), Vec::new()))?;
        self.reached.set_aside = true;
        self.point("set_aside.renamed");
        if web {
            // The old version is kept exactly as it was before the install:
            // without the page Flotilla put up.
            maintenance::remove(&plan.aside)
                .map_err(|e| io_error("cannot remove the maintenance page", e))?;
            std::fs::create_dir(&plan.live)
                .map_err(|e| io_error("cannot create the maintenance shell", e))?;
            maintenance::put(&plan.live, page)
                .map_err(|e| io_error("cannot put up the maintenance page", e))?;
        }
        self.say(
            EventKind::Step,
            format!("old version set aside in {}", plan.aside.display()),
        );
        self.back_up_aside(plan, journal).await;
        self.step = "carrying preserved files over";
        carry_over(
            &plan.aside,
            &plan.staged,
            &package.manifest.preserve,
            plan.had_bak,
        )
        .map_err(|e| io_error("cannot carry preserved files over", e))?;
        if web {
            maintenance::put(&plan.staged, page)
                .map_err(|e| io_error("cannot put up the maintenance page", e))?;
        }
        Ok(())
    }

    /// Renames `from` to `to`, tried again within the lock budget while
    /// something holds it, saying so once.
    async fn rename_held(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        let mut refused = None;
        let renamed = rename_held(from, to, self.install.settings.lock_budget, |e| {
            refused = Some(e.to_string())
        })
        .await;
        if let Some(e) = refused {
            self.say(
                EventKind::Warning,
                format!(
                    "{} cannot be renamed yet ({e}): something holds the folder; trying again",
                    from.display()
                ),
            );
        }
        renamed
    }

    /// Puts the new version in place by a rename, tried again within the
    /// lock budget while something holds the staged folder (on Windows a
    /// scanner or an antivirus reading the files just written).
    async fn swap_in(&mut self, plan: &Plan, journal: &mut Journal) -> StepResult<()> {
        self.phase = None;
        self.step = "putting the new version in place";
        record(journal, Step::SwapIn)?;
        self.point("swap_in");
        if self.install.kind == ModuleKind::Web {
            std::fs::remove_dir_all(&plan.live)
                .map_err(|e| io_error("cannot remove the maintenance shell", e))?;
        }
        self.point("swap_in.shell_removed");
        self.rename_held(&plan.staged, &plan.live)
            .await
            .map_err(|e| io_error("cannot move the new version in place", e))?;
        self.say(
            EventKind::Step,
            format!("new version in place in {}", plan.live.display()),
        );
        Ok(())
    }

    async fn back_in_service(&mut self, plan: &Plan) -> Result<(), String> {
        let install = self.install;
        if install.kind == ModuleKind::Web {
            maintenance::remove(&plan.live)
                .map_err(|e| format!("cannot remove the maintenance page: {e}"))?;
        }
        if self.reached.control_stopped {
            install.control.start().await?;
            self.reached.control_stopped = false;
        }
        self.reached.back_in_service = true;
        Ok(())
    }

    /// Puts the old version back and the module back in service.
    async fn roll_back(&mut self, plan: &Plan) -> Result<(), String> {
        self.phase = None;
        self.step = "rolling back";
        let install = self.install;
        if self.reached.back_in_service && !install.control.is_none() {
            install.control.stop().await?;
            self.reached.control_stopped = true;
        }
        restore_old(
            plan,
            install.kind == ModuleKind::Web,
            self.reached.set_aside,
        )?;
        // The old version is live again: the backup this install made of it
        // goes, as if the install had not happened.
        let _ = std::fs::remove_file(backup::early_path(&plan.backup_file));
        if self.reached.backup_written {
            let _ = std::fs::remove_file(&plan.backup_file);
        }
        if self.reached.control_stopped {
            install.control.start().await?;
        }
        Ok(())
    }
}
