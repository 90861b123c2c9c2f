//! All of the controller's SQL, against SQLite (WAL, the default) or
//! PostgreSQL (for large fleets and several controllers) through sqlx.
//! Handlers and the gRPC service call these functions; no SQL lives
//! anywhere else.
//!
//! Each statement is written once, in SQLite's dialect with `?`
//! parameters, and compiled for both engines ([`on_pool!`], [`on_tx!`]);
//! [`Dialect::sql`] numbers the parameters for PostgreSQL. The few
//! statements that differ (JSON batches, date arithmetic) are written for
//! each engine ([`Dialect::pick`]).
//!
//! Writes start with a write statement (never read-then-write in a deferred
//! transaction), so concurrent writers wait on the busy timeout instead of
//! failing with `SQLITE_BUSY_SNAPSHOT`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

/// Runs `$body` on whichever engine `$pool` (a [`Pool`]) is, with `$c` its
/// pool and `$d` its [`Dialect`]: written once, compiled for each.
macro_rules! on_pool {
    ($pool:expr, |$c:ident, $d:ident| $body:expr) => {
        match &$pool {
            $crate::db::Pool::Sqlite($c) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Sqlite;
                $body
            }
            $crate::db::Pool::Postgres($c) => {
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Postgres;
                $body
            }
        }
    };
}

/// [`on_pool!`] inside a transaction (`$tx`, a [`Tx`]; `*tx` for a
/// `&mut Tx`): `$c` is its connection.
macro_rules! on_tx {
    ($tx:expr, |$c:ident, $d:ident| $body:expr) => {
        match &mut $tx {
            $crate::db::Tx::Sqlite(t) => {
                let $c = &mut **t;
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Sqlite;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                #[allow(unused_variables)]
                let $d = $crate::db::Dialect::Postgres;
                $body
            }
        }
    };
}

mod audit;
mod cluster;
mod enrollments;
mod fleet_pages;
mod installs;
mod operators;
mod releases;
mod rollouts;
mod servers;
pub use audit::{AuditFilter, AuditRecord};
pub use cluster::{
    Driver, Heard, NOTES_CHANNEL, Notifications, RELAY_CHANNEL, REPLY_CHANNEL, RelayState,
};
pub use enrollments::{CertificateRecord, EnrollmentRecord, Revocations, TokenRefusal};
pub use fleet_pages::{Cursor, FleetCounts, ServerFilter, ServerState, VersionCount};
pub use installs::{InstallEventRecord, InstallRecord};
pub use operators::{AccountChange, AccountRecord, AccountRefusal, Bearer, TokenRecord};
pub use releases::{PackageRecord, PublishConflict, ReleaseRecord, Withdrawal};
pub use rollouts::{
    CommandInstall, Estimate, RolloutChanges, RolloutLogRecord, RolloutRecord, RolloutRows,
    RolloutSiteRecord, RolloutStepRecord, ScheduleRecord,
};
pub use servers::{ModuleRecord, Presence, ServerHello, ServerRecord, SiteRecord};

/// SQLite's schema migrations, in `migrations/sqlite/`, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// PostgreSQL's, in `migrations/postgres/`: the same schema from SQLite's
/// migration 15 on, one migration for each of SQLite's after it.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Where the controller keeps its fleet: a SQLite file (a path, or
/// `sqlite:PATH`) or a PostgreSQL database (`postgres://…`). Shown without
/// its password, whatever prints it.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            text.parse::<PgConnectOptions>()
                .map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
            return Ok(Location::Postgres(text.to_owned()));
        }
        let path = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
            .unwrap_or(text);
        if path.is_empty() {
            return Err("give a SQLite file's path or a postgres:// URL".to_owned());
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

impl Location {
    /// Whether a PostgreSQL URL carries a password itself (rather than
    /// `PGPASSWORD` or a `.pgpass` file).
    pub fn has_password(&self) -> bool {
        let Location::Postgres(url) = self else {
            return false;
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let in_credentials = authority
            .rsplit_once('@')
            .is_some_and(|(credentials, _)| credentials.contains(':'));
        let in_query = rest
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p.starts_with("password=")));
        in_credentials || in_query
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&without_password(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// `url` with its password, if any, replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((credentials, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = credentials.split(':').next().unwrap_or_default();
    let hidden = if credentials.contains(':') {
        format!("{user}:***")
    } else {
        user.to_owned()
    };
    let path = match path.split_once('?') {
        // Query parameters may carry a password too.
        Some((path, _)) => format!("{path}?…"),
        None => path.to_owned(),
    };
    format!("{scheme}://{hidden}@{host}{path}")
}

/// The database could not be opened or migrated; names it (never its
/// password).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the controller database {location}: {message}")]
    Open { location: Location, message: String },
    #[error("cannot apply the schema migrations to the controller database {location}: {source}")]
    Migrate {
        location: Location,
        source: sqlx::migrate::MigrateError,
    },
}

/// The pool of whichever engine the database is on.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction on either engine.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Which SQL a statement is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `sql`, written for SQLite, in this dialect.
    pub(crate) fn sql(self, sql: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => {
                static TRANSLATED: LazyLock<Mutex<HashMap<&'static str, &'static str>>> =
                    LazyLock::new(Default::default);
                let mut translated = TRANSLATED.lock().unwrap_or_else(|e| e.into_inner());
                translated
                    .entry(sql)
                    .or_insert_with(|| Box::leak(to_postgres(sql).into_boxed_str()))
            }
        }
    }

    /// A statement built at run time, in this dialect.
    pub(crate) fn owned(self, sql: String) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(match self {
            Dialect::Sqlite => sql,
            Dialect::Postgres => to_postgres(&sql),
        })
    }

    /// The statement written for this engine (each with `?` parameters).
    pub(crate) fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => self.sql(postgres),
        }
    }
}

