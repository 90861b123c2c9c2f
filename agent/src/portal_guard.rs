//! The portal's guard: it obeys only its own pages. A request for another
//! host name is refused (DNS rebinding); a change must come from the
//! portal's own forms (a token made at each start, in every form) or be a
//! JSON request from no other origin; every answer forbids framing.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flotilla_proto::web::{SECURITY_HEADERS, host_name};
use serde_json::json;

use crate::state::Agent;

/// The hidden field every form of the portal carries.
pub fn token_field(agent: &Agent) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        agent.portal_token
    )
}

/// The host names the portal answers to: loopback, and the configured ones.
fn allowed_host(agent: &Agent, host: &str) -> bool {
    let name = host_name(host);
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
        || agent
            .settings
            .portal_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&name))
}

/// The portal obeys only its own pages: a request for another host name is
/// refused (DNS rebinding), a change must come from the portal's own form
/// (its token) or be a JSON request from no other origin, and every answer
/// forbids framing.
pub async fn guard(
    State(agent): State<Arc<Agent>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = match admit(&agent, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal,
    };
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn refused(status: StatusCode, message: &str) -> Response {
    tracing::warn!("portal request refused: {message}");
    (
        status,
        Json(json!({"error": "refused", "message": message})),
    )
        .into_response()
}

async fn admit(
    agent: &Agent,
    request: axum::extract::Request,
) -> Result<axum::extract::Request, Response> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !allowed_host(agent, &host) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            &format!("this portal answers to localhost, not to the host name \"{host}\""),
        ));
    }
    if request.method() != axum::http::Method::POST {
        return Ok(request);
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    if let Some(origin) = origin
        && origin != format!("http://{host}")
    {
        return Err(refused(
            StatusCode::FORBIDDEN,
            &format!("a change from another page ({origin}) is refused"),
        ));
    }
    if request.uri().path().starts_with("/api/") {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        return match json {
            true => Ok(request),
            false => Err(refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the portal's API takes application/json requests only",
            )),
        };
    }
    // A form: its body must carry the token of the portal's own pages.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024).await else {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large",
        ));
    };
    let carries_token = String::from_utf8_lossy(&bytes)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(name, value)| name == "csrf" && value == agent.portal_token);
    if !carries_token {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "this form did not come from the portal's own page; open http://localhost:8080/ and use its buttons",
        ));
    }
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
}
