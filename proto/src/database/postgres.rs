//! PostgreSQL: the catalog through `pg_catalog` and the `pg_get_*def`
//! functions, an advisory lock, `pg_dump` backups.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Acquire, AssertSqlSafe, Row};

use super::{
    CONNECT_TIMEOUT, Cleanup, Error, HISTORY_TABLE, History, Object, Scratch, Script, Settings,
    WriteCounts,
};

/// The advisory lock key: "flotilla" in ASCII, as a number.
const LOCK_KEY: i64 = 0x666c_6f74_696c_6c61;

/// Schemas that are the engine's, not the application's.
const SYSTEM: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
                      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// Relations that belong to an extension (its views, tables) are the
/// extension's, not the application's.
const NOT_EXTENSION: &str = "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass \
                             AND e.objid = c.oid AND e.deptype = 'e')";

pub struct Postgres {
    pool: PgPool,
    options: PgConnectOptions,
    /// The configured URL (never with a password): `pg_dump` and
    /// `pg_restore` get it whole, TLS settings included.
    url: Option<String>,
    password: Option<String>,
    pg_bin_dir: Option<PathBuf>,
}

/// Never the password (sqlx's options would print it).
impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("target", &target(&self.options))
            .finish_non_exhaustive()
    }
}

/// The connection holding the advisory lock.
#[derive(Debug)]
pub struct PgLock {
    _connection: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

/// `host:port/database`, for messages: never the password.
fn target(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

impl Postgres {
    pub async fn connect(settings: &Settings) -> Result<Postgres, Error> {
        let url = settings
            .url
            .as_deref()
            .ok_or_else(|| Error::Settings("engine \"postgres\" needs url".into()))?;
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|_| Error::Settings("url is not a postgres:// URL".into()))?
            .application_name("flotilla");
        let mut password = None;
        if let Some(file) = &settings.password_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::Settings(format!("cannot read password_file {}: {e}", file.display()))
            })?;
            let text = text.trim_end_matches(['\r', '\n']).to_owned();
            options = options.password(&text);
            password = Some(text);
        }
        let mut db = Self::open(options, password, settings.pg_bin_dir.clone()).await?;
        db.url = Some(url.to_owned());
        Ok(db)
    }

    async fn open(
        options: PgConnectOptions,
        password: Option<String>,
        pg_bin_dir: Option<PathBuf>,
    ) -> Result<Postgres, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| Error::Connect {
                engine: "postgres",
                target: target(&options),
                cause: super::describe(&e, None),
            })?;
        Ok(Postgres {
            pool,
            options,
            url: None,
            password,
            pg_bin_dir,
        })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// A connection of its own, closed after use: what a script does to its
    /// session (`search_path`, settings) never reaches the next user.
    async fn dedicated(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        connection.close_on_drop();
        Ok(connection)
    }

    /// Rows inserted, updated and deleted per table so far, from the
    /// server's cumulative statistics (`pg_stat_user_tables`).
    pub async fn write_counts(&self) -> Result<WriteCounts, Error> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(relname), n_tup_ins, n_tup_upd, n_tup_del \
             FROM pg_stat_user_tables WHERE relname <> '{HISTORY_TABLE}'"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(table, inserted, updated, deleted)| (table, [inserted, updated, deleted]))
            .collect())
    }

    /// The server's major version (`15`), which prints the definitions.
    pub async fn major_version(&self) -> Result<String, Error> {
        let number: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&self.pool)
            .await?;
        Ok(number
            .trim()
            .parse::<u32>()
            .map(|n| (n / 10_000).to_string())
            .unwrap_or(number))
    }

    pub async fn objects(&self) -> Result<Vec<Object>, Error> {
        let mut objects = Vec::new();
        // Definitions name every object with its schema, whatever the
        // role's or the session's search_path.
        let mut connection = self.dedicated().await?;
        sqlx::query("SET search_path = pg_catalog")
            .execute(&mut *connection)
            .await?;
        // Tables: columns in order (type, nullability, default), then
        // constraints by name.
        let tables = sqlx::query(AssertSqlSafe(format!(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, \
                    (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod) \
                        || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
                        || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''), E'\\n' ORDER BY a.attnum) \
                     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns, \
                    (SELECT string_agg('CONSTRAINT ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid), \
                        E'\\n' ORDER BY k.conname) FROM pg_constraint k WHERE k.conrelid = c.oid) AS constraints \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND {SYSTEM} AND {NOT_EXTENSION} AND c.relname <> '{HISTORY_TABLE}'"
        )))
        .fetch_all(&mut *connection)
        .await?;
        for row in tables {
            let name: String = row.try_get("name")?;
            let columns: Option<String> = row.try_get("columns")?;
            let constraints: Option<String> = row.try_get("constraints")?;
            let definition = [columns, constraints]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n");
            objects.push(Object::new("table", &name, &definition));
        }
        for (kind, query) in catalog_queries() {
            let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(query))
                .fetch_all(&mut *connection)
                .await?;
            objects.extend(rows.iter().map(|(name, def)| Object::new(kind, name, def)));
        }
        Ok(objects)
    }

    pub async fn lock(&self) -> Result<PgLock, Error> {
        let mut connection = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *connection)
            .await?;
        if got {
            // The lock is the session's: the connection is closed, never
            // pooled again, when the lock is dropped, which releases it.
            connection.close_on_drop();
            return Ok(PgLock {
                _connection: connection,
            });
        }
        let holder: Option<(i32, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
            "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 LIMIT 1",
        )
        .bind(LOCK_KEY)
        .fetch_optional(&mut *connection)
        .await?;
        Err(Error::Locked(match holder {
            Some((pid, app, since)) => format!(
                "the lock is held by PostgreSQL backend {pid} ({app}){}",
                since
                    .map(|s| format!(", connected since {s}"))
                    .unwrap_or_default()
            ),
            None => "the lock is held by another session".into(),
        }))
    }

    pub async fn ensure_history(&self) -> Result<(), Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS flotilla_schema_history (\
                id bigserial PRIMARY KEY, module text NOT NULL, version text NOT NULL, \
                script text NOT NULL, checksum text NOT NULL, applied_by text NOT NULL, \
                applied_at timestamptz NOT NULL, duration_ms bigint NOT NULL, \
                outcome text NOT NULL, message text NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn history(&self) -> Result<Vec<History>, Error> {
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('flotilla_schema_history') IS NOT NULL")
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

    /// Runs a script; returns the rows it affected.
    pub async fn execute(&self, script: &Script, transactional: bool) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(script.sql.clone());
        let mut connection = self.dedicated().await?;
        if transactional {
            let mut tx = connection.begin().await?;
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
                .execute(&mut *connection)
                .await?
                .rows_affected())
        }
    }

    /// How `pg_dump` and `pg_restore` reach the database: the configured URL
    /// whole, else its parts; the password through the environment only.
    fn tool_command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        match &self.url {
            Some(url) => {
                command.arg(format!("--dbname={url}"));
            }
            None => {
                command
                    .arg(format!("--host={}", self.options.get_host()))
                    .arg(format!("--port={}", self.options.get_port()))
                    .arg(format!("--username={}", self.options.get_username()))
                    .arg(format!(
                        "--dbname={}",
                        self.options.get_database().unwrap_or("")
                    ));
            }
        }
        command
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null());
        if let Some(password) = &self.password {
            // The environment, never the command line (which `ps` shows).
            command.env("PGPASSWORD", password);
        }
        command
    }

    pub async fn restore(&self, backup: &Path, added: &[Object]) -> Result<(), Error> {
        let mut connection = self.dedicated().await?;
        let mut tx = (&mut connection).begin().await?;
        // Tables go with CASCADE (their indexes, constraints and triggers
        // with them); indexes and triggers on tables the backup has are
        // recreated by pg_restore --clean.
        let order = [
            "view",
            "materialized_view",
            "table",
            "function",
            "procedure",
            "sequence",
            "domain",
            "type",
        ];
        for kind in order {
            for object in added.iter().filter(|o| o.kind == kind) {
                let what = match kind {
                    "materialized_view" => "MATERIALIZED VIEW",
                    other => &other.to_ascii_uppercase(),
                };
                let statement = format!("DROP {what} IF EXISTS {} CASCADE", object.name);
                sqlx::query(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        let program = tool(self.pg_bin_dir.as_deref(), "pg_restore");
        let mut command = self.tool_command(&program);
        command
            .args([
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--no-owner",
            ])
            .arg(backup);
        let output = command
            .output()
            .await
            .map_err(|e| Error::Backup(format!("cannot run {}: {e}", program.display())))?;
        if !output.status.success() {
            return Err(Error::Backup(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    pub async fn backup(&self, dir: &Path, name: &str) -> Result<PathBuf, Error> {
        let file = dir.join(format!("{name}.dump"));
        let program = tool(self.pg_bin_dir.as_deref(), "pg_dump");
        let mut command = self.tool_command(&program);
        command
            .arg("--format=custom")
            .arg("--no-owner")
            .arg(format!("--file={}", file.display()));
        let output = command
            .output()
            .await
            .map_err(|e| Error::Backup(format!("cannot run {}: {e}", program.display())))?;
        if !output.status.success() {
            return Err(Error::Backup(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(file)
    }
}

impl super::upgrade::Engine for Postgres {
    type Db = sqlx::Postgres;

    async fn connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, sqlx::Error> {
        self.dedicated().await
    }

    async fn run(
        connection: &mut <sqlx::Postgres as sqlx::Database>::Connection,
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
        connection: &mut <sqlx::Postgres as sqlx::Database>::Connection,
        row: &History,
    ) -> Result<(), Error> {
        insert_history(connection, row).await
    }

    async fn record(&self, row: &History) -> Result<(), Error> {
        insert_history(&self.pool, row).await
    }
}

/// For each kind of object but tables: the query of its names and
/// definitions, read with `search_path` pinned to `pg_catalog`.
fn catalog_queries() -> [(&'static str, String); 9] {
    [
        (
            "index",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(i.relname), pg_get_indexdef(x.indexrelid) \
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                 JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = i.relnamespace \
                 WHERE {SYSTEM} AND t.relname <> '{HISTORY_TABLE}'"
            ),
        ),
        (
            "view",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_viewdef(c.oid, true) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'v' AND {SYSTEM} AND {NOT_EXTENSION}"
            ),
        ),
        (
            "materialized_view",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_viewdef(c.oid, true) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'm' AND {SYSTEM} AND {NOT_EXTENSION}"
            ),
        ),
        (
            "function",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')', \
                        pg_get_functiondef(p.oid) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prokind = 'f' AND {SYSTEM} \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
            ),
        ),
        (
            "procedure",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')', \
                        pg_get_functiondef(p.oid) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prokind = 'p' AND {SYSTEM} \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
            ),
        ),
        (
            "type",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname), \
                        'ENUM (' || string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) || ')' \
                 FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid \
                 JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {SYSTEM} \
                 GROUP BY n.nspname, t.typname"
            ),
        ),
        (
            "domain",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname), \
                        format_type(t.typbasetype, t.typtypmod) \
                        || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END \
                        || COALESCE(' DEFAULT ' || t.typdefault, '') \
                        || COALESCE((SELECT E'\\n' || string_agg(pg_get_constraintdef(k.oid), E'\\n' ORDER BY k.conname) \
                                     FROM pg_constraint k WHERE k.contypid = t.oid), '') \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.typtype = 'd' AND {SYSTEM}"
            ),
        ),
        (
            "sequence",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                        format_type(s.seqtypid, NULL) || ' INCREMENT ' || s.seqincrement \
                        || ' MINVALUE ' || s.seqmin || ' MAXVALUE ' || s.seqmax || ' START ' || s.seqstart \
                        || CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END \
                 FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM} AND {NOT_EXTENSION} \
                   AND c.relname NOT LIKE '{HISTORY_TABLE}%'"
            ),
        ),
        (
            "trigger",
            format!(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(t.tgname), pg_get_triggerdef(t.oid, true) \
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT t.tgisinternal AND {SYSTEM}"
            ),
        ),
    ]
}

