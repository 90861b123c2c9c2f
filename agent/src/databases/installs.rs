//! A database module's part in installs: the automatic upgrade of a
//! standard database before the module's files (backed up first, restored
//! if the files fail), the refusal of a customized one before anything
//! starts, restores, and recovery at start.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use flotilla_proto::database::{
    self, Database, Discard, Fingerprint, History, Script, WriteCounts,
};
use serde::Serialize;

use super::{AUTOMATIC, Upgrade, all_done, connect, states};
use crate::install::package::Package;
use crate::state::Agent;

/// What the install did to the database, so that a failed install of the
/// module's files can put the database back. Written to the journal folder
/// (fsynced) before the upgrade commits, removed once the module's files are
/// in place (or the database restored): a marker found at start means the
/// agent stopped in between.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Applied {
    pub module: String,
    pub to_version: String,
    pub backup: PathBuf,
    pub standard_from: Fingerprint,
    /// When the backup was taken.
    #[serde(default)]
    pub taken_at: Option<chrono::DateTime<Utc>>,
    /// The engine's write counts per table then (PostgreSQL), to tell what
    /// a restore would throw away.
    #[serde(default)]
    pub counts: Option<WriteCounts>,
}

fn marker(agent: &Agent, module: &str) -> PathBuf {
    agent
        .settings
        .install
        .journal_dir
        .join(format!("{module}.database.json"))
}

impl Applied {
    fn write(&self, agent: &Agent) -> Result<(), String> {
        use std::io::Write;
        let path = marker(agent, &self.module);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(agent.settings.install.journal_dir.as_path())?;
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
            file.sync_all()
        };
        write().map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// The module's files are in place, or the database is back: done.
    pub fn forget(&self, agent: &Agent) {
        let _ = std::fs::remove_file(marker(agent, &self.module));
    }
}

/// At start: a database upgraded by an install the agent did not finish is
/// kept if the module's files reached the new version, else restored from
/// its backup. Returns what was done, to report.
pub async fn recover(agent: &Agent) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(entries) = std::fs::read_dir(&agent.settings.install.journal_dir) else {
        return notes;
    };
    let declarations =
        crate::applications::load(&agent.settings.layout.applications_config()).modules;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = path.to_string_lossy().into_owned();
        if name.ends_with(".database.needs-operator.json") {
            notes.push(format!(
                "A DATABASE NEEDS AN OPERATOR: an interrupted install could not restore it; see {name}, then remove that file"
            ));
            continue;
        }
        if !name.ends_with(".database.json") {
            continue;
        }
        let Some(applied) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Applied>(&b).ok())
        else {
            notes.push(format!(
                "{} cannot be read; remove it by hand",
                path.display()
            ));
            continue;
        };
        let version = declarations
            .iter()
            .find(|d| d.name.as_str() == applied.module)
            .and_then(|d| {
                std::fs::read_to_string(
                    d.install_dir(agent.settings.layout.root())
                        .join(&d.version_file),
                )
                .ok()
            })
            .map(|v| v.trim().to_owned());
        if version.as_deref() == Some(applied.to_version.as_str()) {
            applied.forget(agent);
            notes.push(format!(
                "the interrupted install of {} {} had its files in place: its upgraded database is kept",
                applied.module, applied.to_version
            ));
            continue;
        }
        // Already as it was (the upgrade never committed): nothing to undo.
        if let Ok(db) = connect(agent, &applied.module).await {
            let now = db.fingerprint().await;
            db.close().await;
            if now.is_ok_and(|now| applied.standard_from.drift(&now).is_empty()) {
                applied.forget(agent);
                notes.push(format!(
                    "the interrupted install of {} {} left its database as it was",
                    applied.module, applied.to_version
                ));
                continue;
            }
        }
        let undone = "the interrupted install's upgrade";
        match restore(agent, &applied.module, &applied, "flotilla", undone).await {
            Ok(()) => {
                applied.forget(agent);
                notes.push(format!(
                    "the interrupted install of {} {} was rolled back: its database was restored from {}",
                    applied.module,
                    applied.to_version,
                    applied.backup.display()
                ));
            }
            Err(e) => {
                // Tried once: never again by itself, which could bring back
                // an old backup over what an operator repaired.
                let _ = std::fs::rename(
                    &path,
                    name.replace(".database.json", ".database.needs-operator.json"),
                );
                notes.push(format!(
                    "THE DATABASE OF {} COULD NOT BE RESTORED after an interrupted install: {e}; the backup is {}",
                    applied.module,
                    applied.backup.display()
                ));
            }
        }
    }
    notes
}

