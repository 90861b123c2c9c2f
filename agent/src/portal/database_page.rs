//! A customized database's guided upgrade, as a person on the server runs
//! it: the differences from the standard schema, then each script of the
//! pending upgrade with its state, and the next one's Run and Mark buttons.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::pages::{message_page, token_field};
use crate::html::{escape, page};
use crate::state::Agent;

/// The guided upgrade page: the drift, then the scripts one by one.
pub async fn database_page(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
) -> Response {
    let review = match crate::databases::review(&agent, &module).await {
        Ok(review) => review,
        Err(e) => {
            let page = message_page(
                "Database review",
                &e.to_string(),
                "Nothing was changed. Run the Doctor to check the database's settings.",
            );
            return (status_of(&e), Html(page)).into_response();
        }
    };
    let token = token_field(&agent);
    let mut html = format!(
        "<h1>Database of {m}: {from} → {to}</h1><p id=\"verdict\">{verdict}</p>",
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
    html.push_str("</section><p><a href=\"/\" id=\"back\">Back to the modules</a></p>");
    let title = format!("Database review · {}", review.module);
    Html(page(&title, &html, None)).into_response()
}

/// The page's Run and Mark buttons.
pub async fn database_form(
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
        Ok(Some(failed)) => {
            let page = message_page(
                "Script failed",
                &failed,
                &format!(
                    "Its transaction was rolled back. Fix the cause, then open /database/{module} and run it again."
                ),
            );
            (StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response()
        }
        Err(e) => {
            let status = status_of(&e);
            let page = message_page(
                "Refused",
                &e.to_string(),
                &format!(
                    "Nothing was changed. Open /database/{module} again to see where the upgrade stands."
                ),
            );
            (status, Html(page)).into_response()
        }
    }
}

/// The HTTP status of a database refusal.
pub fn status_of(e: &crate::databases::ReviewError) -> StatusCode {
    StatusCode::from_u16(e.status().0).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Which kept backup of a database module a person is about to restore.
#[derive(Debug, serde::Deserialize)]
pub struct RestoreQuery {
    to: String,
    file: String,
}

/// Before a database module is restored: what putting its database back
/// would throw away (the time since its backup and, on PostgreSQL, the rows
/// written since, table by table), and the person's choice: the files and
/// the database, or the files only with the database kept as it is.
pub async fn restore_page(
    State(agent): State<Arc<Agent>>,
    Path(module): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RestoreQuery>,
) -> Response {
    let lost = match crate::databases::discard(&agent, &module, &query.to).await {
        Ok(discard) => {
            let since = discard
                .taken_at
                .map(crate::html::time)
                .unwrap_or_else(|| "its backup".to_owned());
            let tables: String = discard
                .tables
                .iter()
                .map(|t| {
                    format!(
                        "<li data-table=\"{n}\">{n}: {} inserted, {} updated, {} deleted</li>",
                        t.inserted,
                        t.updated,
                        t.deleted,
                        n = escape(&t.table)
                    )
                })
                .collect();
            let counts = match (discard.counted, tables.is_empty()) {
                (false, _) => "<p>This engine does not count writes: everything written since then is lost.</p>".to_owned(),
                (true, true) => "<p>No row was written since.</p>".to_owned(),
                (true, false) => format!("<ul>{tables}</ul>"),
            };
            let reset = match discard.counters_reset {
                true => "<p>The server's statistics were reset since: there may be more.</p>",
                false => "",
            };
            format!(
                "<section class=\"problems\" id=\"discard\"><h2>Restoring the database loses what was written since {since}</h2>{counts}{reset}</section>"
            )
        }
        Err(e) => format!(
            "<section class=\"problems\" id=\"discard\"><h2>What restoring the database would lose cannot be read</h2><p>{}</p></section>",
            escape(&e.to_string())
        ),
    };
    let token = token_field(&agent);
    let action = |database: &str| {
        format!(
            "/rollback/{}?to={}&amp;file={}&amp;database={database}",
            escape(&module),
            escape(&query.to),
            escape(&query.file)
        )
    };
    let body = format!(
        "<h1>Restore {m} {v}</h1><p>From the backup <code>{f}</code>.</p>{lost}\
         <form method=\"post\" action=\"{keep}\" id=\"keep\">{token}<button type=\"submit\">Restore the files only, keep the database as it is</button></form>\
         <form method=\"post\" action=\"{restore}\" id=\"restore\">{token}<button type=\"submit\" class=\"danger\">Restore the files and the database (lose what is above)</button></form>\
         <p><a href=\"/\" id=\"back\">Back to the modules</a></p>",
        m = escape(&module),
        v = escape(&query.to),
        f = escape(&query.file),
        keep = action("keep"),
        restore = action("restore"),
    );
    Html(page(&format!("Restore {module} {}", query.to), &body, None)).into_response()
}
