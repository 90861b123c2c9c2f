//! The local portal on `http://127.0.0.1:8080/`: what the procedure shows a
//! person logged on to the server. The modules with their installed versions
//! and states, "All up to date" when nothing is pending, and any problem the
//! agent found. The install issue adds the Install buttons.
//!
//! The page is rendered on the server (it must work in any browser an
//! operator finds on a Windows server) from `web/portal/index.html`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use chrono::SecondsFormat;
use flotilla_proto::domain::ModuleState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Agent, LinkStatus};

const PAGE: &str = include_str!("../../web/portal/index.html");
const STYLE: &str = include_str!("../../web/style.css");

/// Serves the portal on `listener` until `stop` is cancelled.
pub async fn serve(
    agent: Arc<Agent>,
    listener: TcpListener,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(page))
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .with_state(agent);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn page(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    Html(render(&agent))
}

/// Renders the portal page for the agent's current state.
pub fn render(agent: &Agent) -> String {
    let inventory = agent.inventory.borrow().clone();
    let link = agent.link.borrow().clone();
    let last_check = agent
        .last_check
        .borrow()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let settings = &agent.settings;

    let rows: String = inventory
        .modules
        .iter()
        .map(|module| {
            let version = module
                .installed_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into());
            let state = match module.state {
                ModuleState::Installed => "up to date".to_owned(),
                _ => format!("{}: {}", module.state.as_str().replace('_', " "), module.detail),
            };
            format!(
                "        <tr data-module=\"{name}\" class=\"state-{state_class}\"><td class=\"name\">{name}</td><td>{kind}</td><td class=\"version\">{version}</td><td class=\"state\">{state}</td><td><code>{path}</code></td></tr>\n",
                name = escape(module.name.as_str()),
                state_class = module.state.as_str(),
                kind = module.kind,
                version = escape(&version),
                state = escape(&state),
                path = escape(&module.install_path),
            )
        })
        .collect();
    let problems = if inventory.problems.is_empty() {
        String::new()
    } else {
        let items: String = inventory
            .problems
            .iter()
            .map(|p| format!("<li>{}</li>", escape(&p.to_string())))
            .collect();
        format!(
            "<section class=\"problems\" id=\"problems\"><h2>Needs attention</h2><ul>{items}</ul></section>"
        )
    };
    let (headline, headline_class) = if inventory.modules.is_empty() {
        ("No module is declared on this server", "warn")
    } else {
        // Pending updates arrive with releases; until one is pending, every
        // module is as up to date as the controller knows.
        ("All up to date", "ok")
    };
    let (link_text, link_class) = match link {
        LinkStatus::Connecting => ("Connecting to the controller…".to_owned(), "warn"),
        LinkStatus::Connected { since } => (
            format!(
                "Connected to the controller since {}",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            "ok",
        ),
        LinkStatus::Disconnected { since, error } => (
            format!(
                "Controller unreachable since {} ({error}); retrying",
                since.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            "bad",
        ),
        LinkStatus::Refused { message, .. } => {
            (format!("Refused by the controller: {message}"), "bad")
        }
    };

    PAGE.replace("{{server}}", &escape(settings.server_id.as_str()))
        .replace("{{site}}", &escape(settings.site.as_str()))
        .replace("{{link_class}}", link_class)
        .replace("{{link_text}}", &escape(&link_text))
        .replace("{{headline_class}}", headline_class)
        .replace("{{headline}}", headline)
        .replace("{{problems}}", &problems)
        .replace("{{rows}}", &rows)
        .replace("{{last_check}}", &last_check)
        .replace(
            "{{status_file}}",
            &escape(&settings.layout.status_file().display().to_string()),
        )
        .replace(
            "{{applications_config}}",
            &escape(&settings.layout.applications_config().display().to_string()),
        )
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
