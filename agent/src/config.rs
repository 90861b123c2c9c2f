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

/// One controller's URL, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ControllerUrls {
    One(String),
    Several(Vec<String>),
}

impl ControllerUrls {
    fn all(&self) -> Vec<String> {
        match self {
            ControllerUrls::One(url) => vec![url.clone()],
            ControllerUrls::Several(urls) => urls.clone(),
        }
    }
}

/// The file as written; every field but `controller_url` has a default. An
/// enrolled agent's site and server id are its certificate's; in plain
/// text, `site` is needed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    site: Option<String>,
    server_id: Option<String>,
    data_dir: Option<PathBuf>,
    /// The controller, or several controllers sharing one database, tried
    /// in turn when the one in use is away. Required, but by the doctor of
    /// a server not enrolled yet.
    controller_url: Option<ControllerUrls>,
    /// The controller's CA certificate (PEM), for an `https://` controller_url;
    /// by default the one enrollment wrote in `<data>/identity/`.
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
    /// The PowerShell `.ps1` hooks run with (e.g. `pwsh.exe`); by default
    /// Windows PowerShell on Windows, `pwsh` elsewhere.
    powershell: Option<PathBuf>,
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
    /// Installs unsigned packages dropped in the packages folder by hand
    /// (never ahead of a signed one).
    #[serde(default)]
    allow_unsigned_local_packages: bool,
    /// How many packages download at once.
    #[serde(default = "default_download_concurrency")]
    download_concurrency: usize,
    /// How long a new version of the agent has to start, connect and stay
    /// connected before the previous one is put back.
    #[serde(default = "default_update_budget_seconds")]
    update_budget_seconds: u64,
    /// How long it must stay connected to prove itself.
    #[serde(default = "default_update_settle_seconds")]
    update_settle_seconds: u64,
    /// Optional bandwidth cap for downloads, in kilobytes per second.
    download_limit_kbps: Option<u64>,
    /// The databases of database modules, by module name.
    #[serde(default)]
    databases: std::collections::BTreeMap<String, flotilla_proto::database::Settings>,
}

fn default_update_budget_seconds() -> u64 {
    300
}

