//! Operators over REST: signing in and out (the session cookie and its CSRF
//! token), accounts and API tokens. Who may call what is [`crate::auth`]'s.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::gate::{AuditActor, refuse, session_cookie};
use super::{ApiError, ApiState, ErrorBody};
use crate::auth::{
    Caller, Role, SESSION_COOKIE, SESSION_HOURS, digest, hash_password, password_matches,
    random_secret,
};

/// Signing in.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// Who is signed in; `csrf` goes in the `X-CSRF-Token` header of every change.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token; absent for an API token.
    pub csrf: Option<String>,
    /// The password was set by someone else: nothing but changing it
    /// (`PUT /api/v1/session/password`) is allowed until it is.
    pub must_change_password: bool,
}

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 12;

/// Sign in with an account: sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "operators", request_body = SignIn,
    security(()),
    responses(
        (status = OK, description = "Signed in; the cookie is set", body = SessionInfo),
        (status = BAD_REQUEST, description = "Not a sign-in", body = ErrorBody),
        (status = UNAUTHORIZED, description = "Wrong name or password", body = ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "Too many failed sign-ins for this account or from this address; `Retry-After` says when to try again", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(state): State<ApiState>,
    source: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(sign_in) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let source = source.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let db = &state.fleet.db;
    // Held back after too many failures, for this account or from this
    // address: refused before the password is even looked at.
    // The try is counted before the password is checked, so that tries
    // sent at once are all counted.
    let now = std::time::Instant::now();
    if let Err(wait) = state.throttle.attempt(&sign_in.name, source, now) {
        let seconds = wait.as_secs().max(1);
        tracing::warn!(account = %sign_in.name.chars().take(100).collect::<String>(), %source, "sign-in held back after too many failures");
        let mut refusal = refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sign_ins",
            format!(
                "too many failed sign-ins for this account or from this address: try again in {seconds} s"
            ),
        );
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            refusal.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(refusal);
    }
    let account = db.account(&sign_in.name).await?;
    // The password is checked off the async threads, and an unknown name
    // against a hash of its own, so that both take the same time.
    let (password, hash) = (
        sign_in.password.clone(),
        account.as_ref().map(|a| a.password_hash.clone()),
    );
    let matches = crate::auth::hashing_bounded(move || match hash {
        Some(hash) => password_matches(&password, &hash),
        None => {
            let _ = password_matches(&password, unknown_account_hash());
            false
        }
    })
    .await
    .map_err(ApiError::Internal)?;
    let valid = account.filter(|_| matches);
    let tried = AuditActor(sign_in.name.chars().take(100).collect());
    if let Some(disabled) = valid.as_ref().and_then(|a| a.disabled_at) {
        // Only someone who knows the password learns that it is disabled.
        tracing::warn!(account = %tried.0, "sign-in refused: the account is disabled");
        let mut refusal = refuse(
            StatusCode::FORBIDDEN,
            "account_disabled",
            format!(
                "this account was disabled on {}: an admin can enable it",
                disabled.to_rfc3339()
            ),
        );
        refusal.extensions_mut().insert(tried);
        return Ok(refusal);
    }
    let Some(account) = valid else {
        tracing::warn!(account = %tried.0, "sign-in refused: wrong name or password");
        let mut refusal = refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong name or password".to_owned(),
        );
        refusal.extensions_mut().insert(tried);
        return Ok(refusal);
    };
    state.throttle.succeeded(&sign_in.name, source);
    let (cookie, csrf) = (random_secret(), random_secret());
    let now = Utc::now();
    db.create_session(
        &digest(&cookie),
        account.id,
        &csrf,
        now,
        now + Duration::hours(SESSION_HOURS),
    )
    .await?;
    tracing::info!(account = %account.name, "signed in");
    let secure = if state.tls { "; Secure" } else { "" };
    let set_cookie = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut response = Json(SessionInfo {
        name: account.name.clone(),
        role: Role::parse(&account.role).unwrap_or(Role::Viewer),
        csrf: Some(csrf),
        must_change_password: account.must_change_password,
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.extensions_mut().insert(tried);
    Ok(response)
}

/// The hash an unknown account's password is checked against: made once,
/// of a password nobody knows, with the same parameters as every other.
fn unknown_account_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&random_secret()).unwrap_or_default())
}

/// Who is asking, with the session's CSRF token.
#[utoipa::path(get, path = "/api/v1/session", tag = "operators",
    security(("token" = ["viewer"]), ("session" = ["viewer"])),
    responses((status = OK, body = SessionInfo), (status = UNAUTHORIZED, body = ErrorBody)))]
pub async fn whoami(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    let csrf = match session_cookie(&headers) {
        Some(cookie) => state
            .fleet
            .db
            .session_bearer(&digest(&cookie), Utc::now())
            .await?
            .and_then(|b| b.csrf),
        None => None,
    };
    Ok(Json(SessionInfo {
        name: caller.name,
        role: caller.role,
        csrf,
        must_change_password: caller.must_change_password,
    }))
}

/// Sign out: ends the session and clears its cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "operators",
    security(("token" = ["viewer"]), ("session" = ["viewer"])),
    responses((status = NO_CONTENT, description = "Signed out"), (status = UNAUTHORIZED, body = ErrorBody)))]
