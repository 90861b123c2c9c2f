//! The local portal on `http://127.0.0.1:8080/`: what the procedure shows a
//! person logged on to the server. The modules with their installed versions
//! and states, "All up to date" when nothing is pending, and any problem the
//! agent found. The install issue adds the Install buttons.
//!
//! The page is rendered on the server (it must work in any browser an
//! operator finds on a Windows server) from `web/portal/index.html`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::SecondsFormat;
use flotilla_proto::domain::ModuleState;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::html::escape;
use crate::install::{EventKind, hooks::Stream};
use crate::installs::{self, StartError};
use crate::inventory::Inventory;
use crate::pending::Pending;
use crate::portal_guard::{self, token_field};
use crate::state::InstallView;
use crate::state::{Agent, LinkStatus};

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
        .route("/install/{module}", post(install_form))
        .route("/installs/{module}", get(install_page))
        .route(
            "/api/modules/{module}/install",
            post(install_api).get(install_status),
        )
        .route("/api/modules/{module}/rollback", post(rollback_api))
        .route("/api/modules/{module}/database", get(database_api))
        .route("/api/modules/{module}/database/discard", get(discard_api))
        .route(
            "/api/modules/{module}/database/scripts/{script}/run",
            post(run_script_api),
        )
        .route(
            "/api/modules/{module}/database/scripts/{script}/mark-applied",
            post(mark_applied_api),
        )
        .route("/database/{module}", get(database_page))
        .route(
            "/database/{module}/scripts/{script}/{action}",
            post(database_form),
        )
        .route("/rollback/{module}", post(rollback_form))
        .route("/doctor", get(doctor_page))
        .route("/api/doctor", get(doctor_api))
        .route(
            "/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .layer(axum::middleware::from_fn_with_state(
            agent.clone(),
            portal_guard::guard,
        ))
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
    let last_check = agent
        .last_check
        .borrow()
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let settings = &agent.settings;
    let pending = crate::inventory::pending(&agent.settings.layout, &agent.trust());
    let running = agent.installs.running();
    let (headline, headline_class) = if inventory.modules.is_empty() {
        ("No module is declared on this server".to_owned(), "warn")
    } else if let Some(module) = &running {
        (format!("Installing {module}…"), "warn")
    } else if pending.is_empty() {
        ("All up to date".to_owned(), "ok")
    } else {
        (format!("{} update(s) to install", pending.len()), "warn")
    };
    let sections = [
        problems_section(&inventory),
        updates_section(agent, &inventory, &pending),
        backups_section(agent, &inventory),
        notices_section(agent),
    ]
    .concat();
    let (link_text, link_class) = link_line(&agent.link.borrow());
    PAGE.replace("{{server}}", &escape(settings.server_id.as_str()))
        .replace("{{site}}", &escape(settings.site.as_str()))
        .replace("{{link_class}}", link_class)
        .replace("{{link_text}}", &escape(&link_text))
        .replace("{{headline_class}}", headline_class)
        .replace("{{headline}}", &escape(&headline))
        .replace("{{problems}}", &sections)
        .replace("{{rows}}", &module_rows(&inventory))
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

/// One row per declared module.
fn module_rows(inventory: &Inventory) -> String {
    inventory
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
        .collect()
}

/// What the scan could not read, with the file and line.
fn problems_section(inventory: &Inventory) -> String {
    if inventory.problems.is_empty() {
        return String::new();
    }
    let items: String = inventory
        .problems
        .iter()
        .map(|p| format!("<li>{}</li>", escape(&p.to_string())))
        .collect();
    format!(
        "<section class=\"problems\" id=\"problems\"><h2>Needs attention</h2><ul>{items}</ul></section>"
    )
}

