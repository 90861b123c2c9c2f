//! The agent's settings: a TOML file over built-in defaults, validated into
//! [`Settings`] once at start-up, and the layout of the data folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_proto::domain::{ServerId, SiteName};
use serde::Deserialize;

use crate::install::{InstallSettings, maintenance, package};

/// The data root when the configuration names none: `%PROGRAMDATA%\Flotilla`
/// on Windows, `/var/lib/flotilla` elsewhere.
pub fn default_data_root() -> PathBuf {
    if cfg!(windows) {
        let program_data =
            std::env::var_os("PROGRAMDATA").unwrap_or_else(|| r"C:\ProgramData".into());
        PathBuf::from(program_data).join("Flotilla")
    } else {
        PathBuf::from("/var/lib/flotilla")
    }
}

/// Where the configuration file is looked for when `--config` is not given.
pub fn default_config_path() -> PathBuf {
    if cfg!(windows) {
        default_data_root().join("agent.toml")
    } else {
        PathBuf::from("/etc/flotilla/agent.toml")
    }
}

/// The file as written; every field but `site` and `controller_url` has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    site: String,
    server_id: Option<String>,
    data_dir: Option<PathBuf>,
    controller_url: String,
    /// The controller's CA certificate (PEM), for an `https://` controller_url.
    controller_ca: Option<PathBuf>,
    /// Allows an `http://` controller_url: everything the agent and the
    /// controller say, and every download, in plain text.
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default = "default_portal_listen")]
    portal_listen: SocketAddr,
    /// Host names the portal answers to besides localhost, 127.0.0.1 and [::1].
    #[serde(default)]
    portal_hosts: Vec<String>,
    #[serde(default = "default_scan_interval_ms")]
    scan_interval_ms: u64,
    #[serde(default = "default_reconnect_min_ms")]
    reconnect_min_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    reconnect_max_ms: u64,
    /// How long one hook script may run.
    #[serde(default = "default_hook_timeout_seconds")]
    hook_timeout_seconds: u64,
    /// How long an install waits for processes holding files before
    /// stopping the module's pool or service (the procedure's "two or three
    /// minutes").
    #[serde(default = "default_lock_budget_ms")]
    lock_budget_ms: u64,
    #[serde(default = "default_backups_to_keep")]
    backups_to_keep: usize,
    /// Megabytes an install must leave free on the volumes it writes to.
    #[serde(default = "default_disk_reserve_mb")]
    disk_reserve_mb: u64,
    /// Where backups go; defaults to `<data>/bin/updates/backups`.
    backup_dir: Option<PathBuf>,
    /// An HTML file used as the maintenance page.
    maintenance_template: Option<PathBuf>,
    /// Publisher public keys (hex) whose signatures this agent accepts.
    #[serde(default)]
    trusted_keys: Vec<String>,
    /// How many packages download at once.
    #[serde(default = "default_download_concurrency")]
    download_concurrency: usize,
    /// Optional bandwidth cap for downloads, in kilobytes per second.
    download_limit_kbps: Option<u64>,
    /// The databases of database modules, by module name.
    #[serde(default)]
    databases: std::collections::BTreeMap<String, flotilla_proto::database::Settings>,
}

fn default_download_concurrency() -> usize {
    2
}

fn default_hook_timeout_seconds() -> u64 {
    600
}
fn default_lock_budget_ms() -> u64 {
    180_000
}
fn default_backups_to_keep() -> usize {
    3
}
fn default_disk_reserve_mb() -> u64 {
    100
}

fn default_portal_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_scan_interval_ms() -> u64 {
    2_000
}
fn default_reconnect_min_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}

/// How the agent trusts the controller it talks to and downloads from.
#[derive(Debug, Clone)]
pub enum ControllerTrust {
    /// TLS, with the controller's certificate issued by this CA.
    Ca {
        /// The CA certificate, PEM, as read at start.
        pem: String,
        path: PathBuf,
    },
    /// Plain text, as `insecure_plaintext = true` allows.
    Plaintext,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The customer site this server belongs to.
    pub site: SiteName,
    /// This server's identity in the fleet; defaults to the host name.
    pub server_id: ServerId,
    pub layout: DataLayout,
    /// Where the controller's gRPC endpoint is, e.g. `https://controller:7000`.
    pub controller_url: String,
    /// How the controller is trusted.
    pub controller_trust: ControllerTrust,
    /// Where the local portal listens; `127.0.0.1:8080` as the procedure says.
    pub portal_listen: SocketAddr,
    /// Host names the portal answers to besides loopback (DNS rebinding
    /// is refused: a request for any other name gets nothing).
    pub portal_hosts: Vec<String>,
    /// How often modules are rescanned on disk.
    pub scan_interval: Duration,
    /// Bounds of the reconnect backoff (with jitter) when the controller is away.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// What installs may do.
    pub install: InstallSettings,
    /// Publisher keys whose signatures are accepted (several during a key rotation).
    pub trusted_keys: Vec<flotilla_proto::signing::PublicKey>,
    pub download_concurrency: usize,
    pub download_limit_bytes_per_second: Option<u64>,
    /// The databases of database modules, by module name.
    pub databases: std::collections::BTreeMap<String, flotilla_proto::database::Settings>,
}

