//! Database modules: the database each is configured with (`[databases.<module>]`),
//! the drift report against the standard schema a pending database package
//! carries, the automatic upgrade of a standard database when the module is
//! installed, and the guided upgrade of a customized one, script by script.
//!
//! The procedure: when the customer's database was customized, the update
//! must not run by itself; the operator checks and runs the scripts one by
//! one. So a customized database refuses the automatic upgrade, and the
//! review (here, on the portal, through the controller) takes over; once
//! every script is run or marked applied, installing the module installs its
//! files only.

use std::sync::Arc;

use chrono::Utc;
use flotilla_proto::database::{
    self, Database, Fingerprint, History, Review, Script, ScriptRun, ScriptView,
};
use flotilla_proto::domain::Version;
use flotilla_proto::link::{AgentCommand, DatabaseAnswer};

use crate::install::package::Package;
use crate::state::Agent;

mod installs;

pub use installs::{
    Applied, before_install, before_restore, discard, recover, refuse_customized, restore,
    restore_alone,
};

/// Who the history names for automatic upgrades.
pub const AUTOMATIC: &str = "flotilla (automatic upgrade)";

/// A pending database package, opened and verified.
#[derive(Debug)]
pub struct Upgrade {
    pub module: String,
    pub engine: String,
    pub from: Version,
    pub to: Version,
    pub standard_from: Fingerprint,
    pub standard_to: Fingerprint,
    pub scripts: Vec<Script>,
}

impl Upgrade {
    /// The database part of `package`, if it has one.
    pub fn of(package: &Package) -> Result<Option<Upgrade>, String> {
        let Some(section) = &package.manifest.database else {
            if !package.manifest.upgrade_scripts.is_empty() {
                return Err(format!(
                    "the package of {} {} has upgrade scripts but no standard schemas ([database]): \
                     rebuild it with `package build --engine`",
                    package.manifest.module, package.manifest.version
                ));
            }
            return Ok(None);
        };
        let parse = |which: &str| -> Result<Fingerprint, String> {
            let text = package.standard(which).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| {
                format!("the package's standard/{which}.json is not a fingerprint: {e}")
            })
        };
        let scripts = package
            .scripts()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(name, sql)| Script { name, sql })
            .collect();
        Ok(Some(Upgrade {
            module: package.manifest.module.to_string(),
            engine: section.engine.clone(),
            from: section.from_version.clone(),
            to: package.manifest.version.clone(),
            standard_from: parse("from")?,
            standard_to: parse("to")?,
            scripts,
        }))
    }

    /// The pending package of `module`, if it is a database package.
    pub fn pending(agent: &Agent, module: &str) -> Result<Option<Upgrade>, String> {
        let Some(pending) = crate::inventory::pending(&agent.settings.layout, &agent.trust())
            .into_iter()
            .find(|p| p.module == module)
        else {
            return Ok(None);
        };
        let package =
            Package::open(&pending.package, &pending.sha256).map_err(|e| e.to_string())?;
        Upgrade::of(&package)
    }
}

/// The module's database, connected.
pub async fn connect(agent: &Agent, module: &str) -> Result<Database, String> {
    let settings = agent.settings.databases.get(module).ok_or_else(|| {
        format!("module {module} has no database configured ([databases.{module}] in agent.toml)")
    })?;
    Database::connect(settings).await.map_err(|e| e.to_string())
}

/// Each script's state for `module` `to`, from the history (the latest row
/// of the same script with the same checksum wins: a script changed since
/// it ran is pending again).
fn states(module: &str, scripts: &[Script], history: &[History], to: &str) -> Vec<ScriptView> {
    // A restore undid whatever ran before it.
    let since = history
        .iter()
        .rposition(|h| h.module == module && h.outcome == "restored")
        .map_or(0, |at| at + 1);
    let history = &history[since..];
    scripts
        .iter()
        .map(|s| {
            let checksum = s.checksum();
            let last = history.iter().rev().find(|h| {
                h.module == module
                    && h.version == to
                    && h.script == s.name
                    && h.checksum == checksum
            });
            ScriptView {
                name: s.name.clone(),
                sql: s.sql.clone(),
                checksum: s.checksum(),
                transactional: s.transactional(),
                state: last.map_or("pending".into(), |h| h.outcome.clone()),
                message: last.map(|h| h.message.clone()),
                by: last.map(|h| h.applied_by.clone()),
                at: last.map(|h| h.applied_at),
            }
        })
        .collect()
}

