//! A database module's guided upgrade on one server, through its agent.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, ErrorBody};
use crate::auth::Caller;
use crate::fleet::{Order, OrderError};

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
pub async fn database_review(
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
pub async fn run_database_script(
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
pub async fn mark_database_script(
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