/// A configuration that could not be used; the message names the file and, for
/// TOML errors, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let site = SiteName::parse(&file.site).map_err(|e| invalid(format!("site: {e}")))?;
        let server_id = match file.server_id {
            Some(id) => ServerId::parse(&id).map_err(|e| invalid(format!("server_id: {e}")))?,
            None => {
                let host = gethostname::gethostname().to_string_lossy().into_owned();
                ServerId::parse(&host).map_err(|e| {
                    invalid(format!(
                        "server_id is not set and the host name cannot serve as one: {e}"
                    ))
                })?
            }
        };
        let url = &file.controller_url;
        let controller_trust = match (
            url.split_once("://").map(|(scheme, _)| scheme),
            &file.controller_ca,
        ) {
            (Some("https"), Some(ca)) => {
                let ca = if ca.is_relative() {
                    path.parent().map_or_else(|| ca.clone(), |dir| dir.join(ca))
                } else {
                    ca.clone()
                };
                let (pem, _) = flotilla_proto::tls::read_certificates(&ca)
                    .map_err(|e| invalid(format!("controller_ca: {e}")))?;
                if file.insecure_plaintext {
                    return Err(invalid(format!(
                        "insecure_plaintext is set but controller_url \"{url}\" is https://: remove one of them"
                    )));
                }
                ControllerTrust::Ca { pem, path: ca }
            }
            (Some("https"), None) => {
                return Err(invalid(format!(
                    "controller_url \"{url}\" is https:// but controller_ca is not set: point it at the controller's CA certificate (ca.pem in its TLS folder; the controller prints its fingerprint at start)"
                )));
            }
            (Some("http"), _) if file.insecure_plaintext => ControllerTrust::Plaintext,
            (Some("http"), _) => {
                return Err(invalid(format!(
                    "controller_url \"{url}\" is plain text: use https:// with controller_ca, or set insecure_plaintext = true to allow plain text explicitly"
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "controller_url \"{url}\" must start with https:// (or http:// with insecure_plaintext = true)"
                )));
            }
        };
        if file.scan_interval_ms == 0 {
            return Err(invalid("scan_interval_ms must be greater than 0".into()));
        }
        if file.reconnect_min_ms == 0 || file.reconnect_min_ms > file.reconnect_max_ms {
            return Err(invalid(
                "reconnect_min_ms must be greater than 0 and at most reconnect_max_ms".into(),
            ));
        }
        if file.backups_to_keep == 0 {
            return Err(invalid("backups_to_keep must be at least 1".into()));
        }
        let maintenance_template = match &file.maintenance_template {
            Some(template) => std::fs::read_to_string(template).map_err(|e| {
                invalid(format!("maintenance_template {}: {e}", template.display()))
            })?,
            None => maintenance::DEFAULT_TEMPLATE.to_owned(),
        };
        let layout = DataLayout::new(file.data_dir.unwrap_or_else(default_data_root));
        let install = InstallSettings {
            scripts_dir: layout.scripts_dir(),
            backup_dir: file
                .backup_dir
                .unwrap_or_else(|| layout.updates_dir().join("backups")),
            journal_dir: layout.updates_dir().join("journal"),
            hook_timeout: Duration::from_secs(file.hook_timeout_seconds.max(1)),
            lock_budget: Duration::from_millis(file.lock_budget_ms),
            backups_to_keep: file.backups_to_keep,
            disk_reserve: file.disk_reserve_mb.saturating_mul(1_000_000),
            maintenance_template,
            limits: package::Limits::default(),
        };
        let trusted_keys = file
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                flotilla_proto::signing::PublicKey::from_hex(key)
                    .map_err(|e| invalid(format!("trusted_keys[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (module, db) in &file.databases {
            use flotilla_proto::database::Engine;
            let field = |f: &str| format!("databases.{module}.{f}");
            match db.engine {
                Engine::Postgres if db.url.is_none() => {
                    return Err(invalid(format!("{} is needed for postgres", field("url"))));
                }
                Engine::Postgres if db.url.as_deref().is_some_and(has_password) => {
                    return Err(invalid(format!(
                        "{}: put the password in password_file, not in the URL",
                        field("url")
                    )));
                }
                Engine::Sqlite if db.path.is_none() => {
                    return Err(invalid(format!("{} is needed for sqlite", field("path"))));
                }
                _ => {}
            }
        }
        Ok(Settings {
            databases: file.databases,
            site,
            server_id,
            install,
            trusted_keys,
            download_concurrency: file.download_concurrency.max(1),
            download_limit_bytes_per_second: file.download_limit_kbps.map(|k| k.max(1) * 1000),
            layout,
            controller_url: file.controller_url,
            controller_trust,
            portal_listen: file.portal_listen,
            portal_hosts: file.portal_hosts,
            scan_interval: Duration::from_millis(file.scan_interval_ms),
            reconnect_min: Duration::from_millis(file.reconnect_min_ms),
            reconnect_max: Duration::from_millis(file.reconnect_max_ms),
        })
    }
}

