//! The audit trail's rows: appended, filtered, never changed (the schema's
//! triggers refuse UPDATE, and DELETE but of entries recorded as exported
//! and past their retention in `audit_pruned`).

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

    /// The entries that pass `filter` after the entry `after`, oldest
    /// first, at most `page` of them: the export reads the trail a page at
    /// a time.
    pub async fn audit_after(
        &self,
        filter: &AuditFilter,
        after: i64,
        page: i64,
    ) -> sqlx::Result<Vec<AuditRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT seq, at, actor, action, target, outcome, source, detail FROM audit \
             WHERE seq > ?6 \
               AND (?1 IS NULL OR actor = ?1) \
               AND (?2 IS NULL OR instr(lower(action), lower(?2)) > 0) \
               AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at <= ?4) \
             ORDER BY seq LIMIT ?5"
        ))
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page)
        .bind(after)
        .fetch_all(c)
        .await)
    }

    /// The entry before the oldest of the newest `filter.limit` entries
    /// that pass `filter`: where an export of them starts.
    pub async fn audit_export_start(&self, filter: &AuditFilter) -> sqlx::Result<i64> {
        let oldest: Option<i64> = on_pool!(self.pool, |c, d| sqlx::query_scalar(d.sql(
            "SELECT seq FROM audit \
             WHERE (?1 IS NULL OR actor = ?1) \
               AND (?2 IS NULL OR instr(lower(action), lower(?2)) > 0) \
               AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at <= ?4) \
             ORDER BY seq DESC LIMIT 1 OFFSET ?5"
        ))
        .bind(&filter.actor)
        .bind(&filter.action)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.limit - 1)
        .fetch_optional(c)
        .await)?;
        Ok(oldest.map_or(0, |seq| seq - 1))
    }

    /// The newest entry older than `before`, if any.
    pub async fn audit_last_before(&self, before: DateTime<Utc>) -> sqlx::Result<Option<i64>> {
        on_pool!(self.pool, |c, d| sqlx::query_scalar(
            d.sql("SELECT MAX(seq) FROM audit WHERE at < ?")
        )
        .bind(before)
        .fetch_one(c)
        .await)
    }

    /// Entries after `after` up to `up_to`, oldest first, at most `page`.
    pub async fn audit_page(
        &self,
        after: i64,
        up_to: i64,
        page: i64,
    ) -> sqlx::Result<Vec<AuditRecord>> {
        on_pool!(self.pool, |c, d| sqlx::query_as(d.sql(
            "SELECT seq, at, actor, action, target, outcome, source, detail FROM audit \
             WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        ))
        .bind(after)
        .bind(up_to)
        .bind(page)
        .fetch_all(c)
        .await)
    }

    /// Records that the entries up to `up_to` (those before `before`) were
    /// exported to `archive`, and prunes them, in one transaction.
    pub async fn audit_prune(
        &self,
        up_to: i64,
        before: DateTime<Utc>,
        entries: u64,
        archive: &str,
        at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        let mut tx = self.begin_alone().await?;
        on_tx!(tx, |c, d| {
            sqlx::query(d.sql(
            "INSERT INTO audit_pruned (at, pruned_before, up_to_seq, entries, archive) VALUES (?, ?, ?, ?, ?)"
        ))
        .bind(at)
        .bind(before)
        .bind(up_to)
        .bind(i64::try_from(entries).unwrap_or(i64::MAX))
        .bind(archive)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
        })?;
        on_tx!(tx, |c, d| sqlx::query(
            d.sql("DELETE FROM audit WHERE seq <= ?")
        )
        .bind(up_to)
        .execute(c)
        .await
        .map(|done| done.rows_affected()))?;
        tx.commit().await
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
