//! Who is asking, and whether they may.
//!
//! Operators sign in with a local account (argon2 password hash) and get a
//! session cookie (`Secure` over TLS, `HttpOnly`, `SameSite=Strict`) whose
//! state-changing requests must carry its CSRF token; automation sends an
//! API token (`Authorization: Bearer …`). Both are stored only as hashes.
//!
//! Every operation of the API declares the role it needs in the OpenAPI
//! document (its `security` requirement's scope); [`Access`] is read from
//! that document, so the document *is* the table the gate enforces. An
//! `/api/` route that declares nothing is refused to everyone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::api::{ApiError, ApiState, ErrorBody};
use crate::db::{AuditRecord, Database};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "flotilla_session";
/// The header a signed-in browser sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a browser session lasts.
const SESSION_HOURS: i64 = 12;

/// What an operator may do. A role grants its own operations and the
/// viewer's; the admin's grants everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Installs, rollbacks, rollouts, schedules, database scripts.
    Operator,
    /// Uploads packages and publishes releases (the build pipeline).
    Publisher,
    /// Accounts, tokens, and everything else.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `need` may.
    pub fn grants(self, need: Role) -> bool {
        self == Role::Admin || need == Role::Viewer || self == need
    }
}

/// The authenticated identity behind a request: an account or a token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account's or the token's name; what logs and the audit record.
    pub name: String,
    pub role: Role,
}

/// The lowercase hex sha256 of a secret, as stored.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 32 random bytes, hex: tokens, session cookies, CSRF tokens, passwords.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's generator; without it nothing secure can be made.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no random numbers: {e}"));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

fn password_matches(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// What each API operation needs: public, or a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Public,
    Role(Role),
}

/// The access table, read from the OpenAPI document: method and path
/// template to what the operation needs.
#[derive(Debug, Clone, Default)]
pub struct Access(Arc<HashMap<(Method, String), Need>>);

impl Access {
    /// Reads every operation's `security`: an empty requirement is public;
    /// otherwise the first scope of its first requirement names the role.
    pub fn from_openapi(document: &serde_json::Value) -> Access {
        let mut table = HashMap::new();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] {
                let operation = &item[method];
                let Some(requirements) = operation["security"].as_array() else {
                    continue;
                };
                let need = match requirements.first().and_then(|r| r.as_object()) {
                    Some(requirement) if requirement.is_empty() => Some(Need::Public),
                    Some(requirement) => requirement
                        .values()
                        .next()
                        .and_then(|scopes| scopes[0].as_str())
                        .and_then(Role::parse)
                        .map(Need::Role),
                    None => None,
                };
                if let (Some(need), Ok(method)) = (need, method.to_uppercase().parse::<Method>()) {
                    table.insert((method, path.clone()), need);
                }
            }
        }
        Access(Arc::new(table))
    }

    /// Adds a route the document does not describe.
    pub fn with(mut self, method: Method, path: &str, need: Need) -> Access {
        Arc::make_mut(&mut self.0).insert((method, path.to_owned()), need);
        self
    }

    pub fn need(&self, method: &Method, path: &str) -> Option<Need> {
        self.0.get(&(method.clone(), path.to_owned())).copied()
    }
}

/// The gate in front of every API route: authenticates, checks the CSRF
/// token of a signed-in browser's changes, checks the role, and hands the
/// handler the [`Caller`]. Every change, and every refusal, goes to the
/// audit trail.
pub async fn gate(
    State((state, access)): State<(ApiState, Access)>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let target = request.uri().path().to_owned();
    let path = matched
        .as_ref()
        .map_or_else(|| target.clone(), |m| m.as_str().to_owned());
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(
            || "unknown".to_owned(),
            |ConnectInfo(peer)| peer.to_string(),
        );
    let (caller, response) = admit(&state, &access, &method, &path, request, next).await;
    let change = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    );
    if change || refused {
        let actor = response
            .extensions()
            .get::<AuditActor>()
            .map(|a| a.0.clone())
            .or(caller.map(|c| c.name))
            .unwrap_or_else(|| "anonymous".to_owned());
        let entry = AuditRecord {
            seq: 0,
            at: Utc::now(),
            actor,
            action: format!("{method} {path}"),
            target,
            outcome: i64::from(response.status().as_u16()),
            source,
        };
        if let Err(e) = state.fleet.db.audit(&entry).await {
            tracing::error!("cannot append to the audit trail: {e}");
        }
    }
    response
}

