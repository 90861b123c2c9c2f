//! The fleet as operators read it: sites, servers, their modules and problems.

use axum::Json;
use axum::extract::{Path, Query, RawQuery, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::installs::Install;
use super::{ApiError, ApiState, ErrorBody};
use crate::db::{Cursor, ServerFilter, ServerRecord, ServerState};
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
    /// Only servers hosting this module (with `version`: at that version).
    module: Option<String>,
    /// Only servers where a module (or `module`) is installed at this version.
    version: Option<String>,
    /// Only servers online, offline, with a module in maintenance, whose
    /// latest install of a module failed, or with an update waiting.
    state: Option<StateFilter>,
    /// Only servers with (`true`) or without (`false`) problems.
    problems: Option<bool>,
    /// A part of the server's id, host name or site (any case).
    #[param(max_length = 200)]
    q: Option<String>,
    /// At most this many servers (1 to 1000; 100 by default).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(max_length = 300)]
    after: Option<String>,
}

/// A server state to filter by.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    Online,
    Offline,
    Maintenance,
    Failed,
    UpdateAvailable,
}

impl From<StateFilter> for ServerState {
    fn from(s: StateFilter) -> Self {
        match s {
            StateFilter::Online => ServerState::Online,
            StateFilter::Offline => ServerState::Offline,
            StateFilter::Maintenance => ServerState::Maintenance,
            StateFilter::Failed => ServerState::Failed,
            StateFilter::UpdateAvailable => ServerState::UpdateAvailable,
        }
    }
}

/// The separator of a cursor's site and server id: no name holds it.
const CURSOR_SEPARATOR: char = '~';

fn parse_cursor(text: &str) -> Result<Cursor, ApiError> {
    let bad = || ApiError::BadRequest("after: not a cursor this API gave (X-Next-Cursor)".into());
    let (site, id) = text.split_once(CURSOR_SEPARATOR).ok_or_else(bad)?;
    flotilla_proto::domain::SiteName::parse(site).map_err(|_| bad())?;
    flotilla_proto::domain::ServerId::parse(id).map_err(|_| bad())?;
    Ok(Cursor {
        site: site.to_owned(),
        id: id.to_owned(),
    })
}

/// List the servers with their modules, a page at a time (by site then
/// id), filtered by site, module, version, state, problems or a search.
/// The next page: `after=<X-Next-Cursor>`, or the `Link` header's `next`.
/// `X-Total-Count` is how many servers the filters select.
#[utoipa::path(get, path = "/api/v1/servers", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet", params(ServersQuery),
    responses((status = OK, description = "A page of servers, by site then id", body = [Server],
        headers(
            ("X-Total-Count" = i64, description = "How many servers the filters select"),
            ("X-Next-Cursor" = String, description = "Where the next page starts; absent on the last page"),
            ("Link" = String, description = "The next page, rel=\"next\"; absent on the last page"),
        ))))]
pub async fn list_servers(
    State(state): State<ApiState>,
    query: Result<Query<ServersQuery>, axum::extract::rejection::QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit: from 1 to 1000".into()));
    }
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ApiError::BadRequest("q: at most 200 characters".into()));
    }
    let after = query.after.as_deref().map(parse_cursor).transpose()?;
    let filter = ServerFilter {
        site: query.site,
        module: query.module,
        version: query.version,
        state: query.state.map(ServerState::from),
        problems: query.problems,
        search: query.q.filter(|q| !q.is_empty()),
    };
    let (servers, next) = state
        .fleet
        .db
        .servers_page(&filter, after.as_ref(), limit)
        .await?;
    let total = state.fleet.db.count_servers(&filter).await?;
    let body: Vec<Server> = servers
        .into_iter()
        .map(|record| Server::from_record(record, &state.fleet))
        .collect();
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = total.to_string().parse() {
        headers.insert("x-total-count", value);
    }
    if let Some(next) = next {
        let cursor = format!("{}{CURSOR_SEPARATOR}{}", next.site, next.id);
        let kept: Vec<&str> = raw
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("after="))
            .collect();
        let mut params = kept.join("&");
        if !params.is_empty() {
            params.push('&');
        }
        let link = format!("</api/v1/servers?{params}after={cursor}>; rel=\"next\"");
        if let Ok(value) = cursor.parse() {
            headers.insert("x-next-cursor", value);
        }
        if let Ok(link) = link.parse() {
            headers.insert(axum::http::header::LINK, link);
        }
    }
    Ok(response)
}

/// The fleet at a glance: counts by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    pub sites: i64,
    pub servers: i64,
    pub online: i64,
    pub offline: i64,
    /// Servers with a module showing its maintenance page.
    pub maintenance: i64,
    /// Servers whose latest install of a module failed.
    pub failed: i64,
    /// Servers with a newer package waiting.
    pub update_available: i64,
    /// Servers with problems to fix.
    pub problems: i64,
    /// Per module, how many servers run each version, oldest first: who
    /// is still on the old version.
    pub versions: Vec<ModuleVersions>,
}

/// A module's versions across the fleet.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleVersions {
    pub module: String,
    pub versions: Vec<VersionServers>,
}

/// How many servers run a version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionServers {
    /// `null`: the version could not be read.
    pub version: Option<String>,
    pub servers: i64,
}

/// The fleet's counts by state and each module's version distribution,
/// read in SQL (not by loading the fleet).
#[utoipa::path(get, path = "/api/v1/fleet/summary", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet",
    responses((status = OK, description = "Counts and versions", body = FleetSummary)))]
pub async fn fleet_summary(State(state): State<ApiState>) -> Result<Json<FleetSummary>, ApiError> {
    let counts = state.fleet.db.fleet_counts().await?;
    let mut versions: Vec<ModuleVersions> = Vec::new();
    for row in state.fleet.db.version_counts().await? {
        let entry = VersionServers {
            version: row.version,
            servers: row.servers,
        };
        match versions.last_mut() {
            Some(last) if last.module == row.module => last.versions.push(entry),
            _ => versions.push(ModuleVersions {
                module: row.module,
                versions: vec![entry],
            }),
        }
    }
    for module in &mut versions {
        module.versions.sort_by(|a, b| {
            let parse = |v: &Option<String>| {
                v.as_deref()
                    .and_then(|v| flotilla_proto::domain::Version::parse(v).ok())
            };
            parse(&a.version).cmp(&parse(&b.version))
        });
    }
    Ok(Json(FleetSummary {
        sites: counts.sites,
        servers: counts.servers,
        online: counts.online,
        offline: counts.offline,
        maintenance: counts.maintenance,
        failed: counts.failed,
        update_available: counts.update_available,
        problems: counts.problems,
        versions,
    }))
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
