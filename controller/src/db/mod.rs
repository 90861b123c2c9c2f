//! All of the controller's SQL, against SQLite through sqlx. Handlers and the
//! gRPC service call these functions; no SQL lives anywhere else.
//!
//! Writes start with a write statement (never read-then-write in a deferred
//! transaction), so concurrent writers wait on the busy timeout instead of
//! failing with `SQLITE_BUSY_SNAPSHOT`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_proto::domain::{ModuleName, ModuleReport, Problem, ServerId, SiteName};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Sqlite, Transaction};

mod audit;
mod operators;
pub use audit::{AuditFilter, AuditRecord};
mod rollouts;
pub use operators::{AccountRecord, Bearer, TokenRecord};
pub use rollouts::{
    CommandInstall, Estimate, RolloutChanges, RolloutLogRecord, RolloutRecord, RolloutSiteRecord,
    RolloutStepRecord, ScheduleRecord,
};

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

/// What an agent says about itself when it connects.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub id: ServerId,
    pub site: SiteName,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub protocol_version: u32,
    pub peer_address: Option<String>,
    /// When the agent process started, if it says.
    pub agent_started_at: Option<DateTime<Utc>>,
}

/// A server as stored, with its modules and problems.
#[derive(Debug, Clone)]
pub struct ServerRecord {
    pub id: String,
    pub site: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub protocol_version: i64,
    pub peer_address: Option<String>,
    pub online: bool,
    pub first_seen_at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_seen_at: DateTime<Utc>,
    pub went_silent_at: Option<DateTime<Utc>>,
    pub offline_reason: Option<String>,
    pub modules: Vec<ModuleRecord>,
    pub problems: Vec<Problem>,
}

/// A module as stored.
#[derive(Debug, Clone)]
pub struct ModuleRecord {
    /// A newer package waiting on the server.
    pub pending_version: Option<String>,
    /// `downloading`, `failed` or `refused`, with the version and detail.
    pub download_state: Option<String>,
    pub download_version: Option<String>,
    pub download_detail: Option<String>,
    /// The module's latest install on this server.
    pub last_install: Option<InstallRecord>,
    pub name: String,
    pub kind: String,
    pub install_path: String,
    pub installed_version: Option<String>,
    pub state: String,
    pub detail: String,
    pub updated_at: DateTime<Utc>,
}

/// A site with how many of its servers are online.
#[derive(Debug, Clone, FromRow)]
pub struct SiteRecord {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub servers: i64,
    pub online: i64,
}

#[derive(FromRow)]
struct ServerRow {
    id: String,
    site: String,
    hostname: String,
    os: String,
    agent_version: String,
    protocol_version: i64,
    peer_address: Option<String>,
    online: bool,
    first_seen_at: DateTime<Utc>,
    connected_at: Option<DateTime<Utc>>,
    last_seen_at: DateTime<Utc>,
    went_silent_at: Option<DateTime<Utc>>,
    offline_reason: Option<String>,
}

