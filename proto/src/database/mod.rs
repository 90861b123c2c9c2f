//! A database module's database: read its schema's fingerprint, run
//! upgrade scripts with a history table and a lock, back it up with the
//! engine's own tool.
//!
//! One type, [`Database`], over the engines; each engine is a file
//! (`postgres.rs`, `sqlite.rs`) with the same functions. SQL Server fits as
//! a third: its catalog from `sys.objects`, `sys.columns`, `sys.indexes`,
//! `sys.sql_modules` (views, procedures, functions, triggers: their
//! `definition`), scripts split into batches on lines holding only `GO`,
//! each batch sent in turn inside the script's transaction, the lock from
//! `sp_getapplock`, the backup from `BACKUP DATABASE ... TO DISK`
//! (`COPY_ONLY`), through a TDS driver (`tiberius`). Nothing outside this
//! folder changes for it.

pub mod fingerprint;
mod postgres;
mod review;
mod sqlite;
mod statements;
mod upgrade;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use fingerprint::{Change, Drift, Fingerprint, Modified, Object};
pub use review::{Review, ScriptView};

/// The name of the history table Flotilla keeps in the database; left out
/// of fingerprints.
pub const HISTORY_TABLE: &str = "flotilla_schema_history";

/// Reads the history table, oldest first (both engines).
const SELECT_HISTORY: &str = "SELECT module, version, script, checksum, applied_by, applied_at, \
                              duration_ms, outcome, message FROM flotilla_schema_history ORDER BY id";

/// A script's first line that asks to run it outside a transaction (for
/// statements that cannot run in one, such as `CREATE INDEX CONCURRENTLY`).
pub const NO_TRANSACTION: &str = "-- flotilla: no-transaction";

/// Where a module's database is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `postgres` or `sqlite`.
    pub engine: Engine,
    /// PostgreSQL: `postgres://user@host:port/database` (no password here).
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// SQLite: the database file.
    pub path: Option<PathBuf>,
    /// PostgreSQL: the folder of `pg_dump` and `pg_restore`; found on the
    /// `PATH` or under `/usr/lib/postgresql/*/bin` otherwise.
    pub pg_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        }
    }
}

/// What went wrong, for a person: never a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database settings: {0}")]
    Settings(String),
    #[error("cannot connect to the {engine} database {target}: {cause}")]
    Connect {
        engine: &'static str,
        target: String,
        cause: String,
    },
    #[error("another upgrade of this database is running ({0}); try again when it ends")]
    Locked(String),
    #[error("{0}")]
    Query(String),
    #[error("the backup failed: {0}")]
    Backup(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Query(describe(&e, None))
    }
}

/// A database error with its line in `script` when the engine says where.
fn describe(e: &sqlx::Error, script: Option<&str>) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut text = db.message().to_owned();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let (Some(sqlx::postgres::PgErrorPosition::Original(at)), Some(script)) =
                    (pg.position(), script)
                {
                    let line = script.chars().take(at).filter(|c| *c == '\n').count() + 1;
                    text = format!("line {line}: {text}");
                }
                if let Some(detail) = pg.detail() {
                    text = format!("{text} ({detail})");
                }
            }
            text
        }
        other => other.to_string(),
    }
}

/// Rows inserted, updated and deleted, by qualified table name.
pub type WriteCounts = std::collections::BTreeMap<String, [i64; 3]>;

/// What restoring a database backup would throw away: the writes made
/// since it was taken, table by table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discard {
    /// The backup a restore would use.
    pub backup: String,
    /// When it was taken; writes since then would be lost.
    pub taken_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Tables written since, with the rows inserted, updated and deleted;
    /// empty where the engine keeps no counts (then `counted` is false).
    pub tables: Vec<TableWrites>,
    /// Whether the engine counts writes (PostgreSQL does, SQLite does not).
    pub counted: bool,
    /// The server's statistics were reset since the backup: the counts are
    /// a floor, not the whole.
    pub counters_reset: bool,
}

/// One table's writes since a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWrites {
    pub table: String,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
}

impl Discard {
    /// The writes between `then` (at the backup) and `now`, table by table;
    /// a count that went down means the statistics were reset.
    pub fn between(
        backup: String,
        taken_at: Option<chrono::DateTime<chrono::Utc>>,
        then: Option<&WriteCounts>,
        now: Option<&WriteCounts>,
    ) -> Discard {
        let mut discard = Discard {
            backup,
            taken_at,
            tables: Vec::new(),
            counted: then.is_some() && now.is_some(),
            counters_reset: false,
        };
        let (Some(then), Some(now)) = (then, now) else {
            return discard;
        };
        for (table, counts) in now {
            let before = then.get(table).copied().unwrap_or([0; 3]);
            let delta: Vec<i64> = (0..3).map(|i| counts[i] - before[i]).collect();
            if delta.iter().any(|d| *d < 0) {
                discard.counters_reset = true;
            }
            let [inserted, updated, deleted] = [delta[0].max(0), delta[1].max(0), delta[2].max(0)];
            if inserted + updated + deleted > 0 {
                discard.tables.push(TableWrites {
                    table: table.clone(),
                    inserted,
                    updated,
                    deleted,
                });
            }
        }
        discard
    }