/// Who a response says acted, when the gate could not know (signing in).
#[derive(Debug, Clone)]
pub struct AuditActor(pub String);

/// Authenticates and authorizes; the caller (if any) and the response.
async fn admit(
    state: &ApiState,
    access: &Access,
    method: &Method,
    path: &str,
    mut request: Request,
    next: Next,
) -> (Option<Caller>, Response) {
    let Some(need) = access.need(method, path) else {
        let refusal = refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{method} {path} declares no role, so nobody may call it"),
        );
        return (None, refusal);
    };
    let caller = match authenticate(&state.fleet.db, request.headers(), method).await {
        Ok(caller) => caller,
        Err(_) if need == Need::Public => None,
        Err(refusal) => return (None, refusal),
    };
    match (need, caller) {
        (Need::Role(_), None) => (None, unauthorized()),
        (Need::Role(role), Some(caller)) if !caller.role.grants(role) => {
            let refusal = refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} (role {}) may not {method} {path}: it needs the {} role",
                    caller.name,
                    caller.role.as_str(),
                    role.as_str()
                ),
            );
            (Some(caller), refusal)
        }
        (_, caller) => {
            if let Some(caller) = &caller {
                request.extensions_mut().insert(caller.clone());
            }
            (caller, next.run(request).await)
        }
    }
}

/// Who sent the request: `Ok(None)` when no credentials came; an error
/// response when credentials came and are not valid.
async fn authenticate(
    db: &Database,
    headers: &HeaderMap,
    method: &Method,
) -> Result<Option<Caller>, Response> {
    let now = Utc::now();
    let lookup_failed = |e: sqlx::Error| {
        tracing::error!("cannot check credentials: {e}");
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the controller cannot check credentials now; see its log".to_owned(),
        )
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let bearer = db
            .token_bearer(&digest(token), now)
            .await
            .map_err(lookup_failed)?;
        return match bearer.and_then(|b| Role::parse(&b.role).map(|role| (b.name, role))) {
            Some((name, role)) => Ok(Some(Caller { name, role })),
            None => {
                tracing::warn!("refused an unknown, expired or revoked API token");
                Err(unauthorized())
            }
        };
    }
    let Some(cookie) = session_cookie(headers) else {
        return Ok(None);
    };
    let bearer = db
        .session_bearer(&digest(&cookie), now)
        .await
        .map_err(lookup_failed)?;
    let Some(bearer) = bearer else {
        return Err(unauthorized());
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !safe && sent != bearer.csrf.as_deref() {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "csrf",
            format!("a change from a signed-in browser must carry its {CSRF_HEADER} header"),
        ));
    }
    match Role::parse(&bearer.role) {
        Some(role) => Ok(Some(Caller {
            name: bearer.name,
            role,
        })),
        None => Err(unauthorized()),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn refuse(status: StatusCode, error: &'static str, message: String) -> Response {
    (status, Json(ErrorBody { error, message })).into_response()
}

fn unauthorized() -> Response {
    let mut response = refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "sign in, or send an API token: Authorization: Bearer <token>".to_owned(),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Creates the first admin account when there is none: returns its
/// password, to be shown once.
pub async fn first_admin(db: &Database) -> anyhow::Result<Option<String>> {
    if db.account_count().await? > 0 {
        return Ok(None);
    }
    let password = random_secret()[..24].to_owned();
    let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    db.create_account("admin", Role::Admin.as_str(), &hash, Utc::now())
        .await?;
    Ok(Some(password))
}

/// Registers `token` as an admin API token named `name`, unless it is known.
pub async fn register_admin_token(db: &Database, name: &str, token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.len() >= 32,
        "the admin token must be at least 32 characters"
    );
    db.create_token(
        name,
        Role::Admin.as_str(),
        &digest(token),
        "flotilla",
        Utc::now(),
        None,
    )
    .await?;
    Ok(())
}

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
}

