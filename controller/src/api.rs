//! The REST API under `/api/v1` (JSON), its OpenAPI document generated from
//! these handlers, and the server-sent event stream that keeps the dashboard
//! live. The response types here are the API's contract; domain and database
//! types are converted into them at this edge.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Access, Caller, Need, Role};
use crate::db::{InstallRecord, ServerRecord};
use crate::fleet::{Fleet, FleetEvent, Order, OrderError};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub fleet: Arc<Fleet>,
    /// Where package files are stored.
    pub packages: Arc<crate::releases::PackageStore>,
    /// The rollout engine's handle.
    pub rollouts: crate::rollouts::Rollouts,
    /// Cancelled at shutdown: ends the event streams.
    pub shutdown: CancellationToken,
    /// Whether the controller serves TLS (session cookies are then `Secure`).
    pub tls: bool,
    /// The hosts packages published by URL may be fetched from.
    pub package_hosts: Arc<Vec<String>>,
    /// The hosts rollout notices may be posted to (HTTPS only).
    pub webhook_hosts: Arc<Vec<String>>,
    /// Agents' enrollment and certificates; `None` in plain text.
    pub enrollment: Option<Arc<crate::enrollment::Enrollment>>,
}

/// Every refusal is JSON ([`ErrorBody`]), including those axum's extractors
/// make in plain text (a path that is not a number, a body that is not
/// JSON, or not of the expected shape, which is a 400 like every other
/// invalid body).
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !status.is_client_error() || !plain {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let (status, error) = match status {
        StatusCode::UNPROCESSABLE_ENTITY => (StatusCode::BAD_REQUEST, "bad_request"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported_media_type"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "too_large"),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        _ => (status, "bad_request"),
    };
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut rewritten = (
        status,
        Json(ErrorBody {
            error,
            message: text,
        }),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        rewritten.headers_mut().entry(name).or_insert(value.clone());
    }
    rewritten
}

/// The `/api/v1` routes, and the OpenAPI document describing them.
pub fn router(state: ApiState) -> axum::Router {
    let (router, openapi) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(list_sites))
        .routes(routes!(list_servers))
        .routes(routes!(get_server))
        .routes(routes!(order_install))
        .routes(routes!(order_rollback))
        .routes(routes!(list_installs))
        .routes(routes!(get_install))
        .routes(routes!(crate::releases::upload))
        .routes(routes!(crate::releases::download))
        .routes(routes!(crate::releases::publish, crate::releases::list))
        .routes(routes!(crate::releases::get))
        .routes(routes!(crate::releases::withdraw))
        .routes(routes!(database_review))
        .routes(routes!(run_database_script))
        .routes(routes!(mark_database_script))
        .routes(routes!(
            crate::rollouts::api::create,
            crate::rollouts::api::list
        ))
        .routes(routes!(crate::rollouts::api::states))
        .routes(routes!(crate::rollouts::api::get))
        .routes(routes!(crate::rollouts::api::pause))
        .routes(routes!(crate::rollouts::api::resume))
        .routes(routes!(crate::rollouts::api::cancel))
        .routes(routes!(crate::rollouts::api::retry))
        .routes(routes!(crate::rollouts::api::exclude))
        .routes(routes!(crate::rollouts::api::rollback_site))
        .routes(routes!(
            crate::rollouts::api::put_schedule,
            crate::rollouts::api::get_schedule
        ))
        .routes(routes!(
            crate::operators::sign_in,
            crate::operators::whoami,
            crate::operators::sign_out
        ))
        .routes(routes!(
            crate::operators::list_accounts,
            crate::operators::create_account
        ))
        .routes(routes!(
            crate::operators::list_tokens,
            crate::operators::create_token
        ))
        .routes(routes!(crate::operators::revoke_token))
        .routes(routes!(crate::enrollment::create, crate::enrollment::list))
        .routes(routes!(crate::enrollment::enroll))
        .routes(routes!(crate::enrollment::revoke))
        .routes(routes!(crate::audit::trail))
        .routes(routes!(crate::audit::export))
        .split_for_parts();
    let document =
        crate::openapi::with_common_responses(serde_json::to_value(&openapi).unwrap_or_default());
    let access = Access::from_openapi(&document)
        .with(Method::GET, "/api/v1/openapi.json", Need::Public)
        .with(Method::GET, "/api/v1/events", Need::Role(Role::Viewer));
    let openapi = Arc::new(document);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/api/v1/events", axum::routing::get(events))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), access),
            crate::auth::gate,
        ))
        .route_layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// An API error: a status and a message a user can act on. Internal causes are