/// A statement in SQLite's dialect, in PostgreSQL's: parameters numbered
/// (`?` and `?N` become `$N`, as SQLite numbers them), a JSON array of
/// values read with `json_array_elements_text`, `instr` called `strpos`.
/// String literals are left as they are.
fn to_postgres(sql: &str) -> String {
    let sql = sql
        .replace("json_each(?)", "json_array_elements_text(?::json)")
        .replace("instr(", "strpos(");
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    let (mut highest, mut in_literal) = (0u32, false);
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_literal = !in_literal;
                out.push(c);
            }
            '?' if !in_literal => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => highest + 1,
                };
                highest = highest.max(number);
                out.push_str(&format!("${number}"));
            }
            _ => out.push(c),
        }
    }
    out
}

/// A handle on the fleet database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) pool: Pool,
}

impl Database {
    /// Opens the database at `location`, creating a SQLite file if needed,
    /// and applies the migrations.
    pub async fn connect(location: &Location) -> Result<Self, OpenError> {
        match location {
            Location::Sqlite(path) => Self::open(path).await,
            Location::Postgres(url) => Self::open_postgres(location, url).await,
        }
    }

    /// Opens (creating if needed) the SQLite database at `path` in WAL mode
    /// and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let location = Location::Sqlite(path.to_path_buf());
        let open_error = |message: String| OpenError::Open {
            location: location.clone(),
            message,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(open_error(format!(
                "the folder {} does not exist",
                parent.display()
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| OpenError::Migrate {
                location: location.clone(),
                source,
            })?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    async fn open_postgres(location: &Location, url: &str) -> Result<Self, OpenError> {
        let open_error = |message: String| OpenError::Open {
            location: location.clone(),
            message,
        };
        let options: PgConnectOptions = url.parse().map_err(|e| open_error(format!("{e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        POSTGRES_MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| OpenError::Migrate {
                location: location.clone(),
                source,
            })?;
        Ok(Self {
            pool: Pool::Postgres(pool),
        })
    }

    /// Which engine the database is on: `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The SQLite pool, for tests that reach under the functions.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &SqlitePool {
        match &self.pool {
            Pool::Sqlite(pool) => pool,
            Pool::Postgres(_) => panic!("a SQLite database was expected"),
        }
    }

    /// A transaction.
    pub(crate) async fn begin(&self) -> sqlx::Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A transaction that reads one snapshot: every statement in it sees
    /// the same rows (SQLite's transactions do; PostgreSQL's default does
    /// not).
    pub(crate) async fn snapshot(&self) -> sqlx::Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
        })
    }

    /// A transaction that writes alone: a check and the writes it allows
    /// cannot interleave with another such transaction's (SQLite's
    /// `BEGIN IMMEDIATE`; on PostgreSQL, an advisory lock held until it
    /// ends).
    pub(crate) async fn begin_alone(&self) -> sqlx::Result<Tx> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7461730)")
                    .execute(&mut *tx)
                    .await?;
                Tx::Postgres(tx)
            }
        })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_security;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod dialect_tests {
    use super::*;

    #[test]
    fn statements_are_numbered_for_postgres_and_literals_kept() {
        assert_eq!(
            to_postgres(
                "SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (SELECT value FROM json_each(?))"
            ),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN (SELECT value FROM json_array_elements_text($2::json))"
        );
        assert_eq!(
            to_postgres(
                "WHERE (?1 IS NULL OR x = ?1) AND (?2 IS NULL OR instr(lower(a), lower(?2)) > 0) LIMIT ?"
            ),
            "WHERE ($1 IS NULL OR x = $1) AND ($2 IS NULL OR strpos(lower(a), lower($2)) > 0) LIMIT $3"
        );
    }

    #[test]
    fn a_postgres_location_never_shows_its_password() {
        let location: Location =
            "postgres://flotilla:s3cret@db.example:5432/fleet?sslmode=require&password=x"
                .parse()
                .unwrap();
        let shown = format!("{location} {location:?}");
        assert!(location.has_password());
        let without: Location = "postgres://flotilla@db/fleet?sslmode=require"
            .parse()
            .unwrap();
        assert!(!without.has_password());
        assert!(
            !shown.contains("s3cret") && !shown.contains("password=x"),
            "{shown}"
        );
        assert!(
            shown.contains("flotilla:***@db.example:5432/fleet"),
            "{shown}"
        );
        let error = OpenError::Open {
            location,
            message: "refused".into(),
        };
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert_eq!(
            "sqlite:/var/lib/f.db".parse::<Location>().unwrap(),
            Location::Sqlite(PathBuf::from("/var/lib/f.db"))
        );
        assert_eq!(
            "f.db".parse::<Location>().unwrap(),
            Location::Sqlite(PathBuf::from("f.db"))
        );
    }
}
