//! Accounts' lifecycle over REST: an admin changes an account's role,
//! disables and enables it, deletes it, or resets its password (to be
//! changed at its next sign-in); every operator changes their own password.
//! A change that would leave no enabled admin is refused. Each is in the
//! audit trail, as every change is ([`crate::api::gate`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;

use super::gate::session_cookie;
use super::operators::{Account, MIN_PASSWORD};
use super::{ApiError, ApiState, ErrorBody};
use crate::auth::{Caller, Role, digest, hash_password, password_matches};
use crate::db::{AccountChange, AccountRefusal};

/// What to change of an account; what is absent stays.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeAccount {
    pub role: Option<Role>,
    /// `true` disables it (its sessions and the API tokens it made are
    /// refused at once), `false` enables it.
    pub disabled: Option<bool>,
}

/// A password an admin sets for another account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPassword {
    /// At least 12 characters.
    #[schema(min_length = 12)]
    pub password: String,
    /// Whether it must be changed at the next sign-in (by default, yes).
    pub must_change_password: Option<bool>,
}

/// A signed-in operator's new password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePassword {
    pub current_password: String,
    /// At least 12 characters, not the current one.
    #[schema(min_length = 12)]
    pub new_password: String,
}

/// A JSON object of type `T`: an array, which serde would also read into
/// a struct field by field, is refused like any other wrong body.
fn object<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".to_owned(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn refused(name: &str, refusal: AccountRefusal) -> ApiError {
    match refusal {
        AccountRefusal::Unknown => ApiError::NotFound(format!("no account named \"{name}\"")),
        AccountRefusal::LastAdmin => ApiError::Conflict(format!(
            "\"{name}\" is the last enabled admin: make another account admin first"
        )),
    }
}

async fn hashed(password: String) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::BadRequest(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    crate::auth::hashing_bounded(move || hash_password(&password))
        .await
        .map_err(ApiError::Internal)?
        .map_err(ApiError::Internal)
}

/// Change an account's role, or disable or enable it.
#[utoipa::path(patch, path = "/api/v1/accounts/{name}", tag = "operators", request_body = ChangeAccount,
    params(("name" = String, Path, description = "The account's name")),
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = OK, body = Account),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = NOT_FOUND, description = "No such account", body = ErrorBody),
        (status = CONFLICT, description = "It would leave no enabled admin", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn change_account(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Account>, ApiError> {
    let change: ChangeAccount = object(body)?;
    if change.role.is_none() && change.disabled.is_none() {
        return Err(ApiError::BadRequest(
            "nothing to change: give role, disabled, or both".to_owned(),
        ));
    }
    let changed = state
        .fleet
        .db
        .change_account(
            &name,
            &AccountChange {
                role: change.role.map(Role::as_str),
                disabled: change.disabled,
            },
            Utc::now(),
        )
        .await?
        .map_err(|refusal| refused(&name, refusal))?;
    tracing::info!(by = %caller.name, account = %name, role = %changed.role, disabled = changed.disabled_at.is_some(), "account changed");
    Ok(Json(Account::from(changed)))
}

/// Delete an account: its sessions end and the API tokens it made are
/// revoked. Its entries in the audit trail stay.
#[utoipa::path(delete, path = "/api/v1/accounts/{name}", tag = "operators",
    params(("name" = String, Path, description = "The account's name")),
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = NO_CONTENT, description = "Deleted"),
        (status = NOT_FOUND, description = "No such account", body = ErrorBody),
        (status = CONFLICT, description = "It would leave no enabled admin", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn delete_account(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .fleet
        .db
        .delete_account(&name, Utc::now())
        .await?
        .map_err(|refusal| refused(&name, refusal))?;
    tracing::info!(by = %caller.name, account = %name, "account deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Set another account's password (it forgot it): its sessions end, and
/// by default it must change the password at its next sign-in.
#[utoipa::path(put, path = "/api/v1/accounts/{name}/password", tag = "operators", request_body = ResetPassword,
    params(("name" = String, Path, description = "The account's name")),
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = NO_CONTENT, description = "Set"),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = NOT_FOUND, description = "No such account", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn reset_password(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let reset: ResetPassword = object(body)?;
    let hash = hashed(reset.password).await?;
    let must_change = reset.must_change_password.unwrap_or(true);
    if !state
        .fleet
        .db
        .set_password(&name, &hash, must_change, None)
        .await?
    {
        return Err(refused(&name, AccountRefusal::Unknown));
    }
    tracing::info!(by = %caller.name, account = %name, must_change, "password reset by an admin");
    Ok(StatusCode::NO_CONTENT)
}

/// Change one's own password, with the current one: the account's other
/// sessions end. A password someone else set must be changed this way
/// before anything else.
#[utoipa::path(put, path = "/api/v1/session/password", tag = "operators", request_body = ChangePassword,
    security(("session" = ["viewer"])),
    responses(
        (status = NO_CONTENT, description = "Changed"),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = FORBIDDEN, description = "The current password is wrong", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "Too many wrong current passwords for this account", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody)))]
pub async fn change_own_password(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    source: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let change: ChangePassword = object(body)?;
    let db = &state.fleet.db;
    let Some(account) = db.account(&caller.name).await? else {
        return Err(ApiError::Forbidden(
            "only a signed-in account changes its own password (an API token has none)".to_owned(),
        ));
    };
    // Guessing the current password with a stolen session is throttled
    // as signing in is.
    let source = source.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let now = std::time::Instant::now();
    if let Err(wait) = state.throttle.attempt(&caller.name, source, now) {
        return Err(ApiError::TooMany(format!(
            "too many wrong passwords for this account: try again in {} s",
            wait.as_secs().max(1)
        )));
    }
    let (current, stored) = (
        change.current_password.clone(),
        account.password_hash.clone(),
    );
    let right = crate::auth::hashing_bounded(move || password_matches(&current, &stored))
        .await
        .map_err(ApiError::Internal)?;
    if right {
        state.throttle.succeeded(&caller.name, source);
    }
    if !right {
        return Err(ApiError::Forbidden(
            "current_password: it is not this account's password".to_owned(),
        ));
    }
    if change.new_password == change.current_password {
        return Err(ApiError::BadRequest(
            "new_password: it must differ from the current one".to_owned(),
        ));
    }
    let hash = hashed(change.new_password).await?;
    let keep = session_cookie(&headers).map(|cookie| digest(&cookie));
    db.set_password(&caller.name, &hash, false, keep.as_deref())
        .await?;
    if let Some(file) = &state.initial_password
        && account.name == "admin"
        && file.exists()
    {
        match std::fs::remove_file(file.as_ref()) {
            Ok(()) => {
                tracing::info!(file = %file.display(), "the first admin's password was changed: its file is removed")
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), "cannot remove the first admin's password file: {e}")
            }
        }
    }
    tracing::info!(account = %caller.name, "password changed");
    Ok(StatusCode::NO_CONTENT)
}
