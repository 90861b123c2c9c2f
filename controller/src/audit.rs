//! What the audit trail keeps, beyond the rows the gate appends
//! ([`crate::api::gate`]): anonymous refusals counted instead of written one
//! row each, and the retention that prunes entries past their age, each
//! exported to a file first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::db::{AuditRecord, Database};

/// One recorded action.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The account or token; `anonymous` when none was given.
    pub actor: String,
    /// The operation: method and path template (`POST /api/v1/rollouts/{id}/pause`).
    pub action: String,
    /// The path as called.
    pub target: String,
    /// The HTTP status answered.
    pub outcome: i64,
    /// The caller's address (`rollout engine` for what a rollout did as
    /// someone decided).
    pub source: String,
    /// What the action did beyond its target: what a database restore
    /// discarded.
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        AuditEntry {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            source: r.source,
            detail: r.detail,
        }
    }
}

/// Anonymous refusals written at once each minute, in all: the first of
/// each source and operation; past this, they are only counted.
const AT_ONCE_PER_MINUTE: usize = 100;
/// Sources and operations counted apart each minute; past this, the rest
/// are counted together (source `*`).
const COUNTED_APART: usize = 1000;
/// The longest path kept in a row of the trail.
pub const TARGET_KEPT: usize = 300;

/// Anonymous refusals (no credentials, or credentials not valid), counted
/// per source address and operation per minute. The first of each is
/// written at once, so that the trail shows it; the rest become one row at
/// the minute's end, which says how many there were. Whatever a client
/// sends, the trail grows by a bounded number of rows a minute.
#[derive(Debug, Default)]
pub struct Refusals {
    minute: Mutex<Minute>,
}

#[derive(Debug, Default)]
struct Minute {
    /// How many were written at once this minute.
    written: usize,
    /// By (source address, operation): what is counted and not written.
    counted: HashMap<(String, String), Counted>,
}

#[derive(Debug)]
struct Counted {
    /// Refusals not written yet.
    count: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    outcome: i64,
    /// Whether the first was written at once.
    seen: bool,
}

impl Refusals {
    /// Notes an anonymous refusal; the row to write now, if any.
    pub fn note(&self, entry: AuditRecord) -> Option<AuditRecord> {
        let mut minute = self.minute.lock().unwrap_or_else(|e| e.into_inner());
        // By network (an IPv6 /64 is one source), as connections are.
        let source = match entry.source.parse::<std::net::SocketAddr>() {
            Ok(address) => crate::serving::network_of(address.ip()).to_string(),
            Err(_) => entry.source.clone(),
        };
        let mut key = (source, entry.action.clone());
        if !minute.counted.contains_key(&key) && minute.counted.len() >= COUNTED_APART {
            key = ("*".to_owned(), "*".to_owned());
        }
        let at_once = minute.written < AT_ONCE_PER_MINUTE;
        let counted = minute.counted.entry(key).or_insert_with(|| Counted {
            count: 0,
            first: entry.at,
            last: entry.at,
            outcome: entry.outcome,
            seen: false,
        });
        if !counted.seen && at_once {
            counted.seen = true;
            minute.written += 1;
            return Some(entry);
        }
        counted.count += 1;
        counted.last = entry.at;
        counted.outcome = entry.outcome;
        None
    }

    /// The minute's counted refusals as rows, one per source and
    /// operation; the next minute starts.
    pub fn take(&self) -> Vec<AuditRecord> {
        let minute = std::mem::take(&mut *self.minute.lock().unwrap_or_else(|e| e.into_inner()));
        let mut rows: Vec<AuditRecord> = minute
            .counted
            .into_iter()
            .filter(|(_, counted)| counted.count > 0)
            .map(|((source, action), counted)| AuditRecord {
                seq: 0,
                at: counted.last,
                // A failed sign-in's name is in the first row only.
                actor: "anonymous".to_owned(),
                target: action
                    .split_once(' ')
                    .map_or("*", |(_, path)| path)
                    .to_owned(),
                action,
                outcome: counted.outcome,
                source,
                detail: Some(format!(
                    "{} more anonymous refusals of this, from {} to {}",
                    counted.count,
                    counted.first.to_rfc3339(),
                    counted.last.to_rfc3339()
                )),
            })
            .collect();
        rows.sort_by_key(|row| row.at);
        rows
    }