/// The pending updates with their notes and Install buttons.
fn updates_section(agent: &Agent, inventory: &Inventory, pending: &[Pending]) -> String {
    if pending.is_empty() {
        return String::new();
    }
    let token = token_field(agent);
    let mut updates = String::from(
        "<section class=\"card\" id=\"updates\"><h2>Updates to install</h2><p class=\"muted small\">Users of a module see its maintenance page for a few seconds while it is installed.</p><table><thead><tr><th>Module</th><th>Installed</th><th>New version</th><th></th></tr></thead><tbody>",
    );
    for update in pending {
        let installed = inventory
            .module(&update.module)
            .and_then(|m| m.installed_version.as_ref().map(|v| v.to_string()))
            .unwrap_or_else(|| "—".into());
        let notes = std::fs::read_to_string(format!("{}.notes.md", update.package.display()))
            .unwrap_or_default();
        let notes = if notes.trim().is_empty() {
            String::new()
        } else {
            format!(
                "<tr class=\"notes\"><td colspan=\"4\"><pre class=\"release-notes\">{}</pre></td></tr>",
                escape(notes.trim())
            )
        };
        updates.push_str(&format!(
            "<tr data-update=\"{m}\"><td class=\"name\">{m}</td><td>{installed}</td><td class=\"version\">{v}</td><td><form method=\"post\" action=\"/install/{m}\">{token}<button type=\"submit\">Install</button></form></td></tr>{notes}",
            m = escape(&update.module),
            installed = escape(&installed),
            v = escape(update.version.as_str()),
        ));
    }
    updates.push_str("</tbody></table></section>");
    updates
}

/// The earlier versions kept, with Restore buttons.
fn backups_section(agent: &Agent, inventory: &Inventory) -> String {
    let token = token_field(agent);
    let mut kept = String::new();
    for module in &inventory.modules {
        let installed = module.installed_version.as_ref();
        for (_, version) in installs::backups(agent, module.name.as_str())
            .into_iter()
            .filter(|(_, v)| Some(v) != installed)
        {
            kept.push_str(&format!(
                "<tr data-backup=\"{m}/{v}\"><td class=\"name\">{m}</td><td class=\"version\">{v}</td><td><form method=\"post\" action=\"/rollback/{m}?to={v}\">{token}<button type=\"submit\">Restore {v}</button></form></td></tr>",
                m = escape(module.name.as_str()),
                v = escape(version.as_str()),
            ));
        }
    }
    if kept.is_empty() {
        return String::new();
    }
    format!(
        "<section class=\"card\" id=\"backups\"><h2>Earlier versions kept</h2><table><thead><tr><th>Module</th><th>Version</th><th></th></tr></thead><tbody>{kept}</tbody></table></section>"
    )
}

/// What the agent repaired or recovered at start.
fn notices_section(agent: &Agent) -> String {
    let notices: Vec<String> = agent
        .notices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if notices.is_empty() {
        return String::new();
    }
    let items: String = notices
        .iter()
        .map(|notice| format!("<li>{}</li>", escape(notice)))
        .collect();
    format!(
        "<section class=\"card\" id=\"notices\"><h2>Repaired at start</h2><ul>{items}</ul></section>"
    )
}

/// How the link to the controller stands, in words, with its tone.
fn link_line(link: &LinkStatus) -> (String, &'static str) {
    match link {
        LinkStatus::Connecting => ("Connecting to the controller…".to_owned(), "warn"),
        LinkStatus::Connected { since, .. } => (
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
    }
}

async fn install_form(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    started_page(
        &module,
        "Install refused",
        installs::start(
            &agent,
            &module,
            installs::Source::Pending,
            installs::Origin::Local,
        ),
    )
}

fn status_of(error: &StartError) -> StatusCode {
    match error {
        StartError::Busy(_)
        | StartError::Stopping
        | StartError::Held(_)
        | StartError::NotThatVersion { .. } => StatusCode::CONFLICT,
        StartError::UnknownModule(_)
        | StartError::NothingPending(_)
        | StartError::NoBackup { .. }
        | StartError::NoSuchPackage { .. } => StatusCode::NOT_FOUND,
        StartError::NotTrusted { .. } => StatusCode::FORBIDDEN,
    }
}

fn message_page(title: &str, message: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body><main><section class=\"problems\" id=\"message\"><h2>{t}</h2><p>{m}</p></section><p><a href=\"/\">Back to the modules</a></p></main></body></html>",
        t = escape(title),
        m = escape(message)
    )
}

async fn install_page(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let Some(view) = agent.installs.view(&module) else {
        return (
            StatusCode::NOT_FOUND,
            Html(message_page(
                "No install",
                &format!("no install of {module} since the agent started"),
            )),
        )
            .into_response();
    };
    Html(render_install(&view)).into_response()
}

