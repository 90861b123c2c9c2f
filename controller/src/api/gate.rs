//! The gate in front of every API route: who is asking (an API token, a
//! session cookie with its CSRF token, or a connected agent's download
//! token), whether their role may call the operation ([`Access`], read
//! from the OpenAPI document), and the audit trail of every change and
//! every refusal.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::{ApiState, ErrorBody};
use crate::auth::{Access, CSRF_HEADER, Caller, Need, Role, SESSION_COOKIE, digest};
use crate::db::{AuditRecord, Database};

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
    // Who is asking is known from the head alone, before any body is read:
    // an anonymous request's body is held to a small size.
    let who = identify(&state, &access, &method, &path, request.headers()).await;
    let limit = match &who {
        Ok(Some(_)) if access.takes_body(&method, &path) => BODY_LIMIT,
        _ => ANONYMOUS_BODY_LIMIT,
    };
    // A body that trickles in is not waited for: its connection would be
    // held for as long as the client liked.
    let read = tokio::time::timeout(BODY_TIME, read_whole(request, &path, limit)).await;
    let (caller, response) = match read {
        Ok(Ok(request)) => admit(&access, &method, &path, who, request, next).await,
        Ok(Err(refusal)) => (None, refusal),
        Err(_) => (
            None,
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request's body did not arrive within {} s",
                    BODY_TIME.as_secs()
                ),
            ),
        ),
    };
    let change = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    );
    if change || refused {
        // Refusals of callers not authenticated (no credentials, wrong
        // ones, a failed sign-in) are counted, not written one row each.
        let counted = caller.is_none() && response.status().is_client_error();
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
            target: target.chars().take(crate::audit::TARGET_KEPT).collect(),
            outcome: i64::from(response.status().as_u16()),
            source,
            detail: response
                .extensions()
                .get::<AuditDetail>()
                .map(|d| d.0.clone()),
        };
        let entry = match counted {
            true => state.refusals.note(entry),
            false => Some(entry),
        };
        if let Some(entry) = entry
            && let Err(e) = state.fleet.db.audit(&entry).await
        {
            tracing::error!("cannot append to the audit trail: {e}");
        }
    }
    response
}

/// The largest request body read from an authenticated caller, on a route
/// that takes one (axum's own limit for `Json`); a package upload, streamed
/// to disk, is the one exception.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How long a request's body may take to arrive (a package upload, streamed
/// to disk, is not held to it).
const BODY_TIME: std::time::Duration = std::time::Duration::from_secs(60);

/// The largest body read before the caller is known (signing in, an
/// enrollment), or on a route that takes none.
const ANONYMOUS_BODY_LIMIT: usize = 64 * 1024;

/// A body over the limit but under this many times it is read (and dropped)
/// before the refusal, so that the client hears it; a larger one is cut off.
const DRAIN_FACTOR: u64 = 8;

/// The package upload: its body streams to disk, however large.
const STREAMED: &str = "/api/v1/packages/{sha256}";

/// Reads the request's body whole before anything answers. A refusal sent
/// while the client still writes its body (a wrong content type, a bad
/// query, no credentials) closes the connection under it, and the client
/// sees a cut connection instead of the answer.
async fn read_whole(request: Request, path: &str, limit: usize) -> Result<Request, Response> {
    if path == STREAMED {
        return Ok(request);
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            match limit {
                BODY_LIMIT => format!("the request body is over {} MiB", BODY_LIMIT >> 20),
                _ => format!(
                    "the request body is over {} KiB (more only once signed in, on a route that takes it)",
                    limit >> 10
                ),
            },
        )
    };
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        // Read what was sent, up to a bound, so that the refusal arrives.
        if n <= limit as u64 * DRAIN_FACTOR {
            let mut stream = request.into_body().into_data_stream();
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut stream).await {}
        }
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Err(_) if declared.is_none() => Err(too_large()),
        Err(e) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// What a response says the action did, for the audit trail (what a
/// database restore discarded).
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// Who a response says acted, when the gate could not know (signing in).
#[derive(Debug, Clone)]
pub struct AuditActor(pub String);

/// What a session whose password must be changed may still do.
const WHILE_CHANGING: [(&str, &str); 3] = [
    ("GET", "/api/v1/session"),
    ("DELETE", "/api/v1/session"),
    ("PUT", "/api/v1/session/password"),
];

/// Who sent the request, from its head: `Ok(None)` when no credentials
/// came; a refusal when credentials came and are not valid.
async fn identify(
    state: &ApiState,
    access: &Access,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<Option<Caller>, Response> {
    // A connected agent, with the download token of its connection.
    let agent = access
        .agents
        .contains(&(method.clone(), path.to_owned()))
        .then(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|token| state.fleet.downloader(token.trim()))
        })
        .flatten();
    match agent {
        Some(server) => Ok(Some(Caller {
            name: format!("agent {server}"),
            role: Role::Viewer,
            must_change_password: false,
        })),
        None => authenticate(&state.fleet.db, headers, method).await,
    }
}

/// Authorizes who was identified; the caller (if any) and the response.
async fn admit(
    access: &Access,
    method: &Method,
    path: &str,
    authenticated: Result<Option<Caller>, Response>,
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
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(_) if need == Need::Public => None,
        Err(refusal) => return (None, refusal),
    };
    match (need, caller) {
        (Need::Role(_), None) => (None, unauthorized()),
        // A password someone else set: changed before anything else.
        (Need::Role(_), Some(caller))
            if caller.must_change_password
                && !WHILE_CHANGING.contains(&(method.as_str(), path)) =>
        {
            let refusal = refuse(
                StatusCode::FORBIDDEN,
                "password_change_required",
                format!(
                    "{} must change its password first (PUT /api/v1/session/password): it was set by someone else",
                    caller.name
                ),
            );
            (Some(caller), refusal)
        }
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
            Some((name, role)) => Ok(Some(Caller {
                name,
                role,
                must_change_password: false,
            })),
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
    let carries_csrf = matches!((sent, bearer.csrf.as_deref()),
        (Some(sent), Some(expected)) if flotilla_proto::web::same_secret(sent, expected));
    if !safe && !carries_csrf {
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
            must_change_password: bearer.must_change_password,
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