/// logged, never sent.
#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
    /// The request is valid but the fleet's state refuses it now.
    Conflict(String),
    /// An agent did not answer in time.
    Timeout(String),
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `not_found`, `bad_request`, `conflict`,
    /// `agent_timeout`, `internal`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

/// An order an agent could not carry out: offline or refused is a
/// conflict with the fleet's state, no answer a timeout.
impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Offline(_) | OrderError::Refused { .. } => {
                ApiError::Conflict(e.to_string())
            }
            OrderError::NoAnswer(_) => ApiError::Timeout(e.to_string()),
        }
    }
}

/// A rollout's action or creation the engine refused.
impl From<crate::rollouts::engine::ActionError> for ApiError {
    fn from(e: crate::rollouts::engine::ActionError) -> Self {
        use crate::rollouts::engine::ActionError;
        match e {
            ActionError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ActionError::Conflict(m) => ApiError::Conflict(m),
            ActionError::Database(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            ApiError::Timeout(message) => (StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message),
            ApiError::Internal(cause) => {
                tracing::error!("API request failed: {cause}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the controller could not complete the request; see its log".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error, message })).into_response()
    }
}

/// A customer site.
#[derive(Debug, Serialize, ToSchema)]
pub struct Site {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// How many servers make up the site.
    pub servers: i64,
    /// How many of them are connected now.
    pub online: i64,
}

/// A server with its modules.
#[derive(Debug, Serialize, ToSchema)]
pub struct Server {
    pub id: String,
    pub site: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub protocol_version: i64,
    /// The address the agent connected from.
    pub peer_address: Option<String>,
    /// Whether the agent is connected now.
    pub online: bool,
    pub first_seen_at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    /// When the agent was last heard from.
    pub last_seen_at: DateTime<Utc>,
    /// When an offline server went silent.
    pub went_silent_at: Option<DateTime<Utc>>,
    /// Why an offline server is offline.
    pub offline_reason: Option<String>,
    /// What the agent could not do or read, with the file and line.
    pub problems: Vec<ServerProblem>,
    pub modules: Vec<Module>,
}

/// A module installed on a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct Module {
    pub name: String,
    /// `web`, `service` or `database`.
    pub kind: String,
    pub install_path: String,
    /// `null` when the agent could not read it (`detail` says why).
    pub installed_version: Option<String>,
    /// `installed`, `missing`, `version_unknown` or `maintenance`.
    pub state: String,
    pub detail: String,
    pub updated_at: DateTime<Utc>,
    /// A newer package waiting on the server, ready to install.
    pub pending_version: Option<String>,
    /// A package download under way, or that did not succeed.
    pub download: Option<Download>,
    /// The latest install of this module on this server.
    pub last_install: Option<Install>,
}

/// Where a server's download of a module's package stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Download {
    /// `downloading`, `failed` (retried) or `refused` (failed its checks: checksum, signature).
    pub state: String,
    pub version: Option<String>,
    /// Progress, or why it failed.
    pub detail: Option<String>,
}

/// An install of a module on a server, whoever started it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Install {
    pub install_id: String,
    pub module: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
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
            hook_output: r
                .hook_output
                .map(|text| text.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            rolled_back: r.rolled_back,
            rollback_error: r.rollback_error,
            ordered_by_controller: r.command_id.is_some(),
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
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

/// Something to fix on a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerProblem {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: String,
}

