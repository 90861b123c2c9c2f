//! Running as a system service, for both binaries: registered with the
//! Windows service control manager (SCM) or as a systemd unit, controlled
//! from the command line (`service install | uninstall | start | stop |
//! status`), and, on Windows, run under the SCM (`service run`).

use std::ffi::OsString;
use std::path::PathBuf;

#[cfg(unix)]
pub mod systemd;
#[cfg(windows)]
pub mod windows;

/// What a service is: its names, what it runs, and how.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The stable name the service manager knows it by (`flotilla-agent`).
    pub name: &'static str,
    /// What an operator reads in `services.msc`.
    pub display_name: &'static str,
    pub description: &'static str,
    /// The program the service manager starts, an absolute path.
    pub executable: PathBuf,
    /// Its arguments (`run --config …`).
    pub arguments: Vec<OsString>,
    /// systemd only: the unit's `[Service]` lines beyond the common ones
    /// (hardening, stop timeout), each with a comment saying why.
    pub unit_extra: String,
    /// systemd only: where the unit file goes (`/etc/systemd/system`).
    pub unit_dir: PathBuf,
}

/// What to ask of the service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Action {
    /// Register the service: on Windows with the SCM, start mode Automatic
    /// (Delayed Start) and restarts after a failure; on Linux as a systemd
    /// unit, enabled.
    Install,
    /// Stop the service if it runs, and unregister it.
    Uninstall,
    /// Start the service and wait until it runs.
    Start,
    /// Stop the service and wait until it has stopped (a running install
    /// finishes or rolls back first).
    Stop,
    /// Whether the service is installed and running, and how it starts.
    Status,
}

/// The `service` subcommand of both binaries.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    #[command(flatten)]
    Manage(Action),
    /// Run as the service (what the Windows service control manager
    /// starts; in a console, use `run` or `serve`).
    #[command(hide = true)]
    Run,
}

/// A service manager refused or failed; says which service and what it said.
#[derive(Debug, thiserror::Error)]
#[error("service {service}: {message}")]
pub struct ServiceError {
    pub service: String,
    pub message: String,
}

impl ServiceError {
    pub fn new(service: &str, message: impl Into<String>) -> Self {
        ServiceError {
            service: service.to_owned(),
            message: message.into(),
        }
    }
}

/// How a service stands with the service manager, as the doctor reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The service manager cannot be asked here (systemd not running, no
    /// right to connect): why.
    Unknown(String),
    NotInstalled,
    Installed {
        running: bool,
        /// As the service manager says it: `Automatic (Delayed Start)`,
        /// `Automatic`, `Manual`, `Disabled`; systemd's `enabled`,
        /// `disabled`, `masked`…
        start_mode: String,
    },
}

/// The start mode the procedure expects of the agent's service.
pub fn expected_start_mode() -> &'static str {
    if cfg!(windows) {
        "Automatic (Delayed Start)"
    } else {
        "enabled"
    }
}

/// Asks the platform's service manager how the service `name` stands
/// (`unit_dir`: where its systemd unit would be).
pub fn find(name: &str, unit_dir: &std::path::Path) -> Found {
    #[cfg(windows)]
    return windows::find(name, unit_dir);
    #[cfg(unix)]
    return systemd::find(name, unit_dir);
    #[cfg(not(any(unix, windows)))]
    return Found::Unknown(format!("no service manager is supported for {name} here"));
}

/// Carries out `action` for the service `spec`, with the platform's service
/// manager; returns what to tell the operator.
pub fn control(spec: &Spec, action: Action) -> Result<String, ServiceError> {
    #[cfg(windows)]
    return windows::control(spec, action);
    #[cfg(unix)]
    return systemd::control(spec, action);
    #[cfg(not(any(unix, windows)))]
    return Err(ServiceError::new(
        spec.name,
        format!("{action:?}: no service manager is supported on this platform"),
    ));
}
