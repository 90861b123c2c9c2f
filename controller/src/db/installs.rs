//! Installs as agents report them: progress, results, interrupted ones.

use chrono::{DateTime, Utc};
use flotilla_proto::domain::ServerId;
use flotilla_proto::link::{InstallProgress, InstallResult};
use sqlx::FromRow;

use super::Database;
use crate::states::InstallState;

/// `SELECT` of install rows (`i`), followed by the `$tail` pieces.
macro_rules! select_installs {
    ($($tail:literal),+) => {
        concat!(
            "SELECT i.server_id, i.install_id, i.module, i.from_version, i.to_version, i.command_id, i.state, ",
            "i.phase, i.message, i.downtime_ms, i.hook_output, i.rolled_back, i.rollback_error, i.warnings, i.started_at, ",
            "i.finished_at FROM installs i ",
            $($tail),+
        )
    };
}
pub(super) use select_installs;

/// An install as stored.
#[derive(Debug, Clone, FromRow)]
pub struct InstallRecord {
    pub server_id: String,
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub command_id: Option<String>,
    pub state: InstallState,
    pub phase: Option<String>,
    pub message: Option<String>,
    pub downtime_ms: Option<i64>,
    /// The failing hook's stderr, one line per line.
    pub hook_output: Option<String>,
    pub rolled_back: bool,
    pub rollback_error: Option<String>,
    /// What went wrong after the new version was in place, one per line.
    pub warnings: Option<String>,
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

impl Database {
    /// Records a progress line, creating the install when it is the first.
    pub async fn install_progress(
        &self,
        server: &ServerId,
        p: &InstallProgress,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin().await?;
        on_tx!(tx, |c, d| {
            sqlx::query(d.sql("INSERT INTO installs (server_id, install_id, module, to_version, command_id, state, phase, started_at) \
             VALUES (?, ?, ?, ?, ?, 'running', ?, ?) \
             ON CONFLICT (server_id, install_id) DO UPDATE SET phase = COALESCE(excluded.phase, installs.phase) \
             WHERE installs.state = 'running'"))
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(&p.module)
        .bind(&p.to_version)
        .bind(&p.command_id)
        .bind(&p.phase)
        .bind(p.at)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        on_tx!(tx, |c, d| {
            sqlx::query(d.sql("INSERT INTO install_events (server_id, install_id, seq, at, phase, kind, text) \
             VALUES (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM install_events WHERE server_id = ? AND install_id = ?), \
                     ?, ?, ?, ?)"))
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(server.as_str())
        .bind(&p.install_id)
        .bind(p.at)
        .bind(&p.phase)
        .bind(&p.kind)
        .bind(&p.text)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        tx.commit().await
    }

    /// Records how an install ended (again is harmless).
    pub async fn install_result(&self, server: &ServerId, r: &InstallResult) -> sqlx::Result<()> {
        on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql("INSERT INTO installs (server_id, install_id, module, from_version, to_version, command_id, state, phase, \
                                   message, downtime_ms, hook_output, rolled_back, rollback_error, warnings, started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (server_id, install_id) DO UPDATE SET from_version = excluded.from_version, \
                state = excluded.state, phase = excluded.phase, message = excluded.message, \
                downtime_ms = excluded.downtime_ms, hook_output = excluded.hook_output, \
                rolled_back = excluded.rolled_back, rollback_error = excluded.rollback_error, \
                warnings = excluded.warnings, finished_at = excluded.finished_at"))
        .bind(server.as_str())
        .bind(&r.install_id)
        .bind(&r.module)
        .bind(&r.from_version)
        .bind(&r.to_version)
        .bind(&r.command_id)
        .bind(if r.ok {
            InstallState::Succeeded
        } else {
            InstallState::Failed
        })
        .bind(&r.phase)
        .bind(&r.message)
        .bind(i64::try_from(r.downtime_ms).unwrap_or(i64::MAX))
        .bind((!r.hook_output.is_empty()).then(|| r.hook_output.join("\n")))
        .bind(r.rolled_back)
        .bind(&r.rollback_error)
        .bind((!r.warnings.is_empty()).then(|| r.warnings.join("\n")))
        .bind(r.started_at)
        .bind(r.finished_at)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Closes the installs a server reported as running before its agent
    /// restarted: the agent's recovery finished them (the module is at
    /// their version) or rolled them back. Returns how many. An update of
    /// the agent itself restarts it by design: its end is what the agent
    /// reports once the new version has proved itself or been rolled back.
    pub async fn close_interrupted_installs(
        &self,
        server: &ServerId,
        agent_started_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> sqlx::Result<u64> {
        let done = on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql("UPDATE installs SET \
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
                                        = installs.to_version THEN FALSE ELSE TRUE END, \
                finished_at = ? \
             WHERE server_id = ? AND state = 'running' AND started_at < ? \
               AND module <> 'flotilla-agent'"))
        .bind(at)
        .bind(server.as_str())
        .bind(agent_started_at)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        Ok(done)
    }

    /// A server's installs, newest first (at most 100).
    pub async fn installs(&self, server: &str) -> sqlx::Result<Vec<InstallRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(select_installs!(
            "WHERE i.server_id = ? ORDER BY i.started_at DESC LIMIT 100"
        )))
        .bind(server)
        .fetch_all(c)
        .await)
    }

    /// One install with its progress lines.
    pub async fn install(
        &self,
        server: &str,
        install_id: &str,
    ) -> sqlx::Result<Option<(InstallRecord, Vec<InstallEventRecord>)>> {
        let Some(install): Option<InstallRecord> =
            on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(select_installs!(
                "WHERE i.server_id = ? AND i.install_id = ?"
            )))
            .bind(server)
            .bind(install_id)
            .fetch_optional(c)
            .await)?
        else {
            return Ok(None);
        };
        let events = on_pool!(self.pool, |c, d| {
            sqlx::query_as(d.sql("SELECT seq, at, phase, kind, text FROM install_events WHERE server_id = ? AND install_id = ? ORDER BY seq"))
        .bind(server)
        .bind(install_id)
        .fetch_all(c)
        .await
        })?;
        Ok(Some((install, events)))
    }
}