/// Before a database module's files are installed: checks the database and,
/// when it is standard, upgrades it all or nothing after a backup. Says what
/// it does through `say`. `Ok(None)` when there is nothing to do (no
/// database part, or a guided upgrade already completed).
pub async fn before_install(
    agent: &Arc<Agent>,
    package: &Package,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<Option<Applied>, String> {
    let module = package.manifest.module.to_string();
    if !agent.settings.databases.contains_key(&module) {
        if package.manifest.database.is_some() || !package.manifest.upgrade_scripts.is_empty() {
            return Err(format!(
                "the package of {module} upgrades a database, but none is configured ([databases.{module}] in agent.toml)"
            ));
        }
        return Ok(None);
    }
    let Some(upgrade) = Upgrade::of(package)? else {
        return Ok(None);
    };
    let engine = agent.settings.databases[&module].engine;
    if upgrade.engine != engine.as_str() {
        return Err(format!(
            "the package's scripts are for {} but the database of {module} is {}",
            upgrade.engine,
            engine.as_str()
        ));
    }
    let db = connect(agent, &module).await?;
    if guided_upgrade_done(&db, &module, &upgrade).await? {
        say(format!(
            "the guided upgrade of the database to {} is complete: installing the module's files",
            upgrade.to
        ));
        return Ok(None);
    }
    check_standard(agent, &db, &module, &upgrade).await?;
    say(format!(
        "the database is the standard schema of {}",
        upgrade.from
    ));
    let lock = db.lock().await.map_err(|e| e.to_string())?;
    let applied = back_up(agent, &db, &module, &upgrade).await?;
    say(format!(
        "database backed up to {}",
        applied.backup.display()
    ));
    let runs = db
        .upgrade(
            &lock,
            &module,
            &upgrade.to.to_string(),
            &upgrade.scripts,
            AUTOMATIC,
        )
        .await
        .map_err(|e| e.to_string())?;
    for run in &runs {
        say(format!(
            "script {}: {} ({} ms)",
            run.script,
            if run.ok { "succeeded" } else { "failed" },
            run.duration_ms
        ));
    }
    let failed = runs.iter().find(|r| !r.ok);
    if let Some(failed) = failed
        && upgrade.scripts.iter().all(Script::transactional)
    {
        // All in one transaction: rolled back whole, nothing to restore.
        applied.forget(agent);
        return Err(format!(
            "database script {} failed: {}; the database is as it was",
            failed.script, failed.message
        ));
    }
    let off = match failed {
        Some(_) => None,
        None => Some(
            upgrade
                .standard_to
                .drift(&db.fingerprint().await.map_err(|e| e.to_string())?),
        ),
    };
    drop(lock);
    db.close().await;
    let why = match (failed, off) {
        (Some(failed), _) => format!(
            "database script {} failed: {}",
            failed.script, failed.message
        ),
        (None, Some(off)) if !off.is_empty() => format!(
            "after its scripts the database is not the standard schema of {} ({})",
            upgrade.to,
            off.summary().join(", ")
        ),
        _ => {
            say(format!(
                "database upgraded to the standard schema of {}",
                upgrade.to
            ));
            return Ok(Some(applied));
        }
    };
    let restored = restore(agent, &module, &applied, "flotilla", "the failed upgrade").await;
    if restored.is_ok() {
        applied.forget(agent);
    }
    Err(format!(
        "{why}; {}",
        match restored {
            Ok(()) => "the database was restored from its backup".to_owned(),
            Err(e) => format!("RESTORING IT FAILED: {e}"),
        }
    ))
}

/// Refuses an install of `module`'s pending database package before it
/// starts when its database is customized (or not at the version the
/// upgrade starts from): the order is answered with the reason, and no
/// failed install is recorded. What cannot be checked here (the database
/// unreachable) is left to the install, which reports it.
pub async fn refuse_customized(agent: &Agent, module: &str) -> Result<(), String> {
    let Ok(Some(upgrade)) = Upgrade::pending(agent, module) else {
        return Ok(());
    };
    let Ok(db) = connect(agent, module).await else {
        return Ok(());
    };
    if guided_upgrade_done(&db, module, &upgrade)
        .await
        .unwrap_or(false)
    {
        return Ok(());
    }
    check_standard(agent, &db, module, &upgrade).await
}

/// Whether every script of the upgrade was run or marked applied by an
/// operator (a guided upgrade): the files may then be installed.
async fn guided_upgrade_done(
    db: &Database,
    module: &str,
    upgrade: &Upgrade,
) -> Result<bool, String> {
    let history = db.history().await.map_err(|e| e.to_string())?;
    let views = states(module, &upgrade.scripts, &history, &upgrade.to.to_string());
    let guided = views.iter().any(|v| v.by.as_deref() != Some(AUTOMATIC));
    Ok(!views.is_empty() && all_done(&views) && guided)
}

/// The module is at the version the upgrade starts from, and its database
/// is that version's standard schema; a customized one is refused.
async fn check_standard(
    agent: &Agent,
    db: &Database,
    module: &str,
    upgrade: &Upgrade,
) -> Result<(), String> {
    let installed = crate::inventory::scan(&agent.settings.layout, &agent.trust())
        .module(module)
        .and_then(|m| m.installed_version.clone());
    if installed.as_ref() != Some(&upgrade.from) {
        return Err(format!(
            "the package upgrades the database from {} but {module} {} is installed",
            upgrade.from,
            installed.map_or("(no version)".into(), |v| v.to_string())
        ));
    }
    let found = db.fingerprint().await.map_err(|e| e.to_string())?;
    let drift = upgrade.standard_from.drift(&found);
    if !drift.is_empty() {
        return Err(format!(
            "the database of {module} is customized ({} differences from the standard {}: {}); \
             it is not upgraded by itself: review it and run its scripts one by one (portal or dashboard)",
            drift.summary().len(),
            upgrade.from,
            drift.summary().join(", ")
        ));
    }
    Ok(())
}

/// Backs the database up before its upgrade, and marks the upgrade as
/// under way (so a restarted agent knows what to keep or restore).
async fn back_up(
    agent: &Agent,
    db: &Database,
    module: &str,
    upgrade: &Upgrade,
) -> Result<Applied, String> {
    // What has been written so far, to tell later what a restore of this
    // backup would throw away (read first: a write in between is counted
    // as lost, never the other way round).
    let counts = db.write_counts().await.ok().flatten();
    let taken_at = Utc::now();
    let backup = db
        .backup(
            &agent.settings.install.backup_dir.join("databases"),
            &format!(
                "{module}_{}_{}",
                upgrade.from,
                Utc::now().format("%Y%m%dT%H%M%SZ")
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let applied = Applied {
        module: module.to_owned(),
        to_version: upgrade.to.to_string(),
        backup,
        standard_from: upgrade.standard_from.clone(),
        taken_at: Some(taken_at),
        counts,
    };
    applied.write(agent)?;
    // Kept beside the backup, for restoring this version later.
    let _ = std::fs::write(
        format!("{}.json", applied.backup.display()),
        serde_json::to_vec(&applied).unwrap_or_default(),
    );
    Ok(applied)
}

/// Before a kept backup of a database module's files is restored: the
/// database goes back to the backup taken when `version` was upgraded, if
/// there is one (else it is left as it is, and said so).
pub async fn before_restore(
    agent: &Arc<Agent>,
    module: &str,
    version: &str,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<(), String> {
    if !agent.settings.databases.contains_key(module) {
        return Ok(());
    }
    let Some(applied) = kept_backup(agent, module, version)? else {
        say(format!(
            "no database backup of {module} {version} is kept: the database is left as it is"
        ));
        return Ok(());
    };
    // What the restore throws away, read just before, for the record.
    let discarded = match discard(agent, module, version).await {
        Ok(d) => d.summary(),
        Err(e) => format!("what was written since that backup (not counted: {e})"),
    };
    restore(agent, module, &applied, "flotilla", &discarded).await?;
    say(format!(
        "database restored to {version} from {}, discarding {discarded}",
        applied.backup.display()
    ));
    tracing::warn!(module, version, "database restored; discarded {discarded}");
    Ok(())
}

/// The newest database backup kept of `module` at `version` (taken when an
/// install upgraded it from there).
fn kept_backup(agent: &Agent, module: &str, version: &str) -> Result<Option<Applied>, String> {
    let dir = agent.settings.install.backup_dir.join("databases");
    let prefix = format!("{module}_{version}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".json")
            })
        })
        .collect();
    found.sort();
    let Some(newest) = found.pop() else {
        return Ok(None);
    };
    std::fs::read(&newest)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .map(Some)
        .ok_or_else(|| format!("{} cannot be read", newest.display()))
}

/// What restoring the database backup of `module` at `version` would
/// throw away: the time since it was taken and, on PostgreSQL, the rows
/// inserted, updated and deleted since, table by table.
/// No backup kept is "not found"; a database that cannot be read is a
/// failure (never taken for "nothing to restore").
pub async fn discard(
    agent: &Agent,
    module: &str,
    version: &str,
) -> Result<Discard, super::ReviewError> {
    use super::ReviewError;
    let applied = kept_backup(agent, module, version)
        .map_err(ReviewError::Failed)?
        .ok_or_else(|| {
            ReviewError::NotFound(format!("no database backup of {module} {version} is kept"))
        })?;
    let db = connect(agent, module).await.map_err(ReviewError::Failed)?;
    let now = db
        .write_counts()
        .await
        .map_err(|e| ReviewError::Failed(e.to_string()))?;
    db.close().await;
    Ok(Discard::between(
        applied.backup.display().to_string(),
        applied.taken_at,
        applied.counts.as_ref(),
        now.as_ref(),
    ))
}

/// Restores `module`'s database alone from the backup taken when it was
/// upgraded from `version`, as `by` decided, once its files are back at
/// that version; returns what the restore threw away (read just before).
pub async fn restore_alone(
    agent: &Agent,
    module: &str,
    version: &str,
    by: &str,
) -> Result<Discard, super::ReviewError> {
    use super::ReviewError;
    // Nothing else runs meanwhile: no install, no other restore.
    let _claim = agent
        .installs
        .claim(&format!("the restore of the database of {module}"))
        .map_err(|running| {
            ReviewError::Conflict(format!(
                "{running} is running; restore the database once it has ended"
            ))
        })?;
    let installed = crate::inventory::scan(&agent.settings.layout, &agent.trust())
        .module(module)
        .and_then(|m| m.installed_version.clone())
        .map(|v| v.to_string());
    if installed.as_deref() != Some(version) {
        return Err(ReviewError::Conflict(format!(
            "the files of {module} are at {}, not {version}: restore them first (its database goes with them to the version they run)",
            installed.as_deref().unwrap_or("no version")
        )));
    }
    let applied = kept_backup(agent, module, version)
        .map_err(ReviewError::Failed)?
        .ok_or_else(|| {
            ReviewError::NotFound(format!("no database backup of {module} {version} is kept"))
        })?;
    let discarded = discard(agent, module, version).await?;
    restore(agent, module, &applied, by, &discarded.summary())
        .await
        .map_err(ReviewError::Failed)?;
    tracing::warn!(
        module,
        version,
        by,
        "database restored from {}; discarded writes to {} table(s) since {}",
        applied.backup.display(),
        discarded.tables.len(),
        discarded
            .taken_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "the backup".into())
    );
    Ok(discarded)
}

