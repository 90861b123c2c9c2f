//! The REST API under `/api/v1` (JSON), its OpenAPI document generated from
//! the handlers, and the server-sent event stream that keeps the dashboard
//! live. The response types are the API's contract; domain and database
//! types are converted into them at this edge. One file per area:
//!
//! - [`gate`]: authentication, authorization and the audit trail, in front
//!   of every route.
//! - [`servers`]: sites, servers and modules; [`installs`]: one-off
//!   installs and restores; [`databases`]: a database module's guided
//!   upgrade; [`events`]: the live stream.
//! - [`releases`], [`rollouts`], [`enrollment`], [`operators`], [`audit`].
//!
//! Nothing outside this folder depends on it: errors of the domain modules
//! become [`ApiError`] here, through `From`.

pub mod accounts;
pub mod audit;
pub mod databases;
pub mod doctor;
pub mod enrollment;
pub mod events;
pub mod gate;
pub mod installs;
pub mod operators;
pub mod releases;
pub mod rollouts;
pub mod servers;

use std::sync::Arc;

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Access, Need, Role};
use crate::fleet::{Fleet, OrderError};

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
    /// Anonymous refusals, counted for the audit trail.
    pub refusals: Arc<crate::audit::Refusals>,
    /// Failed sign-ins, per account and per source.
    pub throttle: Arc<crate::throttle::Throttle>,
    /// The file holding the first admin's password, removed once it is
    /// changed.
    pub initial_password: Option<Arc<std::path::PathBuf>>,
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
        .routes(routes!(servers::list_sites))
        .routes(routes!(servers::list_servers))
        .routes(routes!(servers::get_server))
        .routes(routes!(servers::fleet_summary))
        .routes(routes!(doctor::doctor))
        .routes(routes!(installs::order_install))
        .routes(routes!(installs::order_rollback))
        .routes(routes!(installs::list_installs))
        .routes(routes!(installs::get_install))
        .routes(routes!(releases::upload))
        .routes(routes!(releases::download))
        .routes(routes!(releases::publish, releases::list))
        .routes(routes!(releases::get))
        .routes(routes!(releases::withdraw))
        .routes(routes!(databases::database_review))
        .routes(routes!(databases::database_discard))
        .routes(routes!(databases::restore_database))
        .routes(routes!(databases::run_database_script))
        .routes(routes!(databases::mark_database_script))
        .routes(routes!(rollouts::create, rollouts::list))
        .routes(routes!(rollouts::states))
        .routes(routes!(rollouts::get))
        .routes(routes!(rollouts::pause))
        .routes(routes!(rollouts::resume))
        .routes(routes!(rollouts::cancel))
        .routes(routes!(rollouts::retry))
        .routes(routes!(rollouts::exclude))
        .routes(routes!(rollouts::rollback_site))
        .routes(routes!(rollouts::decide_database))
        .routes(routes!(rollouts::override_preflight))
        .routes(routes!(rollouts::put_schedule, rollouts::get_schedule))
        .routes(routes!(
            operators::sign_in,
            operators::whoami,
            operators::sign_out
        ))
        .routes(routes!(operators::list_accounts, operators::create_account))
        .routes(routes!(accounts::change_account, accounts::delete_account))
        .routes(routes!(accounts::reset_password))
        .routes(routes!(accounts::change_own_password))
        .routes(routes!(operators::list_tokens, operators::create_token))
        .routes(routes!(operators::revoke_token))
        .routes(routes!(enrollment::create, enrollment::list))
        .routes(routes!(enrollment::enroll))
        .routes(routes!(enrollment::revoke))
        .routes(routes!(audit::trail))
        .routes(routes!(audit::export))
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
        .route("/api/v1/events", axum::routing::get(events::events))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), access),
            gate::gate,
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
    /// The caller may not do this (a wrong current password).
    Forbidden(String),
    /// Too many tries: wait.
    TooMany(String),
    /// An agent did not answer in time.
    Timeout(String),
    /// The database behind an agent could not be read or changed.
    Database(String),
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `not_found`, `bad_request`, `conflict`,
    /// `agent_timeout`, `database`, `internal`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

/// An order an agent could not carry out: offline or refused is a
/// conflict with the fleet's state, no answer a timeout, nothing to act on
/// not found.
impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::Offline(_) | OrderError::Refused { .. } => {
                ApiError::Conflict(e.to_string())
            }
            OrderError::NoAnswer(_) => ApiError::Timeout(e.to_string()),
            OrderError::NotFound { .. } => ApiError::NotFound(e.to_string()),
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
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::TooMany(message) => (StatusCode::TOO_MANY_REQUESTS, "too_many", message),
            ApiError::Timeout(message) => (StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message),
            ApiError::Database(message) => (StatusCode::BAD_GATEWAY, "database", message),
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

/// JSON 404 for any other path under `/api/`.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such API endpoint: {}", uri.path()))
}
