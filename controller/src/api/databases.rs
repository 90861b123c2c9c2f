//! A database module's guided upgrade on one server, through its agent:
//! the review (drift, scripts, history), running the next script, marking
//! it applied by hand, and what restoring a backup would discard. The agent answers with typed reports; these are
//! their REST shapes.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use flotilla_proto::database::{self, Review};
use flotilla_proto::link::DatabaseAnswer;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody};
use crate::auth::Caller;
use crate::fleet::Order;

/// A module's pending database upgrade as an operator reviews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseReview {
    pub module: String,
    /// `postgres` or `sqlite`.
    pub engine: String,
    pub from_version: String,
    pub to_version: String,
    pub installed_version: Option<String>,
    /// The database is the standard schema of `from_version`: the upgrade
    /// runs by itself at install.
    pub standard: bool,
    /// What differs from the standard of `from_version`.
    pub drift: Drift,
    /// One line per difference.
    pub summary: Vec<String>,
    pub scripts: Vec<Script>,
    /// Every script run or marked applied: installing the module now
    /// installs its files only.
    pub done: bool,
    pub history: Vec<HistoryLine>,
}

/// How a database differs from the standard schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drift {
    /// In the standard, not in the database.
    pub missing: Vec<SchemaObject>,
    /// In the database, not in the standard.
    pub added: Vec<SchemaObject>,
    /// In both, defined differently.
    pub modified: Vec<ModifiedObject>,
    /// Said when the standard and the database were read from different
    /// major versions of the engine.
    pub note: Option<String>,
}

/// A table, index, view, function, procedure or trigger.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaObject {
    pub kind: String,
    /// Qualified where the engine has schemas: `public.customers`.
    pub name: String,
    pub definition: String,
    /// sha256 of the definition, hex.
    pub hash: String,
}

/// An object defined differently from the standard, with both definitions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModifiedObject {
    pub kind: String,
    pub name: String,
    pub standard: String,
    pub actual: String,
    /// A table's differences one by one: each column and constraint.
    pub changes: Vec<TableChange>,
}

/// One difference inside a table.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableChange {
    /// `column` or `constraint`.
    pub kind: String,
    /// Qualified: `public.customer.loyalty_code`.
    pub name: String,
    /// `added`, `missing`, `type`, `nullability`, `default` or `definition`.
    pub change: String,
    /// What the standard has; none when added.
    pub standard: Option<String>,
    /// What this database has; none when missing.
    pub actual: Option<String>,
    /// The difference as one line: `column public.customer.loyalty_code added (text)`.
    pub text: String,
}

/// A script of the upgrade, with its state from the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct Script {
    pub name: String,
    pub sql: String,
    pub checksum: String,
    /// Whether it runs in a transaction (rolled back whole if it fails).
    pub transactional: bool,
    /// `pending`, `succeeded`, `failed` (may be run again), `marked applied`.
    pub state: String,
    pub message: Option<String>,
    pub by: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// A row of the database's history table.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryLine {
    pub module: String,
    /// The version the script upgrades to.
    pub version: String,
    pub script: String,
    pub checksum: String,
    /// `flotilla (automatic)`, or the operator.
    pub applied_by: String,
    pub applied_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `succeeded`, `failed`, `marked applied`, `restored`.
    pub outcome: String,
    pub message: String,
}

/// What running a script did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptRun {
    pub script: String,
    pub ok: bool,
    pub duration_ms: i64,
    /// Rows affected, or the error with its line.
    pub message: String,
}

/// A script marked applied by hand.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScriptMarked {
    pub script: String,
    /// `marked applied`.
    pub state: String,
}

fn object(o: database::Object) -> SchemaObject {
    SchemaObject {
        kind: o.kind,
        name: o.name,
        definition: o.definition,
        hash: o.hash,
    }
}

