//! `doctor`: the procedure's troubleshooting ("Que faire si ?") run by the
//! agent itself. Each check says OK, WARN or FAIL, what it looked at, and
//! how to fix it ([`flotilla_proto::doctor`]).
//!
//! The running agent runs every check in its own process, as the account it
//! runs as (its portal's `GET /api/doctor`, the Doctor page, the
//! controller's command). `flotilla-agent doctor` asks it; when it does not
//! answer, the command runs the checks that need no running agent itself
//! and says why the agent does not answer ([`portal_unreachable`]).

mod live;
mod local;
mod takeover;

use std::sync::Arc;

use chrono::Utc;
use flotilla_proto::doctor::{Check, Report};
use flotilla_proto::service::Found;

pub use live::portal_unreachable;

use crate::Agent;
use crate::config::Settings;
use crate::pending::PackageTrust;

/// The service's stable name, for the service manager.
pub const SERVICE_NAME: &str = "flotilla-agent";

/// Every check, in the running agent.
pub async fn run(agent: &Arc<Agent>) -> Report {
    let _one = RUNNING.lock().await;
    let settings = &agent.settings;
    let inventory = agent.inventory.borrow().clone();
    let mut checks = vec![service(&flotilla_proto::service::find(
        SERVICE_NAME,
        std::path::Path::new("/etc/systemd/system"),
    ))];
    checks.extend(takeover::competitors());
    checks.push(live::portal(agent).await);
    checks.extend(live::controller(agent).await);
    checks.push(takeover::found(settings));
    checks.extend(local::applications(settings, &inventory));
    checks.extend(local::folders(settings, true));
    checks.extend(local::secrets(settings));
    checks.extend(live::status(agent, &inventory));
    checks.extend(local::hooks(settings, &inventory, &|_| true));
    checks.extend(local::leftovers(settings));
    checks.extend(local::holders(settings, &|_| true));
    checks.extend(local::disk(settings, &agent.trust(), &|_| true).await);
    checks.extend(live::journal(agent));
    checks.extend(live::databases(agent, &inventory).await);
    report(settings, checks)
}

/// What a rollout asks before it takes the server's site down: the checks
/// that can make the install of `modules` fail (rights, their packages,
/// hooks, holders and space, an interrupted install, their databases); all
/// modules when none is named.
pub async fn preflight(agent: &Arc<Agent>, modules: &[String]) -> Report {
    let _one = RUNNING.lock().await;
    let settings = &agent.settings;
    let only = |name: &str| modules.is_empty() || modules.iter().any(|m| m == name);
    let inventory = agent.inventory.borrow().clone();
    let theirs = crate::inventory::Inventory {
        modules: inventory
            .modules
            .iter()
            .filter(|m| only(m.name.as_str()))
            .cloned()
            .collect(),
        problems: inventory.problems.clone(),
    };
    let mut checks = local::folders(settings, true);
    checks.extend(live::status(agent, &theirs));
    checks.extend(local::hooks(settings, &inventory, &only));
    checks.extend(local::holders(settings, &only));
    checks.extend(local::disk(settings, &agent.trust(), &only).await);
    checks.extend(live::journal(agent));
    checks.extend(live::databases(agent, &theirs).await);
    report(settings, checks)
}

/// One doctor at a time on a server: the checks hash packages, walk module
/// folders and query databases, and the server has other work.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The checks that need no running agent, with `portal` saying why it does
/// not answer: what `flotilla-agent doctor` reports on its own.
pub async fn run_alone(settings: &Settings, portal: Check) -> Report {
    let trust = PackageTrust {
        keys: settings.trusted_keys.clone(),
        allow_unsigned: settings.allow_unsigned_local_packages,
        withdrawn: Default::default(),
    };
    let layout = settings.layout.clone();
    let scan_trust = trust.clone();
    let inventory =
        tokio::task::spawn_blocking(move || crate::inventory::scan(&layout, &scan_trust))
            .await
            .unwrap_or_default();
    let mut checks = vec![service(&flotilla_proto::service::find(
        SERVICE_NAME,
        std::path::Path::new("/etc/systemd/system"),
    ))];
    checks.extend(takeover::competitors());
    checks.push(portal);
    checks.push(takeover::found(settings));
    checks.extend(local::applications(settings, &inventory));
    checks.extend(local::folders(settings, false));
    checks.extend(local::secrets(settings));
    checks.extend(local::hooks(settings, &inventory, &|_| true));
    checks.extend(local::leftovers(settings));
    checks.extend(local::holders(settings, &|_| true));
    checks.extend(local::disk(settings, &trust, &|_| true).await);
    checks.extend(local::journal(settings));
    // The databases need no running agent: only their settings.
    let alone = Arc::new(Agent::new(
        settings.clone(),
        settings.portal_listen,
        Arc::new(crate::install::NoCrashPoints),
    ));
    checks.extend(live::databases(&alone, &inventory).await);
    report(settings, checks)
}

/// On a server not enrolled yet: why, and the command that enrolls it.
pub fn enrollment(why: &str) -> Check {
    Check::fail(
        "enrollment",
        "identity",
        why,
        "enroll the server with the command the controller's dashboard shows (Agents, Enroll a server): `flotilla-agent enroll --controller https://<controller> --ca-fingerprint sha256:… --token …`",
    )
    .blocking()
}

