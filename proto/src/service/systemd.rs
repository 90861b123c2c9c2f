//! systemd: the unit a service runs as, written to `/etc/systemd/system`,
//! and `systemctl` for the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Action, ServiceError, Spec};

/// Where units written by an administrator go.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The unit file for `spec`.
pub fn unit(spec: &Spec) -> String {
    let mut command = vec![quote(&spec.executable.to_string_lossy())];
    command.extend(spec.arguments.iter().map(|a| quote(&a.to_string_lossy())));
    format!(
        "# Written by `{name} service install`; `{name} service uninstall` removes it.
[Unit]
Description={display}: {description}
Wants=network-online.target
After=network-online.target
# Restarted after a failure, never in a tight loop.
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=exec
ExecStart={command}
Restart=on-failure
RestartSec=10s
# SIGTERM goes to the main process only: it decides, and whatever it started
# is signalled once it has stopped (or at the timeout).
KillMode=mixed
{extra}
[Install]
WantedBy=multi-user.target
",
        name = spec.name,
        display = spec.display_name,
        description = spec.description,
        command = command.join(" "),
        extra = spec.unit_extra,
    )
}

/// A word of `ExecStart=`, quoted when it must be (systemd's own quoting:
/// double quotes, with `\\` and `\"` escaped; `%` doubled as a specifier).
fn quote(word: &str) -> String {
    let word = word.replace('%', "%%");
    if !word.is_empty()
        && word
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | ';' | '$'))
    {
        return word;
    }
    format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The unit file's path.
pub fn unit_path(spec: &Spec) -> PathBuf {
    spec.unit_dir.join(format!("{}.service", spec.name))
}

/// Whether systemd runs this machine (`sd_booted()`'s test).
pub fn is_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// How the unit `name` stands (see [`super::find`]).
pub fn find(name: &str, unit_dir: &Path) -> super::Found {
    let path = unit_dir.join(format!("{name}.service"));
    if !is_running() {
        return super::Found::Unknown(format!(
            "systemd does not run here, so nothing starts the agent with the machine (its unit is {})",
            if path.exists() {
                format!("in {}", path.display())
            } else {
                "not installed".to_owned()
            }
        ));
    }
    let ask = |verb: &str| {
        Command::new("systemctl")
            .args([verb, name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match (ask("is-enabled"), ask("is-active")) {
        (Ok(enabled), _) if enabled.is_empty() || enabled == "not-found" => {
            super::Found::NotInstalled
        }
        (Ok(enabled), Ok(active)) => super::Found::Installed {
            running: active == "active",
            start_mode: enabled,
        },
        (Err(e), _) | (_, Err(e)) => super::Found::Unknown(format!("cannot run systemctl: {e}")),
    }
}

pub fn control(spec: &Spec, action: Action) -> Result<String, ServiceError> {
    let path = unit_path(spec);
    let fail = |message: String| ServiceError::new(spec.name, message);
    match action {
        Action::Install => {
            std::fs::create_dir_all(&spec.unit_dir)
                .and_then(|()| std::fs::write(&path, unit(spec)))
                .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
            if !is_running() {
                return Ok(format!(
                    "{} written; systemd does not run here, so it is not enabled: once it does, `systemctl daemon-reload && systemctl enable --now {}`",
                    path.display(),
                    spec.name
                ));
            }
            systemctl(spec, &["daemon-reload"])?;
            systemctl(spec, &["enable", spec.name])?;
            Ok(format!(
                "{} written and enabled (starts at boot); start it now with `{} service start`",
                path.display(),
                spec.name
            ))
        }
        Action::Uninstall => {
            if is_running() {
                systemctl(spec, &["disable", "--now", spec.name])?;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(fail(format!(
                        "not installed: {} does not exist",
                        path.display()
                    )));
                }
                Err(e) => return Err(fail(format!("cannot remove {}: {e}", path.display()))),
            }
            if is_running() {
                systemctl(spec, &["daemon-reload"])?;
            }
            Ok(format!("{} stopped, disabled and removed", spec.name))
        }
        Action::Start | Action::Stop | Action::Status if !is_running() => Err(fail(format!(
            "systemd does not run here; the unit is {}",
            if path.exists() {
                format!("in {}", path.display())
            } else {
                "not installed".to_owned()
            }
        ))),
        Action::Start => {
            systemctl(spec, &["start", spec.name]).map(|_| format!("{} started", spec.name))
        }
        Action::Stop => {
            systemctl(spec, &["stop", spec.name]).map(|_| format!("{} stopped", spec.name))
        }
        Action::Status => {
            let state = |verb: &str| {
                Command::new("systemctl")
                    .args([verb, spec.name])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_else(|e| format!("unknown ({e})"))
            };
            Ok(format!(
                "{}: {} ({}); unit {}",
                spec.name,
                state("is-active"),
                state("is-enabled"),
                path.display()
            ))
        }
    }
}

/// Runs `systemctl args`; its own words when it fails.
fn systemctl(spec: &Spec, args: &[&str]) -> Result<String, ServiceError> {
    let output = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| ServiceError::new(spec.name, format!("cannot run systemctl: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(ServiceError::new(
        spec.name,
        format!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_words_are_quoted_as_systemd_reads_them() {
        assert_eq!(
            quote("/usr/local/bin/flotilla-agent"),
            "/usr/local/bin/flotilla-agent"
        );
        assert_eq!(
            quote("/srv/my data/agent.toml"),
            "\"/srv/my data/agent.toml\""
        );
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("50%"), "50%%");
        assert_eq!(quote(""), "\"\"");
    }
}
