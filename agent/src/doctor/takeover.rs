//! Taking over an existing installation: what the agent found in the data
//! folder and what it changes there, and the older updater's services that
//! would compete with it (for the portal's port 8080, and for the modules).

use flotilla_proto::doctor::Check;
use flotilla_proto::service::Found;

use crate::config::Settings;

/// The services of the updater Flotilla replaces, by the names the
/// procedure's servers give them.
pub const OLD_SERVICES: [&str; 2] = ["[e] - service principal", "Altazion - service principal"];

/// What the data folder holds, and what the agent does with it.
pub fn found(settings: &Settings) -> Check {
    let layout = &settings.layout;
    let count = |dir: &std::path::Path, keep: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| keep(&e.file_name().to_string_lossy()))
                    .count()
            })
            .unwrap_or(0)
    };
    let modules = crate::applications::load(&layout.applications_config())
        .modules
        .len();
    let hooks = count(&layout.scripts_dir(), &|_| true);
    let packages = count(&layout.packages_dir(), &|n| n.ends_with(".zip"));
    let status = match std::fs::read_to_string(layout.status_file()) {
        Ok(text) if text.contains("agentVersion=") => {
            "status.xml (the agent's own)".to_owned()
        }
        Ok(_) => {
            "status.xml written by another updater, which the agent rewrites in its own format at its first check".to_owned()
        }
        Err(_) => "no status.xml yet (the agent writes it at its first check)".to_owned(),
    };
    Check::ok(
        "takeover",
        layout.root().display().to_string(),
        format!(
            "found applicationspath.config with {modules} module(s), {hooks} hook script(s) run as they are, {packages} package(s) waiting (installed only if signed by a trusted key), {status}; backups go to {}",
            settings.install.backup_dir.display()
        ),
    )
}

/// An older updater's service, as the service manager reports it: a
/// competitor while it runs, a risk while it may start.
pub fn competitor(name: &str, found: &Found) -> Option<Check> {
    let stop = format!("sc stop \"{name}\" && sc config \"{name}\" start= disabled");
    match found {
        Found::Installed { running: true, .. } => Some(Check::fail(
            "takeover",
            name,
            "the older updater's service runs: it holds the portal's port 8080 and updates modules behind the agent's back",
            format!("stop and disable it: {stop}"),
        )),
        Found::Installed {
            running: false,
            start_mode,
        } if start_mode != "Disabled" => Some(Check::warn(
            "takeover",
            name,
            format!(
                "the older updater's service is installed, stopped, start mode {start_mode}: it starts again with the server"
            ),
            format!("disable it: sc config \"{name}\" start= disabled"),
        )),
        _ => None,
    }
}

/// The older updater's services on this server (Windows only: they never
/// ran elsewhere).
pub fn competitors() -> Vec<Check> {
    if !cfg!(windows) {
        return Vec::new();
    }
    OLD_SERVICES
        .iter()
        .filter_map(|name| {
            // The names the servers show are display names: the service
            // manager knows the service by its key name.
            let key = key_name(name).unwrap_or_else(|| (*name).to_owned());
            competitor(
                &key,
                &flotilla_proto::service::find(&key, std::path::Path::new("")),
            )
        })
        .collect()
}

/// The key name of the service displayed as `display` (`sc GetKeyName`).
fn key_name(display: &str) -> Option<String> {
    let output = std::process::Command::new("sc.exe")
        .args(["GetKeyName", display])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Name"))
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use flotilla_proto::doctor::Status;

    #[test]
    fn the_old_updaters_service_competes_while_it_runs_or_may_start() {
        let running = Found::Installed {
            running: true,
            start_mode: "Automatic".into(),
        };
        let check = competitor("[e] - service principal", &running).unwrap();
        assert_eq!(check.status, Status::Fail);
        assert!(check.finding.contains("port 8080"), "{check:?}");
        assert!(
            check
                .fix
                .contains("sc stop \"[e] - service principal\" && sc config \"[e] - service principal\" start= disabled"),
            "{check:?}"
        );
        let stopped = Found::Installed {
            running: false,
            start_mode: "Automatic (Delayed Start)".into(),
        };
        assert_eq!(
            competitor("Altazion - service principal", &stopped)
                .unwrap()
                .status,
            Status::Warn
        );
        let disabled = Found::Installed {
            running: false,
            start_mode: "Disabled".into(),
        };
        assert!(competitor("Altazion - service principal", &disabled).is_none());
        assert!(competitor("Altazion - service principal", &Found::NotInstalled).is_none());
    }
}