fn default_update_settle_seconds() -> u64 {
    20
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
    /// Mutual TLS: the controller's certificate issued by this CA, and the
    /// agent's own certificate from enrollment.
    Ca {
        /// The CA certificate, PEM, as read at start.
        pem: String,
        path: PathBuf,
        /// The agent's certificate and key ([`crate::identity`]), read
        /// again at each connection (renewal replaces it).
        identity: PathBuf,
    },
    /// Plain text, as `insecure_plaintext = true` allows.
    Plaintext,
    /// Not enrolled yet (why, and how to), which only the doctor's settings
    /// allow ([`Settings::load_unenrolled`]): nothing is dialled.
    NotEnrolled { why: String },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The customer site this server belongs to.
    pub site: SiteName,
    /// This server's identity in the fleet; defaults to the host name.
    pub server_id: ServerId,
    pub layout: DataLayout,
    /// Where the controller's gRPC endpoint is, e.g. `https://controller:7000`:
    /// the first of [`Settings::controller_urls`].
    pub controller_url: String,
    /// Every controller to try, in order: several controllers share one
    /// database, and a lost connection is tried again on the next.
    pub controller_urls: Vec<String>,
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
    /// Whether unsigned packages dropped by hand may be installed.
    pub allow_unsigned_local_packages: bool,
    pub download_concurrency: usize,
    pub download_limit_bytes_per_second: Option<u64>,
    /// A new version of the agent's budget to prove itself, and how long it
    /// must stay connected to (see `self_update`).
    pub update_budget: Duration,
    pub update_settle: Duration,
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

/// The data folder a configuration file names, without validating the
/// rest: what `flotilla-agent enroll` needs before the agent can start.
pub fn data_layout_of(path: &Path) -> Result<DataLayout, ConfigError> {
    #[derive(Deserialize)]
    struct DataOnly {
        data_dir: Option<PathBuf>,
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let file: DataOnly = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(DataLayout::new(
        file.data_dir.unwrap_or_else(default_data_root),
    ))
}

/// Whether settings may be those of an agent not enrolled yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enrollment {
    Required,
    /// The doctor's: what it checks needs no controller.
    Optional,
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
        Self::parse_with(path, text, Enrollment::Required)
    }

    /// The settings of a server that may not be enrolled yet, for the
    /// doctor: a missing file is an empty one (every default, the data
    /// folder's included), and a missing enrollment (or controller_url) is
    /// [`ControllerTrust::NotEnrolled`], the server named by the
    /// configuration or the host name.
    pub fn load_unenrolled(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse_with(path, &text, Enrollment::Optional)
    }

    fn parse_with(path: &Path, text: &str, enrollment: Enrollment) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let layout = DataLayout::new(file.data_dir.clone().unwrap_or_else(default_data_root));
        let configured_site = file
            .site
            .as_deref()
            .map(|site| SiteName::parse(site).map_err(|e| invalid(format!("site: {e}"))))
            .transpose()?;
        let configured_server = file
            .server_id
            .as_deref()
            .map(|id| ServerId::parse(id).map_err(|e| invalid(format!("server_id: {e}"))))
            .transpose()?;
        let (controller_trust, site, server_id) = match (&file.controller_url, enrollment) {
            (Some(urls), _) => controller(
                path,
                &file,
                &urls.all(),
                &layout,
                configured_site,
                configured_server,
                enrollment,
            ),
            (None, Enrollment::Required) => Err("controller_url is required: the controller's agents address, https://<controller>:<port>".to_owned()),
            (None, Enrollment::Optional) => not_enrolled(
                "controller_url is not set and the agent is not enrolled".to_owned(),
                configured_site,
                configured_server,
            ),
        }
        .map_err(invalid)?;
        if file.scan_interval_ms == 0 {
            return Err(invalid("scan_interval_ms must be greater than 0".into()));
        }
        if file.reconnect_min_ms == 0 || file.reconnect_min_ms > file.reconnect_max_ms {
            return Err(invalid(
                "reconnect_min_ms must be greater than 0 and at most reconnect_max_ms".into(),
            ));
        }
        if file.update_settle_seconds >= file.update_budget_seconds {
            return Err(invalid(format!(
                "update_settle_seconds ({}) must be less than update_budget_seconds ({})",
                file.update_settle_seconds, file.update_budget_seconds
            )));
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
        let install = InstallSettings {
            scripts_dir: layout.scripts_dir(),
            backup_dir: file
                .backup_dir
                .unwrap_or_else(|| layout.updates_dir().join("backups")),
            journal_dir: layout.updates_dir().join("journal"),
            hook_timeout: Duration::from_secs(file.hook_timeout_seconds.max(1)),
            powershell: file.powershell,
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
        check_databases(&file.databases).map_err(invalid)?;
        let controller_urls = file
            .controller_url
            .as_ref()
            .map(ControllerUrls::all)
            .unwrap_or_default();
        Ok(Settings {
            databases: file.databases,
            site,
            server_id,
            install,
            trusted_keys,
            allow_unsigned_local_packages: file.allow_unsigned_local_packages,
            download_concurrency: file.download_concurrency.max(1),
            download_limit_bytes_per_second: file.download_limit_kbps.map(|k| k.max(1) * 1000),
            update_budget: Duration::from_secs(file.update_budget_seconds.max(1)),
            update_settle: Duration::from_secs(file.update_settle_seconds),
            layout,
            controller_url: controller_urls.first().cloned().unwrap_or_default(),
            controller_urls,
            controller_trust,
            portal_listen: file.portal_listen,
            portal_hosts: file.portal_hosts,
            scan_interval: Duration::from_millis(file.scan_interval_ms),
            reconnect_min: Duration::from_millis(file.reconnect_min_ms),
            reconnect_max: Duration::from_millis(file.reconnect_max_ms),
        })
    }
}

/// How the agent trusts its controller, and the site and server it is:
/// from its enrollment (its certificate) over TLS, or as configured in
/// plain text, which must be asked for explicitly.
fn controller(
    path: &Path,
    file: &File,
    urls: &[String],
    layout: &DataLayout,
    configured_site: Option<SiteName>,
    configured_server: Option<ServerId>,
    enrollment: Enrollment,
) -> Result<(ControllerTrust, SiteName, ServerId), String> {
    let Some(url) = urls.first() else {
        return Err("controller_url lists no controller".to_owned());
    };
    // Every controller is reached the same way (they share one CA).
    if let Some(other) = urls
        .iter()
        .find(|u| u.split_once("://").map(|(s, _)| s) != url.split_once("://").map(|(s, _)| s))
    {
        return Err(format!(
            "controller_url lists \"{url}\" and \"{other}\": every controller is reached the same way, all https:// (or all http:// with insecure_plaintext = true)"
        ));
    }
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("https") => {
            if file.insecure_plaintext {
                return Err(format!(
                    "insecure_plaintext is set but controller_url \"{url}\" is https://: remove one of them"
                ));
            }
            enrolled(
                path,
                file,
                layout,
                configured_site,
                configured_server,
                enrollment,
            )
        }
        Some("http") if file.insecure_plaintext => {
            let site = configured_site.ok_or_else(|| {
                "site is needed when the agent is not enrolled (plain text)".to_owned()
            })?;
            Ok((
                ControllerTrust::Plaintext,
                site,
                server_or_host(configured_server)?,
            ))
        }
        Some("http") => Err(format!(
            "controller_url \"{url}\" is plain text: use https:// (and enroll the agent), or set insecure_plaintext = true to allow plain text explicitly"
        )),
        _ => Err(format!(
            "controller_url \"{url}\" must start with https:// (or http:// with insecure_plaintext = true)"
        )),
    }
}