fn report(settings: &Settings, checks: Vec<Check>) -> Report {
    Report {
        server: settings.server_id.to_string(),
        at: Some(Utc::now()),
        checks,
    }
}

/// The report as the portal's Doctor page.
pub fn page(report: &Report) -> String {
    use crate::html::escape;
    use flotilla_proto::doctor::Status;
    let rows: String = report
        .checks
        .iter()
        .map(|c| {
            let (class, mark) = match c.status {
                Status::Ok => ("ok", "OK"),
                Status::Warn => ("warn", "WARN"),
                Status::Fail => ("fail", "FAIL"),
            };
            format!(
                "<tr class=\"check {class}\" data-check=\"{check}\" data-status=\"{status}\"><td><span class=\"pill {class}\">{mark}</span></td><td>{check}</td><td><code>{subject}</code></td><td>{finding}</td><td>{fix}</td></tr>",
                check = escape(&c.check),
                status = c.status.as_str(),
                subject = escape(&c.subject),
                finding = escape(&c.finding),
                fix = escape(&c.fix),
            )
        })
        .collect();
    let title = format!("Doctor · {}", report.server);
    let body = format!(
        "<h1>Doctor of {server}</h1><p id=\"verdict\" data-worst=\"{worst}\">{verdict}</p>\
         <table class=\"doctor\"><thead><tr><th></th><th>Check</th><th>Looked at</th><th>Found</th><th>How to fix it</th></tr></thead><tbody>{rows}</tbody></table>\
         <p><a href=\"/\" id=\"back\">Back to the modules</a> · <a href=\"/doctor\">Run again</a> · <a href=\"/api/doctor\">JSON</a></p>",
        server = escape(&report.server),
        worst = report.worst().as_str(),
        verdict = match report.worst() {
            Status::Ok => "Every check passed.",
            Status::Warn => "Some checks need attention; nothing blocks an update.",
            Status::Fail => "Some checks failed: fix them, in order, then run the doctor again.",
        },
    );
    crate::html::page(&title, &body, None)
}

/// The agent's service: installed, running, started as the procedure
/// expects (Windows: Automatic (Delayed Start); Linux: the unit enabled).
pub fn service(found: &Found) -> Check {
    let expected = flotilla_proto::service::expected_start_mode();
    let install =
        "as an administrator: `flotilla-agent service install` then `flotilla-agent service start`";
    match found {
        Found::Unknown(why) => Check::warn(
            "service",
            SERVICE_NAME,
            format!("cannot tell how the service stands: {why}"),
            "run the doctor as an administrator, on the server the agent runs on",
        ),
        Found::NotInstalled => Check::fail(
            "service",
            SERVICE_NAME,
            "the agent is not installed as a service: nothing starts it with the server",
            install,
        ),
        Found::Installed {
            running,
            start_mode,
        } => {
            let mode_ok = start_mode == expected;
            match (running, mode_ok) {
                (true, true) => Check::ok(
                    "service",
                    SERVICE_NAME,
                    format!("installed, running, start mode {start_mode}"),
                ),
                (false, _) => Check::fail(
                    "service",
                    SERVICE_NAME,
                    format!(
                        "installed but not running (start mode {start_mode}): no update reaches this server"
                    ),
                    "start it: `flotilla-agent service start` (its logs say why it stopped)",
                ),
                (true, false) => Check::warn(
                    "service",
                    SERVICE_NAME,
                    format!(
                        "running, but its start mode is {start_mode}, not {expected}: after a restart of the server it may not start"
                    ),
                    if cfg!(windows) {
                        "set its start mode to Automatic (Delayed Start) in services.msc, or reinstall it with `flotilla-agent service install`"
                    } else {
                        "`systemctl enable flotilla-agent`"
                    },
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::doctor::Status;

    #[test]
    fn the_service_is_judged_by_how_it_is_installed_runs_and_starts() {
        let expected = flotilla_proto::service::expected_start_mode().to_owned();
        let installed = |running: bool, start_mode: &str| Found::Installed {
            running,
            start_mode: start_mode.to_owned(),
        };
        assert_eq!(service(&installed(true, &expected)).status, Status::Ok);
        let manual = service(&installed(true, "Manual"));
        assert_eq!(manual.status, Status::Warn);
        assert!(
            manual.finding.contains(&format!("not {expected}")),
            "{manual:?}"
        );
        let stopped = service(&installed(false, &expected));
        assert_eq!(stopped.status, Status::Fail);
        assert!(stopped.fix.contains("service start"), "{stopped:?}");
        let missing = service(&Found::NotInstalled);
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.fix.contains("service install"), "{missing:?}");
        assert_eq!(
            service(&Found::Unknown("systemd does not run here".into())).status,
            Status::Warn
        );
        // On Windows the procedure's Automatic (Delayed Start), not Automatic.
        if cfg!(windows) {
            assert_eq!(service(&installed(true, "Automatic")).status, Status::Warn);
        }
    }
}
