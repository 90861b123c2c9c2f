//! Each module's install history, kept on disk so that the server itself
//! shows what happened after a restart, failures included:
//! `<data>/bin/updates/history/<module>.json`, the newest [`KEPT`] installs
//! (when, from → to, the result, the downtime, what it said), the newest
//! [`WITH_OUTPUT`] of them with their phases, steps and hook output.
//!
//! A file is replaced whole (written beside it, then renamed), so a crash
//! leaves the old history or the new one. A file that cannot be read is
//! set aside (`.unreadable`), never written over.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flotilla_proto::domain::ModuleName;
use serde::{Deserialize, Serialize};

use crate::install::EventKind;
use crate::install::hooks::Stream;
use crate::state::InstallView;

/// How many installs of a module are kept.
pub const KEPT: usize = 20;
/// How many of the newest keep their lines (phases, steps, hook output).
pub const WITH_OUTPUT: usize = 3;
/// The lines kept of one install: its last ones, where a failure is.
const LINES: usize = 2000;

/// How an install ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Installed,
    /// Refused or failed before anything changed.
    Failed,
    /// Failed, and the previous version was put back.
    RolledBack,
    /// Failed, and putting the previous version back failed too.
    RollbackFailed,
}

impl Ending {
    pub fn label(self) -> &'static str {
        match self {
            Ending::Installed => "installed",
            Ending::Failed => "failed, nothing changed",
            Ending::RolledBack => "failed, rolled back",
            Ending::RollbackFailed => "failed, ROLLBACK FAILED",
        }
    }

    pub fn ok(self) -> bool {
        self == Ending::Installed
    }
}

/// One line an install wrote: a phase, a step, a hook's output, a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub at: DateTime<Utc>,
    /// `phase`, `step`, `stdout`, `stderr` or `warning`.
    pub kind: String,
    pub text: String,
}

/// One install of a module, finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub install_id: String,
    pub from: Option<String>,
    /// A kept backup put back, rather than a package installed.
    #[serde(default)]
    pub restore: bool,
    pub to: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub ending: Ending,
    /// How long the module was out of service, when it was installed.
    pub downtime_ms: Option<u64>,
    /// What the install said at its end: its failure, or its warnings.
    pub message: String,
    /// Its lines, for the newest [`WITH_OUTPUT`] installs only.
    #[serde(default)]
    pub lines: Vec<Line>,
    /// How many earlier lines were left out.
    #[serde(default)]
    pub lines_left_out: usize,
}

impl Entry {
    /// What it was and how it ended, in words: `installed`, `restored`,
    /// `restore failed, rolled back`.
    pub fn result(&self) -> String {
        match (self.restore, self.ending) {
            (false, ending) => ending.label().to_owned(),
            (true, Ending::Installed) => "restored".to_owned(),
            (true, ending) => format!("restore {}", ending.label()),
        }
    }

    /// What it was: `Install` or `Restore`.
    pub fn what(&self) -> &'static str {
        match self.restore {
            true => "Restore",
            false => "Install",
        }
    }

    /// The entry of a finished install's view; `None` while it runs.
    pub fn of(view: &InstallView) -> Option<Entry> {
        let result = view.result.as_ref()?;
        let (ending, downtime_ms, message) = match result {
            Ok(outcome) => (
                Ending::Installed,
                Some(outcome.downtime.as_millis() as u64),
                outcome.warnings.join("; "),
            ),
            Err(failure) => (
                match (failure.rolled_back, &failure.rollback_error) {
                    (_, Some(_)) => Ending::RollbackFailed,
                    (true, None) => Ending::RolledBack,
                    (false, None) => Ending::Failed,
                },
                None,
                failure.to_string(),
            ),
        };
        let lines = lines_of(&view.events);
        let lines_left_out = lines.len().saturating_sub(LINES);
        Some(Entry {
            install_id: view.install_id.clone(),
            from: view.from.clone(),
            restore: view.restore,
            to: view.to.clone(),
            started_at: view.started_at,
            finished_at: view.finished_at.unwrap_or_else(Utc::now),
            ending,
            downtime_ms,
            message,
            lines: lines.into_iter().skip(lines_left_out).collect(),
            lines_left_out,
        })
    }
}

/// An install's events as the lines it wrote.
pub fn lines_of(events: &[crate::install::Event]) -> Vec<Line> {
    events
        .iter()
        .map(|event| Line {
            at: event.at,
            kind: kind_name(event.kind).to_owned(),
            text: event.text.clone(),
        })
        .collect()
}