    /// What a restore would discard (or did), in one line for a log: when
    /// the backup was taken and, where the engine counts, the rows written
    /// since, table by table.
    pub fn summary(&self) -> String {
        let since = self
            .taken_at
            .map(|t| format!("since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_else(|| "since the backup".to_owned());
        let writes = if !self.counted {
            format!("everything written {since} (the engine does not count writes)")
        } else if self.tables.is_empty() {
            format!("no row written {since}")
        } else {
            let tables: Vec<String> = self
                .tables
                .iter()
                .map(|t| {
                    format!(
                        "{} {} inserted, {} updated, {} deleted",
                        t.table, t.inserted, t.updated, t.deleted
                    )
                })
                .collect();
            format!("rows written {since}: {}", tables.join("; "))
        };
        let floor = if self.counters_reset {
            " (the statistics were reset since: at least these)"
        } else {
            ""
        };
        format!("{writes}{floor}; backup {}", self.backup)
    }
}

/// An upgrade script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Its file name, e.g. `001_orders.sql`.
    pub name: String,
    pub sql: String,
}

impl Script {
    /// Whether it runs inside a transaction (all do, unless their first
    /// line is [`NO_TRANSACTION`]).
    pub fn transactional(&self) -> bool {
        self.sql.lines().next().map(str::trim) != Some(NO_TRANSACTION)
    }

    pub fn checksum(&self) -> String {
        fingerprint::checksum(&self.sql)
    }

    /// Why it cannot take part in an all-or-nothing upgrade, with the line:
    /// it commits or rolls back itself, or, run outside a transaction, it
    /// holds more than one statement. Checked when a package is built.
    pub fn problem(&self) -> Option<(usize, String)> {
        statements::problem(&self.sql, self.transactional())
    }
}

/// A row of the history table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct History {
    pub module: String,
    /// The version the script upgrades to.
    pub version: String,
    pub script: String,
    pub checksum: String,
    /// Who: `flotilla (automatic)`, or the operator.
    pub applied_by: String,
    pub applied_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `succeeded`, `failed`, `marked applied`.
    pub outcome: String,
    pub message: String,
}

/// What one script did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRun {
    pub script: String,
    pub ok: bool,
    pub duration_ms: i64,
    /// Rows affected, or the error with its line.
    pub message: String,
}

/// A connected database.
#[derive(Debug)]
pub enum Database {
    Postgres(Box<postgres::Postgres>),
    Sqlite(sqlite::Sqlite),
}

/// Held while an upgrade runs; released when dropped (or when the process
/// ends, so a crash never leaves it behind).
#[derive(Debug)]
pub enum Lock {
    Postgres(postgres::PgLock),
    Sqlite(std::fs::File),
}