pub async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(&headers) {
        state.fleet.db.end_session(&digest(&cookie)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("flotilla_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

/// An account, without its password.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// When an admin disabled it; absent while it may sign in.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Its password was set by someone else and must be changed at its
    /// next sign-in.
    pub must_change_password: bool,
}

impl From<crate::db::AccountRecord> for Account {
    fn from(a: crate::db::AccountRecord) -> Self {
        Account {
            role: Role::parse(&a.role).unwrap_or(Role::Viewer),
            name: a.name,
            created_at: a.created_at,
            disabled_at: a.disabled_at,
            must_change_password: a.must_change_password,
        }
    }
}

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAccount {
    /// Letters, digits, `.`, `-`, `_`, `@`; at most 100.
    #[schema(pattern = "^[A-Za-z0-9.@_-]{1,100}$")]
    pub name: String,
    pub role: Role,
    /// At least 12 characters.
    #[schema(min_length = 12)]
    pub password: String,
    /// Whether it must be changed at the first sign-in (by default, yes:
    /// the admin who sets it knows it).
    pub must_change_password: Option<bool>,
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    crate::auth::check_name(name).map_err(ApiError::BadRequest)
}

/// The accounts.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "operators",
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses((status = OK, body = [Account]), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn list_accounts(State(state): State<ApiState>) -> Result<Json<Vec<Account>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .db
            .accounts()
            .await?
            .into_iter()
            .map(Account::from)
            .collect(),
    ))
}

/// Create an account.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "operators", request_body = NewAccount,
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = CREATED, body = Account),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = CONFLICT, description = "The name is taken", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn create_account(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<NewAccount>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    valid_name(&new.name)?;
    if new.password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::BadRequest(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    let password = new.password.clone();
    let hash = crate::auth::hashing_bounded(move || hash_password(&password))
        .await
        .map_err(ApiError::Internal)?
        .map_err(ApiError::Internal)?;
    let now = Utc::now();
    let must_change = new.must_change_password.unwrap_or(true);
    if !state
        .fleet
        .db
        .create_account(&new.name, new.role.as_str(), &hash, must_change, now)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "an account named \"{}\" exists",
            new.name
        )));
    }
    tracing::info!(by = %caller.name, account = %new.name, role = new.role.as_str(), "account created");
    Ok((
        StatusCode::CREATED,
        Json(Account {
            name: new.name,
            role: new.role,
            created_at: now,
            disabled_at: None,
            must_change_password: must_change,
        }),
    ))
}

/// An API token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new API token.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewToken {
    /// Letters, digits, `.`, `-`, `_`, `@`; at most 100.
    #[schema(pattern = "^[A-Za-z0-9.@_-]{1,100}$")]
    pub name: String,
    pub role: Role,
    /// Days until it expires (1 to 3650); never when absent.
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<i64>,
}

/// The token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    /// The secret to send as `Authorization: Bearer …`; it is not kept.
    pub secret: String,
}

/// The API tokens.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "operators",
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses((status = OK, body = [Token]), (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn list_tokens(State(state): State<ApiState>) -> Result<Json<Vec<Token>>, ApiError> {
    Ok(Json(
        state
            .fleet
            .db
            .tokens()
            .await?
            .into_iter()
            .map(|t| Token {
                role: Role::parse(&t.role).unwrap_or(Role::Viewer),
                name: t.name,
                created_by: t.created_by,
                created_at: t.created_at,
                expires_at: t.expires_at,
                last_used_at: t.last_used_at,
                revoked_at: t.revoked_at,
            })
            .collect(),
    ))
}

/// Create an API token; its secret is in the answer, and only there.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "operators", request_body = NewToken,
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = CREATED, body = CreatedToken),
        (status = BAD_REQUEST, description = "Names the field at fault", body = ErrorBody),
        (status = CONFLICT, description = "The name is taken", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    valid_name(&new.name)?;
    let expires_at = match new.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(Utc::now() + Duration::days(days)),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "expires_in_days: from 1 to 3650".to_owned(),
            ));
        }
    };
    let secret = random_secret();
    let now = Utc::now();
    if !state
        .fleet
        .db
        .create_token(
            &new.name,
            new.role.as_str(),
            &digest(&secret),
            &caller.name,
            now,
            expires_at,
        )
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "a token named \"{}\" exists",
            new.name
        )));
    }
    tracing::info!(by = %caller.name, token = %new.name, role = new.role.as_str(), "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: Token {
                name: new.name,
                role: new.role,
                created_by: caller.name,
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            },
            secret,
        }),
    ))
}

/// Revoke an API token: it is refused from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "operators",
    params(("name" = String, Path, description = "The token's name")),
    security(("token" = ["admin"]), ("session" = ["admin"])),
    responses(
        (status = NO_CONTENT, description = "Revoked"),
        (status = NOT_FOUND, description = "No such live token", body = ErrorBody),
        (status = UNAUTHORIZED, body = ErrorBody), (status = FORBIDDEN, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.fleet.db.revoke_token(&name, Utc::now()).await? {
        return Err(ApiError::NotFound(format!(
            "no live token named \"{name}\""
        )));
    }
    tracing::info!(by = %caller.name, token = %name, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
