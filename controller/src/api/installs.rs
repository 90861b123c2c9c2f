//! One-off installs and restores ordered on a server, and its installs' history.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};
use crate::db::InstallRecord;
use crate::fleet::{Order, OrderError};
use crate::states::InstallState;

/// An install of a module on a server, whoever started it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Install {
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub state: InstallState,
    /// The phase under way, or the phase that failed.
    pub phase: Option<String>,
    /// The result for a person: what failed, where, the rollback.
    pub message: Option<String>,
    /// How long the module was out of service.
    pub downtime_ms: Option<i64>,
    /// What the failing hook wrote to stderr.
    pub hook_output: Vec<String>,
    pub rolled_back: bool,
    /// Set when the rollback failed: the module is out of service.
    pub rollback_error: Option<String>,
    /// What went wrong after the new version was in place: a backup that
    /// could not be written, and where the old version is.
    pub warnings: Vec<String>,
    /// Whether the controller ordered it (otherwise it was started on the server).
    pub ordered_by_controller: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An install with its progress, line by line.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallDetail {
    #[serde(flatten)]
    pub install: Install,
    pub events: Vec<InstallEvent>,
}

/// One line of an install's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallEvent {
    pub at: DateTime<Utc>,
    pub phase: Option<String>,
    /// `phase`, `step`, `stdout`, `stderr` or `warning`.
    pub kind: String,
    pub text: String,
}

impl From<InstallRecord> for Install {
    fn from(r: InstallRecord) -> Self {
        Install {
            install_id: r.install_id,
            module: r.module,
            from_version: r.from_version,
            to_version: r.to_version,
            state: r.state,
            phase: r.phase,
            message: r.message,
            downtime_ms: r.downtime_ms,
            hook_output: lines(r.hook_output),
            rolled_back: r.rolled_back,
            rollback_error: r.rollback_error,
            warnings: lines(r.warnings),
            ordered_by_controller: r.command_id.is_some(),
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}

/// A stored column of lines, one per line.
fn lines(text: Option<String>) -> Vec<String> {
    text.map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// What to install; empty for the module's pending package.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallOrder {
    /// One of the server's packages, by its sha256 (never a path); it must
    /// carry a signature the agent trusts.
    pub sha256: Option<String>,
    /// Allow installing an older version than the installed one.
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// The agent accepted the install.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallOrdered {
    pub command_id: String,
    /// What the agent said.
    pub message: String,
}

/// Order a connected server to install a module: its pending package, or
/// one of its packages by sha256.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/install", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "installs",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The module")),
    request_body(content = Option<InstallOrder>, description = "Empty for the pending package"),
    responses(
        (status = ACCEPTED, description = "The agent started the install", body = InstallOrdered),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline, a rollout holds it, or its agent refused (busy, nothing pending, unknown module)", body = ErrorBody),
        (status = GATEWAY_TIMEOUT, description = "The agent did not answer", body = ErrorBody),
    ))]
pub async fn order_install(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
    body: Option<Json<InstallOrder>>,
) -> Result<(StatusCode, Json<InstallOrdered>), ApiError> {
    if state.fleet.db.server(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        )));
    }
    not_held(&state, &id)?;
    let order = body.map(|Json(order)| order).unwrap_or_default();
    let sha256 = match order.sha256 {
        Some(sha) if sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(sha.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "sha256: 64 hexadecimal digits, naming one of the server's packages".into(),
            ));
        }
        None => None,
    };
    let allow_downgrade = order.allow_downgrade;
    let result = state
        .fleet
        .order(
            &id,
            &module,
            Order::Install {
                sha256,
                allow_downgrade,
                version: None,
                planned_end: None,
                agent_update_budget_seconds: None,
            },
        )
        .await;
    // A customized database: refused before anything starts, with where
    // to review it.
    if let Err(e @ OrderError::Refused { message, .. }) = &result
        && message.contains("is customized")
    {
        return Err(ApiError::Conflict(format!(
            "{e}; review it: /database.html?server={id}&module={module} (GET /api/v1/servers/{id}/modules/{module}/database)"
        )));
    }
    ordered(result)
}

/// Refuses a one-off order on a server a rollout holds: the rollout owns
/// its installs until it ends.
fn not_held(state: &ApiState, server: &str) -> Result<(), ApiError> {
    let held = flotilla_proto::domain::ServerId::parse(server)
        .ok()
        .and_then(|id| state.fleet.hold_of(&id));
    match held {
        Some(rollout) => Err(ApiError::Conflict(format!(
            "server {server} is part of {rollout}; pause or cancel it, or exclude the server, before ordering installs by hand"
        ))),
        None => Ok(()),
    }
}

