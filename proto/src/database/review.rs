//! A database upgrade as an operator reviews it: how the database differs
//! from the standard, each script with its state, the history. The agent
//! builds it; the portal shows it; the controller receives it over the link.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Drift, History};

/// A script as the review shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptView {
    pub name: String,
    pub sql: String,
    pub checksum: String,
    pub transactional: bool,
    /// `pending`, `succeeded`, `failed` (may be run again), `marked applied`.
    pub state: String,
    pub message: Option<String>,
    pub by: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// What an operator needs to review a database upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub module: String,
    pub engine: String,
    pub from_version: String,
    pub to_version: String,
    pub installed_version: Option<String>,
    /// Whether the database is the standard schema of `from_version`: then
    /// the upgrade runs by itself at install.
    pub standard: bool,
    /// What differs from the standard of `from_version`.
    pub drift: Drift,
    /// One line per difference.
    pub summary: Vec<String>,
    pub scripts: Vec<ScriptView>,
    /// Every script run or marked applied: installing the module now
    /// installs its files only.
    pub done: bool,
    pub history: Vec<History>,
}
