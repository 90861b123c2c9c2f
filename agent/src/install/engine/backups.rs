//! The old version's backup: compressed while the module is still in
//! service, finished from that and what changed once it is set aside (so it
//! exists at `POSTBACKUP`), and kept, pruned or saved for later after the
//! commit.

use std::path::PathBuf;
use std::time::Instant;

use super::Run;
use crate::install::EventKind;
use crate::install::backup;
use crate::install::files::write_backup;
use crate::install::journal::{Journal, Plan, Step};

impl Run<'_, '_> {
    /// Compresses the old version while it is still in service, so that its
    /// backup is complete by `POSTBACKUP` without a long downtime. When it
    /// cannot, the backup is made from scratch once the old version is set
    /// aside.
    pub(super) async fn compress_early(&mut self, plan: &Plan) {
        self.step = "compressing the old version while it is in service";
        let (live, early_zip) = (plan.live.clone(), backup::early_path(&plan.backup_file));
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || backup::compress_early(&live, &early_zip)).await {
            Ok(Ok(early)) => {
                self.say(
                    EventKind::Step,
                    format!(
                        "old version compressed while in service in {} ms",
                        started.elapsed().as_millis()
                    ),
                );
                self.early = Some(early);
            }
            Ok(Err(e)) => self.say(
                EventKind::Warning,
                format!(
                    "the old version could not be compressed while in service ({e}); it is compressed once set aside"
                ),
            ),
            Err(e) => self.say(EventKind::Warning, format!("the early compression stopped: {e}")),
        }
    }

    /// Writes the backup zip of the old version just set aside, before
    /// `POSTBACKUP` (the procedure: "called just after the backup is
    /// created"), from the early zip and what changed since. A backup that
    /// cannot be written does not stop the install: it is tried again once
    /// the module is back in service, and the install warns if it fails.
    pub(super) async fn back_up_aside(&mut self, plan: &Plan, journal: &mut Journal) {
        self.step = "writing the backup";
        let early = self.early.take();
        let (aside, zip) = (plan.aside.clone(), plan.backup_file.clone());
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let done = backup::finish(early.as_ref(), &aside, &zip);
            if let Some(early) = early {
                let _ = std::fs::remove_file(&early.zip);
            }
            done
        })
        .await;
        match written {
            Ok(Ok(done)) => {
                self.reached.backup_written = true;
                let _ = journal.record(Step::BackupWritten);
                self.say(
                    EventKind::Step,
                    format!(
                        "backup {} written in {} ms ({} MB; {} files compressed while in service, {} since)",
                        plan.backup_file.display(),
                        started.elapsed().as_millis(),
                        done.bytes / 1_000_000,
                        done.copied,
                        done.compressed
                    ),
                );
            }
            Ok(Err(e)) => self.say(
                EventKind::Warning,
                format!(
                    "the backup {} could not be written now ({e}); it is tried again once the module is back in service",
                    plan.backup_file.display()
                ),
            ),
            Err(e) => self.say(EventKind::Warning, format!("the backup stopped: {e}")),
        }
    }

    /// After the commit: compress the old version, keep the last N backups.
    /// Returns the backup and what went wrong with it.
    pub(super) async fn finish(
        &mut self,
        plan: &Plan,
        mut journal: Journal,
    ) -> (Option<PathBuf>, Vec<String>) {
        self.step = "writing the backup";
        let backups = write_backup(plan, self.install.settings).await;
        let mut backup = self
            .reached
            .backup_written
            .then(|| plan.backup_file.clone());
        for written in &backups.written {
            if written.zip == plan.backup_file {
                let _ = journal.record(Step::BackupWritten);
                backup = Some(written.zip.clone());
            }
            self.say(
                EventKind::Step,
                format!(
                    "backup {} written ({} MB in {} ms)",
                    written.zip.display(),
                    written.bytes / 1_000_000,
                    written.elapsed.as_millis()
                ),
            );
        }
        for problem in &backups.problems {
            self.say(EventKind::Warning, problem.clone());
        }
        let _ = journal.record(Step::Done {
            outcome: "installed".into(),
        });
        let _ = journal.close();
        (backup, backups.problems)
    }
}