fn all_done(views: &[ScriptView]) -> bool {
    views
        .iter()
        .all(|v| v.state == "succeeded" || v.state == "marked applied")
}

/// Why a review or a guided action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No database, or no pending database package.
    #[error("{0}")]
    NotFound(String),
    /// Out of order, already done, locked.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

impl ReviewError {
    /// The HTTP status and error code it answers with, on the portal and,
    /// through the link, on the controller's API.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ReviewError::NotFound(_) => (404, "not_found"),
            ReviewError::Conflict(_) => (409, "conflict"),
            ReviewError::Failed(_) => (502, "database"),
        }
    }
}

fn upgrade_of(agent: &Agent, module: &str) -> Result<Upgrade, ReviewError> {
    if !agent.settings.databases.contains_key(module) {
        return Err(ReviewError::NotFound(format!(
            "module {module} has no database configured ([databases.{module}] in agent.toml)"
        )));
    }
    Upgrade::pending(agent, module)
        .map_err(ReviewError::Failed)?
        .ok_or_else(|| {
            ReviewError::NotFound(format!(
                "no database package of {module} is pending on this server"
            ))
        })
}

/// The review of `module`'s pending database upgrade.
pub async fn review(agent: &Arc<Agent>, module: &str) -> Result<Review, ReviewError> {
    let upgrade = upgrade_of(agent, module)?;
    let db = connect(agent, module).await.map_err(ReviewError::Failed)?;
    let found = db
        .fingerprint()
        .await
        .map_err(|e| ReviewError::Failed(e.to_string()))?;
    let history = db
        .history()
        .await
        .map_err(|e| ReviewError::Failed(e.to_string()))?;
    db.close().await;
    let drift = upgrade.standard_from.drift(&found);
    let scripts = states(module, &upgrade.scripts, &history, &upgrade.to.to_string());
    Ok(Review {
        module: module.to_owned(),
        engine: upgrade.engine,
        from_version: upgrade.from.to_string(),
        to_version: upgrade.to.to_string(),
        installed_version: agent
            .inventory
            .borrow()
            .module(module)
            .and_then(|m| m.installed_version.as_ref().map(Version::to_string)),
        standard: drift.is_empty(),
        summary: drift.summary(),
        drift,
        done: all_done(&scripts),
        scripts,
        history: history.into_iter().filter(|h| h.module == module).collect(),
    })
}

/// Finds `script` and checks every script before it is done.
fn next_script(
    upgrade: &Upgrade,
    history: &[History],
    script: &str,
) -> Result<Script, ReviewError> {
    let views = states(
        &upgrade.module,
        &upgrade.scripts,
        history,
        &upgrade.to.to_string(),
    );
    let Some(at) = views.iter().position(|v| v.name == script) else {
        return Err(ReviewError::NotFound(format!(
            "the pending package of {} {} has no script {script}",
            upgrade.module, upgrade.to
        )));
    };
    if views[at].state == "succeeded" || views[at].state == "marked applied" {
        return Err(ReviewError::Conflict(format!(
            "{script} is already {} ({})",
            views[at].state,
            views[at].by.clone().unwrap_or_default()
        )));
    }
    if let Some(before) = views[..at]
        .iter()
        .find(|v| v.state != "succeeded" && v.state != "marked applied")
    {
        return Err(ReviewError::Conflict(format!(
            "scripts run one by one, in order: {} comes before {script} and is {}",
            before.name, before.state
        )));
    }
    Ok(upgrade.scripts[at].clone())
}