/// Whether a `postgres://user:password@host/db` URL carries a password.
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

/// The data folder, laid out as the procedure describes so that an agent can
/// take over an existing installation's folder as it is.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/bin/config/applicationspath.config`
    pub fn applications_config(&self) -> PathBuf {
        self.root
            .join("bin")
            .join("config")
            .join(crate::applications::FILE_NAME)
    }

    /// `<data>/bin/updates/`
    pub fn updates_dir(&self) -> PathBuf {
        self.root.join("bin").join("updates")
    }

    /// `<data>/bin/updates/status.xml`
    pub fn status_file(&self) -> PathBuf {
        self.updates_dir().join("status.xml")
    }

    /// `<data>/bin/updates/scripts/`, where hooks live.
    pub fn scripts_dir(&self) -> PathBuf {
        self.updates_dir().join("scripts")
    }

    /// `<data>/bin/updates/packages/`: packages ready to install, each
    /// `<name>.zip` with its checksum in `<name>.zip.sha256`.
    pub fn packages_dir(&self) -> PathBuf {
        self.updates_dir().join("packages")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse(Path::new("/etc/flotilla/agent.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let settings =
            parse("site = \"acme\"\nserver_id = \"web-01\"\ncontroller_url = \"http://c:7000\"\ninsecure_plaintext = true\n")
                .expect("valid");
        assert_eq!(settings.portal_listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.server_id.as_str(), "web-01");
        assert_eq!(settings.layout.root(), default_data_root());
        assert_eq!(
            settings.layout.status_file(),
            default_data_root()
                .join("bin")
                .join("updates")
                .join("status.xml")
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let err = parse("site = \"acme\"\ncontroller_url = \"http://c\"\nportal = 1\n")
            .expect_err("unknown field");
        assert!(
            err.starts_with("configuration file /etc/flotilla/agent.toml is not valid"),
            "{err}"
        );
        assert!(err.contains("line 3") && err.contains("portal"), "{err}");

        let err = parse("site = \"a b\"\ncontroller_url = \"http://c\"\n").expect_err("bad site");
        assert!(err.contains("site: site name \"a b\""), "{err}");

        let err = parse("site = \"a\"\ncontroller_url = \"c:7000\"\n").expect_err("bad url");
        assert!(
            err.contains("controller_url \"c:7000\" must start with https://"),
            "{err}"
        );
    }

    #[test]
    fn plain_text_is_only_ever_explicit_and_https_needs_the_controllers_ca() {
        let err = parse("site = \"a\"\nserver_id = \"w\"\ncontroller_url = \"http://c:7000\"\n")
            .expect_err("plain text without the flag");
        assert!(
            err.contains("is plain text") && err.contains("insecure_plaintext = true"),
            "{err}"
        );
        let err = parse("site = \"a\"\nserver_id = \"w\"\ncontroller_url = \"https://c:7000\"\n")
            .expect_err("https without a CA");
        assert!(err.contains("controller_ca is not set"), "{err}");
        let err = parse(
            "site = \"a\"\nserver_id = \"w\"\ncontroller_url = \"https://c:7000\"\ncontroller_ca = \"/nonexistent/ca.pem\"\n",
        )
        .expect_err("a CA that cannot be read");
        assert!(
            err.contains("controller_ca: cannot read the certificate file /nonexistent/ca.pem"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let text = "site = \"a\"\nserver_id = \"w\"\ncontroller_url = \"https://c:7000\"\ncontroller_ca = \"ca.pem\"\n";
        let settings = Settings::parse(&dir.path().join("agent.toml"), text).expect("valid");
        assert!(
            matches!(&settings.controller_trust, ControllerTrust::Ca { path, .. } if *path == ca),
            "{:?}",
            settings.controller_trust
        );
        let err = Settings::parse(
            &dir.path().join("agent.toml"),
            &format!("{text}insecure_plaintext = true\n"),
        )
        .expect_err("both");
        assert!(err.to_string().contains("remove one of them"), "{err}");
    }
}
