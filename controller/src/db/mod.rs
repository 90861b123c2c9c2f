//! All of the controller's SQL, against SQLite through sqlx. Handlers and the
//! gRPC service call these functions; no SQL lives anywhere else.
//!
//! Writes start with a write statement (never read-then-write in a deferred
//! transaction), so concurrent writers wait on the busy timeout instead of
//! failing with `SQLITE_BUSY_SNAPSHOT`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod audit;
mod enrollments;
mod fleet_pages;
mod installs;
mod operators;
mod releases;
mod rollouts;
mod servers;
pub use audit::{AuditFilter, AuditRecord};
pub use enrollments::{CertificateRecord, EnrollmentRecord, Revocations, TokenRefusal};
pub use fleet_pages::{Cursor, FleetCounts, ServerFilter, ServerState, VersionCount};
pub use installs::{InstallEventRecord, InstallRecord};
pub use operators::{AccountRecord, Bearer, TokenRecord};
pub use releases::{PackageRecord, PublishConflict, ReleaseRecord, Withdrawal};
pub use rollouts::{
    CommandInstall, Estimate, RolloutChanges, RolloutLogRecord, RolloutRecord, RolloutRows,
    RolloutSiteRecord, RolloutStepRecord, ScheduleRecord,
};
pub use servers::{ModuleRecord, Presence, ServerHello, ServerRecord, SiteRecord};

/// The schema migrations in `migrations/`, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The database could not be opened or migrated; names the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the controller database {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("cannot apply the schema migrations to the controller database {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
}

/// A handle on the fleet database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: SqlitePool,
}

impl Database {
    /// Opens (creating if needed) the database at `path` in WAL mode and
    /// applies the migrations.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let open_error = |message: String| OpenError::Open {
            path: path.to_path_buf(),
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
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { pool })
    }
}

#[cfg(test)]
mod tests;
