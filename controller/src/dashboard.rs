//! The web dashboard: the page and its assets from `web/`, embedded in the
//! binary (no CDN, nothing to install next to it). The pages hold no data:
//! they read the REST API as the signed-in operator (the sign-in page is
//! `/login`) and follow `/api/v1/events` to stay live without a reload.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use flotilla_proto::web::{SECURITY_HEADERS, host_name};

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");
const COMMON_SCRIPT: &str = include_str!("../../web/common.js");
const LOGIN: &str = include_str!("../../web/login.html");
const AUDIT: &str = include_str!("../../web/audit.html");
const AGENTS: &str = include_str!("../../web/agents.html");
const AGENTS_SCRIPT: &str = include_str!("../../web/agents.js");
const AUDIT_SCRIPT: &str = include_str!("../../web/audit.js");
const LOGIN_SCRIPT: &str = include_str!("../../web/login.js");
const RELEASES: &str = include_str!("../../web/releases.html");
const RELEASES_SCRIPT: &str = include_str!("../../web/releases.js");
const ROLLOUTS: &str = include_str!("../../web/rollouts.html");
const ROLLOUTS_SCRIPT: &str = include_str!("../../web/rollouts.js");
const DATABASE: &str = include_str!("../../web/database.html");
const DATABASE_SCRIPT: &str = include_str!("../../web/database.js");

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route("/style.css", get(|| async { asset("text/css", STYLE) }))
        .route(
            "/common.js",
            get(|| async { asset("text/javascript", COMMON_SCRIPT) }),
        )
        .route("/login", get(|| async { Html(LOGIN) }))
        .route("/audit", get(|| async { Html(AUDIT) }))
        .route("/agents", get(|| async { Html(AGENTS) }))
        .route(
            "/agents.js",
            get(|| async { asset("text/javascript", AGENTS_SCRIPT) }),
        )
        .route(
            "/audit.js",
            get(|| async { asset("text/javascript", AUDIT_SCRIPT) }),
        )
        .route(
            "/login.js",
            get(|| async { asset("text/javascript", LOGIN_SCRIPT) }),
        )
        .route("/releases", get(|| async { Html(RELEASES) }))
        .route(
            "/releases.js",
            get(|| async { asset("text/javascript", RELEASES_SCRIPT) }),
        )
        .route("/database", get(|| async { Html(DATABASE) }))
        .route(
            "/database.js",
            get(|| async { asset("text/javascript", DATABASE_SCRIPT) }),
        )
        .route("/rollouts", get(|| async { Html(ROLLOUTS) }))
        .route(
            "/rollouts.js",
            get(|| async { asset("text/javascript", ROLLOUTS_SCRIPT) }),
        )
}

/// The dashboard and API answer only to their own host names (a request for
/// any other is DNS rebinding), and every answer forbids framing.
pub async fn guard(
    axum::extract::State(names): axum::extract::State<std::sync::Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // HTTP/2 requests carry the host in the URI's authority.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let name = host_name(&host);
    let mut response = if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
        next.run(request).await
    } else {
        tracing::warn!(host = %host, "refused a request for a host name this controller does not answer to");
        (
            axum::http::StatusCode::FORBIDDEN,
            axum::Json(crate::api::ErrorBody {
                error: "forbidden",
                message: format!(
                    "this controller does not answer to the host name \"{name}\" (see --tls-name)"
                ),
            }),
        )
            .into_response()
    };
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