/// The live page of one install: phases, hook output, then the result.
fn render_install(view: &InstallView) -> String {
    let mut body = String::new();
    for event in &view.events {
        let time = event.at.format("%H:%M:%S%.3f");
        let (class, text) = match event.kind {
            EventKind::Phase => ("phase", format!("▶ {}", event.text)),
            EventKind::Step => ("step", event.text.clone()),
            EventKind::Hook(Stream::Stdout) => ("hook", format!("│ {}", event.text)),
            EventKind::Hook(Stream::Stderr) => ("hook stderr", format!("│ {}", event.text)),
            EventKind::Warning => ("warning", format!("⚠ {}", event.text)),
        };
        body.push_str(&format!(
            "<div class=\"event {class}\"><span class=\"muted\">{time}</span> {}</div>\n",
            escape(&text)
        ));
    }
    let (refresh, result) = match &view.result {
        None => (
            "<meta http-equiv=\"refresh\" content=\"1\">",
            "<section class=\"headline warn\" id=\"result\">Installing…</section>".to_owned(),
        ),
        Some(Ok(outcome)) => (
            "",
            format!(
                "<section class=\"headline ok\" id=\"result\">Installed {} {} — out of service for {:.1} s</section>",
                escape(&view.module),
                escape(&outcome.to),
                outcome.downtime.as_secs_f64()
            ),
        ),
        Some(Err(failure)) => (
            "",
            format!(
                "<section class=\"problems\" id=\"result\"><h2>Install failed</h2><p>{}</p>{}</section>",
                escape(&failure.to_string()),
                if failure.hook_output.is_empty() {
                    String::new()
                } else {
                    format!("<pre>{}</pre>", escape(&failure.hook_output.join("\n")))
                }
            ),
        ),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>Installing {m} {to}</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body><header class=\"top\"><div class=\"brand\">Flotilla <span class=\"muted\">update service</span></div><div class=\"who\">Install of <strong>{m}</strong> {to}</div></header><main>{result}<section class=\"card\"><h2>Progress</h2><div class=\"events\" id=\"events\">{body}</div></section><p><a href=\"/\">Back to the modules</a></p></main></body></html>",
        m = escape(&view.module),
        to = escape(&view.to),
    )
}

/// Which kept version to restore; the newest other than the installed one
/// when absent.
#[derive(Debug, Default, Deserialize)]
struct RollbackRequest {
    to: Option<String>,
    /// A database module: `keep` restores its files only and leaves the
    /// database as it is; `restore` (the default) puts it back too.
    #[serde(default)]
    database: DatabaseChoice,
}

/// What a restore does to a database module's database.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DatabaseChoice {
    #[default]
    Restore,
    Keep,
}

async fn rollback_form(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    axum::extract::Query(request): axum::extract::Query<RollbackRequest>,
) -> Response {
    let source = installs::Source::Backup {
        version: request.to,
        keep_database: request.database == DatabaseChoice::Keep,
    };
    started_page(
        &module,
        "Restore refused",
        installs::start(&agent, &module, source, installs::Origin::Local),
    )
}

async fn rollback_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    body: Option<Json<RollbackRequest>>,
) -> Response {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let source = installs::Source::Backup {
        version: request.to,
        keep_database: request.database == DatabaseChoice::Keep,
    };
    started(
        &module,
        installs::start(&agent, &module, source, installs::Origin::Local),
    )
}

/// `POST /api/modules/{module}/install`: an optional package to install
/// instead of the pending one: a package in the packages folder, named by
/// its sha256 (never by a path).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallRequest {
    sha256: Option<String>,
}

async fn install_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    body: Option<Json<InstallRequest>>,
) -> Response {
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let source = match request.sha256 {
        Some(sha256) => installs::Source::Package {
            sha256,
            allow_downgrade: false,
        },
        None => installs::Source::Pending,
    };
    started(
        &module,
        installs::start(&agent, &module, source, installs::Origin::Local),
    )
}

/// The API's answer to a start: 202 with the version, or the refusal.
fn started(module: &str, result: Result<String, StartError>) -> Response {
    match result {
        Ok(to) => (
            StatusCode::ACCEPTED,
            Json(json!({"module": module, "to": to})),
        )
            .into_response(),
        Err(e) => (
            status_of(&e),
            Json(json!({"error": "refused", "message": e.to_string()})),
        )
            .into_response(),
    }
}

/// The form's answer to a start: the install's page, or the refusal.
fn started_page(module: &str, title: &str, result: Result<String, StartError>) -> Response {
    match result {
        Ok(_) => Redirect::to(&format!("/installs/{module}")).into_response(),
        Err(e) => (status_of(&e), Html(message_page(title, &e.to_string()))).into_response(),
    }
}

