//! The portal's guard: it obeys only its own pages and the server's
//! administrators. A request for another host name is refused (DNS
//! rebinding); a change must prove that the caller administers the server
//! ([`crate::local_access`]: the local token, or a browser signed in with a
//! one-time link), and, from a browser, come from the portal's own forms (a
//! token made at each start, in every form) or be a JSON request from no
//! other origin; every answer forbids framing. A
//! refusal is a page that says what to do for a person, JSON for the API.
//! The token's field in the forms is written by [`super::pages::token_field`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use flotilla_proto::web::{SECURITY_HEADERS, host_name};
use serde_json::json;

use crate::state::Agent;

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
    let api = request.uri().path().starts_with("/api/");
    let mut response = match admit(&agent, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal.answer(&agent, api),
    };
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    // A page shows the server as it is now: never one kept from before (the
    // browser's Back button included).
    let page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("text/html"));
    if page {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    response
}

/// Why a request was refused, and what the person can do about it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    /// What to do instead, for the page a person sees.
    what_to_do: String,
}

fn refusal(status: StatusCode, message: String, what_to_do: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message,
        what_to_do: what_to_do.into(),
    }
}

impl Refusal {
    /// JSON for the API; for a person, a page of the portal with a way back.
    fn answer(self, agent: &Agent, api: bool) -> Response {
        tracing::warn!("portal request refused: {}", self.message);
        if api {
            let body = json!({"error": "refused", "message": self.message});
            return (self.status, Json(body)).into_response();
        }
        let page = super::pages::message_page(
            "Refused",
            &self.message,
            &format!(
                "{} The portal is at http://localhost:{}/ on this server.",
                self.what_to_do,
                agent.portal_address.port()
            ),
        );
        (self.status, Html(page)).into_response()
    }
}

const OPEN_THE_PORTAL: &str = "Open the portal on this server and use its own buttons.";

async fn admit(
    agent: &Agent,
    request: axum::extract::Request,
) -> Result<axum::extract::Request, Refusal> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !allowed_host(agent, &host) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            format!("this portal answers to localhost, not to the host name \"{host}\""),
            "Use the portal's own address, not another name for this server.",
        ));
    }
    if request.method() != axum::http::Method::POST {
        return Ok(request);
    }
    let api = request.uri().path().starts_with("/api/");
    // Only an administrator of this server changes anything: the local
    // token (which no browser sends on its own), or a signed-in browser.
    let bearer = agent.local.bearer(request.headers());
    if !bearer && !agent.local.signed_in(request.headers()) {
        let how = crate::local_access::how_to_sign_in(&agent.settings.layout.portal_token_file());
        return Err(refusal(
            StatusCode::UNAUTHORIZED,
            "changing something needs an administrator of this server".to_owned(),
            how,
        ));
    }
    check_origin(request.headers(), &host, api)?;
    if api {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        return match json {
            true => Ok(request),
            false => Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the portal's API takes application/json requests only".to_owned(),
                "Send the request as JSON.",
            )),
        };
    }
    // A form: its body must carry the token of the portal's own pages.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024).await else {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the form is too large".to_owned(),
            OPEN_THE_PORTAL,
        ));
    };
    let carries_token = String::from_utf8_lossy(&bytes)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(name, value)| {
            name == "csrf" && flotilla_proto::web::same_secret(value, &agent.portal_token)
        });
    if !carries_token {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "this form did not come from the portal's own page (or the page was opened before the agent restarted)".to_owned(),
            "Open the portal again and press the button there.",
        ));
    }
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
}

/// A change must come from the portal's own pages. A browser says where a
/// request comes from: `Sec-Fetch-Site` (only `same-origin`, or `none` for
/// what a person typed, is accepted) and `Origin`, which must be the
/// portal's own. A form may come with `Origin: null` (a browser sends it
/// for a page whose referrer policy withholds its address) or with none
/// (older browsers): its token, checked next, is then the proof. The JSON
/// API takes no opaque origin: no page of the portal calls it.
fn check_origin(headers: &HeaderMap, host: &str, api: bool) -> Result<(), Refusal> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            format!("a change from another site ({site}) is refused"),
            OPEN_THE_PORTAL,
        ));
    }
    match text(header::ORIGIN.as_str()) {
        None => Ok(()),
        Some(origin) if origin == format!("http://{host}") => Ok(()),
        Some("null") if !api => Ok(()),
        Some(origin) => Err(refusal(
            StatusCode::FORBIDDEN,
            format!("a change from another page ({origin}) is refused"),
            OPEN_THE_PORTAL,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, header::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn where_a_change_may_come_from() {
        let host = "localhost:8080";
        /// The headers a request came with, whether it is for the API, and
        /// whether it is admitted.
        type Case<'a> = (&'a [(&'static str, &'static str)], bool, bool);
        let cases: [Case; 10] = [
            // (headers, api, admitted)
            (&[], false, true),
            (&[("origin", "http://localhost:8080")], false, true),
            (&[("origin", "null")], false, true),
            (&[("origin", "null")], true, false),
            (&[("origin", "http://evil.example")], false, false),
            (&[("origin", "http://localhost:7080")], false, false),
            (&[("origin", "http://evil.example")], true, false),
            (
                &[("sec-fetch-site", "same-origin"), ("origin", "null")],
                false,
                true,
            ),
            (
                &[("sec-fetch-site", "cross-site"), ("origin", "null")],
                false,
                false,
            ),
            (
                &[
                    ("sec-fetch-site", "same-site"),
                    ("origin", "http://localhost:8080"),
                ],
                false,
                false,
            ),
        ];
        for (pairs, api, admitted) in cases {
            assert_eq!(
                check_origin(&headers(pairs), host, api).is_ok(),
                admitted,
                "{pairs:?} api={api}"
            );
        }
    }
}