    /// Writes the counted refusals each minute until `stop`, then once more.
    pub async fn run(&self, db: &Database, stop: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = every.tick() => false,
            };
            for row in self.take() {
                if let Err(e) = db.audit(&row).await {
                    tracing::error!("cannot append to the audit trail: {e}");
                }
            }
            if stopping {
                return;
            }
        }
    }
}

/// How long the audit trail keeps its entries, and where those past their
/// age are exported before they are pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub archive: PathBuf,
}

impl Retention {
    /// Prunes once a day (and at start) until `stop`.
    pub async fn run(&self, db: &Database, stop: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(24 * 3600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.prune(db, Utc::now()).await {
                Ok(Some((entries, file))) => tracing::info!(
                    entries,
                    archive = %file.display(),
                    "audit entries older than {} days exported, then pruned",
                    self.days
                ),
                Ok(None) => {}
                Err(e) => tracing::error!("cannot prune the audit trail: {e:#}"),
            }
        }
    }

    /// Exports the entries older than the retention at `now` to a file in
    /// the archive folder (JSON lines, oldest first, fsynced), then prunes
    /// them: how many, and the file; `None` when none is that old.
    pub async fn prune(
        &self,
        db: &Database,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<(u64, PathBuf)>> {
        use anyhow::Context;
        use std::io::Write;
        let before = now - chrono::Duration::days(i64::from(self.days));
        let Some(up_to) = db.audit_last_before(before).await? else {
            return Ok(None);
        };
        std::fs::create_dir_all(&self.archive)
            .with_context(|| format!("cannot create {}", self.archive.display()))?;
        let file = self.archive.join(format!(
            "audit-{}-to-{up_to}.jsonl",
            before.format("%Y%m%dT%H%M%SZ")
        ));
        let partial = file.with_extension("jsonl.partial");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?,
        );
        let mut after = 0;
        let mut entries = 0u64;
        loop {
            let page = db.audit_page(after, up_to, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in page {
                let line = serde_json::to_string(&AuditEntry::from(entry))?;
                writeln!(out, "{line}")?;
                entries += 1;
            }
        }
        let out = out.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        std::fs::rename(&partial, &file)?;
        db.audit_prune(up_to, before, entries, &file.display().to_string(), now)
            .await?;
        Ok(Some((entries, file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(source: &str, action: &str, at: DateTime<Utc>) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at,
            actor: "anonymous".to_owned(),
            action: action.to_owned(),
            target: "/x".to_owned(),
            outcome: 401,
            source: source.to_owned(),
            detail: None,
        }
    }

    #[test]
    fn the_first_refusal_is_written_and_the_rest_counted_in_one_row() {
        let refusals = Refusals::default();
        let now = Utc::now();
        let first = refusals.note(refusal("192.0.2.7:5000", "GET /api/v1/servers", now));
        assert!(first.is_some(), "the first is written at once");
        for port in 0..20 {
            let again = refusals.note(refusal(
                &format!("192.0.2.7:{port}"),
                "GET /api/v1/servers",
                now,
            ));
            assert!(again.is_none());
        }
        let rows = refusals.take();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].source, "192.0.2.7");
        assert_eq!(rows[0].target, "/api/v1/servers");
        assert!(
            rows[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("20 more anonymous refusals")),
            "{rows:?}"
        );
        assert!(refusals.take().is_empty(), "a new minute");
    }

    #[test]
    fn many_sources_make_a_bounded_number_of_rows() {
        let refusals = Refusals::default();
        let now = Utc::now();
        let mut written = 0;
        for n in 0..5000u32 {
            let source = format!("10.{}.{}.{}:1", n >> 16, (n >> 8) & 255, n & 255);
            for _ in 0..3 {
                written += usize::from(refusals.note(refusal(&source, "GET /a", now)).is_some());
            }
        }
        let rows = refusals.take();
        assert_eq!(written, AT_ONCE_PER_MINUTE);
        assert!(rows.len() <= COUNTED_APART + 1, "{}", rows.len());
        let counted: u64 = rows
            .iter()
            .filter_map(|r| r.detail.as_deref()?.split(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(
            counted as usize + written,
            15_000,
            "every refusal is counted"
        );
    }
}
