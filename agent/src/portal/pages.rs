//! The portal's home page, what the procedure shows a person logged on to
//! the server: each module with its installed version and its true state
//! (up to date, or an update offered with its version), the updates with
//! their release notes and Install buttons, the recent installs, the kept
//! backups with their dates, sizes and Restore buttons, what was repaired
//! at start; and the page every refusal and message is shown on.
//!
//! Pages are rendered on the server (they must work in any browser an
//! operator finds on a Windows server); `web/portal/portal.js` replaces the
//! regions that changed (`data-live`) without reloading the page.

use flotilla_proto::domain::{ModuleKind, ModuleState};

use crate::history::{self, Entry};
use crate::html::{downtime, escape, local_time, markdown, page, size, time, zone_name};
use crate::installs;
use crate::inventory::Inventory;
use crate::pending::Pending;
use crate::state::{Agent, LinkStatus};

const PAGE: &str = include_str!("../../../web/portal/index.html");

/// The hidden field every form of the portal carries: the token made at
/// each start, which the guard checks ([`super::guard`]).
pub fn token_field(agent: &Agent) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        agent.portal_token
    )
}

/// Whether this browser may make changes, and how it can.
fn access_line(agent: &Agent, signed_in: bool) -> String {
    match signed_in {
        true => format!(
            "<form method=\"post\" action=\"/logout\" class=\"access muted small\" id=\"signed-in\">Signed in as an administrator of this server. {}<button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
            token_field(agent)
        ),
        false => "<p class=\"access notice\" id=\"sign-in-notice\">To install or restore from this page, sign in as an administrator of this server: run <code>flotilla-agent portal-link</code> as an administrator (root) and open the link it prints.</p>".to_owned(),
    }
}

/// A page that says one thing, what to do about it, and the way back.
pub fn message_page(title: &str, message: &str, what_to_do: &str) -> String {
    page(
        title,
        &format!(
            "<section class=\"problems\" id=\"message\"><h2>{t}</h2><p>{m}</p><p id=\"what-to-do\">{w}</p></section><p><a href=\"/\" id=\"back\">Back to the modules</a></p>",
            t = escape(title),
            m = escape(message),
            w = escape(what_to_do),
        ),
        None,
    )
}

/// Renders the portal's home page for the agent's current state.
pub fn home(agent: &Agent, signed_in: bool) -> String {
    let inventory = agent.inventory.borrow().clone();
    let last_check = *agent.last_check.borrow();
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
        let count = match pending.len() {
            1 => "1 update".to_owned(),
            n => format!("{n} updates"),
        };
        (format!("{count} to install"), "warn")
    };
    let (link_text, link_class) = link_line(&agent.link.borrow());
    PAGE.replace("{{server}}", &escape(settings.server_id.as_str()))
        .replace("{{site}}", &escape(settings.site.as_str()))
        .replace("{{link_class}}", link_class)
        .replace("{{link_text}}", &link_text)
        .replace("{{headline_class}}", headline_class)
        .replace("{{headline}}", &escape(&headline))
        .replace("{{access}}", &access_line(agent, signed_in))
        .replace("{{problems}}", &problems_section(&inventory))
        .replace("{{updates}}", &updates_section(agent, &inventory, &pending))
        .replace(
            "{{rows}}",
            &module_rows(agent, &inventory, &pending, running.as_deref()),
        )
        .replace("{{history}}", &history_section(agent, &inventory))
        .replace("{{backups}}", &backups_section(agent, &inventory))
        .replace("{{notices}}", &notices_section(agent))
        .replace("{{last_check}}", &time(last_check))
        .replace("{{zone}}", &escape(&zone_name()))
        .replace(
            "{{status_file}}",
            &escape(&settings.layout.status_file().display().to_string()),
        )
        .replace(
            "{{applications_config}}",
            &escape(&settings.layout.applications_config().display().to_string()),
        )
}

/// One row per declared module, its state as a person reads it: an update
/// offered is named with its version, an install running says so.
fn module_rows(
    agent: &Agent,
    inventory: &Inventory,
    pending: &[Pending],
    running: Option<&str>,
) -> String {
    inventory
        .modules
        .iter()
        .map(|module| {
            let name = module.name.as_str();
            let version = module
                .installed_version
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "—".into());
            let offered = pending.iter().find(|p| p.module == name);
            let (state_class, state) = match (module.state, offered) {
                _ if running == Some(name) => (
                    "installing",
                    match agent.installs.view(name) {
                        Some(view) => format!("installing {}…", view.to),
                        None => "installing…".to_owned(),
                    },
                ),
                (ModuleState::Installed, Some(update)) => {
                    ("update", format!("update to {} offered", update.version))
                }
                (ModuleState::Installed, None) => ("installed", "up to date".to_owned()),
                (state, _) => (
                    state.as_str(),
                    format!("{}: {}", state.as_str().replace('_', " "), module.detail),
                ),
            };
            format!(
                "        <tr data-module=\"{name}\" class=\"state-{state_class}\"><td class=\"name\">{name}</td><td>{kind}</td><td class=\"version\">{version}</td><td class=\"state\">{state}</td><td><code>{path}</code></td></tr>\n",
                name = escape(name),
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

/// What the portal's buttons carry while an install runs: they wait for it
/// (one install at a time), and say so.
fn while_running(agent: &Agent) -> String {
    match agent.installs.running() {
        Some(running) => format!(
            " disabled title=\"{} is running; the buttons come back when it ends\"",
            escape(&running)
        ),
        None => String::new(),
    }
}

/// The pending updates with their release notes and Install buttons.
fn updates_section(agent: &Agent, inventory: &Inventory, pending: &[Pending]) -> String {
    if pending.is_empty() {
        return String::new();
    }
    let token = token_field(agent);
    let busy = while_running(agent);
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
                "<tr class=\"notes\"><td colspan=\"4\"><div class=\"release-notes\">{}</div></td></tr>",
                markdown(notes.trim())
            )
        };
        updates.push_str(&format!(
            "<tr data-update=\"{m}\"><td class=\"name\">{m}</td><td>{installed}</td><td class=\"version\">{v}</td><td><form method=\"post\" action=\"/install/{m}\">{token}<button type=\"submit\"{busy}>Install {v}</button></form></td></tr>{notes}",
            m = escape(&update.module),
            installed = escape(&installed),
            v = escape(update.version.as_str()),
        ));
    }
    updates.push_str("</tbody></table></section>");
    updates
}