/// The configured server id, or the host name.
fn server_or_host(configured: Option<ServerId>) -> Result<ServerId, String> {
    match configured {
        Some(id) => Ok(id),
        None => {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            ServerId::parse(&host).map_err(|e| {
                format!("server_id is not set and the host name cannot serve as one: {e}")
            })
        }
    }
}

/// A server not enrolled yet, for the doctor: named by its configuration
/// or its host name.
fn not_enrolled(
    why: String,
    configured_site: Option<SiteName>,
    configured_server: Option<ServerId>,
) -> Result<(ControllerTrust, SiteName, ServerId), String> {
    let site = match configured_site {
        Some(site) => site,
        None => SiteName::parse("not-enrolled").map_err(|e| e.to_string())?,
    };
    let server = server_or_host(configured_server)
        .or_else(|_| ServerId::parse("this-server").map_err(|e| e.to_string()))?;
    Ok((ControllerTrust::NotEnrolled { why }, site, server))
}

/// An enrolled agent: its identity file, which says its site and server
/// (a configured one must agree), and the controller's CA.
fn enrolled(
    path: &Path,
    file: &File,
    layout: &DataLayout,
    configured_site: Option<SiteName>,
    configured_server: Option<ServerId>,
    enrollment: Enrollment,
) -> Result<(ControllerTrust, SiteName, ServerId), String> {
    let identity_file = layout.identity_file();
    if !identity_file.exists() {
        let why = format!(
            "this agent is not enrolled ({} does not exist): run `flotilla-agent enroll --controller <the controller's https address> --token <token> --ca-fingerprint <sha256:…>` with a token an admin creates in the dashboard (Servers, Enroll a server) or with POST /api/v1/enrollments",
            identity_file.display()
        );
        return match enrollment {
            Enrollment::Required => Err(why),
            Enrollment::Optional => not_enrolled(why, configured_site, configured_server),
        };
    }
    let identity = crate::identity::Identity::load(&identity_file).map_err(|e| e.to_string())?;
    let stated = identity.certificate.identity;
    if let Some(site) = configured_site.as_ref().filter(|s| **s != stated.site) {
        return Err(format!(
            "site is \"{site}\" but this agent is enrolled as {stated} ({}): remove site, or enroll again",
            identity_file.display()
        ));
    }
    if let Some(id) = configured_server
        .as_ref()
        .filter(|id| **id != stated.server)
    {
        return Err(format!(
            "server_id is \"{id}\" but this agent is enrolled as {stated} ({}): remove server_id, or enroll again",
            identity_file.display()
        ));
    }
    let ca = match &file.controller_ca {
        Some(ca) if ca.is_relative() => {
            path.parent().map_or_else(|| ca.clone(), |dir| dir.join(ca))
        }
        Some(ca) => ca.clone(),
        None => layout
            .identity_dir()
            .join(crate::identity::CONTROLLER_CA_FILE),
    };
    let (pem, _) =
        flotilla_proto::tls::read_certificates(&ca).map_err(|e| format!("controller_ca: {e}"))?;
    let trust = ControllerTrust::Ca {
        pem,
        path: ca,
        identity: identity_file,
    };
    Ok((trust, stated.site, stated.server))
}