impl Database {
    /// Connects with `settings`.
    pub async fn connect(settings: &Settings) -> Result<Database, Error> {
        match settings.engine {
            Engine::Postgres => Ok(Database::Postgres(Box::new(
                postgres::Postgres::connect(settings).await?,
            ))),
            Engine::Sqlite => Ok(Database::Sqlite(sqlite::Sqlite::connect(settings).await?)),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Database::Postgres(_) => Engine::Postgres,
            Database::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// The schema as it is now.
    pub async fn fingerprint(&self) -> Result<Fingerprint, Error> {
        let (objects, major) = match self {
            Database::Postgres(db) => (db.objects().await?, Some(db.major_version().await?)),
            // The definitions are the statements as written: no version
            // prints them.
            Database::Sqlite(db) => (db.objects().await?, None),
        };
        Ok(Fingerprint::new(self.engine().as_str(), objects).with_major_version(major))
    }

    /// Takes the upgrade lock, or says who holds it.
    pub async fn lock(&self) -> Result<Lock, Error> {
        match self {
            Database::Postgres(db) => db.lock().await.map(Lock::Postgres),
            Database::Sqlite(db) => db.lock().map(Lock::Sqlite),
        }
    }

    /// Creates the history table if it is not there.
    async fn ensure_history(&self) -> Result<(), Error> {
        match self {
            Database::Postgres(db) => db.ensure_history().await,
            Database::Sqlite(db) => db.ensure_history().await,
        }
    }

    /// The history, oldest first (none when the table is not there: reading
    /// it never changes the database).
    pub async fn history(&self) -> Result<Vec<History>, Error> {
        match self {
            Database::Postgres(db) => db.history().await,
            Database::Sqlite(db) => db.history().await,
        }
    }

    /// Replaces the whole history with `rows` (after a restore brought back
    /// an older one).
    pub async fn replace_history(&self, rows: &[History]) -> Result<(), Error> {
        self.ensure_history().await?;
        match self {
            Database::Postgres(db) => db.clear_history().await?,
            Database::Sqlite(db) => db.clear_history().await?,
        }
        for row in rows {
            self.record(row).await?;
        }
        Ok(())
    }

    /// Appends a history row.
    pub async fn record(&self, row: &History) -> Result<(), Error> {
        self.ensure_history().await?;
        match self {
            Database::Postgres(db) => db.record(row).await,
            Database::Sqlite(db) => db.record(row).await,
        }
    }

    /// Runs one script in its own transaction (unless it declares it
    /// cannot), and records it in the history.
    pub async fn run_script(
        &self,
        _lock: &Lock,
        module: &str,
        version: &str,
        script: &Script,
        who: &str,
    ) -> Result<ScriptRun, Error> {
        self.ensure_history().await?;
        let transactional = script.transactional();
        if transactional {
            // The history row commits with the script: a crash never leaves
            // a script applied but unrecorded.
            let single = std::slice::from_ref(script);
            let suffix = "; its transaction was rolled back";
            let mut runs = match self {
                Database::Postgres(db) => {
                    upgrade::upgrade(db.as_ref(), module, version, single, who, suffix).await?
                }
                Database::Sqlite(db) => {
                    upgrade::upgrade(db, module, version, single, who, suffix).await?
                }
            };
            return runs
                .pop()
                .ok_or_else(|| Error::Query(format!("{} did not run", script.name)));
        }
        let started = std::time::Instant::now();
        let result = match self {
            Database::Postgres(db) => db.execute(script, transactional).await,
            Database::Sqlite(db) => db.execute(script, transactional).await,
        };
        let run = run_of(script, started, result, "");
        self.record(&history_of(module, version, who, script, &run))
            .await?;
        Ok(run)
    }

    /// Runs `scripts` all or nothing: one transaction, each script in its
    /// own savepoint. Scripts that cannot run in a transaction commit what
    /// came before them. Returns each script's run, up to the first failure.
    pub async fn upgrade(
        &self,
        _lock: &Lock,
        module: &str,
        version: &str,
        scripts: &[Script],
        who: &str,
    ) -> Result<Vec<ScriptRun>, Error> {
        self.ensure_history().await?;
        let suffix = "; the upgrade's transaction was rolled back";
        match self {
            Database::Postgres(db) => {
                upgrade::upgrade(db.as_ref(), module, version, scripts, who, suffix).await
            }
            Database::Sqlite(db) => {
                upgrade::upgrade(db, module, version, scripts, who, suffix).await
            }
        }
    }

    /// Rows inserted, updated and deleted per table so far (PostgreSQL's
    /// cumulative statistics); `None` where the engine keeps no such count
    /// (SQLite).
    pub async fn write_counts(&self) -> Result<Option<WriteCounts>, Error> {
        match self {
            Database::Postgres(db) => db.write_counts().await.map(Some),
            Database::Sqlite(_) => Ok(None),
        }
    }

    /// Writes a backup with the engine's own tool into `dir`; returns the file.
    pub async fn backup(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Backup(format!("cannot create {}: {e}", dir.display())))?;
        match self {
            Database::Postgres(db) => db.backup(dir, name).await,
            Database::Sqlite(db) => db.backup(dir, name).await,
        }
    }

    /// PostgreSQL: puts the database back as `backup` (a `pg_dump` archive)
    /// holds it, after dropping `added` (objects the backup does not have).
    pub async fn restore(&self, backup: &Path, added: &[Object]) -> Result<(), Error> {
        match self {
            Database::Postgres(db) => db.restore(backup, added).await,
            Database::Sqlite(_) => Err(Error::Backup(
                "a SQLite database is restored by copying its backup file back".into(),
            )),
        }
    }

    /// Builds a scratch database of this engine (for the package builder):
    /// PostgreSQL in a new database on the server `url` points to, dropped
    /// with the returned guard; SQLite in a temporary file.
    pub async fn scratch(
        engine: Engine,
        server_url: Option<&str>,
        dir: &Path,
    ) -> Result<Scratch, Error> {
        match engine {
            Engine::Postgres => {
                let url = server_url.ok_or_else(|| {
                    Error::Settings("a PostgreSQL scratch database needs --scratch-url".into())
                })?;
                postgres::scratch(url).await
            }
            Engine::Sqlite => sqlite::scratch(dir).await,
        }
    }

    /// Runs a script as is, outside any history (the package builder's
    /// baseline).
    pub async fn apply(&self, script: &Script) -> Result<(), Error> {
        let result = match self {
            Database::Postgres(db) => db.execute(script, script.transactional()).await,
            Database::Sqlite(db) => db.execute(script, script.transactional()).await,
        };
        result.map(|_| ()).map_err(|e| {
            Error::Query(format!(
                "{}: {}",
                script.name,
                describe(&e, Some(&script.sql))
            ))
        })
    }

    pub async fn close(self) {
        match self {
            Database::Postgres(db) => db.close().await,
            Database::Sqlite(db) => db.close().await,
        }
    }
}

/// A scratch database and what removes it.
#[derive(Debug)]
pub struct Scratch {
    pub database: Database,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The server's URL and the database's name.
    Postgres(String, String),
    File(PathBuf),
}

/// Never the server's URL, which may hold a password.
impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cleanup::Postgres(_, name) => write!(f, "drop database {name}"),
            Cleanup::File(path) => write!(f, "remove {}", path.display()),
        }
    }
}

