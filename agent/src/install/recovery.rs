//! Crash recovery: every install a crash (or a power cut) interrupted is
//! finished when it reached its commit, and rolled back otherwise.

use flotilla_proto::domain::ModuleKind;

use super::files::{is_shell, restore_old, write_backup};
use super::journal::{self, Journal, Step};
use super::platform::Control;
use super::{InstallSettings, maintenance};

/// What recovery did with an interrupted install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub module: String,
    pub to_version: String,
    /// "finished" or "rolled back".
    pub outcome: String,
    pub problem: Option<String>,
}

/// Finishes or rolls back every install a crash interrupted. Installs that
/// reached their commit are finished; the others are rolled back.
pub async fn recover(
    settings: &InstallSettings,
    control_of: impl Fn(&str) -> Control,
) -> Vec<Recovered> {
    let mut done = Vec::new();
    for path in journal::pending(&settings.journal_dir) {
        let (mut journal, steps) = match Journal::reopen(&path) {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!("cannot read install journal {}: {e}", path.display());
                continue;
            }
        };
        let Some(Step::Begin { plan }) = steps.first().cloned() else {
            tracing::warn!("install journal {} is empty; removing it", path.display());
            let _ = journal.close();
            continue;
        };
        let web = plan.kind == ModuleKind::Web.as_str();
        let control = control_of(&plan.module);
        let committed = steps.iter().any(|s| matches!(s, Step::Commit));
        let finished = steps.iter().any(|s| matches!(s, Step::Done { .. }));
        let mut report = Recovered {
            module: plan.module.clone(),
            to_version: plan.to_version.clone(),
            outcome: String::new(),
            problem: None,
        };
        if finished {
            report.outcome = "already finished".into();
        } else if committed {
            report.outcome = "finished".into();
            if web && let Err(e) = maintenance::remove(&plan.live) {
                report.problem = Some(format!("cannot remove the maintenance page: {e}"));
            }
            if let Err(e) = control.start().await {
                report.problem = Some(e);
            }
            let backups = write_backup(&plan, settings).await;
            if backups.written.iter().any(|w| w.zip == plan.backup_file) {
                let _ = journal.record(Step::BackupWritten);
            }
            for problem in backups.problems {
                tracing::warn!(module = %plan.module, "backup after recovery: {problem}");
            }
        } else {
            report.outcome = "rolled back".into();
            let _ = journal.record(Step::Rollback {
                reason: "the agent stopped during the install".into(),
            });
            let took_out = steps.iter().any(|s| matches!(s, Step::OutOfService));
            // `SetAside` is journaled before its rename: the rename surely
            // happened only if the swap was journaled after it, or if the
            // live folder is the maintenance shell.
            let set_aside = steps.iter().any(|s| matches!(s, Step::SwapIn)) || is_shell(&plan.live);
            match restore_old(&plan, web, set_aside) {
                Ok(()) => {
                    // The old version is live again: this install's backup
                    // of it goes, as when the install rolls back itself.
                    let _ = std::fs::remove_file(super::backup::early_path(&plan.backup_file));
                    if steps.iter().any(|s| matches!(s, Step::BackupWritten)) {
                        let _ = std::fs::remove_file(&plan.backup_file);
                    }
                    if took_out && let Err(e) = control.start().await {
                        report.problem = Some(e);
                    }
                }
                Err(e) => report.problem = Some(e),
            }
        }
        if report.problem.is_none() {
            let _ = journal.record(Step::Done {
                outcome: report.outcome.clone(),
            });
            let _ = journal.close();
        }
        match &report.problem {
            None => {
                tracing::warn!(module = %plan.module, to = %plan.to_version, "interrupted install {}", report.outcome)
            }
            Some(problem) => {
                tracing::error!(module = %plan.module, "interrupted install could not be recovered: {problem}")
            }
        }
        done.push(report);
    }
    done
}