/// Each database module names how to reach its database, without a
/// password in a URL.
fn check_databases(
    databases: &std::collections::BTreeMap<String, flotilla_proto::database::Settings>,
) -> Result<(), String> {
    for (module, db) in databases {
        use flotilla_proto::database::Engine;
        let field = |f: &str| format!("databases.{module}.{f}");
        match db.engine {
            Engine::Postgres if db.url.is_none() => {
                return Err(format!("{} is needed for postgres", field("url")));
            }
            Engine::Postgres if db.url.as_deref().is_some_and(has_password) => {
                return Err(format!(
                    "{}: put the password in password_file, not in the URL",
                    field("url")
                ));
            }
            Engine::Sqlite if db.path.is_none() => {
                return Err(format!("{} is needed for sqlite", field("path")));
            }
            _ => {}
        }
    }
    Ok(())
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

    /// `<data>/identity/`: the agent's certificate and key, and the
    /// controller's CA.
    pub fn identity_dir(&self) -> PathBuf {
        self.root.join("identity")
    }

    /// `<data>/identity/portal.token`: the token that lets scripts and the
    /// command line make changes through the portal, new at each start,
    /// readable by the agent's account only.
    pub fn portal_token_file(&self) -> PathBuf {
        self.identity_dir().join("portal.token")
    }

    /// `<data>/identity/agent.pem`
    pub fn identity_file(&self) -> PathBuf {
        self.identity_dir().join(crate::identity::IDENTITY_FILE)
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

    /// A data folder holding an enrolled identity for `server` of `site`.
    fn enrolled(site: &str, server: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_certificate = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(format!("urn:flotilla:agent:{site}:{server}"))
                .expect("uri"),
        )];
        let certificate = params.signed_by(&key, &issuer).expect("certificate");
        let layout = DataLayout::new(dir.path().to_path_buf());
        std::fs::create_dir_all(layout.identity_dir()).expect("dir");
        std::fs::write(
            layout.identity_file(),
            format!("{}{}", certificate.pem(), key.serialize_pem()),
        )
        .expect("write");
        std::fs::write(
            layout
                .identity_dir()
                .join(crate::identity::CONTROLLER_CA_FILE),
            ca_certificate.pem(),
        )
        .expect("write");
        dir
    }

    #[test]
    fn plain_text_is_only_ever_explicit_and_https_needs_an_enrolled_agent() {
        let err = parse("site = \"a\"\nserver_id = \"w\"\ncontroller_url = \"http://c:7000\"\n")
            .expect_err("plain text without the flag");
        assert!(
            err.contains("is plain text") && err.contains("insecure_plaintext = true"),
            "{err}"
        );
        let empty = tempfile::tempdir().expect("temp dir");
        let err = parse(&format!(
            "data_dir = {:?}\ncontroller_url = \"https://c:7000\"\n",
            empty.path().display().to_string()
        ))
        .expect_err("https without enrollment");
        assert!(
            err.contains("this agent is not enrolled") && err.contains("flotilla-agent enroll"),
            "{err}"
        );

        // Enrolled: the site and server id are the certificate's, and the
        // CA enrollment wrote is trusted.
        let dir = enrolled("acme-paris", "acme-web-01");
        let data = format!("data_dir = {:?}\n", dir.path().display().to_string());
        let text = format!("{data}controller_url = \"https://c:7000\"\n");
        let settings = parse(&text).expect("valid");
        assert_eq!(
            (settings.site.as_str(), settings.server_id.as_str()),
            ("acme-paris", "acme-web-01")
        );
        assert!(
            matches!(&settings.controller_trust, ControllerTrust::Ca { path, .. } if path.ends_with("identity/controller-ca.pem")),
            "{:?}",
            settings.controller_trust
        );
        let err = parse(&format!("{text}server_id = \"acme-web-02\"\n")).expect_err("another id");
        assert!(
            err.contains("server_id is \"acme-web-02\" but this agent is enrolled as server acme-web-01 of site acme-paris"),
            "{err}"
        );
        let err = parse(&format!("{text}site = \"acme-lyon\"\n")).expect_err("another site");
        assert!(err.contains("site is \"acme-lyon\""), "{err}");
        let err = parse(&format!("{text}controller_ca = \"/nonexistent/ca.pem\"\n"))
            .expect_err("a CA that cannot be read");
        assert!(
            err.contains("controller_ca: cannot read the certificate file /nonexistent/ca.pem"),
            "{err}"
        );
        let err = parse(&format!("{text}insecure_plaintext = true\n")).expect_err("both");
        assert!(err.contains("remove one of them"), "{err}");
    }
}
