//! The fleet as operators read it: sites, servers, their modules and problems.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::installs::Install;
use super::{ApiError, ApiState, ErrorBody};
use crate::db::ServerRecord;
use crate::fleet::Fleet;

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

/// Something to fix on a server.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerProblem {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub message: String,
}

impl Server {
    pub fn from_record(record: ServerRecord, fleet: &Fleet) -> Self {
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
pub async fn list_sites(State(state): State<ApiState>) -> Result<Json<Vec<Site>>, ApiError> {
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
pub struct ServersQuery {
    /// Only the servers of this site.
    site: Option<String>,
}

/// List the servers with their modules.
#[utoipa::path(get, path = "/api/v1/servers", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet", params(ServersQuery),
    responses((status = OK, description = "Every server, by site then id", body = [Server])))]
pub async fn list_servers(
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
pub async fn get_server(
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