/// The guided upgrade's next script of `module`, which must be `script`:
/// `act` on it under the upgrade lock, then close.
async fn on_next_script<T>(
    agent: &Arc<Agent>,
    module: &str,
    script: &str,
    act: impl AsyncFnOnce(&Database, &database::Lock, &Upgrade, Script) -> Result<T, ReviewError>,
) -> Result<T, ReviewError> {
    let upgrade = upgrade_of(agent, module)?;
    let db = connect(agent, module).await.map_err(ReviewError::Failed)?;
    let lock = db
        .lock()
        .await
        .map_err(|e| ReviewError::Conflict(e.to_string()))?;
    let history = db
        .history()
        .await
        .map_err(|e| ReviewError::Failed(e.to_string()))?;
    let result = match next_script(&upgrade, &history, script) {
        Ok(script) => act(&db, &lock, &upgrade, script).await,
        Err(e) => Err(e),
    };
    // The lock's connection first: closing waits for every connection.
    drop(lock);
    db.close().await;
    result
}

/// The answer to the controller's database command: the review, a
/// script's run or its marking, or the refusal with the portal's status.
pub async fn answer(agent: &Arc<Agent>, command: AgentCommand) -> DatabaseAnswer {
    let answered = match command {
        AgentCommand::DatabaseReview { module } => review(agent, &module)
            .await
            .map(|review| DatabaseAnswer::Review(Box::new(review))),
        AgentCommand::DatabaseDiscard { module, version } => discard(agent, &module, &version)
            .await
            .map(DatabaseAnswer::Discard),
        AgentCommand::DatabaseRestore {
            module,
            version,
            by,
        } => restore_alone(agent, &module, &version, &by)
            .await
            .map(DatabaseAnswer::Restored),
        AgentCommand::DatabaseScript {
            module,
            script,
            by,
            mark_applied,
        } => {
            let by = if by.is_empty() {
                "controller"
            } else {
                by.as_str()
            };
            if mark_applied {
                self::mark_applied(agent, &module, &script, by)
                    .await
                    .map(|()| DatabaseAnswer::Marked { script })
            } else {
                run_script(agent, &module, &script, by)
                    .await
                    .map(DatabaseAnswer::Run)
            }
        }
        other => Err(ReviewError::Conflict(format!(
            "not a database command: {other:?}"
        ))),
    };
    answered.unwrap_or_else(|e| {
        let (status, code) = e.status();
        DatabaseAnswer::Refused {
            status,
            code: code.to_owned(),
            message: e.to_string(),
        }
    })
}

/// Runs one script of the guided upgrade, in its own transaction.
pub async fn run_script(
    agent: &Arc<Agent>,
    module: &str,
    script: &str,
    by: &str,
) -> Result<ScriptRun, ReviewError> {
    on_next_script(agent, module, script, async |db, lock, upgrade, script| {
        tracing::info!(module, script = %script.name, by, "running a database script");
        db.run_script(lock, module, &upgrade.to.to_string(), &script, by)
            .await
            .map_err(|e| ReviewError::Failed(e.to_string()))
    })
    .await
}

/// Records that a script was applied by hand.
pub async fn mark_applied(
    agent: &Arc<Agent>,
    module: &str,
    script: &str,
    by: &str,
) -> Result<(), ReviewError> {
    on_next_script(agent, module, script, async |db, _lock, upgrade, script| {
        tracing::info!(module, script = %script.name, by, "database script marked as applied by hand");
        db.record(&History {
            module: module.to_owned(),
            version: upgrade.to.to_string(),
            script: script.name.clone(),
            checksum: script.checksum(),
            applied_by: by.to_owned(),
            applied_at: Utc::now(),
            duration_ms: 0,
            outcome: "marked applied".into(),
            message: format!("applied by hand, as {by} says"),
        })
        .await
        .map_err(|e| ReviewError::Failed(e.to_string()))
    })
    .await
}
