//! The audit trail over REST: read it with filters, or export it as JSON
//! lines, streamed a page at a time. It is written by the gate in
//! [`crate::api::gate`]; nothing here edits or deletes it (the retention in
//! [`crate::audit`] prunes entries past their age, exported first).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiError, ApiState, ErrorBody};
use crate::db::AuditFilter;

pub use crate::audit::AuditEntry;

/// Which entries to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this account or token.
    actor: Option<String>,
    /// Only actions containing this text (`rollouts`, `POST`, `session`).
    action: Option<String>,
    /// From this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Up to this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// At most this many, newest first (1 to 100000; 200 by default).
    #[param(minimum = 1, maximum = 100_000)]
    limit: Option<i64>,
}

impl AuditQuery {
    fn filter(self, default_limit: i64) -> Result<AuditFilter, ApiError> {
        let limit = self.limit.unwrap_or(default_limit);
        if !(1..=100_000).contains(&limit) {
            return Err(ApiError::BadRequest("limit: from 1 to 100000".to_owned()));
        }
        Ok(AuditFilter {
            actor: self.actor.filter(|a| !a.is_empty()),
            action: self.action.filter(|a| !a.is_empty()),
            since: self.since,
            until: self.until,
            limit,
        })
    }
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/audit", security(("token" = ["admin"]), ("session" = ["admin"])), tag = "operators",
    params(AuditQuery),
    responses(
        (status = OK, body = [AuditEntry]),
        (status = BAD_REQUEST, description = "Names the parameter at fault", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn trail(
    State(state): State<ApiState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let entries = state.fleet.db.audit_trail(&query.filter(200)?).await?;
    Ok(Json(entries.into_iter().map(AuditEntry::from).collect()))
}

/// The audit trail as JSON lines, oldest first: one entry a line.
#[utoipa::path(get, path = "/api/v1/audit/export", security(("token" = ["admin"]), ("session" = ["admin"])), tag = "operators",
    params(AuditQuery),
    responses(
        (status = OK, description = "One JSON entry a line", content_type = "application/x-ndjson", body = String),
        (status = BAD_REQUEST, description = "Names the parameter at fault", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn export(
    State(state): State<ApiState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let filter = query.filter(100_000)?;
    let db = state.fleet.db.clone();
    let start = db.audit_export_start(&filter).await?;
    // A page of entries at a time, however long the trail: (the entry
    // after which the next page starts, how many are left to send).
    let pages = futures_util::stream::try_unfold(
        (db, filter, Some(start), 0i64),
        |(db, filter, after, sent)| async move {
            let Some(after) = after.filter(|_| sent < filter.limit) else {
                return Ok(None);
            };
            let page = EXPORT_PAGE.min(filter.limit - sent);
            let entries = db.audit_after(&filter, after, page).await?;
            let next = entries.last().map(|e| e.seq);
            let count = entries.len() as i64;
            let mut lines = String::new();
            for entry in entries {
                let line = serde_json::to_string(&AuditEntry::from(entry))
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                lines.push_str(&line);
                lines.push('\n');
            }
            let next = next.filter(|_| count == page);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Some((
                lines,
                (db, filter, next, sent + count),
            )))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

/// Entries read from the database at a time for an export.
const EXPORT_PAGE: i64 = 1000;
