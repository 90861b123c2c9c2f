//! The install journal: one file per module install in progress, each step
//! appended and fsynced *before* the step is taken. After a crash or a power
//! cut, the next start reads it and finishes or rolls back the install, so a
//! module is always wholly the old version or wholly the new one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything recovery needs to know about an install, written first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub module: String,
    pub kind: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// The module's live folder.
    pub live: PathBuf,
    /// The new version, unpacked beside it.
    pub staged: PathBuf,
    /// Where the old version is set aside (same volume).
    pub aside: PathBuf,
    /// Where a failed new version is moved on rollback.
    pub discard: PathBuf,
    /// The zip the old version is compressed into once back in service.
    pub backup_file: PathBuf,
    /// Whether the old folder held an `app_offline.bak` to carry over.
    pub had_bak: bool,
}

/// A step, recorded before it is taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Begin {
        plan: Box<Plan>,
    },
    /// The maintenance page is going up / the service is being stopped.
    OutOfService,
    /// The old version is being renamed to `aside`; a maintenance shell
    /// follows in its place.
    SetAside,
    /// The shell is being replaced by the staged new version.
    SwapIn,
    /// The new version is in place and checked: from here on, recovery
    /// finishes the install instead of rolling it back.
    Commit,
    /// Rolling back to the old version.
    Rollback {
        reason: String,
    },
    /// The old version's backup zip is written.
    BackupWritten,
    /// Nothing left to do.
    Done {
        outcome: String,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Begin { .. } => "begin",
            Step::OutOfService => "out_of_service",
            Step::SetAside => "set_aside",
            Step::SwapIn => "swap_in",
            Step::Commit => "commit",
            Step::Rollback { .. } => "rollback",
            Step::BackupWritten => "backup_written",
            Step::Done { .. } => "done",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    at: DateTime<Utc>,
    #[serde(flatten)]
    step: Step,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a journal for `plan`; refuses if one exists (an install of that
    /// module is in progress or was interrupted).
    pub fn begin(dir: &Path, plan: &Plan) -> io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.journal", plan.module));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        let mut journal = Journal { path, file };
        journal.record(Step::Begin {
            plan: Box::new(plan.clone()),
        })?;
        sync_dir(dir);
        Ok(journal)
    }

    /// Reopens an interrupted journal for recovery.
    pub fn reopen(path: &Path) -> io::Result<(Journal, Vec<Step>)> {
        let steps = read(path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
            },
            steps,
        ))
    }

    /// Appends a step and makes it durable before returning.
    pub fn record(&mut self, step: Step) -> io::Result<()> {
        let mut line = serde_json::to_string(&Record {
            at: Utc::now(),
            step,
        })
        .map_err(io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    /// Removes the journal once the install is done.
    pub fn close(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The steps recorded in a journal file. A torn last line (power cut during
/// the append) is ignored: its step was not taken.
pub fn read(path: &Path) -> io::Result<Vec<Step>> {
    let mut steps = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => steps.push(record.step),
            Err(_) => break,
        }
    }
    Ok(steps)
}

/// The journals left in `dir`: installs that did not finish.
pub fn pending(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    found.sort();
    found
}

/// Makes a new directory entry durable (Unix; a no-op elsewhere).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path) -> Plan {
        Plan {
            module: "ecommerce".into(),
            kind: "web".into(),
            from_version: Some("1.0".into()),
            to_version: "2.0".into(),
            live: dir.join("ecommerce"),
            staged: dir.join("staged"),
            aside: dir.join("aside"),
            discard: dir.join("discard"),
            backup_file: dir.join("backup.zip"),
            had_bak: false,
        }
    }

    #[test]
    fn steps_survive_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::begin(dir.path(), &plan(dir.path())).expect("begin");
        journal.record(Step::OutOfService).expect("record");
        journal.record(Step::SetAside).expect("record");
        let path = journal.path().to_path_buf();
        drop(journal);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"at\":\"2026-"))
            .expect("torn write");
        let steps = read(&path).expect("read");
        let names: Vec<&str> = steps.iter().map(Step::name).collect();
        assert_eq!(names, ["begin", "out_of_service", "set_aside"]);
        assert_eq!(pending(dir.path()), std::slice::from_ref(&path));
        assert!(
            Journal::begin(dir.path(), &plan(dir.path())).is_err(),
            "one install per module at a time"
        );
    }
}