async fn install_status(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let Some(view) = agent.installs.view(&module) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": format!("no install of {module} since the agent started")})),
        )
            .into_response();
    };
    let events: Vec<serde_json::Value> = view
        .events
        .iter()
        .map(|e| {
            let kind = match e.kind {
                EventKind::Phase => "phase",
                EventKind::Step => "step",
                EventKind::Hook(Stream::Stdout) => "stdout",
                EventKind::Hook(Stream::Stderr) => "stderr",
                EventKind::Warning => "warning",
            };
            json!({"at": e.at, "phase": e.phase.map(|p| p.as_str()), "kind": kind, "text": e.text})
        })
        .collect();
    let result = match &view.result {
        None => serde_json::Value::Null,
        Some(Ok(o)) => {
            json!({"ok": true, "from": o.from, "to": o.to, "downtime_ms": o.downtime.as_millis() as u64, "backup": o.backup, "warnings": o.warnings})
        }
        Some(Err(f)) => json!({
            "ok": false, "message": f.to_string(), "phase": f.phase.map(|p| p.as_str()), "step": f.step,
            "cause": f.cause, "hook_output": f.hook_output, "rolled_back": f.rolled_back, "rollback_error": f.rollback_error,
        }),
    };
    Json(json!({"module": view.module, "to": view.to, "started_at": view.started_at, "running": view.result.is_none(), "events": events, "result": result})).into_response()
}

/// `GET /api/doctor`: every check of [`crate::doctor`], run now.
async fn doctor_api(State(agent): State<Arc<Agent>>) -> Response {
    Json(crate::doctor::run(&agent).await).into_response()
}

/// The Doctor page: the same report, for a person.
async fn doctor_page(State(agent): State<Arc<Agent>>) -> Response {
    Html(crate::doctor::page(&crate::doctor::run(&agent).await)).into_response()
}

/// Who acts on a guided database upgrade.
#[derive(Debug, Default, Deserialize)]
struct Actor {
    by: Option<String>,
}

fn actor(body: Option<Json<Actor>>) -> String {
    body.and_then(|Json(a)| a.by)
        .map(|b| b.trim().chars().take(100).collect::<String>())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "portal (local)".to_owned())
}

fn review_error(e: &crate::databases::ReviewError) -> Response {
    let (status, code) = e.status();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        Json(json!({"error": code, "message": e.to_string()})),
    )
        .into_response()
}

/// `GET /api/modules/{module}/database`: the drift report and the scripts
/// of the pending database upgrade, with their state and the history.
async fn database_api(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    match crate::databases::review(&agent, &module).await {
        Ok(review) => Json(review).into_response(),
        Err(e) => review_error(&e),
    }
}

