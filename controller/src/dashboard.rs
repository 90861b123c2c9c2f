//! The web dashboard: the page and its assets from `web/`, embedded in the
//! binary (no CDN, nothing to install next to it). The pages hold no data:
//! they read the REST API as the signed-in operator (the sign-in page is
//! `/login`) and follow `/api/v1/events` to stay live without a reload.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use flotilla_proto::web::{SECURITY_HEADERS, host_name};

/// Every page's frame: `<head>`, the header with the navigation, the
/// scripts. Each page gives its `<main>`.
const SKELETON: &str = include_str!("../../web/page.html");
const STYLE: &str = include_str!("../../web/style.css");
const COMMON_SCRIPT: &str = include_str!("../../web/common.js");

/// The navigation, in order: path and label.
const NAV: [(&str, &str); 6] = [
    ("/", "Fleet"),
    ("/releases", "Releases"),
    ("/rollouts", "Rollouts"),
    ("/agents", "Agents"),
    ("/users", "Users"),
    ("/audit", "Audit"),
];

/// A dashboard page.
struct Page {
    path: &'static str,
    /// After "Flotilla ·" in the window's title.
    title: &'static str,
    /// Beside the brand in the header.
    brand: &'static str,
    /// Whether it follows the event stream (the header shows its state).
    live: bool,
    /// Whether it shows the navigation (not before signing in).
    nav: bool,
    /// Its `<main>`, from `web/<page>.html`.
    main: &'static str,
    /// Its script's name and text, from `web/`.
    script: (&'static str, &'static str),
}

const PAGES: [Page; 8] = [
    Page {
        path: "/",
        title: "Fleet",
        brand: "fleet",
        live: true,
        nav: true,
        main: include_str!("../../web/index.html"),
        script: ("app.js", include_str!("../../web/app.js")),
    },
    Page {
        path: "/login",
        title: "Sign in",
        brand: "sign in",
        live: false,
        nav: false,
        main: include_str!("../../web/login.html"),
        script: ("login.js", include_str!("../../web/login.js")),
    },
    Page {
        path: "/releases",
        title: "Releases",
        brand: "releases",
        live: false,
        nav: true,
        main: include_str!("../../web/releases.html"),
        script: ("releases.js", include_str!("../../web/releases.js")),
    },
    Page {
        path: "/rollouts",
        title: "Rollouts",
        brand: "rollouts",
        live: true,
        nav: true,
        main: include_str!("../../web/rollouts.html"),
        script: ("rollouts.js", include_str!("../../web/rollouts.js")),
    },
    Page {
        path: "/database",
        title: "Database",
        brand: "database",
        live: true,
        nav: true,
        main: include_str!("../../web/database.html"),
        script: ("database.js", include_str!("../../web/database.js")),
    },
    Page {
        path: "/agents",
        title: "Agents",
        brand: "agents",
        live: false,
        nav: true,
        main: include_str!("../../web/agents.html"),
        script: ("agents.js", include_str!("../../web/agents.js")),
    },
    Page {
        path: "/users",
        title: "Users",
        brand: "users",
        live: false,
        nav: true,
        main: include_str!("../../web/users.html"),
        script: ("users.js", include_str!("../../web/users.js")),
    },
    Page {
        path: "/audit",
        title: "Audit",
        brand: "audit",
        live: false,
        nav: true,
        main: include_str!("../../web/audit.html"),
        script: ("audit.js", include_str!("../../web/audit.js")),
    },
];

/// A page in its frame, the current one marked in the navigation.
fn render(page: &Page) -> String {
    let nav = if page.nav {
        let links: Vec<String> = NAV
            .iter()
            .map(|(path, label)| {
                let current = if *path == page.path { " current" } else { "" };
                format!("<a class=\"nav{current}\" href=\"{path}\">{label}</a>")
            })
            .collect();
        format!("  <nav class=\"who\">{}</nav>\n", links.join(" · "))
    } else {
        String::new()
    };
    let live = if page.live {
        "  <div class=\"link warn\" id=\"live\">connecting…</div>\n"
    } else {
        ""
    };
    SKELETON
        .replace("{title}", page.title)
        .replace("{brand}", page.brand)
        .replace("{nav}", &nav)
        .replace("{live}", live)
        .replace("{script}", page.script.0)
        .replace("{main}", page.main)
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/style.css", get(|| async { asset("text/css", STYLE) }))
        .route(
            "/common.js",
            get(|| async { asset("text/javascript", COMMON_SCRIPT) }),
        );
    for page in &PAGES {
        let html = render(page);
        let (name, script) = page.script;
        router = router
            .route(page.path, get(move || async move { Html(html) }))
            .route(
                &format!("/{name}"),
                get(move || async move { asset("text/javascript", script) }),
            );
    }
    router
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
