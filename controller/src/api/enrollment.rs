//! Enrolling agents over REST: one-time tokens (admins), the enrollment
//! itself (the agent, with its token), and revoking a server.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use flotilla_proto::domain::{ServerId, SiteName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::gate::{AuditActor, refuse};
use super::{ApiError, ApiState, ErrorBody};
use crate::auth::{Caller, digest, random_secret};
use crate::db::TokenRefusal;
use crate::enrollment::{DEFAULT_TOKEN_MINUTES, Enrollment, MAX_TOKEN_MINUTES};
use crate::tls::IssueError;
use flotilla_proto::tls::AgentIdentity;

fn enrollment_of(state: &ApiState) -> Result<&Arc<Enrollment>, ApiError> {
    state.enrollment.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "the controller runs with --insecure-plaintext: agents are not enrolled, they say who they are"
                .to_owned(),
        )
    })
}

/// A request for an enrollment token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollment {
    /// The server id the agent will have.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub server: String,
    /// Its customer site.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub site: String,
    /// How long the token may be used: 1 to 10080 minutes (a week); 60 by default.
    #[schema(minimum = 1, maximum = 10080)]
    pub expires_in_minutes: Option<i64>,
}

/// An enrollment token, as listed (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentToken {
    pub id: i64,
    pub server: String,
    pub site: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When an agent used it; a token is used once.
    pub used_at: Option<DateTime<Utc>>,
    /// From which address.
    pub used_from: Option<String>,
}

/// A new enrollment token: its secret, shown once, and what to run.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollment {
    #[serde(flatten)]
    pub enrollment: EnrollmentToken,
    /// The one-time secret.
    pub token: String,
    /// The fingerprint of the CA the agent must trust, to give
    /// `flotilla-agent enroll --ca-fingerprint`.
    pub ca_fingerprint: String,
    /// The command to run on the server (Linux). It asks for the token,
    /// pasted at its prompt (or piped in, or in FLOTILLA_ENROLLMENT_TOKEN):
    /// the token is never on a command line, where `ps` and the shell's
    /// history would keep it.
    pub command: String,
    /// The same in PowerShell, for Windows.
    pub windows_command: String,
}

/// Create a one-time enrollment token for one server of one site.
#[utoipa::path(post, path = "/api/v1/enrollments", tag = "fleet", request_body = NewEnrollment,
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = CREATED, body = CreatedEnrollment),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = CONFLICT, description = "The controller runs in plain text", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<NewEnrollment>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedEnrollment>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let enrollment = enrollment_of(&state)?;
    let server =
        ServerId::parse(&new.server).map_err(|e| ApiError::BadRequest(format!("server: {e}")))?;
    let site =
        SiteName::parse(&new.site).map_err(|e| ApiError::BadRequest(format!("site: {e}")))?;
    let minutes = new.expires_in_minutes.unwrap_or(DEFAULT_TOKEN_MINUTES);
    if !(1..=MAX_TOKEN_MINUTES).contains(&minutes) {
        return Err(ApiError::BadRequest(format!(
            "expires_in_minutes: from 1 to {MAX_TOKEN_MINUTES}"
        )));
    }
    let token = random_secret();
    let now = Utc::now();
    let expires_at = now + chrono::Duration::minutes(minutes);
    let id = state
        .fleet
        .db
        .create_enrollment(
            &digest(&token),
            server.as_str(),
            site.as_str(),
            &caller.name,
            now,
            expires_at,
        )
        .await?;
    tracing::info!(by = %caller.name, %server, %site, %expires_at, "enrollment token created");
    let join = format!(
        "join --controller {} --ca-fingerprint {}",
        state.fleet.public_url, enrollment.server_ca_fingerprint
    );
    let command = format!("sudo flotilla-agent {join}");
    let windows_command = format!("flotilla-agent.exe {join}");
    Ok((
        StatusCode::CREATED,
        Json(CreatedEnrollment {
            enrollment: EnrollmentToken {
                id,
                server: server.to_string(),
                site: site.to_string(),
                created_by: caller.name,
                created_at: now,
                expires_at,
                used_at: None,
                used_from: None,
            },
            token,
            ca_fingerprint: enrollment.server_ca_fingerprint.clone(),
            command,
            windows_command,
        }),
    ))
}

/// The enrollment tokens, newest first (never their secrets).
#[utoipa::path(get, path = "/api/v1/enrollments", tag = "fleet",
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses((status = OK, body = [EnrollmentToken]), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<EnrollmentToken>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .db
            .enrollments()
            .await?
            .into_iter()
            .map(|e| EnrollmentToken {
                id: e.id,
                server: e.server_id,
                site: e.site,
                created_by: e.created_by,
                created_at: e.created_at,
                expires_at: e.expires_at,
                used_at: e.used_at,
                used_from: e.used_from,
            })
            .collect(),
    ))
}