impl Server {
    fn from_record(record: ServerRecord, fleet: &Fleet) -> Self {
        // A connected agent's heartbeats are fresher in memory than on disk.
        let last_seen_at = match record.online {
            true => fleet.last_seen(&record.id).unwrap_or(record.last_seen_at),
            false => record.last_seen_at,
        };
        Server {
            last_seen_at,
            problems: record
                .problems
                .into_iter()
                .map(|p| ServerProblem {
                    file: p.file,
                    line: p.line,
                    message: p.message,
                })
                .collect(),
            modules: record
                .modules
                .into_iter()
                .map(|m| Module {
                    name: m.name,
                    kind: m.kind,
                    install_path: m.install_path,
                    installed_version: m.installed_version,
                    state: m.state,
                    detail: m.detail,
                    updated_at: m.updated_at,
                    pending_version: m.pending_version,
                    download: m.download_state.map(|state| Download {
                        state,
                        version: m.download_version,
                        detail: m.download_detail,
                    }),
                    last_install: m.last_install.map(Install::from),
                })
                .collect(),
            id: record.id,
            site: record.site,
            hostname: record.hostname,
            os: record.os,
            agent_version: record.agent_version,
            protocol_version: record.protocol_version,
            peer_address: record.peer_address,
            online: record.online,
            first_seen_at: record.first_seen_at,
            connected_at: record.connected_at,
            went_silent_at: record.went_silent_at,
            offline_reason: record.offline_reason,
        }
    }
}

/// List the customer sites.
#[utoipa::path(get, path = "/api/v1/sites", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet",
    responses((status = OK, description = "Every site, by name", body = [Site])))]
async fn list_sites(State(state): State<ApiState>) -> Result<Json<Vec<Site>>, ApiError> {
    let sites = state.fleet.db.sites().await?;
    Ok(Json(
        sites
            .into_iter()
            .map(|s| Site {
                name: s.name,
                created_at: s.created_at,
                servers: s.servers,
                online: s.online,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ServersQuery {
    /// Only the servers of this site.
    site: Option<String>,
}

/// List the servers with their modules.
#[utoipa::path(get, path = "/api/v1/servers", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet", params(ServersQuery),
    responses((status = OK, description = "Every server, by site then id", body = [Server])))]
async fn list_servers(
    State(state): State<ApiState>,
    Query(query): Query<ServersQuery>,
) -> Result<Json<Vec<Server>>, ApiError> {
    let servers = state.fleet.db.servers(query.site.as_deref()).await?;
    Ok(Json(
        servers
            .into_iter()
            .map(|record| Server::from_record(record, &state.fleet))
            .collect(),
    ))
}

/// One server with its modules.
#[utoipa::path(get, path = "/api/v1/servers/{id}", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet",
    params(("id" = String, Path, description = "The server id the agent reports")),
    responses(
        (status = OK, description = "The server", body = Server),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
    ))]
async fn get_server(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Server>, ApiError> {
    match state.fleet.db.server(&id).await? {
        Some(record) => Ok(Json(Server::from_record(record, &state.fleet))),
        None => Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        ))),
    }
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
async fn order_install(
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
    ordered(
        state
            .fleet
            .order(
                &id,
                &module,
                Order::Install {
                    sha256,
                    allow_downgrade,
                    version: None,
                    planned_end: None,
                },
            )
            .await,
    )
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
async fn order_rollback(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
    body: Option<Json<RollbackOrder>>,
) -> Result<(StatusCode, Json<InstallOrdered>), ApiError> {
    if state.fleet.db.server(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        )));
    }
    not_held(&state, &id)?;
    let to = body.and_then(|Json(order)| order.to);
    ordered(
        state
            .fleet
            .order(&id, &module, Order::Rollback { to })
            .await,
    )
}

/// A server's installs, newest first.
#[utoipa::path(get, path = "/api/v1/servers/{id}/installs", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "installs",
    params(("id" = String, Path, description = "The server id")),
    responses(
        (status = OK, description = "At most the last 100", body = [Install]),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
    ))]
