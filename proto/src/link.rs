//! What travels on the link besides the inventory, as domain types: what
//! the controller tells an agent ([`ToAgent`]: commands, package offers,
//! holds), and what an agent reports of its installs and its database
//! upgrades. Both sides work on these; `convert` turns them into wire
//! messages and back, in one place.

use chrono::{DateTime, Utc};

use crate::domain::Version;

/// What the controller tells a connected agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToAgent {
    /// Do something and answer under `id`. `None`: a command this build
    /// does not know (a newer controller's); the agent answers that it
    /// cannot.
    Command {
        id: String,
        command: Option<AgentCommand>,
    },
    /// Packages published (and not withdrawn) the agent may download, and
    /// the sha256 of those only withdrawn releases hold.
    Announce {
        packages: Vec<PackageOffer>,
        withdrawn: Vec<String>,
    },
    /// The rollout holding the server (local installs are refused), or
    /// none.
    Hold(Option<String>),
}

/// A command to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// Rescan the modules and send the whole inventory.
    RefreshInventory,
    /// Install a module: its pending package, or one of the agent's
    /// packages by its sha256.
    Install {
        module: String,
        sha256: Option<String>,
        allow_downgrade: bool,
        /// The version the pending package must be (a rollout's).
        version: Option<String>,
        /// When the site's planned maintenance ends, for the maintenance page.
        planned_end: Option<DateTime<Utc>>,
        /// The module flotilla-agent: how long its new version has to prove
        /// itself (seconds); `None`: the agent's own `update_budget_seconds`.
        agent_update_budget_seconds: Option<u32>,
    },
    /// Restore a kept backup: of this version, or the newest of another.
    /// `keep_database`: a database module's files only; its database stays
    /// as it is.
    Rollback {
        module: String,
        to: Option<String>,
        keep_database: bool,
    },
    /// The review of a module's pending database upgrade.
    DatabaseReview { module: String },
    /// Run one script of a guided database upgrade, or mark it applied.
    DatabaseScript {
        module: String,
        script: String,
        /// Who, for the history.
        by: String,
        mark_applied: bool,
    },
    /// What restoring the database backup of `module` at `version` would
    /// throw away.
    DatabaseDiscard { module: String, version: String },
    /// Restore `module`'s database alone from the backup taken when it was
    /// upgraded from `version`; `by` decided it.
    DatabaseRestore {
        module: String,
        version: String,
        by: String,
    },
    /// The agent's self-diagnosis: every check, or (`preflight`) only
    /// those that can make the install of `modules` fail.
    Doctor {
        preflight: bool,
        modules: Vec<String>,
    },
}

/// A published package an agent may download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageOffer {
    pub module: String,
    pub version: Version,
    pub kind: String,
    pub sha256: String,
    /// Ed25519 (hex) over `flotilla-package-v1:<sha256>`.
    pub signature: String,
    /// Absolute.
    pub url: String,
    pub size: u64,
    pub release_version: String,
    /// Markdown.
    pub release_notes: String,
    /// The platform an agent package was built for (`linux-x86_64`,
    /// `windows-x86_64`); empty for a package every platform installs.
    pub platform: String,
}

/// A command's answer: accepted (or done) or refused, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub command_id: String,
    pub ok: bool,
    pub message: String,
}

/// One thing that happened during an install, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallProgress {
    pub install_id: String,
    pub module: String,
    pub to_version: String,
    /// The command that ordered it; `None` for a local install.
    pub command_id: Option<String>,
    /// The phase under way (`STARTUPDATE` … `ENDUPDATE`).
    pub phase: Option<String>,
    /// `phase`, `step`, `stdout`, `stderr` or `warning`.
    pub kind: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

/// How an install ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallResult {
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub command_id: Option<String>,
    pub ok: bool,
    /// How long the module was out of service.
    pub downtime_ms: u64,
    /// The whole story for a person: what failed, where, the rollback.
    pub message: String,
    /// The phase that failed.
    pub phase: Option<String>,
    /// What the failing hook wrote to stderr.
    pub hook_output: Vec<String>,
    pub rolled_back: bool,
    pub rollback_error: Option<String>,
    /// What went wrong after the new version was in place, for a person: a
    /// backup that could not be written, and where the old version is.
    pub warnings: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// An agent's answer to a database command.
#[cfg(feature = "database")]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DatabaseAnswer {
    /// The review of the pending upgrade.
    Review(Box<crate::database::Review>),
    /// A script run.
    Run(crate::database::ScriptRun),
    /// The script was marked applied by hand.
    Marked { script: String },
    /// What a restore of a database backup would throw away.
    Discard(crate::database::Discard),
    /// The database was restored; what the restore threw away.
    Restored(crate::database::Discard),
    /// Refused, with the HTTP status and error code the portal's API
    /// answers with: not found (404), out of order or locked (409), the
    /// database could not be read (502).
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}