/// What an agent sends to enroll.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time token an admin created.
    pub token: String,
    /// A PKCS#10 certificate signing request for the agent's key, PEM.
    pub csr: String,
}

/// The agent's certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    pub server: String,
    pub site: String,
    /// The agent's certificate, then the CA's, PEM.
    pub certificate: String,
    /// The CA that vouches for the controller's own certificate, PEM.
    pub controller_ca: String,
    pub not_after: DateTime<Utc>,
    /// Where agents connect (gRPC), as the agent's `controller_url`.
    pub agents_urls: Vec<String>,
    /// The publisher keys (Ed25519, hex) to trust packages from, as the
    /// agent's `trusted_keys`.
    pub publisher_keys: Vec<String>,
}

/// Enroll an agent: its certificate request, with a one-time token, gets a
/// certificate for the token's server and site. The token is the
/// credential: no account is needed.
#[utoipa::path(post, path = "/api/v1/enroll", tag = "fleet", request_body = EnrollRequest,
    security(()),
    responses(
        (status = OK, body = Enrolled),
        (status = BAD_REQUEST, description = "The request or its CSR cannot be read", body = ErrorBody),
        (status = FORBIDDEN, description = "The token is unknown, used or expired", body = ErrorBody),
        (status = CONFLICT, description = "The controller runs in plain text", body = ErrorBody)))]
pub async fn enroll(
    State(state): State<ApiState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let enrollment = enrollment_of(&state)?;
    let from = peer.map_or_else(
        || "unknown".to_owned(),
        |axum::Extension(ConnectInfo(p))| p.to_string(),
    );
    let now = Utc::now();
    let issued = state
        .fleet
        .db
        .enroll(&digest(&request.token), &from, now, |server, site| {
            let identity = AgentIdentity {
                server: ServerId::parse(server).map_err(|e| IssueError::Request(e.to_string()))?,
                site: SiteName::parse(site).map_err(|e| IssueError::Request(e.to_string()))?,
            };
            let issued = enrollment
                .ca
                .issue(&request.csr, &identity, enrollment.lifetime)?;
            let (serial, not_after) = (issued.serial.clone(), issued.not_after);
            Ok::<_, IssueError>(((identity, issued), serial, not_after))
        })
        .await?;
    let (identity, issued) = match issued {
        Ok(Ok(issued)) => issued,
        Ok(Err(e)) => return Err(ApiError::BadRequest(e.to_string())),
        Err(refusal) => {
            let message = match refusal {
                TokenRefusal::Unknown => "this enrollment token is unknown".to_owned(),
                TokenRefusal::Used(at) => {
                    format!("this enrollment token was used at {at}: ask an admin for a new one")
                }
                TokenRefusal::Expired(at) => {
                    format!("this enrollment token expired at {at}: ask an admin for a new one")
                }
            };
            tracing::warn!(%from, "enrollment refused: {message}");
            let mut response = refuse(StatusCode::FORBIDDEN, "enrollment_refused", message);
            response
                .extensions_mut()
                .insert(AuditActor(format!("agent at {from}")));
            return Ok(response);
        }
    };
    enrollment
        .revoked()
        .servers
        .remove(identity.server.as_str());
    tracing::info!(server = %identity.server, site = %identity.site, %from, serial = %issued.serial, not_after = %issued.not_after, "agent enrolled");
    let mut response = Json(Enrolled {
        server: identity.server.to_string(),
        site: identity.site.to_string(),
        certificate: issued.chain_pem,
        controller_ca: enrollment.server_ca_pem.clone(),
        not_after: issued.not_after,
        agents_urls: enrollment.joining.agents_urls.clone(),
        publisher_keys: enrollment.joining.publisher_keys.clone(),
    })
    .into_response();
    response
        .extensions_mut()
        .insert(AuditActor(format!("agent {}", identity.server)));
    Ok(response)
}

/// What revoking a server did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub server: String,
    /// Whether its agent was connected, and was disconnected.
    pub disconnected: bool,
}

/// Revoke a server: its certificates are refused from now on and its
/// connection is closed. It comes back only through a new enrollment.
#[utoipa::path(post, path = "/api/v1/servers/{id}/revoke", tag = "fleet",
    params(("id" = String, Path, description = "The server id")),
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = OK, body = Revoked),
        (status = NOT_FOUND, description = "No such server", body = ErrorBody),
        (status = CONFLICT, description = "The controller runs in plain text", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let enrollment = enrollment_of(&state)?;
    let db = &state.fleet.db;
    let known = db.server(&id).await?.is_some() || !db.certificates_of(&id).await?.is_empty();
    let server = match ServerId::parse(&id) {
        Ok(server) if known => server,
        _ => return Err(ApiError::NotFound(format!("no server {id}"))),
    };
    let disconnected = enrollment
        .revoke_server(&state.fleet, &server, &caller.name)
        .await?;
    Ok(Json(Revoked {
        server: server.to_string(),
        disconnected,
    }))
}
