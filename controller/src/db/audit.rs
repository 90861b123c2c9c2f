//! The audit trail's rows: appended, filtered, never changed (the schema's
//! triggers refuse UPDATE and DELETE).

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::Database;

/// One recorded action.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: i64,
    pub source: String,
    /// What the action did beyond its target: what a database restore
    /// discarded.
    pub detail: Option<String>,
}

/// What to read of the trail; every part optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A part of the action (`rollouts`, `POST`, `session`).
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: i64,
}

impl Database {
    /// Appends an entry.
    pub async fn audit(&self, entry: &AuditRecord) -> sqlx::Result<()> {
        on_pool!(self.pool, |c, d| {
            sqlx::query(d.sql("INSERT INTO audit (at, actor, action, target, outcome, source, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"))
        .bind(entry.at)
        .bind(&entry.actor)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(entry.outcome)
        .bind(&entry.source)
        .bind(&entry.detail)
        .execute(c)
        .await
    .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// The entries that pass `filter`, newest first.
    pub async fn audit_trail(&self, filter: &AuditFilter) -> sqlx::Result<Vec<AuditRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT seq, at, actor, action, target, outcome, source, detail FROM audit \
             WHERE (?1 IS NULL OR actor = ?1) \
               AND (?2 IS NULL OR instr(lower(action), lower(?2)) > 0) \
               AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at <= ?4) \
             ORDER BY seq DESC LIMIT ?5"
        ))
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit)
        .fetch_all(c)
        .await)
    }
}