/// `GET /api/modules/{module}/database/discard?version=1.0.0`: what
/// restoring the database backup taken when `version` was upgraded would
/// throw away (the time since, and rows written per table on PostgreSQL).
async fn discard_api(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    axum::extract::Query(query): axum::extract::Query<DiscardQuery>,
) -> Response {
    match crate::databases::discard(&agent, &module, &query.version).await {
        Ok(discard) => Json(discard).into_response(),
        Err(e) => review_error(&e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct DiscardQuery {
    version: String,
}

/// `POST /api/modules/{module}/database/scripts/{script}/run`: runs one
/// script of a guided upgrade (in order) in its own transaction.
async fn run_script_api(
    State(agent): State<Arc<Agent>>,
    Path((module, script)): Path<(String, String)>,
    body: Option<Json<Actor>>,
) -> Response {
    match crate::databases::run_script(&agent, &module, &script, &actor(body)).await {
        Ok(run) => Json(run).into_response(),
        Err(e) => review_error(&e),
    }
}

/// `POST /api/modules/{module}/database/scripts/{script}/mark-applied`.
async fn mark_applied_api(
    State(agent): State<Arc<Agent>>,
    Path((module, script)): Path<(String, String)>,
    body: Option<Json<Actor>>,
) -> Response {
    match crate::databases::mark_applied(&agent, &module, &script, &actor(body)).await {
        Ok(()) => Json(json!({"script": script, "state": "marked applied"})).into_response(),
        Err(e) => review_error(&e),
    }
}

/// The guided upgrade page: the drift, then the scripts one by one.
async fn database_page(State(agent): State<Arc<Agent>>, Path(module): Path<String>) -> Response {
    let review = match crate::databases::review(&agent, &module).await {
        Ok(review) => review,
        Err(e) => return Html(message_page("Database review", &e.to_string())).into_response(),
    };
    let token = token_field(&agent);
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Database review · {m}</title>\
         <link rel=\"stylesheet\" href=\"/style.css\"></head><body><main>\
         <h1>Database of {m}: {from} → {to}</h1><p id=\"verdict\">{verdict}</p>",
        m = escape(&review.module),
        from = escape(&review.from_version),
        to = escape(&review.to_version),
        verdict = if review.standard {
            "The database is the standard schema: the upgrade runs by itself when the module is installed.".to_owned()
        } else {
            format!(
                "The database is customized ({} differences): nothing runs by itself. Check each script, then run it or mark it applied by hand, in order.",
                review.summary.len()
            )
        }
    );
    if !review.standard {
        html.push_str(
            "<section class=\"problems\" id=\"drift\"><h2>Differences from the standard</h2>",
        );
        if let Some(note) = &review.drift.note {
            html.push_str(&format!("<p class=\"drift-note\">{}</p>", escape(note)));
        }
        for o in &review.drift.missing {
            html.push_str(&format!(
                "<details><summary>missing {} {}</summary><h3>standard</h3><pre>{}</pre></details>",
                escape(&o.kind),
                escape(&o.name),
                escape(&o.definition)
            ));
        }
        for o in &review.drift.added {
            html.push_str(&format!(
                "<details><summary>added {} {}</summary><h3>this database</h3><pre>{}</pre></details>",
                escape(&o.kind), escape(&o.name), escape(&o.definition)
            ));
        }
        for o in &review.drift.modified {
            // A table's columns and constraints, one line each.
            let changes: String = o
                .changes
                .iter()
                .map(|c| format!("<li>{}</li>", escape(&c.line())))
                .collect();
            let changes = if changes.is_empty() {
                String::new()
            } else {
                format!("<ul class=\"table-changes\">{changes}</ul>")
            };
            html.push_str(&format!(
                "<details><summary>modified {} {}</summary>{changes}<h3>standard</h3><pre>{}</pre><h3>this database</h3><pre>{}</pre></details>",
                escape(&o.kind), escape(&o.name), escape(&o.standard), escape(&o.actual)
            ));
        }
        html.push_str("</section>");
    }
    html.push_str("<section id=\"scripts\"><h2>Scripts</h2>");
    let mut next_shown = false;
    for script in &review.scripts {
        let done = script.state == "succeeded" || script.state == "marked applied";
        html.push_str(&format!(
            "<article class=\"script\" data-script=\"{n}\" data-state=\"{st}\"><h3>{n} <span class=\"muted\">{st}</span></h3>{msg}<pre>{sql}</pre>",
            n = escape(&script.name),
            st = escape(&script.state),
            msg = script
                .message
                .as_ref()
                .map(|m| format!("<p>{} <span class=\"muted\">{}</span></p>", escape(m), escape(script.by.as_deref().unwrap_or(""))))
                .unwrap_or_default(),
            sql = escape(&script.sql),
        ));
        if !done && !next_shown && !review.standard {
            next_shown = true;
            let base = format!(
                "/database/{}/scripts/{}",
                escape(&review.module),
                escape(&script.name)
            );
            html.push_str(&format!(
                "<form method=\"post\" action=\"{base}/run\">{token}<button>Run this script</button></form>\
                 <form method=\"post\" action=\"{base}/mark-applied\">{token}<button>Mark as applied by hand</button></form>"
            ));
        }
        html.push_str("</article>");
    }
    html.push_str("</section><p><a href=\"/\">Back to the modules</a></p></main></body></html>");
    Html(html).into_response()
}

/// The page's Run and Mark buttons.
async fn database_form(
    State(agent): State<Arc<Agent>>,
    Path((module, script, action)): Path<(String, String, String)>,
) -> Response {
    let who = "portal (local)";
    let result = match action.as_str() {
        "run" => crate::databases::run_script(&agent, &module, &script, who)
            .await
            .map(|run| {
                if run.ok {
                    None
                } else {
                    Some(format!("{} failed: {}", run.script, run.message))
                }
            }),
        "mark-applied" => crate::databases::mark_applied(&agent, &module, &script, who)
            .await
            .map(|()| None),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match result {
        Ok(None) => Redirect::to(&format!("/database/{module}")).into_response(),
        Ok(Some(failed)) => Html(message_page("Script failed", &failed)).into_response(),
        Err(e) => Html(message_page("Refused", &e.to_string())).into_response(),
    }
}