/// Sign in with an account: sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "operators", request_body = SignIn,
    security(()),
    responses(
        (status = OK, description = "Signed in; the cookie is set", body = SessionInfo),
        (status = BAD_REQUEST, description = "Not a sign-in", body = ErrorBody),
        (status = UNAUTHORIZED, description = "Wrong name or password", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(state): State<ApiState>,
    body: Result<Json<SignIn>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(sign_in) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let db = &state.fleet.db;
    let account = db.account(&sign_in.name).await?;
    let valid = account
        .as_ref()
        .filter(|a| password_matches(&sign_in.password, &a.password_hash));
    let tried = AuditActor(sign_in.name.chars().take(100).collect());
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
    })
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.extensions_mut().insert(tried);
    Ok(response)
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
}

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAccount {
    /// Letters, digits, `.`, `-`, `_`, `@`; at most 100.
    pub name: String,
    pub role: Role,
    /// At least 12 characters.
    pub password: String,
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    match ok {
        true => Ok(()),
        false => Err(ApiError::BadRequest(format!(
            "name: \"{}\" must be 1 to 100 letters, digits, '.', '-', '_' or '@'",
            name.chars().take(100).collect::<String>()
        ))),
    }
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
            .map(|a| Account {
                role: Role::parse(&a.role).unwrap_or(Role::Viewer),
                name: a.name,
                created_at: a.created_at,
            })
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
    if new.password.chars().count() < 12 {
        return Err(ApiError::BadRequest(
            "password: at least 12 characters".to_owned(),
        ));
    }
    let hash = hash_password(&new.password).map_err(ApiError::Internal)?;
    let now = Utc::now();
    if !state
        .fleet
        .db
        .create_account(&new.name, new.role.as_str(), &hash, now)
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
    pub name: String,
    pub role: Role,
    /// Days until it expires (1 to 3650); never when absent.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_own_and_the_viewers_and_the_admin_all() {
        use Role::*;
        for (role, need, granted) in [
            (Viewer, Viewer, true),
            (Viewer, Operator, false),
            (Viewer, Publisher, false),
            (Viewer, Admin, false),
            (Operator, Viewer, true),
            (Operator, Operator, true),
            (Operator, Publisher, false),
            (Operator, Admin, false),
            (Publisher, Viewer, true),
            (Publisher, Publisher, true),
            (Publisher, Operator, false),
            (Publisher, Admin, false),
            (Admin, Viewer, true),
            (Admin, Operator, true),
            (Admin, Publisher, true),
            (Admin, Admin, true),
        ] {
            assert_eq!(role.grants(need), granted, "{role:?} for {need:?}");
        }
    }

    #[test]
    fn a_password_matches_its_hash_only() {
        let hash = hash_password("correct horse battery").unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(password_matches("correct horse battery", &hash));
        assert!(!password_matches("correct horse batter", &hash));
        assert!(!password_matches("anything", "not a hash"));
    }

    #[test]
    fn the_access_table_is_read_from_the_documents_security() {
        let document = serde_json::json!({"paths": {
            "/api/v1/a": {"get": {"security": [{}]}, "post": {"security": [{"token": ["operator"]}, {"session": ["operator"]}]}},
            "/api/v1/b/{id}": {"delete": {"security": [{"token": ["admin"]}]}, "put": {}},
        }});
        let access = Access::from_openapi(&document);
        assert_eq!(access.need(&Method::GET, "/api/v1/a"), Some(Need::Public));
        assert_eq!(
            access.need(&Method::POST, "/api/v1/a"),
            Some(Need::Role(Role::Operator))
        );
        assert_eq!(
            access.need(&Method::DELETE, "/api/v1/b/{id}"),
            Some(Need::Role(Role::Admin))
        );
        assert_eq!(access.need(&Method::PUT, "/api/v1/b/{id}"), None);
    }
}