impl Scratch {
    /// Closes and removes the scratch database.
    pub async fn remove(self) -> Result<(), Error> {
        self.database.close().await;
        match self.cleanup {
            Cleanup::Postgres(server_url, name) => {
                postgres::drop_database(&server_url, &name).await
            }
            Cleanup::File(path) => {
                let _ = std::fs::remove_file(path);
                Ok(())
            }
        }
    }
}
pub(crate) fn run_of(
    script: &Script,
    started: std::time::Instant,
    result: Result<u64, sqlx::Error>,
    // Said after an error: what became of the work.
    rolled_back: &str,
) -> ScriptRun {
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    match result {
        Ok(rows) => ScriptRun {
            script: script.name.clone(),
            ok: true,
            duration_ms,
            message: format!("{rows} rows affected"),
        },
        Err(e) => ScriptRun {
            script: script.name.clone(),
            ok: false,
            duration_ms,
            message: format!("{}{rolled_back}", describe(&e, Some(&script.sql))),
        },
    }
}

pub(crate) fn history_of(
    module: &str,
    version: &str,
    who: &str,
    script: &Script,
    run: &ScriptRun,
) -> History {
    History {
        module: module.to_owned(),
        version: version.to_owned(),
        script: script.name.clone(),
        checksum: script.checksum(),
        applied_by: who.to_owned(),
        applied_at: chrono::Utc::now(),
        duration_ms: run.duration_ms,
        outcome: if run.ok { "succeeded" } else { "failed" }.into(),
        message: run.message.clone(),
    }
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of a script run's history outcome for an automatic upgrade.
pub const AUTOMATIC: &str = "flotilla (automatic upgrade)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discard_counts_the_writes_since_the_backup_and_notices_a_reset() {
        let counts = |rows: &[(&str, [i64; 3])]| -> WriteCounts {
            rows.iter().map(|(t, c)| ((*t).to_owned(), *c)).collect()
        };
        let then = counts(&[
            ("public.orders", [10, 5, 1]),
            ("public.customers", [3, 0, 0]),
        ]);
        let now = counts(&[
            ("public.orders", [12, 9, 1]),
            ("public.customers", [3, 0, 0]),
            ("public.loyalty", [4, 0, 0]),
        ]);
        let discard = Discard::between("b.dump".into(), None, Some(&then), Some(&now));
        assert!(discard.counted && !discard.counters_reset);
        assert_eq!(
            discard.summary(),
            "rows written since the backup: public.loyalty 4 inserted, 0 updated, 0 deleted; \
             public.orders 2 inserted, 4 updated, 0 deleted; backup b.dump"
        );
        assert_eq!(
            discard.tables,
            [
                TableWrites {
                    table: "public.loyalty".into(),
                    inserted: 4,
                    updated: 0,
                    deleted: 0
                },
                TableWrites {
                    table: "public.orders".into(),
                    inserted: 2,
                    updated: 4,
                    deleted: 0
                },
            ]
        );
        // Statistics reset since: the counts are a floor, and it is said.
        let reset = counts(&[("public.orders", [1, 0, 0])]);
        let discard = Discard::between("b.dump".into(), None, Some(&then), Some(&reset));
        assert!(discard.counters_reset);
        assert!(discard.tables.is_empty());
        assert_eq!(
            discard.summary(),
            "no row written since the backup (the statistics were reset since: at least these); backup b.dump"
        );
        // SQLite keeps no counts.
        let taken = "2026-12-01T10:00:00Z".parse().ok();
        let sqlite = Discard::between("b.db".into(), taken, None, None);
        assert!(!sqlite.counted);
        assert_eq!(
            sqlite.summary(),
            "everything written since 2026-12-01 10:00:00 UTC (the engine does not count writes); backup b.db"
        );
    }
}