/// Puts the database back as the backup holds it, and checks it is the
/// standard schema it was.
/// The history records who decided (`by`) and what was `discarded`.
pub async fn restore(
    agent: &Agent,
    module: &str,
    applied: &Applied,
    by: &str,
    discarded: &str,
) -> Result<(), String> {
    let settings = agent
        .settings
        .databases
        .get(module)
        .ok_or_else(|| format!("module {module} has no database configured"))?;
    // The history survives the restore: what was run stays on record.
    let kept = {
        let db = connect(agent, module).await?;
        let kept = db.history().await.map_err(|e| e.to_string())?;
        db.close().await;
        kept
    };
    match settings.engine {
        database::Engine::Sqlite => {
            let path = settings.path.clone().ok_or("no path")?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            std::fs::copy(&applied.backup, &path)
                .map_err(|e| format!("cannot copy {} back: {e}", applied.backup.display()))?;
        }
        database::Engine::Postgres => {
            let db = connect(agent, module).await?;
            let now = db.fingerprint().await.map_err(|e| e.to_string())?;
            let added = applied.standard_from.drift(&now).added;
            db.restore(&applied.backup, &added)
                .await
                .map_err(|e| e.to_string())?;
            db.close().await;
        }
    }
    let db = connect(agent, module).await?;
    db.replace_history(&kept).await.map_err(|e| e.to_string())?;
    db.record(&History {
        module: module.to_owned(),
        version: applied.to_version.clone(),
        script: "(restore)".into(),
        checksum: String::new(),
        applied_by: by.into(),
        applied_at: Utc::now(),
        duration_ms: 0,
        outcome: "restored".into(),
        message: format!(
            "restored from {}, discarding {discarded}",
            applied.backup.display()
        ),
    })
    .await
    .map_err(|e| e.to_string())?;
    let now = db.fingerprint().await.map_err(|e| e.to_string())?;
    db.close().await;
    let off = applied.standard_from.drift(&now);
    if off.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "after the restore the database still differs: {}",
            off.summary().join(", ")
        ))
    }
}