/// The installs of this server, the newest first, across its modules.
fn history_section(agent: &Agent, inventory: &Inventory) -> String {
    const SHOWN: usize = 10;
    let updates = agent.settings.layout.updates_dir();
    let mut unreadable = Vec::new();
    let mut entries: Vec<(String, Entry)> = Vec::new();
    for module in &inventory.modules {
        let name = module.name.as_str();
        match history::read(&updates, &module.name) {
            Ok(found) => entries.extend(found.into_iter().map(|e| (name.to_owned(), e))),
            Err(e) => unreadable.push(format!("<li>{}</li>", escape(&e.to_string()))),
        }
    }
    if entries.is_empty() && unreadable.is_empty() {
        return String::new();
    }
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.finished_at));
    let rows: String = entries
        .iter()
        .take(SHOWN)
        .map(|(module, entry)| history_row(module, entry))
        .collect();
    let unreadable = match unreadable.is_empty() {
        true => String::new(),
        false => format!("<ul class=\"problems\">{}</ul>", unreadable.concat()),
    };
    format!(
        "<section class=\"card\" id=\"history\"><h2>Recent installs</h2>{unreadable}<table><thead><tr><th>When</th><th>Module</th><th>From → to</th><th>Result</th><th>Out of service</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

/// One finished install as a row: when, what, how it ended, the downtime.
pub fn history_row(module: &str, entry: &Entry) -> String {
    format!(
        "<tr data-install=\"{id}\" class=\"{class}\"><td>{when}</td><td class=\"name\">{m}</td><td>{from} → {to}</td><td class=\"result\">{result}</td><td>{down}</td><td><a href=\"/history/{m}#{id}\">details</a></td></tr>",
        id = escape(&entry.install_id),
        class = if entry.ending.ok() { "ok" } else { "bad" },
        when = time(entry.finished_at),
        m = escape(module),
        from = escape(entry.from.as_deref().unwrap_or("—")),
        to = escape(&entry.to),
        result = escape(&entry.result()),
        down = entry
            .downtime_ms
            .map(downtime)
            .unwrap_or_else(|| "—".into()),
    )
}

/// Every kept backup once, newest first, with its date, size and a Restore
/// button for that very backup.
fn backups_section(agent: &Agent, inventory: &Inventory) -> String {
    let token = token_field(agent);
    let busy = while_running(agent);
    let mut kept = String::new();
    for module in &inventory.modules {
        let name = escape(module.name.as_str());
        for backup in installs::backups(agent, module.name.as_str()) {
            let taken = backup.taken_at.map(time).unwrap_or_else(|| "—".to_owned());
            let short = backup
                .taken_at
                .map(|t| local_time(t).chars().take(16).collect::<String>())
                .unwrap_or_default();
            let file = escape(&backup.file);
            let v = escape(backup.version.as_str());
            let short = escape(&short);
            // A database module's restore asks first: its database too?
            let button = match module.kind {
                ModuleKind::Database => format!(
                    "<a class=\"button\" href=\"/restore/{name}?to={v}&amp;file={file}\">Restore {v} of {short}…</a>"
                ),
                _ => format!(
                    "<form method=\"post\" action=\"/rollback/{name}?to={v}&amp;file={file}\">{token}<button type=\"submit\"{busy}>Restore {v} of {short}</button></form>"
                ),
            };
            kept.push_str(&format!(
                "<tr data-backup=\"{file}\"><td class=\"name\">{name}</td><td class=\"version\">{v}</td><td>{taken}</td><td>{size}</td><td>{button}</td></tr>",
                size = size(backup.size),
            ));
        }
    }
    if kept.is_empty() {
        return String::new();
    }
    format!(
        "<section class=\"card\" id=\"backups\"><h2>Earlier versions kept</h2><table><thead><tr><th>Module</th><th>Version</th><th>Taken</th><th>Size</th><th></th></tr></thead><tbody>{kept}</tbody></table></section>"
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

/// How the link to the controller stands, as HTML, with its tone.
fn link_line(link: &LinkStatus) -> (String, &'static str) {
    match link {
        LinkStatus::Connecting => ("Connecting to the controller…".to_owned(), "warn"),
        LinkStatus::Connected { since, .. } => (
            format!("Connected to the controller since {}", time(*since)),
            "ok",
        ),
        LinkStatus::Disconnected { since, error } => (
            format!(
                "Controller unreachable since {} ({}); retrying",
                time(*since),
                escape(error)
            ),
            "bad",
        ),
        LinkStatus::Refused { message, .. } => (
            format!("Refused by the controller: {}", escape(message)),
            "bad",
        ),
    }
}