#[derive(FromRow)]
struct ModuleRow {
    pending_version: Option<String>,
    download_state: Option<String>,
    download_version: Option<String>,
    download_detail: Option<String>,
    server_id: String,
    name: String,
    kind: String,
    install_path: String,
    installed_version: Option<String>,
    state: String,
    detail: String,
    updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ProblemRow {
    server_id: String,
    file: Option<String>,
    line: Option<i64>,
    message: String,
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

    /// At start-up no agent is connected yet: every server that was online
    /// when the controller stopped is marked offline since it was last seen.
    pub async fn mark_all_offline(&self, reason: &str) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "UPDATE servers SET online = 0, went_silent_at = last_seen_at, offline_reason = ? WHERE online = 1",
        )
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The highest session number any connection was given, so that a
    /// restarted controller numbers its connections above every earlier one.
    pub async fn last_session(&self) -> sqlx::Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(session), 0) FROM servers")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

    /// Records a server that just connected as `session` (creating it and
    /// its site if new). A newer session already recorded wins: returns
    /// whether this one was.
    pub async fn server_connected(
        &self,
        hello: &ServerHello,
        session: u64,
        at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sites (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(hello.site.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "INSERT INTO servers (id, site_id, hostname, os, agent_version, protocol_version, peer_address, online, \
                                  first_seen_at, connected_at, last_seen_at, went_silent_at, offline_reason, session) \
             VALUES (?, (SELECT id FROM sites WHERE name = ?), ?, ?, ?, ?, ?, 1, ?, ?, ?, NULL, NULL, ?) \
             ON CONFLICT (id) DO UPDATE SET \
                site_id = excluded.site_id, hostname = excluded.hostname, os = excluded.os, \
                agent_version = excluded.agent_version, protocol_version = excluded.protocol_version, \
                peer_address = excluded.peer_address, online = 1, connected_at = excluded.connected_at, \
                last_seen_at = excluded.last_seen_at, went_silent_at = NULL, offline_reason = NULL, \
                session = excluded.session \
             WHERE servers.session < excluded.session",
        )
        .bind(hello.id.as_str())
        .bind(hello.site.as_str())
        .bind(&hello.hostname)
        .bind(&hello.os)
        .bind(&hello.agent_version)
        .bind(i64::from(hello.protocol_version))
        .bind(&hello.peer_address)
        .bind(at)
        .bind(at)
        .bind(at)
        .bind(session_number(session))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a server offline, silent since `silent_since`, if `session` is
    /// still its connection; returns whether it was.
    pub async fn server_offline(
        &self,
        id: &ServerId,
        session: u64,
        silent_since: DateTime<Utc>,
        reason: &str,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(
            "UPDATE servers SET online = 0, last_seen_at = ?, went_silent_at = ?, offline_reason = ? \
             WHERE id = ? AND session = ?",
        )
        .bind(silent_since)
        .bind(silent_since)
        .bind(reason)
        .bind(id.as_str())
        .bind(session_number(session))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes a batch of last-seen times of connected sessions, in one
    /// statement. A session's row is also put back online if anything ever
    /// marked it offline; returns the servers so repaired.
    pub async fn record_last_seen(
        &self,
        seen: &[(ServerId, u64, DateTime<Utc>)],
    ) -> sqlx::Result<Vec<String>> {
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        let batch = serde_json::Value::Array(
            seen.iter()
                .map(|(id, session, at)| {
                    serde_json::json!([
                        id.as_str(),
                        session_number(*session),
                        // As sqlx writes a `DateTime<Utc>`.
                        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                    ])
                })
                .collect(),
        )
        .to_string();
        let mut tx = self.pool.begin().await?;
        let repaired: Vec<String> = sqlx::query_scalar(
            "UPDATE servers SET online = 1, went_silent_at = NULL, offline_reason = NULL \
             FROM json_each(?) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = j.value ->> 1 AND servers.online = 0 \
             RETURNING servers.id",
        )
        .bind(&batch)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE servers SET last_seen_at = j.value ->> 2 FROM json_each(?) j \
             WHERE servers.id = j.value ->> 0 AND servers.session = j.value ->> 1",
        )
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(repaired)
    }

    /// Replaces everything known about a server's modules and problems.
    pub async fn replace_inventory(
        &self,
        id: &ServerId,
        modules: &[ModuleReport],
        problems: &[Problem],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM modules WHERE server_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        for module in modules {
            upsert_module(&mut tx, id, module, at).await?;
        }
        replace_problems(&mut tx, id, problems).await?;
        tx.commit().await
    }

    /// Applies an inventory change: modules upserted and removed, problems replaced.
    pub async fn apply_change(
        &self,
        id: &ServerId,
        upserted: &[ModuleReport],
        removed: &[ModuleName],
        problems: &[Problem],
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        for name in removed {
            sqlx::query("DELETE FROM modules WHERE server_id = ? AND name = ?")
                .bind(id.as_str())
                .bind(name.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for module in upserted {
            upsert_module(&mut tx, id, module, at).await?;
        }
        replace_problems(&mut tx, id, problems).await?;
        tx.commit().await
    }

    pub async fn sites(&self) -> sqlx::Result<Vec<SiteRecord>> {
        sqlx::query_as(
            "SELECT t.name, t.created_at, COUNT(s.id) AS servers, COALESCE(SUM(s.online), 0) AS online \
             FROM sites t LEFT JOIN servers s ON s.site_id = t.id GROUP BY t.id ORDER BY t.name",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Every server (of one site, if given), with modules and problems, by site then id.
    pub async fn servers(&self, site: Option<&str>) -> sqlx::Result<Vec<ServerRecord>> {
        match site {
            Some(site) => self.read_servers(&SITE, Some(site)).await,
            None => self.read_servers(&EVERY, None).await,
        }
    }

    /// The servers with these ids, with modules and problems, by site then id.
    pub async fn servers_with_ids(&self, ids: &[&str]) -> sqlx::Result<Vec<ServerRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::Value::from(ids).to_string();
        self.read_servers(&IDS, Some(&ids)).await
    }

    pub async fn server(&self, id: &str) -> sqlx::Result<Option<ServerRecord>> {
        Ok(self.read_servers(&ONE, Some(id)).await?.pop())
    }

    /// Runs the four reads of `reads` in one snapshot, each with
    /// `parameter` bound if given, and puts each server together.
    async fn read_servers(
        &self,
        reads: &ServerReads,
        parameter: Option<&str>,
    ) -> sqlx::Result<Vec<ServerRecord>> {
        let mut conn = self.pool.begin().await?;
        let rows: Vec<ServerRow> = bound(sqlx::query_as(reads.servers), parameter)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let modules: Vec<ModuleRow> = bound(sqlx::query_as(reads.modules), parameter)
            .fetch_all(&mut *conn)
            .await?;
        let problems: Vec<ProblemRow> = bound(sqlx::query_as(reads.problems), parameter)
            .fetch_all(&mut *conn)
            .await?;
        let installs: Vec<InstallRecord> = bound(sqlx::query_as(reads.installs), parameter)
            .fetch_all(&mut *conn)
            .await?;
        conn.commit().await?;
        Ok(assemble(rows, modules, problems, installs))
    }
}

/// The statements that read servers with their modules, problems and
/// latest installs, over one set of servers.
struct ServerReads {
    servers: &'static str,
    modules: &'static str,
    problems: &'static str,
    installs: &'static str,
}

/// [`ServerReads`] over the servers that `$servers` (a `WHERE` clause on
/// `servers s` joined with `sites t`) and `$ids` (a condition on a
/// `server_id` column) select, each with at most one parameter.
macro_rules! server_reads {
    ($servers:literal, $ids:literal) => {
        ServerReads {
            servers: concat!(
                "SELECT s.id, t.name AS site, s.hostname, s.os, s.agent_version, s.protocol_version, ",
                "s.peer_address, s.online, s.first_seen_at, s.connected_at, s.last_seen_at, s.went_silent_at, ",
                "s.offline_reason FROM servers s JOIN sites t ON t.id = s.site_id ",
                $servers,
                " ORDER BY t.name, s.id"
            ),
            modules: concat!(
                "SELECT server_id, name, kind, install_path, installed_version, state, detail, updated_at, ",
                "pending_version, download_state, download_version, download_detail FROM modules WHERE ",
                $ids,
                " ORDER BY server_id, name"
            ),
            problems: concat!(
                "SELECT server_id, file, line, message FROM server_problems WHERE ",
                $ids,
                " ORDER BY server_id, position"
            ),
            installs: select_installs!(
                "WHERE ",
                $ids,
                " AND i.started_at = (SELECT MAX(j.started_at) FROM installs j ",
                "WHERE j.server_id = i.server_id AND j.module = i.module)"
            ),
        }
    };
}

/// Every server; no parameter.
const EVERY: ServerReads = server_reads!("", "1");
/// The servers of the site named `?`, through `servers_by_site`.
const SITE: ServerReads = server_reads!(
    "WHERE t.name = ?",
    "server_id IN (SELECT s.id FROM servers s JOIN sites t ON t.id = s.site_id WHERE t.name = ?)"
);
/// The servers whose ids are in the JSON array `?`.
const IDS: ServerReads = server_reads!(
    "WHERE s.id IN (SELECT value FROM json_each(?))",
    "server_id IN (SELECT value FROM json_each(?))"
);
/// The server whose id is `?`.
const ONE: ServerReads = server_reads!("WHERE s.id = ?", "server_id = ?");

/// `query` with `parameter` bound, if there is one.
fn bound<'q, T>(
    query: sqlx::query::QueryAs<'q, Sqlite, T, <Sqlite as sqlx::Database>::Arguments>,
    parameter: Option<&'q str>,
) -> sqlx::query::QueryAs<'q, Sqlite, T, <Sqlite as sqlx::Database>::Arguments> {
    match parameter {
        Some(parameter) => query.bind(parameter),
        None => query,
    }
}

/// A session number as stored (SQLite integers are signed).
fn session_number(session: u64) -> i64 {
    i64::try_from(session).unwrap_or(i64::MAX)
}

/// `SELECT` of install rows (`i`), followed by the `$tail` pieces.
macro_rules! select_installs {
    ($($tail:literal),+) => {
        concat!(
            "SELECT i.server_id, i.install_id, i.module, i.from_version, i.to_version, i.command_id, i.state, ",
            "i.phase, i.message, i.downtime_ms, i.hook_output, i.rolled_back, i.rollback_error, i.started_at, ",
            "i.finished_at FROM installs i ",
            $($tail),+
        )
    };
}
use select_installs;

/// An install as stored.
#[derive(Debug, Clone, FromRow)]
pub struct InstallRecord {
    pub server_id: String,
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub command_id: Option<String>,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    pub phase: Option<String>,
    pub message: Option<String>,
    pub downtime_ms: Option<i64>,
    /// The failing hook's stderr, one line per line.
    pub hook_output: Option<String>,
    pub rolled_back: bool,
    pub rollback_error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One line of an install's progress.
#[derive(Debug, Clone, FromRow)]
pub struct InstallEventRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub phase: Option<String>,
    pub kind: String,
    pub text: String,
}

/// A progress line from an agent.
#[derive(Debug, Clone)]
pub struct InstallProgressIn {
    pub install_id: String,
    pub module: String,
    pub to_version: String,
    pub command_id: Option<String>,
    pub phase: Option<String>,
    pub kind: String,
    pub text: String,
    pub at: DateTime<Utc>,
}

/// How an install ended, from an agent.
#[derive(Debug, Clone)]
pub struct InstallResultIn {
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub command_id: Option<String>,
    pub ok: bool,
    pub downtime_ms: u64,
    pub message: String,
    pub phase: Option<String>,
    pub hook_output: Vec<String>,
    pub rolled_back: bool,
    pub rollback_error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Database {
    /// Records a progress line, creating the install when it is the first.
    pub async fn install_progress(
        &self,
        server: &ServerId,
        p: &InstallProgressIn,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO installs (server_id, install_id, module, to_version, command_id, state, phase, started_at) \
             VALUES (?, ?, ?, ?, ?, 'running', ?, ?) \
             ON CONFLICT (server_id, install_id) DO UPDATE SET phase = COALESCE(excluded.phase, installs.phase) \
             WHERE installs.state = 'running'",
        )
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(&p.module)
        .bind(&p.to_version)
        .bind(&p.command_id)
        .bind(&p.phase)
        .bind(p.at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO install_events (server_id, install_id, seq, at, phase, kind, text) \
             VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM install_events WHERE server_id = ? AND install_id = ?), \
                     ?, ?, ?, ?)",
        )
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(p.at)
        .bind(&p.phase)
        .bind(&p.kind)
        .bind(&p.text)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Records how an install ended (again is harmless).
    pub async fn install_result(&self, server: &ServerId, r: &InstallResultIn) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO installs (server_id, install_id, module, from_version, to_version, command_id, state, phase, \
                                   message, downtime_ms, hook_output, rolled_back, rollback_error, started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (server_id, install_id) DO UPDATE SET from_version = excluded.from_version, \
                state = excluded.state, phase = excluded.phase, message = excluded.message, \
                downtime_ms = excluded.downtime_ms, hook_output = excluded.hook_output, \
                rolled_back = excluded.rolled_back, rollback_error = excluded.rollback_error, \
                finished_at = excluded.finished_at",
        )
        .bind(server.as_str())
        .bind(&r.install_id)
        .bind(&r.module)
        .bind(&r.from_version)
        .bind(&r.to_version)
        .bind(&r.command_id)
        .bind(if r.ok { "succeeded" } else { "failed" })
        .bind(&r.phase)
        .bind(&r.message)
        .bind(i64::try_from(r.downtime_ms).unwrap_or(i64::MAX))
        .bind((!r.hook_output.is_empty()).then(|| r.hook_output.join("\n")))
        .bind(r.rolled_back)
        .bind(&r.rollback_error)
        .bind(r.started_at)
        .bind(r.finished_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the installs a server reported as running before its agent
    /// restarted: the agent's recovery finished them (the module is at
    /// their version) or rolled them back. Returns how many.
    pub async fn close_interrupted_installs(
        &self,
        server: &ServerId,
        agent_started_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> sqlx::Result<u64> {
        let done = sqlx::query(
            "UPDATE installs SET \
                state = CASE WHEN (SELECT m.installed_version FROM modules m \
                                   WHERE m.server_id = installs.server_id AND m.name = installs.module) \
                                  = installs.to_version THEN 'succeeded' ELSE 'failed' END, \
                message = CASE WHEN (SELECT m.installed_version FROM modules m \
                                     WHERE m.server_id = installs.server_id AND m.name = installs.module) \
                                    = installs.to_version \
                          THEN 'the agent restarted during the install and finished it at start' \
                          ELSE 'the agent restarted during the install and rolled it back at start' END, \
                rolled_back = CASE WHEN (SELECT m.installed_version FROM modules m \
                                         WHERE m.server_id = installs.server_id AND m.name = installs.module) \
                                        = installs.to_version THEN 0 ELSE 1 END, \
                finished_at = ? \
             WHERE server_id = ? AND state = 'running' AND started_at < ?",
        )
        .bind(at)
        .bind(server.as_str())
        .bind(agent_started_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// A server's installs, newest first (at most 100).
    pub async fn installs(&self, server: &str) -> sqlx::Result<Vec<InstallRecord>> {
        sqlx::query_as(select_installs!(
            "WHERE i.server_id = ? ORDER BY i.started_at DESC LIMIT 100"
        ))
        .bind(server)
        .fetch_all(&self.pool)
        .await
    }

    /// One install with its progress lines.
    pub async fn install(
        &self,
        server: &str,
        install_id: &str,
    ) -> sqlx::Result<Option<(InstallRecord, Vec<InstallEventRecord>)>> {
        let Some(install): Option<InstallRecord> = sqlx::query_as(select_installs!(
            "WHERE i.server_id = ? AND i.install_id = ?"
        ))
        .bind(server)
        .bind(install_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let events = sqlx::query_as(
            "SELECT seq, at, phase, kind, text FROM install_events WHERE server_id = ? AND install_id = ? ORDER BY seq",
        )
        .bind(server)
        .bind(install_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((install, events)))
    }
}

async fn upsert_module(
    tx: &mut Transaction<'_, Sqlite>,
    id: &ServerId,
    module: &ModuleReport,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO modules (server_id, name, kind, install_path, installed_version, state, detail, updated_at, \
                              pending_version, download_state, download_version, download_detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (server_id, name) DO UPDATE SET kind = excluded.kind, install_path = excluded.install_path, \
            installed_version = excluded.installed_version, state = excluded.state, detail = excluded.detail, \
            updated_at = excluded.updated_at, pending_version = excluded.pending_version, \
            download_state = excluded.download_state, download_version = excluded.download_version, \
            download_detail = excluded.download_detail",
    )
    .bind(id.as_str())
    .bind(module.name.as_str())
    .bind(module.kind.as_str())
    .bind(&module.install_path)
    .bind(module.installed_version.as_ref().map(|v| v.to_string()))
    .bind(module.state.as_str())
    .bind(&module.detail)
    .bind(at)
    .bind(module.pending_version.as_ref().map(|v| v.to_string()))
    .bind(module.download.as_ref().map(|d| d.state.clone()))
    .bind(module.download.as_ref().map(|d| d.version.clone()))
    .bind(module.download.as_ref().map(|d| d.detail.clone()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn replace_problems(
    tx: &mut Transaction<'_, Sqlite>,
    id: &ServerId,
    problems: &[Problem],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM server_problems WHERE server_id = ?")
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    for (position, problem) in problems.iter().enumerate() {
        sqlx::query("INSERT INTO server_problems (server_id, position, file, line, message) VALUES (?, ?, ?, ?, ?)")
            .bind(id.as_str())
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(&problem.file)
            .bind(problem.line.map(i64::from))
            .bind(&problem.message)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn assemble(
    rows: Vec<ServerRow>,
    modules: Vec<ModuleRow>,
    problems: Vec<ProblemRow>,
    installs: Vec<InstallRecord>,
) -> Vec<ServerRecord> {
    let mut servers: Vec<ServerRecord> = rows
        .into_iter()
        .map(|row| ServerRecord {
            id: row.id,
            site: row.site,
            hostname: row.hostname,
            os: row.os,
            agent_version: row.agent_version,
            protocol_version: row.protocol_version,
            peer_address: row.peer_address,
            online: row.online,
            first_seen_at: row.first_seen_at,
            connected_at: row.connected_at,
            last_seen_at: row.last_seen_at,
            went_silent_at: row.went_silent_at,
            offline_reason: row.offline_reason,
            modules: Vec::new(),
            problems: Vec::new(),
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = servers
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    for module in modules {
        if let Some(&i) = index.get(&module.server_id) {
            servers[i].modules.push(ModuleRecord {
                name: module.name,
                kind: module.kind,
                install_path: module.install_path,
                installed_version: module.installed_version,
                state: module.state,
                detail: module.detail,
                updated_at: module.updated_at,
                pending_version: module.pending_version,
                download_state: module.download_state,
                download_version: module.download_version,
                download_detail: module.download_detail,
                last_install: None,
            });
        }
    }
    for install in installs {
        if let Some(&i) = index.get(&install.server_id)
            && let Some(module) = servers[i]
                .modules
                .iter_mut()
                .find(|m| m.name == install.module)
        {
            module.last_install = Some(install);
        }
    }
    for problem in problems {
        if let Some(&i) = index.get(&problem.server_id) {
            servers[i].problems.push(Problem {
                file: problem.file,
                line: problem.line.and_then(|l| u32::try_from(l).ok()),
                message: problem.message,
            });
        }
    }
    servers
}

/// A module package as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PackageRecord {
    pub sha256: String,
    pub module: String,
    pub version: String,
    pub kind: String,
    pub size: Option<i64>,
    pub signature: String,
    pub url: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A release as stored, with its packages.
#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub version: String,
    pub notes: String,
    pub created_at: DateTime<Utc>,
    pub packages: Vec<PackageRecord>,
}

#[derive(FromRow)]
struct ReleaseRow {
    version: String,
    notes: String,
    created_at: DateTime<Utc>,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishConflict {
    #[error(
        "{module} {version} was already published with sha256 {existing}; a module version never changes content: publish a new version"
    )]
    ModuleVersion {
        module: String,
        version: String,
        existing: String,
    },
    #[error(
        "release {0} was already published with other notes or packages; publish a new release version"
    )]
    Release(String),
}

impl Database {
    pub async fn package(&self, sha256: &str) -> sqlx::Result<Option<PackageRecord>> {
        sqlx::query_as(
            "SELECT sha256, module, version, kind, size, signature, url, created_at FROM packages WHERE sha256 = ?",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
    }

    /// Records a release and its packages in one transaction. An identical
    /// re-publish changes nothing and returns `Ok(false)`; a conflicting one
    /// changes nothing and returns the conflict.
    pub async fn publish(
        &self,
        version: &str,
        notes: &str,
        packages: &[PackageRecord],
        at: DateTime<Utc>,
    ) -> sqlx::Result<Result<bool, PublishConflict>> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for package in packages {
            let existing: Option<(String,)> =
                sqlx::query_as("SELECT sha256 FROM packages WHERE module = ? AND version = ?")
                    .bind(&package.module)
                    .bind(&package.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((existing,)) = existing
                && existing != package.sha256
            {
                return Ok(Err(PublishConflict::ModuleVersion {
                    module: package.module.clone(),
                    version: package.version.clone(),
                    existing,
                }));
            }
        }
        let existing: Option<ReleaseRow> =
            sqlx::query_as("SELECT version, notes, created_at FROM releases WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(existing) = existing {
            let shas: Vec<(String,)> = sqlx::query_as(
                "SELECT sha256 FROM release_packages WHERE release = ? ORDER BY sha256",
            )
            .bind(version)
            .fetch_all(&mut *tx)
            .await?;
            let mut wanted: Vec<&str> = packages.iter().map(|p| p.sha256.as_str()).collect();
            wanted.sort_unstable();
            let same = existing.notes == notes
                && shas
                    .iter()
                    .map(|(s,)| s.as_str())
                    .eq(wanted.iter().copied());
            return Ok(if same {
                Ok(false)
            } else {
                Err(PublishConflict::Release(version.to_owned()))
            });
        }
        for package in packages {
            sqlx::query(
                "INSERT INTO packages (sha256, module, version, kind, size, signature, url, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&package.sha256)
            .bind(&package.module)
            .bind(&package.version)
            .bind(&package.kind)
            .bind(package.size)
            .bind(&package.signature)
            .bind(&package.url)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO releases (version, notes, created_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(notes)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        for package in packages {
            sqlx::query("INSERT INTO release_packages (release, sha256) VALUES (?, ?)")
                .bind(version)
                .bind(&package.sha256)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(true))
    }

    /// Every release, newest first, with its packages.
    pub async fn releases(&self) -> sqlx::Result<Vec<ReleaseRecord>> {
        let rows: Vec<ReleaseRow> =
            sqlx::query_as("SELECT version, notes, created_at FROM releases ORDER BY created_at DESC, version DESC")
                .fetch_all(&self.pool)
                .await?;
        let mut releases = Vec::with_capacity(rows.len());
        for row in rows {
            releases.push(self.with_packages(row).await?);
        }
        Ok(releases)
    }

    pub async fn release(&self, version: &str) -> sqlx::Result<Option<ReleaseRecord>> {
        let row: Option<ReleaseRow> =
            sqlx::query_as("SELECT version, notes, created_at FROM releases WHERE version = ?")
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(row) => Ok(Some(self.with_packages(row).await?)),
            None => Ok(None),
        }
    }

    async fn with_packages(&self, row: ReleaseRow) -> sqlx::Result<ReleaseRecord> {
        let packages = sqlx::query_as(
            "SELECT p.sha256, p.module, p.version, p.kind, p.size, p.signature, p.url, p.created_at \
             FROM release_packages r JOIN packages p ON p.sha256 = r.sha256 WHERE r.release = ? ORDER BY p.module",
        )
        .bind(&row.version)
        .fetch_all(&self.pool)
        .await?;
        Ok(ReleaseRecord {
            version: row.version,
            notes: row.notes,
            created_at: row.created_at,
            packages,
        })
    }
}

#[cfg(test)]
mod tests;