impl From<Review> for DatabaseReview {
    fn from(r: Review) -> Self {
        DatabaseReview {
            module: r.module,
            engine: r.engine,
            from_version: r.from_version,
            to_version: r.to_version,
            installed_version: r.installed_version,
            standard: r.standard,
            drift: Drift {
                missing: r.drift.missing.into_iter().map(object).collect(),
                added: r.drift.added.into_iter().map(object).collect(),
                modified: r
                    .drift
                    .modified
                    .into_iter()
                    .map(|m| ModifiedObject {
                        kind: m.kind,
                        name: m.name,
                        standard: m.standard,
                        actual: m.actual,
                        changes: m
                            .changes
                            .into_iter()
                            .map(|c| TableChange {
                                text: c.line(),
                                kind: c.kind,
                                name: c.name,
                                change: c.change,
                                standard: c.standard,
                                actual: c.actual,
                            })
                            .collect(),
                    })
                    .collect(),
                note: r.drift.note,
            },
            summary: r.summary,
            scripts: r
                .scripts
                .into_iter()
                .map(|s| Script {
                    name: s.name,
                    sql: s.sql,
                    checksum: s.checksum,
                    transactional: s.transactional,
                    state: s.state,
                    message: s.message,
                    by: s.by,
                    at: s.at,
                })
                .collect(),
            done: r.done,
            history: r
                .history
                .into_iter()
                .map(|h| HistoryLine {
                    module: h.module,
                    version: h.version,
                    script: h.script,
                    checksum: h.checksum,
                    applied_by: h.applied_by,
                    applied_at: h.applied_at,
                    duration_ms: h.duration_ms,
                    outcome: h.outcome,
                    message: h.message,
                })
                .collect(),
        }
    }
}

/// An agent's refusal, with the status its portal answers with.
fn refused(status: u16, message: String) -> ApiError {
    match status {
        404 => ApiError::NotFound(message),
        409 => ApiError::Conflict(message),
        _ => ApiError::Database(message),
    }
}

/// An answer that is not what the command asks for.
fn unexpected(answer: &DatabaseAnswer) -> ApiError {
    ApiError::Internal(format!("the agent answered something else: {answer:?}"))
}

/// The pending database upgrade of a module, as its server sees it now: the
/// drift from the standard schema (each object with its definition on both
/// sides), the scripts with their state, the history.
#[utoipa::path(get, path = "/api/v1/servers/{id}/modules/{module}/database", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module")),
    responses(
        (status = OK, description = "The review: standard, drift, summary, scripts, done, history", body = DatabaseReview),
        (status = NOT_FOUND, description = "No database configured, or no database package pending", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The agent cannot read the database", body = ErrorBody),
    ))]
pub async fn database_review(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
) -> Result<Json<DatabaseReview>, ApiError> {
    match state
        .fleet
        .ask_database(&id, &module, Order::DatabaseReview)
        .await?
    {
        DatabaseAnswer::Review(review) => Ok(Json((*review).into())),
        DatabaseAnswer::Refused {
            status, message, ..
        } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Which backup a restore would use: the one taken when the module's
/// database was upgraded from `version`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiscardQuery {
    /// The version the database was upgraded from (`1.0.0`).
    version: String,
}

/// What restoring a database backup would throw away.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseDiscard {
    /// The backup a restore would use.
    pub backup: String,
    /// When it was taken: what was written since would be lost.
    pub taken_at: Option<DateTime<Utc>>,
    /// Tables written since, with the rows inserted, updated and deleted.
    pub tables: Vec<TableWrites>,
    /// Whether the engine counts writes (PostgreSQL does, SQLite does not).
    pub counted: bool,
    /// The server's statistics were reset since: the counts are a floor.
    pub counters_reset: bool,
}

impl From<database::Discard> for DatabaseDiscard {
    fn from(d: database::Discard) -> Self {
        DatabaseDiscard {
            backup: d.backup,
            taken_at: d.taken_at,
            tables: d
                .tables
                .into_iter()
                .map(|t| TableWrites {
                    table: t.table,
                    inserted: t.inserted,
                    updated: t.updated,
                    deleted: t.deleted,
                })
                .collect(),
            counted: d.counted,
            counters_reset: d.counters_reset,
        }
    }
}

/// One table's writes since a backup.
#[derive(Debug, Serialize, ToSchema)]
pub struct TableWrites {
    /// Qualified: `public.customers`.
    pub table: String,
    pub inserted: i64,
    pub updated: i64,
    pub deleted: i64,
}

/// What restoring the database backup taken when the module's database was
/// upgraded from `version` would throw away: when it was taken and, on
/// PostgreSQL, the rows inserted, updated and deleted per table since.
/// Read before choosing to restore a database.
#[utoipa::path(get, path = "/api/v1/servers/{id}/modules/{module}/database/discard", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module"), DiscardQuery),
    responses(
        (status = OK, description = "The writes a restore would discard", body = DatabaseDiscard),
        (status = BAD_REQUEST, description = "No version given", body = ErrorBody),
        (status = NOT_FOUND, description = "No backup of that version is kept, or no database configured", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The agent cannot read the database", body = ErrorBody),
        (status = GATEWAY_TIMEOUT, description = "The agent did not answer", body = ErrorBody),
    ))]
