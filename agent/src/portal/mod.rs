//! The local portal on `http://127.0.0.1:8080/`: what the procedure shows a
//! person logged on to the server, and the API the command line uses.
//!
//! - [`guard`]: who the portal obeys (its own pages, loopback names).
//! - [`pages`]: the home page (modules, updates with their notes and
//!   Install buttons, recent installs, kept backups with Restore buttons)
//!   and the page every message is shown on.
//! - [`install_page`]: an install followed live, and a module's history.
//! - [`database_page`]: a customized database's guided upgrade.
//! - [`api`]: the JSON API (`/api/…`).
//!
//! Pages are rendered on the server (they must work in any browser an
//! operator finds on a Windows server); `web/portal/portal.js` keeps them
//! current without reloading them.

mod api;
mod database_page;
pub mod guard;
mod install_page;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use flotilla_proto::domain::ModuleName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::installs::{self, StartError};
use crate::state::Agent;

const STYLE: &str = include_str!("../../../web/style.css");
const SCRIPT: &str = include_str!("../../../web/portal/portal.js");

/// Serves the portal on `listener` until `stop` is cancelled.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(home))
        .route("/install/{module}", post(install_form))
        .route("/installs/{module}", get(install))
        .route("/history/{module}", get(history))
        .route("/rollback/{module}", post(rollback_form))
        .route("/restore/{module}", get(database_page::restore_page))
        .route("/database/{module}", get(database_page::database_page))
        .route(
            "/database/{module}/scripts/{script}/{action}",
            post(database_page::database_form),
        )
        .route("/doctor", get(doctor_page))
        .route("/login", get(follow_link))
        .route("/logout", post(sign_out))
        .merge(api::routes())
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .route(
            "/portal.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_a_page)
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            guard::guard,
        ))
        .with_state(agent);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn home(State(agent): State<Arc<Agent>>, headers: axum::http::HeaderMap) -> Html<String> {
    Html(pages::home(&agent, agent.local.signed_in(&headers)))
}

/// A one-time link `flotilla-agent portal-link` printed: signs the browser
/// in and goes to the modules.
async fn follow_link(
    State(agent): State<Arc<Agent>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let session = query
        .get("code")
        .and_then(|code| agent.local.follow_link(code));
    let Some(session) = session else {
        let page = pages::message_page(
            "This link does not work",
            "A sign-in link works once, for ten minutes, until the agent restarts.",
            "Run `flotilla-agent portal-link` again as an administrator on this server, and open the new link.",
        );
        return (StatusCode::FORBIDDEN, Html(page)).into_response();
    };
    tracing::info!("a browser signed in to the portal with a one-time link");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = header::HeaderValue::from_str(&crate::local_access::set_cookie(&session)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Signs the browser out.
async fn sign_out(State(agent): State<Arc<Agent>>, headers: axum::http::HeaderMap) -> Response {
    agent.local.sign_out(&headers);
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "flotilla_portal=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

async fn not_found() -> Response {
    let page = pages::message_page(
        "Not found",
        "This portal has no such page.",
        "Go back to the modules and use the portal's own links and buttons.",
    );
    (StatusCode::NOT_FOUND, Html(page)).into_response()
}

/// An address of a button (`/install/…`, `/rollback/…`) opened as a page.
async fn not_a_page(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let body = serde_json::json!({"error": "method_not_allowed", "message": "this address does not take that method"});
        return (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    }
    let page = pages::message_page(
        "Not a page",
        "This address is where a button of the portal sends its request; it is not a page to open.",
        "Go back to the modules and press the button there.",
    );
    (StatusCode::METHOD_NOT_ALLOWED, Html(page)).into_response()
}

/// The Install button: the install's live page, or why it was refused.
async fn install_form(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let source = installs::Source::Pending;
    let started = installs::start(&agent, &module, source, installs::Origin::Local);
    started_page(&module, "Install refused", started)
}

/// A Restore button: the restore's live page, or why it was refused.
async fn rollback_form(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    axum::extract::Query(request): axum::extract::Query<api::RollbackRequest>,
) -> Response {
    let source = request.source();
    let started = installs::start(&agent, &module, source, installs::Origin::Local);
    started_page(&module, "Restore refused", started)
}

/// The form's answer to a start: the install's page, or the refusal with
/// what to do about it.
fn started_page(module: &str, title: &str, result: Result<String, StartError>) -> Response {
    let error = match result {
        Ok(_) => return Redirect::to(&format!("/installs/{module}")).into_response(),
        Err(error) => error,
    };
    let what_to_do = match &error {
        StartError::Busy(_) => {
            "Wait for the running install to finish (its page shows it), then press the button again."
        }
        StartError::Stopping => "Wait for the service to start again, then press the button again.",
        StartError::Held(_) => {
            "The rollout installs this server by itself; follow it on the controller's dashboard."
        }
        StartError::NotThatVersion { .. } | StartError::NothingPending(_) => {
            "Wait for the download to finish: the module's row says when an update is offered."
        }
        StartError::UnknownModule(_) => {
            "Check applicationspath.config: the Doctor names what it lacks."
        }
        StartError::NoBackup { .. } | StartError::NoSuchPackage { .. } => {
            "Go back to the modules: the page lists what is kept now."
        }
        StartError::SelfUpdate(_) => "Nothing was changed; the message says what the agent needs.",
        StartError::NotTrusted { .. } => {
            "Nothing was installed. Ask the publisher for a package signed by a key this server trusts (trusted_keys in agent.toml)."
        }
    };
    let page = pages::message_page(title, &error.to_string(), what_to_do);
    (api::status_of(&error), Html(page)).into_response()
}

/// The page of a module's latest install: live while it runs.
async fn install(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let Some(name) = declared(&agent, &module) else {
        return no_such_module(&module);
    };
    let updates = agent.settings.layout.updates_dir();
    match install_page::latest(agent.installs.view(&module), &updates, &name) {
        Some(page) => Html(page).into_response(),
        None => {
            let page = pages::message_page(
                "No install",
                &format!("{module} was never installed by this agent."),
                "Installs appear here once they start.",
            );
            (StatusCode::NOT_FOUND, Html(page)).into_response()
        }
    }
}

/// A module's install history.
async fn history(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let Some(name) = declared(&agent, &module) else {
        return no_such_module(&module);
    };
    let updates = agent.settings.layout.updates_dir();
    Html(install_page::history_page(&updates, &name)).into_response()
}

/// `module`'s name, when it is one of this server's modules.
fn declared(agent: &Agent, module: &str) -> Option<ModuleName> {
    let inventory = agent.inventory.borrow();
    inventory
        .modules
        .iter()
        .find(|m| m.name.as_str() == module)
        .map(|m| m.name.clone())
}

fn no_such_module(module: &str) -> Response {
    let page = pages::message_page(
        "No such module",
        &format!("no module named {module} is declared on this server"),
        "Go back to the modules: the page lists those of this server (from applicationspath.config).",
    );
    (StatusCode::NOT_FOUND, Html(page)).into_response()
}

/// The Doctor page: every check, run now, for a person.
async fn doctor_page(State(agent): State<Arc<Agent>>) -> Response {
    Html(crate::doctor::page(&crate::doctor::run(&agent).await)).into_response()
}
