//! The portal's JSON API, for the command line and scripts on the server:
//! installs and restores (`/api/modules/{module}/install`, `…/rollback`)
//! and their progress, the doctor's report, and a database module's guided
//! upgrade. The guard admits only JSON from no other origin.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::history::kind_name;
use crate::installs::{self, StartError};
use crate::state::Agent;

/// The API's routes, under `/api/`.
pub(super) fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route(
            "/api/modules/{module}/install",
            post(install_api).get(install_status),
        )
        .route("/api/modules/{module}/rollback", post(rollback_api))
        .route("/api/modules/{module}/database", get(database_api))
        .route("/api/modules/{module}/database/discard", get(discard_api))
        .route(
            "/api/modules/{module}/database/scripts/{script}/run",
            post(run_script_api),
        )
        .route(
            "/api/modules/{module}/database/scripts/{script}/mark-applied",
            post(mark_applied_api),
        )
        .route("/api/doctor", get(doctor_api))
        .route("/api/links", post(new_link))
}

/// A one-time link that signs a browser in (`flotilla-agent portal-link`):
/// for the local token only, never a browser's session.
async fn new_link(State(agent): State<Arc<Agent>>, headers: axum::http::HeaderMap) -> Response {
    if !agent.local.bearer(&headers) {
        let body = serde_json::json!({"error": "refused", "message": "a sign-in link is made with the local token only"});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let code = agent.local.new_link();
    let mut address = agent.portal_address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let link = format!("http://{address}/login?code={code}");
    Json(serde_json::json!({"link": link})).into_response()
}

/// Which kept backup to restore: the one named `file`, or the newest of
/// version `to`, or the newest of another version than the installed one.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RollbackRequest {
    to: Option<String>,
    /// A backup's file name, as the portal lists it (never a path).
    file: Option<String>,
    /// A database module: `keep` restores its files only and leaves the
    /// database as it is; `restore` (the default) puts it back too.
    #[serde(default)]
    database: DatabaseChoice,
}

/// What a restore does to a database module's database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DatabaseChoice {
    #[default]
    Restore,
    Keep,
}

impl RollbackRequest {
    pub(super) fn source(self) -> installs::Source {
        installs::Source::Backup {
            version: self.to,
            file: self.file,
            keep_database: self.database == DatabaseChoice::Keep,
        }
    }
}

/// `POST /api/modules/{module}/rollback`: restores a kept backup.
async fn rollback_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    body: Option<Json<RollbackRequest>>,
) -> Response {
    let source = body.map(|Json(r)| r).unwrap_or_default().source();
    started(
        &module,
        installs::start(&agent, &module, source, installs::Origin::Local),
    )
}

/// `POST /api/modules/{module}/install`: an optional package to install
/// instead of the pending one: a package in the packages folder, named by
/// its sha256 (never by a path).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    sha256: Option<String>,
}

async fn install_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    body: Option<Json<InstallRequest>>,
) -> Response {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let source = match request.sha256 {
        Some(sha256) => installs::Source::Package {
            sha256,
            allow_downgrade: false,
        },
        None => installs::Source::Pending,
    };
    started(
        &module,
        installs::start(&agent, &module, source, installs::Origin::Local),
    )
}

/// The HTTP status of a refused start.
pub(super) fn status_of(error: &StartError) -> StatusCode {
    match error {
        StartError::Busy(_)
        | StartError::Stopping
        | StartError::Held(_)
        | StartError::NotThatVersion { .. }
        | StartError::SelfUpdate(_) => StatusCode::CONFLICT,
        StartError::UnknownModule(_)
        | StartError::NothingPending(_)
        | StartError::NoBackup { .. }
        | StartError::NoSuchPackage { .. } => StatusCode::NOT_FOUND,
        StartError::NotTrusted { .. } => StatusCode::FORBIDDEN,
    }
}