fn ordered(
    result: Result<(String, String), OrderError>,
) -> Result<(StatusCode, Json<InstallOrdered>), ApiError> {
    match result {
        Ok((command_id, message)) => Ok((
            StatusCode::ACCEPTED,
            Json(InstallOrdered {
                command_id,
                message,
            }),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Which kept version to restore.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RollbackOrder {
    /// The version; the newest kept version other than the installed one when absent.
    pub to: Option<String>,
    /// A database module: `restore` (the default) puts its database back as
    /// the backup taken when that version was upgraded; `keep` restores the
    /// files only and leaves the database at its version.
    #[serde(default)]
    pub database: DatabaseChoice,
}

/// What a restore does to a database module's database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseChoice {
    #[default]
    Restore,
    Keep,
}

/// Order a connected server to restore a kept backup of a module. It runs
/// as an install of the earlier version, with the same phases and hooks.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/rollback", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "installs",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The module")),
    request_body(content = Option<RollbackOrder>, description = "Empty for the newest earlier version"),
    responses(
        (status = ACCEPTED, description = "The agent started the restore", body = InstallOrdered),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline, a rollout holds it, or its agent refused (busy, no such backup)", body = ErrorBody),
        (status = GATEWAY_TIMEOUT, description = "The agent did not answer", body = ErrorBody),
    ))]
pub async fn order_rollback(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
    body: Option<Json<RollbackOrder>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Some(server) = state.fleet.db.server(&id).await? else {
        return Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        )));
    };
    not_held(&state, &id)?;
    let order = body.map(|Json(order)| order).unwrap_or_default();
    let database = server.modules.iter().any(|m| {
        m.name == module && m.kind == flotilla_proto::domain::ModuleKind::Database.as_str()
    });
    // For the audit trail: what restoring the database would discard, read
    // just before (the install's record has what it did discard).
    let discard = match &order.to {
        _ if !database || order.database == DatabaseChoice::Keep => None,
        Some(to) => {
            let preview = Order::DatabaseDiscard {
                version: to.clone(),
            };
            Some(match state.fleet.ask_database(&id, &module, preview).await {
                Ok(flotilla_proto::link::DatabaseAnswer::Discard(d)) => d.summary(),
                Ok(flotilla_proto::link::DatabaseAnswer::Refused { message, .. }) => {
                    format!("what was written since its backup, if one is kept ({message})")
                }
                Ok(_) => "what was written since its backup (not counted)".to_owned(),
                Err(e) => format!("what was written since its backup (not counted: {e})"),
            })
        }
        None => Some(
            "what was written since the backup of the version it goes back to (the install's record counts it)"
                .to_owned(),
        ),
    };
    let result = state
        .fleet
        .order(
            &id,
            &module,
            Order::Rollback {
                to: order.to,
                keep_database: order.database == DatabaseChoice::Keep,
            },
        )
        .await;
    let mut response = ordered(result)?.into_response();
    if let Some(discard) = discard {
        response
            .extensions_mut()
            .insert(super::gate::AuditDetail(format!(
                "restores the database too, discarding {discard}"
            )));
    }
    Ok(response)
}

/// A server's installs, newest first.
#[utoipa::path(get, path = "/api/v1/servers/{id}/installs", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "installs",
    params(("id" = String, Path, description = "The server id")),
    responses(
        (status = OK, description = "At most the last 100", body = [Install]),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
    ))]
pub async fn list_installs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Install>>, ApiError> {
    if state.fleet.db.server(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        )));
    }
    Ok(Json(
        state
            .fleet
            .db
            .installs(&id)
            .await?
            .into_iter()
            .map(Install::from)
            .collect(),
    ))
}

/// One install with its progress lines (phases, steps, hook output).
#[utoipa::path(get, path = "/api/v1/servers/{id}/installs/{install_id}", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "installs",
    params(("id" = String, Path, description = "The server id"), ("install_id" = String, Path, description = "The install")),
    responses(
        (status = OK, description = "The install", body = InstallDetail),
        (status = NOT_FOUND, description = "No such install", body = ErrorBody),
    ))]
pub async fn get_install(
    State(state): State<ApiState>,
    Path((id, install_id)): Path<(String, String)>,
) -> Result<Json<InstallDetail>, ApiError> {
    let Some((install, events)) = state.fleet.db.install(&id, &install_id).await? else {
        return Err(ApiError::NotFound(format!(
            "no install \"{install_id}\" on server \"{id}\""
        )));
    };
    Ok(Json(InstallDetail {
        install: install.into(),
        events: events
            .into_iter()
            .map(|e| InstallEvent {
                at: e.at,
                phase: e.phase,
                kind: e.kind,
                text: e.text,
            })
            .collect(),
    }))
}
