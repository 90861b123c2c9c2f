//! A server's self-diagnosis over REST: the controller asks the connected
//! agent to run its doctor and answers with the report.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use flotilla_proto::doctor;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState, ErrorBody};

/// A doctor's report: each check OK, WARN or FAIL, with its fix.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoctorReport {
    pub server: String,
    pub at: Option<DateTime<Utc>>,
    /// The worst result: `ok`, `warn` or `fail`.
    pub worst: CheckStatus,
    pub checks: Vec<DoctorCheck>,
}

/// One check's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct DoctorCheck {
    /// `service`, `portal`, `controller`, `applications`, `folders`,
    /// `status`, `hooks`, `leftovers`, `holders`, `disk`, `journal`,
    /// `database`.
    pub check: String,
    pub status: CheckStatus,
    /// What it looked at: a file, a folder, an address, a module.
    pub subject: String,
    pub finding: String,
    /// How to fix it, in plain words; empty when there is nothing to fix.
    pub fix: String,
    /// Whether it can make an install fail: what a rollout's preflight
    /// looks at.
    pub blocks_install: bool,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

impl From<doctor::Status> for CheckStatus {
    fn from(s: doctor::Status) -> Self {
        match s {
            doctor::Status::Ok => CheckStatus::Ok,
            doctor::Status::Warn => CheckStatus::Warn,
            doctor::Status::Fail => CheckStatus::Fail,
        }
    }
}

impl From<doctor::Report> for DoctorReport {
    fn from(r: doctor::Report) -> Self {
        DoctorReport {
            worst: r.worst().into(),
            server: r.server,
            at: r.at,
            checks: r
                .checks
                .into_iter()
                .map(|c| DoctorCheck {
                    check: c.check,
                    status: c.status.into(),
                    subject: c.subject,
                    finding: c.finding,
                    fix: c.fix,
                    blocks_install: c.blocks_install,
                })
                .collect(),
        }
    }
}

/// Run the server's doctor now, through its agent: the service, the
/// portal, the link, applicationspath.config against the disk, the
/// folders' rights, status.xml, hooks, leftovers, holders, disk space, an
/// interrupted install, the databases. Takes up to two minutes.
#[utoipa::path(get, path = "/api/v1/servers/{id}/doctor", security(("token" = ["viewer"]), ("session" = ["viewer"])), tag = "fleet",
    params(("id" = String, Path, description = "The server id")),
    responses(
        (status = OK, description = "The report", body = DoctorReport),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
        (status = CONFLICT, description = "The server is offline", body = ErrorBody),
        (status = GATEWAY_TIMEOUT, description = "The agent did not answer", body = ErrorBody),
    ))]
pub async fn doctor(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<DoctorReport>, ApiError> {
    if state.fleet.db.server(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "no server with id \"{id}\" has ever connected"
        )));
    }
    Ok(Json(state.fleet.ask_doctor(&id, None).await?.into()))
}