async fn list_installs(
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
async fn get_install(
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

/// The agent's JSON answer to a database command, with its status.
fn proxied(result: Result<(String, String), OrderError>) -> Result<Response, ApiError> {
    match result {
        Ok((_, message)) => {
            let answer: serde_json::Value =
                serde_json::from_str(&message).map_err(|e| ApiError::Internal(e.to_string()))?;
            let status = answer["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            Ok((status, Json(answer["body"].clone())).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The pending database upgrade of a module, as its server sees it now: the
/// drift from the standard schema (each object with its definition on both
/// sides), the scripts with their state, the history.
#[utoipa::path(get, path = "/api/v1/servers/{id}/modules/{module}/database", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module")),
    responses(
        (status = OK, description = "The review: standard, drift, summary, scripts, done, history"),
        (status = NOT_FOUND, description = "No database configured, or no database package pending", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline", body = ErrorBody),
        (status = BAD_GATEWAY, description = "The agent cannot read the database", body = ErrorBody),
    ))]
async fn database_review(
    State(state): State<ApiState>,
    Path((id, module)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    proxied(state.fleet.order(&id, &module, Order::DatabaseReview).await)
}

/// Run the next script of a guided upgrade on the server, in its own
/// transaction; the answer says how it ended (a failed script is rolled
/// back and can be run again). Recorded under the caller's name.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/database/scripts/{script}/run", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module"), ("script" = String, Path, description = "The script's file name")),
    responses(
        (status = OK, description = "The run: ok, duration_ms, message"),
        (status = NOT_FOUND, description = "No such script or nothing pending", body = ErrorBody),
        (status = CONFLICT, description = "Out of order, already done, locked, or the server is offline", body = ErrorBody),
    ))]
async fn run_database_script(
    State(state): State<ApiState>,
    Path((id, module, script)): Path<(String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let by = caller.name;
    proxied(
        state
            .fleet
            .order(
                &id,
                &module,
                Order::DatabaseScript {
                    script,
                    by,
                    mark_applied: false,
                },
            )
            .await,
    )
}

/// Record that the next script of a guided upgrade was applied by hand.
#[utoipa::path(post, path = "/api/v1/servers/{id}/modules/{module}/database/scripts/{script}/mark-applied", security(("token" = ["operator"]), ("session" = ["operator"])), tag = "databases",
    params(("id" = String, Path, description = "The server id"), ("module" = String, Path, description = "The database module"), ("script" = String, Path, description = "The script's file name")),
    responses(
        (status = OK, description = "Marked"),
        (status = NOT_FOUND, description = "No such script or nothing pending", body = ErrorBody),
        (status = CONFLICT, description = "Out of order, already done, locked, or the server is offline", body = ErrorBody),
    ))]
async fn mark_database_script(
    State(state): State<ApiState>,
    Path((id, module, script)): Path<(String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    let by = caller.name;
    proxied(
        state
            .fleet
            .order(
                &id,
                &module,
                Order::DatabaseScript {
                    script,
                    by,
                    mark_applied: true,
                },
            )
            .await,
    )
}

/// Server-sent events: `server` with a server's JSON each time it changes, and
/// `resync` when this stream fell behind and the client should reload all.
async fn events(
    State(state): State<ApiState>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let fleet = state.fleet.clone();
    let stream = BroadcastStream::new(state.fleet.subscribe())
        .then(move |received| {
            let fleet = fleet.clone();
            async move {
                match received {
                    Ok(FleetEvent::ServerChanged(id)) => match fleet.db.server(id.as_str()).await {
                        Ok(Some(record)) => Event::default()
                            .event("server")
                            .json_data(Server::from_record(record, &fleet))
                            .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                        _ => Event::default().event("resync").data("{}"),
                    },
                    Ok(FleetEvent::InstallProgress {
                        server,
                        install_id,
                        module,
                        phase,
                        kind,
                        text,
                    }) => Event::default()
                        .event("install")
                        .json_data(serde_json::json!({
                            "server": server.as_str(), "install_id": install_id, "module": module,
                            "phase": phase, "kind": kind, "text": text,
                        }))
                        .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
                    Ok(FleetEvent::RolloutChanged(id)) => {
                        Event::default().event("rollout").data(id.to_string())
                    }
                    Err(BroadcastStreamRecvError::Lagged(_)) => {
                        Event::default().event("resync").data("{}")
                    }
                }
            }
        })
        .map(Ok)
        .take_until(state.shutdown.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// JSON 404 for any other path under `/api/`.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such API endpoint: {}", uri.path()))
}
