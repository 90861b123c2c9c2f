//! Who is asking, and whether they may.
//!
//! Operators sign in (see [`crate::operators`]) with a local account
//! (argon2 password hash) and get a session cookie (`Secure` over TLS, `HttpOnly`, `SameSite=Strict`) whose
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
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use flotilla_proto::web::random_secret;

use crate::api::{ApiState, ErrorBody};
use crate::db::{AuditRecord, Database};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "flotilla_session";
/// The header a signed-in browser sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a browser session lasts.
pub(crate) const SESSION_HOURS: i64 = 12;

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

/// An argon2id hash of a password, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

pub(crate) fn password_matches(password: &str, hash: &str) -> bool {
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
pub struct Access {
    needs: Arc<HashMap<(Method, String), Need>>,
    /// The methods each documented path has, with or without a role.
    methods: Arc<HashMap<String, Vec<Method>>>,
    /// Operations a connected agent may call with its download token
    /// (security scheme `agent`).
    agents: Arc<std::collections::HashSet<(Method, String)>>,
}

impl Access {
    /// Reads every operation's `security`: an empty requirement is public;
    /// otherwise the first scope of its first requirement names the role.
    pub fn from_openapi(document: &serde_json::Value) -> Access {
        let mut table = HashMap::new();
        let mut methods: HashMap<String, Vec<Method>> = HashMap::new();
        let mut agents = std::collections::HashSet::new();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] {
                let operation = &item[method];
                if operation.is_object()
                    && let Ok(parsed) = method.to_uppercase().parse::<Method>()
                {
                    methods.entry(path.clone()).or_default().push(parsed);
                }
                let Some(requirements) = operation["security"].as_array() else {
                    continue;
                };
                if requirements
                    .iter()
                    .any(|r| r.as_object().is_some_and(|r| r.contains_key("agent")))
                    && let Ok(parsed) = method.to_uppercase().parse::<Method>()
                {
                    agents.insert((parsed, path.clone()));
                }
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
        Access {
            needs: Arc::new(table),
            methods: Arc::new(methods),
            agents: Arc::new(agents),
        }
    }

    /// Adds a route the document does not describe.
    pub fn with(mut self, method: Method, path: &str, need: Need) -> Access {
        Arc::make_mut(&mut self.methods)
            .entry(path.to_owned())
            .or_default()
            .push(method.clone());
        Arc::make_mut(&mut self.needs).insert((method, path.to_owned()), need);
        self
    }

    pub fn need(&self, method: &Method, path: &str) -> Option<Need> {
        self.needs.get(&(method.clone(), path.to_owned())).copied()
    }

    /// The methods `path` answers to, when it answers to some but not `method`.
    fn allowed_instead(&self, method: &Method, path: &str) -> Option<Vec<Method>> {
        self.methods
            .get(path)
            .filter(|methods| !methods.contains(method))
            .cloned()
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
    if let Some(allowed) = access.allowed_instead(method, path) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut refusal = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} answers only to {allow}"),
        );
        if let Ok(value) = HeaderValue::from_str(&allow) {
            refusal.headers_mut().insert(header::ALLOW, value);
        }
        return (None, refusal);
    }
    let Some(need) = access.need(method, path) else {
        let refusal = refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{method} {path} declares no role, so nobody may call it"),
        );
        return (None, refusal);
    };
    // A connected agent, with the download token of its connection.
    let agent = access
        .agents
        .contains(&(method.clone(), path.to_owned()))
        .then(|| {
            request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|token| state.fleet.downloader(token.trim()))
        })
        .flatten();
    let authenticated = match agent {
        Some(server) => Ok(Some(Caller {
            name: format!("agent {server}"),
            role: Role::Viewer,
        })),
        None => authenticate(&state.fleet.db, request.headers(), method).await,
    };
    let caller = match authenticated {
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

pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

pub(crate) fn refuse(status: StatusCode, error: &'static str, message: String) -> Response {
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
