//! An install as a person follows it: its phases, steps and hook output as
//! they come, then its result (`/installs/{module}`, live while it runs,
//! the last one kept on disk after a restart); and a module's install
//! history with the output of its last installs (`/history/{module}`).

use flotilla_proto::domain::ModuleName;

use crate::history::{self, Entry, Line};
use crate::html::{downtime, escape, page, time};
use crate::state::InstallView;

use super::pages::{history_row, message_page};

/// How often a running install's page looks again, in ms.
const LIVE_EVERY_MS: u64 = 1000;

/// A region of a page that changes (`LIVE`, followed by `portal.js`), or
/// of one that does not (`STILL`, shown several times on a page).
const LIVE: bool = true;
const STILL: bool = false;

/// The attributes of region `id`: named, and followed, when `live`.
fn region(id: &str, live: bool) -> String {
    match live {
        true => format!(" id=\"{id}\" data-live=\"{id}\""),
        false => String::new(),
    }
}

/// The page of `module`'s latest install: the one running or finished
/// since the agent started, else the last one in its history.
pub fn latest(
    view: Option<InstallView>,
    updates_dir: &std::path::Path,
    module: &ModuleName,
) -> Option<String> {
    if let Some(view) = view {
        let lines = history::lines_of(&view.events);
        return Some(install_page(
            &view.module,
            &view.to,
            view.restore,
            &lines,
            Entry::of(&view).as_ref(),
        ));
    }
    let entry = history::read(updates_dir, module)
        .ok()?
        .into_iter()
        .next()?;
    Some(install_page(
        module.as_str(),
        &entry.to,
        entry.restore,
        &entry.lines,
        Some(&entry),
    ))
}

/// One install's page (a restore's when `restore`): `finished` is `None`
/// while it runs.
fn install_page(
    module: &str,
    to: &str,
    restore: bool,
    lines: &[Line],
    finished: Option<&Entry>,
) -> String {
    let (what, doing) = match restore {
        true => ("Restore", "Restoring"),
        false => ("Install", "Installing"),
    };
    let result = match finished {
        None => format!(
            "<section class=\"headline warn\"{}>{doing}…</section>",
            region("result", LIVE)
        ),
        Some(entry) => result_section(module, entry, LIVE),
    };
    let body = format!(
        "<h1>{what} of {m} {to}</h1>{result}<section class=\"card\"><h2>Progress</h2>{events}</section><p><a href=\"/\" id=\"back\">Back to the modules</a> · <a href=\"/history/{m}\">History of {m}</a></p>",
        m = escape(module),
        to = escape(to),
        events = events(lines, 0, LIVE),
    );
    let live = finished.is_none().then_some(LIVE_EVERY_MS);
    page(&format!("{what} of {module} {to}"), &body, live)
}

fn result_section(module: &str, entry: &Entry, live: bool) -> String {
    let region = region("result", live);
    if entry.ending.ok() {
        let warnings = match entry.message.is_empty() {
            true => String::new(),
            false => format!("<p class=\"warning\">⚠ {}</p>", escape(&entry.message)),
        };
        let done = match entry.restore {
            true => "Restored",
            false => "Installed",
        };
        return format!(
            "<section class=\"headline ok\"{region}>{done} {} {} — out of service for {}{warnings}</section>",
            escape(module),
            escape(&entry.to),
            downtime(entry.downtime_ms.unwrap_or(0)),
        );
    }
    let output: Vec<&str> = entry
        .lines
        .iter()
        .filter(|line| line.kind == "stderr")
        .map(|line| line.text.as_str())
        .collect();
    let output = match output.is_empty() {
        true => String::new(),
        false => format!("<pre>{}</pre>", escape(&output.join("\n"))),
    };
    format!(
        "<section class=\"problems\"{region}><h2>{} {}</h2><p>{}</p>{output}</section>",
        entry.what(),
        escape(entry.ending.label()),
        escape(&entry.message),
    )
}

/// An install's lines, each with its time; `left_out` earlier ones said.
fn events(lines: &[Line], left_out: usize, live: bool) -> String {
    let mut body = String::new();
    if left_out > 0 {
        body.push_str(&format!(
            "<div class=\"event muted\">… {left_out} earlier lines not kept</div>\n"
        ));
    }
    for line in lines {
        let (class, mark) = match line.kind.as_str() {
            "phase" => ("phase", "▶ "),
            "stdout" => ("hook", "│ "),
            "stderr" => ("hook stderr", "│ "),
            "warning" => ("warning", "⚠ "),
            _ => ("step", ""),
        };
        body.push_str(&format!(
            "<div class=\"event {class}\"><span class=\"muted\">{}</span> {mark}{}</div>\n",
            line.at.with_timezone(&chrono::Local).format("%H:%M:%S%.3f"),
            escape(&line.text)
        ));
    }
    format!(
        "<div class=\"events\"{}>{body}</div>",
        region("events", live)
    )
}

/// `module`'s install history: each install kept, the newest first, with
/// the output of the last ones.
pub fn history_page(updates_dir: &std::path::Path, module: &ModuleName) -> String {
    let entries = match history::read(updates_dir, module) {
        Ok(entries) => entries,
        Err(e) => {
            return message_page(
                "Install history",
                &e.to_string(),
                "The file was left as it is; the next install sets it aside and starts a new history.",
            );
        }
    };
    if entries.is_empty() {
        return message_page(
            "Install history",
            &format!("{module} was never installed by this agent."),
            "Installs appear here once they finish.",
        );
    }
    let module = module.as_str();
    let rows: String = entries.iter().map(|e| history_row(module, e)).collect();
    let details: String = entries
        .iter()
        .filter(|e| !e.lines.is_empty())
        .map(|e| {
            format!(
                "<article class=\"card\" id=\"{id}\"><h2>{from} → {to}, {when}</h2>{result}<details><summary>Output ({n} lines)</summary>{events}</details></article>",
                id = escape(&e.install_id),
                from = escape(e.from.as_deref().unwrap_or("—")),
                to = escape(&e.to),
                when = time(e.finished_at),
                result = result_section(module, e, STILL),
                n = e.lines.len(),
                events = events(&e.lines, e.lines_left_out, STILL),
            )
        })
        .collect();
    page(
        &format!("Install history of {module}"),
        &format!(
            "<h1>Install history of {m}</h1><section class=\"card\" id=\"history\"><table><thead><tr><th>When</th><th>Module</th><th>From → to</th><th>Result</th><th>Out of service</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>{details}<p><a href=\"/\" id=\"back\">Back to the modules</a></p>",
            m = escape(module),
        ),
        None,
    )
}
