//! The agent's service as the service manager registers it: this
//! executable run on a configuration, with its systemd hardening. Used by
//! `join`/`service install` and by the agent updating itself (on Windows
//! the service is pointed at the new version with the same arguments).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use flotilla_proto::service::Spec;

use crate::doctor::SERVICE_NAME;

/// The agent's systemd hardening: only what leaves hooks able to work.
const UNIT_HARDENING: &str = "\
# A running install finishes or rolls back before the agent stops; its hooks
# each have their own timeout.
TimeoutStopSec=30min
LimitNOFILE=65536
UMask=0027
# Hardening that leaves hooks their work: they run with the agent's rights
# and may edit configuration under /etc, stop services and call sudo, so the
# file system stays writable and privileges may still be gained.
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
LockPersonality=yes
SystemCallArchitectures=native
";

/// The agent's service: this executable, run on `config`.
pub fn service_spec(config: &Path, unit_dir: PathBuf) -> std::io::Result<Spec> {
    let config = std::path::absolute(config)?;
    let arguments: Vec<OsString> = if cfg!(windows) {
        vec![
            "service".into(),
            "run".into(),
            "--config".into(),
            config.into(),
        ]
    } else {
        vec!["run".into(), "--config".into(), config.into()]
    };
    Ok(Spec {
        name: SERVICE_NAME,
        display_name: "Flotilla agent",
        description: "Reports this server's modules to the Flotilla controller and installs their updates.",
        executable: std::env::current_exe()?,
        arguments,
        unit_extra: UNIT_HARDENING.to_owned(),
        unit_dir,
    })
}