pub async fn database_discard(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
    query: Result<Query<DiscardQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DatabaseDiscard>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let order = Order::DatabaseDiscard {
        version: query.version,
    };
    match state.fleet.ask_database(&id, &module, order).await? {
        DatabaseAnswer::Discard(d) => Ok(Json(d.into())),
        DatabaseAnswer::Refused {
            status, message, ..
        } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Which backup to restore a database from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseRestoreOrder {
    /// The version the database was upgraded from (`1.0.0`); the module's
    /// files must already be back at it.
    pub version: String,
}

/// Restore a module's database alone from the backup taken when it was
/// upgraded from `version` (its files already back at that version, say
/// after a restore that kept the database). What was written since is
/// lost: the answer says what was discarded, table by table, and the
/// decision is in the audit trail under the caller's name.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/database/restore", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module")),
    request_body = DatabaseRestoreOrder,
    responses(
        (status = OK, description = "Restored; what the restore discarded", body = DatabaseDiscard),
        (status = BAD_REQUEST, description = "No version given", body = ErrorBody),
        (status = NOT_FOUND, description = "No backup of that version is kept", body = ErrorBody),
        (status = CONFLICT, description = "The files are not at that version, an install runs, or the server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The restore failed", body = ErrorBody),
        (status = GATEWAY_TIMEOUT, description = "The agent did not answer", body = ErrorBody),
    ))]
pub async fn restore_database(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<DatabaseRestoreOrder>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Json(order) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let order = Order::DatabaseRestore {
        version: order.version,
        by: caller.name,
    };
    match state.fleet.ask_database(&id, &module, order).await? {
        DatabaseAnswer::Restored(d) => {
            let detail = super::gate::AuditDetail(format!("restored; discarded {}", d.summary()));
            let mut response = Json(DatabaseDiscard::from(d)).into_response();
            response.extensions_mut().insert(detail);
            Ok(response)
        }
        DatabaseAnswer::Refused {
            status, message, ..
        } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Run the next script of a guided upgrade on the server, in its own
/// transaction; the answer says how it ended (a failed script is rolled
/// back and can be run again). Recorded under the caller's name.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/database/scripts/{script}/run", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module"), ("script" = String, Path, description = "The script's file name")),
    responses(
        (status = OK, description = "The run: ok, duration_ms, message", body = ScriptRun),
        (status = NOT_FOUND, description = "No such script or nothing pending", body = ErrorBody),
        (status = CONFLICT, description = "Out of order, already done, locked, or the server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The agent cannot reach the database", body = ErrorBody),
    ))]
pub async fn run_database_script(
    State(state): State<ApiState>,
    Path((id, module, script)): Path<(String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<ScriptRun>, ApiError> {
    let order = Order::DatabaseScript {
        script,
        by: caller.name,
        mark_applied: false,
    };
    match state.fleet.ask_database(&id, &module, order).await? {
        DatabaseAnswer::Run(run) => Ok(Json(ScriptRun {
            script: run.script,
            ok: run.ok,
            duration_ms: run.duration_ms,
            message: run.message,
        })),
        DatabaseAnswer::Refused {
            status, message, ..
        } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Record that the next script of a guided upgrade was applied by hand.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/database/scripts/{script}/mark-applied", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module"), ("script" = String, Path, description = "The script's file name")),
    responses(
        (status = OK, description = "Marked", body = ScriptMarked),
        (status = NOT_FOUND, description = "No such script or nothing pending", body = ErrorBody),
        (status = CONFLICT, description = "Out of order, already done, locked, or the server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The agent cannot reach the database", body = ErrorBody),
    ))]
pub async fn mark_database_script(
    State(state): State<ApiState>,
    Path((id, module, script)): Path<(String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<ScriptMarked>, ApiError> {
    let order = Order::DatabaseScript {
        script,
        by: caller.name,
        mark_applied: true,
    };
    match state.fleet.ask_database(&id, &module, order).await? {
        DatabaseAnswer::Marked { script } => Ok(Json(ScriptMarked {
            script,
            state: "marked applied".to_owned(),
        })),
        DatabaseAnswer::Refused {
            status, message, ..
        } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}