async fn insert_history<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Postgres>,
    row: &History,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO flotilla_schema_history \
            (module, version, script, checksum, applied_by, applied_at, duration_ms, outcome, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

/// `pg_dump` or `pg_restore`: in `dir` if given, else on the `PATH`, else
/// in the newest `/usr/lib/postgresql/*/bin`.
fn tool(dir: Option<&Path>, name: &str) -> PathBuf {
    if let Some(dir) = dir {
        return dir.join(name);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if let Some(found) = on_path {
        return found;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// A new database on the server `url` points to.
pub async fn scratch(url: &str) -> Result<Scratch, Error> {
    let server = PgConnectOptions::from_str(url)
        .map_err(|_| Error::Settings("--scratch-url is not a postgres:// URL".into()))?;
    let name = format!(
        "flotilla_scratch_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let admin = Postgres::open(server.clone(), None, None).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin.pool)
        .await?;
    admin.close().await;
    let database = Postgres::open(server.database(&name), None, None).await?;
    Ok(Scratch {
        database: super::Database::Postgres(Box::new(database)),
        cleanup: Cleanup::Postgres(url.to_owned(), name),
    })
}

pub async fn drop_database(url: &str, name: &str) -> Result<(), Error> {
    let server = PgConnectOptions::from_str(url)
        .map_err(|_| Error::Settings("--scratch-url is not a postgres:// URL".into()))?;
    let admin = Postgres::open(server, None, None).await?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
        .execute(&admin.pool)
        .await?;
    admin.close().await;
    Ok(())
}
