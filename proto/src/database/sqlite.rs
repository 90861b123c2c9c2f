//! SQLite: the catalog from `sqlite_schema` (each object's own `CREATE`
//! text, which SQLite keeps up to date through `ALTER TABLE`), a lock file
//! beside the database, backups with `VACUUM INTO` (SQLite's own consistent
//! online copy).

use std::path::{Path, PathBuf};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::{
    CONNECT_TIMEOUT, Cleanup, Error, HISTORY_TABLE, History, Object, Scratch, Script, Settings,
};

#[derive(Debug)]
pub struct Sqlite {
    pool: SqlitePool,
    path: PathBuf,
}

impl Sqlite {
    pub async fn connect(settings: &Settings) -> Result<Sqlite, Error> {
        let path = settings
            .path
            .clone()
            .ok_or_else(|| Error::Settings("engine \"sqlite\" needs path".into()))?;
        if !path.is_file() {
            return Err(Error::Connect {
                engine: "sqlite",
                target: path.display().to_string(),
                cause: "no such file".into(),
            });
        }
        Self::open(path, false).await
    }

    async fn open(path: PathBuf, create: bool) -> Result<Sqlite, Error> {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(create)
            // As applications open SQLite (sqlx would turn them on): a
            // script's table rebuild must not cascade deletes.
            .foreign_keys(false)
            .busy_timeout(CONNECT_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| Error::Connect {
                engine: "sqlite",
                target: path.display().to_string(),
                cause: super::describe(&e, None),
            })?;
        Ok(Sqlite { pool, path })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    pub async fn objects(&self) -> Result<Vec<Object>, Error> {
        let rows = sqlx::query(
            "SELECT type, name, sql FROM sqlite_schema \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?1 AND tbl_name <> ?1",
        )
        .bind(HISTORY_TABLE)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("type")?;
                let name: String = r.try_get("name")?;
                let sql: String = r.try_get("sql")?;
                Ok(Object::new(&kind, &name, &sql))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Error::from)
    }

    /// An exclusive lock on `<database>.flotilla-lock`, released by the
    /// system when the process ends.
    pub fn lock(&self) -> Result<std::fs::File, Error> {
        let path = PathBuf::from(format!("{}.flotilla-lock", self.path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::Query(format!("cannot open the lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "{} is locked by another process",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::Query(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }

    pub async fn ensure_history(&self) -> Result<(), Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS flotilla_schema_history (\
                id INTEGER PRIMARY KEY, module TEXT NOT NULL, version TEXT NOT NULL, \
                script TEXT NOT NULL, checksum TEXT NOT NULL, applied_by TEXT NOT NULL, \
                applied_at TEXT NOT NULL, duration_ms INTEGER NOT NULL, \
                outcome TEXT NOT NULL, message TEXT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn history(&self) -> Result<Vec<History>, Error> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?)",
        )
        .bind(HISTORY_TABLE)
        .fetch_one(&self.pool)
        .await?;
        if !exists {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(super::SELECT_HISTORY)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn clear_history(&self) -> Result<(), Error> {
        sqlx::query("DELETE FROM flotilla_schema_history")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn record(&self, row: &History) -> Result<(), Error> {
        insert_history(&self.pool, row).await
    }

    pub async fn execute(&self, script: &Script, transactional: bool) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(script.sql.clone());
        if transactional {
            let mut tx = self.pool.begin().await?;
            match sqlx::raw_sql(sql).execute(&mut *tx).await {
                Ok(done) => {
                    tx.commit().await?;
                    Ok(done.rows_affected())
                }
                Err(e) => {
                    // Now, not when the connection is next used: its locks
                    // must go with it.
                    tx.rollback().await?;
                    Err(e)
                }
            }
        } else {
            Ok(sqlx::raw_sql(sql)
                .execute(&self.pool)
                .await?
                .rows_affected())
        }
    }

    pub async fn backup(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        let file = dir.join(format!("{name}.sqlite"));
        if file.exists() {
            return Err(Error::Backup(format!("{} exists", file.display())));
        }
        sqlx::query("VACUUM INTO ?")
            .bind(file.display().to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| Error::Backup(super::describe(&e, None)))?;
        Ok(file)
    }
}

impl super::upgrade::Engine for Sqlite {
    type Db = sqlx::Sqlite;

    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::Error> {
        self.pool.acquire().await
    }

    async fn run(
        connection: &mut <sqlx::Sqlite as sqlx::Database>::Connection,
        sql: &str,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(connection)
            .await?;
        Ok(done.rows_affected())
    }

    async fn run_alone(&self, script: &Script) -> Result<u64, sqlx::Error> {
        self.execute(script, false).await
    }

    async fn record_on(
        connection: &mut <sqlx::Sqlite as sqlx::Database>::Connection,
        row: &History,
    ) -> Result<(), Error> {
        insert_history(connection, row).await
    }

    async fn record(&self, row: &History) -> Result<(), Error> {
        insert_history(&self.pool, row).await
    }
}

async fn insert_history<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
    row: &History,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO flotilla_schema_history \
            (module, version, script, checksum, applied_by, applied_at, duration_ms, outcome, message) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.module)
    .bind(&row.version)
    .bind(&row.script)
    .bind(&row.checksum)
    .bind(&row.applied_by)
    .bind(row.applied_at)
    .bind(row.duration_ms)
    .bind(&row.outcome)
    .bind(&row.message)
    .execute(executor)
    .await?;
    Ok(())
}

/// A new database in a temporary file under `dir`.
pub async fn scratch(dir: &Path) -> Result<Scratch, Error> {
    let path = dir.join(format!(
        "flotilla-scratch-{}-{}.sqlite",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    let database = Sqlite::open(path.clone(), true).await?;
    Ok(Scratch {
        database: super::Database::Sqlite(database),
        cleanup: Cleanup::File(path),
    })
}