/// The name an install's event kind is kept and shown under.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Phase => "phase",
        EventKind::Step => "step",
        EventKind::Hook(Stream::Stdout) => "stdout",
        EventKind::Hook(Stream::Stderr) => "stderr",
        EventKind::Warning => "warning",
    }
}

/// The folder of the histories: `<data>/bin/updates/history/`.
pub fn folder(updates_dir: &Path) -> PathBuf {
    updates_dir.join("history")
}

fn file(updates_dir: &Path, module: &ModuleName) -> PathBuf {
    folder(updates_dir).join(format!("{module}.json"))
}

/// Why a module's history could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the install history {}: {why}", .file.display())]
pub struct Unreadable {
    pub file: PathBuf,
    why: String,
}

/// The installs of `module`, newest first; none when it never installed here.
pub fn read(updates_dir: &Path, module: &ModuleName) -> Result<Vec<Entry>, Unreadable> {
    let file = file(updates_dir, module);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Unreadable {
                file,
                why: e.to_string(),
            });
        }
    };
    serde_json::from_str(&text).map_err(|e| Unreadable {
        file,
        why: e.to_string(),
    })
}

/// Adds a finished install to its module's history: the newest first,
/// [`KEPT`] at most, lines kept for the newest [`WITH_OUTPUT`].
pub fn record(updates_dir: &Path, module: &ModuleName, entry: Entry) -> std::io::Result<()> {
    let mut entries = match read(updates_dir, module) {
        Ok(entries) => entries,
        Err(unreadable) => {
            let aside = unreadable.file.with_extension("json.unreadable");
            tracing::warn!(
                "{unreadable}; set aside as {} and started again",
                aside.display()
            );
            std::fs::rename(&unreadable.file, &aside)?;
            Vec::new()
        }
    };
    entries.retain(|e| e.install_id != entry.install_id);
    entries.insert(0, entry);
    entries.truncate(KEPT);
    for old in entries.iter_mut().skip(WITH_OUTPUT) {
        old.lines_left_out += old.lines.len();
        old.lines.clear();
    }
    let target = file(updates_dir, module);
    std::fs::create_dir_all(folder(updates_dir))?;
    let written = target.with_extension("json.new");
    let json = serde_json::to_vec_pretty(&entries).map_err(std::io::Error::other)?;
    std::fs::write(&written, json)?;
    std::fs::rename(&written, &target)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name(module: &str) -> ModuleName {
        ModuleName::parse(module).unwrap()
    }

    fn entry(n: usize) -> Entry {
        Entry {
            install_id: format!("ecommerce-{n}"),
            from: Some("1.0.0".into()),
            restore: false,
            to: format!("1.0.{n}"),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            ending: if n.is_multiple_of(2) {
                Ending::Installed
            } else {
                Ending::RolledBack
            },
            downtime_ms: Some(12),
            message: String::new(),
            lines: vec![Line {
                at: Utc::now(),
                kind: "stdout".into(),
                text: format!("hook of install {n}"),
            }],
            lines_left_out: 0,
        }
    }

    #[test]
    fn the_newest_installs_are_kept_with_the_output_of_the_last_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path(), &name("ecommerce")).unwrap().is_empty());
        for n in 0..KEPT + 5 {
            record(dir.path(), &name("ecommerce"), entry(n)).unwrap();
        }
        let kept = read(dir.path(), &name("ecommerce")).unwrap();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].to, format!("1.0.{}", KEPT + 4), "newest first");
        let with_output = kept.iter().filter(|e| !e.lines.is_empty()).count();
        assert_eq!(with_output, WITH_OUTPUT);
        assert_eq!(
            kept[0].lines[0].text,
            format!("hook of install {}", KEPT + 4)
        );
        assert_eq!(kept[WITH_OUTPUT].lines_left_out, 1);
        assert!(read(dir.path(), &name("phygitalapi")).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_history_is_set_aside_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(folder(dir.path())).unwrap();
        let path = folder(dir.path()).join("ecommerce.json");
        std::fs::write(&path, "{ not json").unwrap();
        let error = read(dir.path(), &name("ecommerce"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("ecommerce.json"), "{error}");
        record(dir.path(), &name("ecommerce"), entry(1)).unwrap();
        assert_eq!(read(dir.path(), &name("ecommerce")).unwrap().len(), 1);
        let aside = folder(dir.path()).join("ecommerce.json.unreadable");
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "{ not json");
    }
}