/// The API's answer to a start: 202 with the version, or the refusal.
fn started(module: &str, result: Result<String, StartError>) -> Response {
    match result {
        Ok(to) => (
            StatusCode::ACCEPTED,
            Json(json!({"module": module, "to": to})),
        )
            .into_response(),
        Err(e) => (
            status_of(&e),
            Json(json!({"error": "refused", "message": e.to_string()})),
        )
            .into_response(),
    }
}

async fn install_status(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let Some(view) = agent.installs.view(&module) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": format!("no install of {module} since the agent started")})),
        )
            .into_response();
    };
    let events: Vec<serde_json::Value> = view
        .events
        .iter()
        .map(|e| {
            json!({"at": e.at, "phase": e.phase.map(|p| p.as_str()), "kind": kind_name(e.kind), "text": e.text})
        })
        .collect();
    let result = match &view.result {
        None => serde_json::Value::Null,
        Some(Ok(o)) => {
            json!({"ok": true, "from": o.from, "to": o.to, "downtime_ms": o.downtime.as_millis() as u64, "backup": o.backup, "warnings": o.warnings})
        }
        Some(Err(f)) => json!({
            "ok": false, "message": f.to_string(), "phase": f.phase.map(|p| p.as_str()), "step": f.step,
            "cause": f.cause, "hook_output": f.hook_output, "rolled_back": f.rolled_back, "rollback_error": f.rollback_error,
        }),
    };
    Json(json!({"module": view.module, "to": view.to, "started_at": view.started_at, "running": view.result.is_none(), "events": events, "result": result})).into_response()
}

/// `GET /api/doctor`: every check of [`crate::doctor`], run now.
async fn doctor_api(State(agent): State<Arc<Agent>>) -> Response {
    Json(crate::doctor::run(&agent).await).into_response()
}

/// Who acts on a guided database upgrade.
#[derive(Debug, Default, Deserialize)]
struct Actor {
    by: Option<String>,
}

fn actor(body: Option<Json<Actor>>) -> String {
    body.and_then(|Json(a)| a.by)
        .map(|b| b.trim().chars().take(100).collect::<String>())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "portal (local)".to_owned())
}

fn review_error(e: &crate::databases::ReviewError) -> Response {
    let (_, code) = e.status();
    (
        super::database_page::status_of(e),
        Json(json!({"error": code, "message": e.to_string()})),
    )
        .into_response()
}

/// `GET /api/modules/{module}/database`: the drift report and the scripts
/// of the pending database upgrade, with their state and the history.
async fn database_api(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    match crate::databases::review(&agent, &module).await {
        Ok(review) => Json(review).into_response(),
        Err(e) => review_error(&e),
    }
}

/// `GET /api/modules/{module}/database/discard?version=1.0.0`: what
/// restoring the database backup taken when `version` was upgraded would
/// throw away (the time since, and rows written per table on PostgreSQL).
async fn discard_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    axum::extract::Query(query): axum::extract::Query<DiscardQuery>,
) -> Response {
    match crate::databases::discard(&agent, &module, &query.version).await {
        Ok(discard) => Json(discard).into_response(),
        Err(e) => review_error(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct DiscardQuery {
    version: String,
}

/// `POST /api/modules/{module}/database/scripts/{script}/run`: runs one
/// script of a guided upgrade (in order) in its own transaction.
async fn run_script_api(
    State(agent): State<Arc<Agent>>,
    Path((module, script)): Path<(String, String)>,
    body: Option<Json<Actor>>,
) -> Response {
    match crate::databases::run_script(&agent, &module, &script, &actor(body)).await {
        Ok(run) => Json(run).into_response(),
        Err(e) => review_error(&e),
    }
}

/// `POST /api/modules/{module}/database/scripts/{script}/mark-applied`.
async fn mark_applied_api(
    State(agent): State<Arc<Agent>>,
    Path((module, script)): Path<(String, String)>,
    body: Option<Json<Actor>>,
) -> Response {
    match crate::databases::mark_applied(&agent, &module, &script, &actor(body)).await {
        Ok(()) => Json(json!({"script": script, "state": "marked applied"})).into_response(),
        Err(e) => review_error(&e),
    }
}
