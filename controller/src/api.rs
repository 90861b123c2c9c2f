//! The REST API under `/api/v1` (JSON), its OpenAPI document generated from
//! these handlers, and the server-sent event stream that keeps the dashboard
//! live. The response types here are the API's contract; domain and database
//! types are converted into them at this edge.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
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

use crate::db::ServerRecord;
use crate::fleet::{Fleet, FleetEvent};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub fleet: Arc<Fleet>,
    /// Cancelled at shutdown: ends the event streams.
    pub shutdown: CancellationToken,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flotilla controller API",
        description = "The fleet of customer sites, their servers and the modules each server hosts."
    ),
    tags((name = "fleet", description = "Sites, servers and modules"))
)]
struct ApiDoc;

/// The `/api/v1` routes, and the OpenAPI document describing them.
pub fn router(state: ApiState) -> axum::Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_sites))
        .routes(routes!(list_servers))
        .routes(routes!(get_server))
        .split_for_parts();
    let openapi = Arc::new(openapi);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route("/api/v1/events", axum::routing::get(events))
        .with_state(state)
}

/// An API error: a status and a message a user can act on. Internal causes are
/// logged, never sent.
#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code: `not_found`, `internal`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
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
#[utoipa::path(get, path = "/api/v1/sites", tag = "fleet",
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
struct ServersQuery {
    /// Only the servers of this site.
    site: Option<String>,
}

/// List the servers with their modules.
#[utoipa::path(get, path = "/api/v1/servers", tag = "fleet", params(ServersQuery),
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
#[utoipa::path(get, path = "/api/v1/servers/{id}", tag = "fleet",
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
