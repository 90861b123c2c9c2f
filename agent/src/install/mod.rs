//! Installing a module as the procedure says, made automatic and safe.
//!
//! For module M from version A to version B:
//!
//! 1. Before any downtime: verify the package, unpack B into a staging
//!    folder beside M (same volume), check the backup folder is writable,
//!    compress A while it is still in service.
//! 2. `STARTUPDATE` hook; M is still live.
//! 3. Take M out of service: `app_offline.htm` for a web module, stop the
//!    service for a service module. Processes still holding files in M are
//!    named, waited for, and if need be its pool or service is stopped.
//! 4. `PREBACKUP` hook; A is renamed aside (instant, same volume) and a web
//!    module's folder is replaced by a shell holding only the maintenance
//!    page; A's backup zip is finished from the zip taken in step 1 and the
//!    files changed since; `POSTBACKUP` hook, which finds it.
//! 5. `PREINSTALL` hook; the shell is replaced by B (a rename, preserved
//!    files already carried over); `POSTINSTALL` hook, page still up.
//! 6. Back in service, health check; `ENDUPDATE` hook; commit.
//! 7. The folder A was set aside in is removed; backups beyond the ones
//!    kept are pruned.
//!
//! Every step is journaled (fsync) before it is taken; a failure anywhere
//! rolls back to A, and [`recover`] finishes or rolls back an install that a
//! crash interrupted.

pub mod hooks;
pub mod journal;
pub mod maintenance;
/// The package format, shared with the publisher's tooling.
pub use flotilla_proto::package;
pub mod platform;

pub mod backup;
mod engine;
mod files;
mod recovery;

pub use engine::{Failure, Install, Outcome};
pub use files::{check_space, pre_stage, staging_folder};
pub use recovery::{Recovered, recover};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::install::hooks::{Phase, Stream};

/// What installs are allowed to do, from the agent's settings.
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// `<data>/bin/updates/scripts/`
    pub scripts_dir: PathBuf,
    /// Where backup zips go; `E_BACKUP_PATH`.
    pub backup_dir: PathBuf,
    /// Where journals of installs in progress live.
    pub journal_dir: PathBuf,
    pub hook_timeout: Duration,
    /// The PowerShell `.ps1` hooks run with, when not the platform's default.
    pub powershell: Option<PathBuf>,
    /// How long to wait for processes holding files before escalating.
    pub lock_budget: Duration,
    /// How many backups to keep per module.
    pub backups_to_keep: usize,
    /// Space an install must leave free on each volume it writes to.
    pub disk_reserve: u64,
    /// The maintenance page; `{{module}}`, `{{version}}`, `{{until}}` filled in.
    pub maintenance_template: String,
    pub limits: package::Limits,
}

/// Something that happened during an install, for whoever watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The phase under way, if any.
    pub phase: Option<Phase>,
    pub kind: EventKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A phase started.
    Phase,
    /// What the engine is doing.
    Step,
    /// A line a hook printed.
    Hook(Stream),
    /// Something worth attention that does not stop the install.
    Warning,
}

/// Receives an install's events as they happen.
pub type Progress = Arc<dyn Fn(Event) + Send + Sync>;

/// Called at each named point of an install, before it is taken. The agent
/// binary passes [`NoCrashPoints`]; only the test harness's own binary passes
/// something else, so no configuration can reach it in a normal build.
pub trait CrashPoints: Send + Sync + std::fmt::Debug {
    fn reached(&self, point: &str);
}

/// The normal build's crash points: none.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCrashPoints;

impl CrashPoints for NoCrashPoints {
    fn reached(&self, _point: &str) {}
}
