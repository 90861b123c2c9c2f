//! Who is asking, and whether they may.
//!
//! Operators sign in (see [`crate::api::operators`]) with a local account
//! (argon2 password hash) and get a session cookie (`Secure` over TLS, `HttpOnly`, `SameSite=Strict`) whose
//! state-changing requests must carry its CSRF token; automation sends an
//! API token (`Authorization: Bearer …`). Both are stored only as hashes.
//!
//! Every operation of the API declares the role it needs in the OpenAPI
//! document (its `security` requirement's scope); [`Access`] is read from
//! that document, so the document *is* the table the gate
//! ([`crate::api::gate`]) enforces. An `/api/` route that declares nothing
//! is refused to everyone.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::http::Method;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

pub use flotilla_proto::web::random_secret;

use crate::db::Database;

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
    /// A signed-in account whose password someone else set: it may only
    /// change it (and see who it is, and sign out).
    pub must_change_password: bool,
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

/// Password hashing (argon2 takes 19 MiB and tens of milliseconds a time)
/// on the blocking threads, as many at once as the machine has cores:
/// sign-ins sent by the thousand wait their turn instead of taking the
/// memory.
fn hashing() -> &'static tokio::sync::Semaphore {
    static HASHING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    HASHING.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// Runs `work` (a password hashing) on a blocking thread, within
/// [`hashing`]'s bound.
pub(crate) async fn hashing_bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let _turn = hashing().acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(work)
        .await
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
    pub(crate) agents: Arc<std::collections::HashSet<(Method, String)>>,
    /// Operations that take a request body (a `requestBody` in the document).
    bodies: Arc<std::collections::HashSet<(Method, String)>>,
}

impl Access {
    /// Reads every operation's `security`: an empty requirement is public;
    /// otherwise the first scope of its first requirement names the role.
    pub fn from_openapi(document: &serde_json::Value) -> Access {
        let mut table = HashMap::new();
        let mut methods: HashMap<String, Vec<Method>> = HashMap::new();
        let mut agents = std::collections::HashSet::new();
        let mut bodies = std::collections::HashSet::new();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "patch"] {
                let operation = &item[method];
                if operation.is_object()
                    && let Ok(parsed) = method.to_uppercase().parse::<Method>()
                {
                    if operation.get("requestBody").is_some() {
                        bodies.insert((parsed.clone(), path.clone()));
                    }
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
            bodies: Arc::new(bodies),
        }
    }

    /// Whether the operation takes a request body.
    pub(crate) fn takes_body(&self, method: &Method, path: &str) -> bool {
        self.bodies.contains(&(method.clone(), path.to_owned()))
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
    pub(crate) fn allowed_instead(&self, method: &Method, path: &str) -> Option<Vec<Method>> {
        self.methods
            .get(path)
            .filter(|methods| !methods.contains(method))
            .cloned()
    }
}

/// Creates the first admin account when there is none: returns its
/// password, to be handed over once; `must_change` when it must be changed
/// at the first sign-in.
pub async fn first_admin(db: &Database, must_change: bool) -> anyhow::Result<Option<String>> {
    if db.account_count().await? > 0 {
        return Ok(None);
    }
    let password = random_secret()[..24].to_owned();
    let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
    db.create_account(
        "admin",
        Role::Admin.as_str(),
        &hash,
        must_change,
        Utc::now(),
    )
    .await?;
    Ok(Some(password))
}

/// A name of an account or an API token: 1 to 100 letters, digits, '.',
/// '-', '_' or '@'.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "name: \"{}\" must be 1 to 100 letters, digits, '.', '-', '_' or '@'",
            name.chars().take(100).collect::<String>()
        )),
    }
}

/// Creates the API token `name` with `role`, as `by` on the controller's
/// own machine (`flotilla-controller token create`): its secret, to be
/// shown once. A name already taken is refused.
pub async fn create_token(
    db: &Database,
    name: &str,
    role: Role,
    by: &str,
) -> anyhow::Result<String> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let secret = random_secret();
    let created = db
        .create_token(name, role.as_str(), &digest(&secret), by, Utc::now(), None)
        .await?;
    anyhow::ensure!(
        created,
        "a token named {name} exists: choose another name, or delete it first (DELETE /api/v1/tokens/{name})"
    );
    Ok(secret)
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
