//! The README's one-command demo: a controller on a fresh SQLite file and
//! three real agent processes laid out like one customer site: a database
//! server, an application server and a web server, each with real module
//! folders and versions. A release of every module's next version is
//! published, signed by a demo key the agents trust, ready to roll out from
//! the dashboard's Rollouts page. Ctrl-C stops everything.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::db::Database;
use crate::fleet::Heartbeats;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's database and the agents' data (emptied
    /// first, then readable by its owner only); by default a new folder
    /// with a random name in the temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Port of the dashboard on 127.0.0.1.
    #[arg(long, default_value_t = 7080)]
    port: u16,
}

/// The demo's folder, readable by its owner only: the one given, emptied
/// first, or a new one with a name nobody can guess (another local user
/// could otherwise make it first, or read the database and the logs).
fn demo_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let Some(dir) = given else {
        let mut builder = tempfile::Builder::new();
        builder.prefix("flotilla-demo-");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        return builder
            .tempdir()
            .map(tempfile::TempDir::keep)
            .context("cannot create the demo folder in the temporary folder");
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot empty the demo folder {}", dir.display()))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create the demo folder {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// One demo server: its id and the modules it hosts (name, kind, version).
struct DemoServer {
    id: &'static str,
    modules: &'static [(&'static str, &'static str, &'static str)],
}

const SITE: &str = "acme-paris";
/// The release the demo publishes.
const RELEASE: &str = "2026.12";

/// The version after `version` (the minor one up).
fn next(version: &str) -> String {
    let mut parts: Vec<u64> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    if parts.len() >= 2 {
        parts[1] += 1;
        parts[2..].iter_mut().for_each(|p| *p = 0);
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}
const SERVERS: [DemoServer; 3] = [
    DemoServer {
        id: "acme-db-01",
        modules: &[("database", "database", "5.8.0")],
    },
    DemoServer {
        id: "acme-app-01",
        modules: &[
            ("integration", "service", "5.8.0"),
            ("gestioncommerciale", "web", "5.8.0"),
        ],
    },
    DemoServer {
        id: "acme-web-01",
        modules: &[
            ("ecommerce", "web", "5.8.0"),
            ("phygitalapi", "web", "2.1.3"),
        ],
    },
];

pub async fn run(
    args: DemoArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let agent_binary = sibling_binary("flotilla-agent")?;
    let dir = demo_dir(args.dir.as_deref())?;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create the demo folder {}", dir.display()))?;

    let db = Database::open(&dir.join("controller.db")).await?;
    let packages = crate::releases::PackageStore::open(dir.join("packages"))?;
    let identity = crate::tls::Identity::own(
        &dir.join("tls"),
        &["localhost".to_owned(), "127.0.0.1".to_owned()],
    )?;
    let ca = dir.join("tls").join(crate::tls::CA_FILE);
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_url = format!("https://{}", grpc.local_addr()?);
    let http = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{} for the dashboard (use --port)",
                args.port
            )
        })?;
    let dashboard = format!("https://{}/", http.local_addr()?);
    let heartbeats = Heartbeats {
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(6),
    };
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let fingerprint = identity.ca_fingerprint.clone();
    let password = crate::auth::first_admin(&db, false)
        .await?
        .unwrap_or_default();
    // The demo publishes its release with a token of its own.
    let token = crate::auth::random_secret();
    crate::auth::register_admin_token(&db, "demo", &token).await?;
    let settings = crate::Settings {
        heartbeats,
        public_url: None,
        tls: Some(identity),
        names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        package_hosts: Vec::new(),
        webhook_hosts: Vec::new(),
        agent_ca: Some(std::sync::Arc::new(crate::tls::AgentCa::own(
            &dir.join("tls"),
        )?)),
        agent_certificate_lifetime: Duration::from_secs(30 * 86_400),
        agents_urls: Vec::new(),
        publisher_keys: Vec::new(),
        audit: None,
        initial_password: None,
        http_limits: crate::serving::Limits::default(),
    };
    let serves = crate::Controller {
        db,
        packages,
        settings,
        grpc,
        http,
    };
    let controller = tokio::spawn(crate::run(serves, async move {
        let _ = controller_stopped.await;
    }));

    let key = dir.join("publisher");
    crate::publisher::keygen(&key)?;
    let trusted = std::fs::read_to_string(key.with_extension("pub"))?
        .trim()
        .to_owned();
    let api = crate::publisher::client(Some(&ca))?;
    let started = Started {
        dir: &dir,
        api: &api,
        dashboard: &dashboard,
        token: &token,
        agent_binary: &agent_binary,
        grpc_url: &grpc_url,
        trusted: &trusted,
    };
    let (mut agents, portals) = started.agents().await?;

    let packages = build_release(&dir, &key.with_extension("key")).await?;
    let target = crate::publisher::Target {
        server: &dashboard,
        ca: Some(&ca),
        token: &token,
    };
    crate::publisher::publish(
        &target,
        RELEASE,
        "Every module's next version, built by the demo.\n\n- **Roll it out** from the Rollouts page.",
        &packages,
    )
    .await
    .context("cannot publish the demo release")?;

    say_where(&dir, &dashboard, &ca, &fingerprint, &password, &portals);

    shutdown.await;
    println!("Stopping the agents and the controller…");
    for (id, child) in &mut agents {
        stop_child(child)
            .await
            .with_context(|| format!("cannot stop agent {id}"))?;
    }
    let _ = stop_controller.send(());
    controller.await??;
    println!("Stopped.");
    Ok(())
}

/// What the demo's agents need to start.
struct Started<'a> {
    dir: &'a Path,
    api: &'a reqwest::Client,
    dashboard: &'a str,
    token: &'a str,
    agent_binary: &'a Path,
    grpc_url: &'a str,
    trusted: &'a str,
}

impl Started<'_> {
    /// Lays out, enrolls and starts each server's agent: the processes,
    /// and each agent's portal.
    async fn agents(&self) -> anyhow::Result<(Vec<(String, Child)>, Vec<(&'static str, String)>)> {
        let mut agents = Vec::new();
        let mut portals = Vec::new();
        for server in &SERVERS {
            let config = lay_out(self.dir, server, self.grpc_url, self.trusted)?;
            enroll(
                self.api,
                self.dashboard,
                self.token,
                self.agent_binary,
                &config,
                server.id,
            )
            .await?;
            let logs = self.dir.join("logs");
            let log = std::fs::File::create(logs.join(format!("{}.log", server.id)))?;
            let mut child = Command::new(self.agent_binary)
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::piped())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {}", self.agent_binary.display()))?;
            let portal = portal_url(&mut child).await.with_context(|| {
                format!(
                    "agent {} did not start; see its log in {}",
                    server.id,
                    logs.display()
                )
            })?;
            portals.push((server.id, portal));
            agents.push((server.id.to_owned(), child));
        }
        Ok((agents, portals))
    }
}

/// Tells the person who started the demo where everything is.
fn say_where(
    dir: &Path,
    dashboard: &str,
    ca: &Path,
    fingerprint: &str,
    password: &str,
    portals: &[(&str, String)],
) {
    println!(
        "Flotilla demo: site {SITE}, one controller and three agents (data in {})",
        dir.display()
    );
    println!();
    println!("  Dashboard      {dashboard}");
    println!(
        "                 over TLS from the demo's own CA, {} ({fingerprint}):",
        ca.display()
    );
    println!("                 trust it in your browser, or accept its warning once");
    println!("  Sign in as     admin / {password}");
    println!(
        "  REST API       {dashboard}api/v1/servers   (OpenAPI: {dashboard}api/v1/openapi.json)"
    );
    for (id, portal) in portals {
        println!("  Agent portal   {portal}   ({id})");
    }
    println!();
    println!(
        "Release {RELEASE} (every module's next version) is published and downloading to the agents:"
    );
    println!("  plan and start its rollout at {dashboard}rollouts");
    println!();
    println!("Change a version on disk and watch the dashboard follow, for example:");
    println!(
        "  echo 5.9.0 > {}",
        dir.join("servers/acme-web-01/apps/ecommerce/version.txt")
            .display()
    );
    println!(
        "Agent logs are in {}. Press Ctrl-C to stop.",
        dir.join("logs").display()
    );
}

/// Enrolls a server's agent as an operator would: an enrollment token from
/// the REST API, then `flotilla-agent enroll` with it on the server.
async fn enroll(
    api: &reqwest::Client,
    dashboard: &str,
    token: &str,
    agent_binary: &Path,
    config: &Path,
    server: &str,
) -> anyhow::Result<()> {
    let created = api
        .post(format!("{dashboard}api/v1/enrollments"))
        .bearer_auth(token)
        .json(&serde_json::json!({"server": server, "site": SITE, "expires_in_minutes": 10}))
        .send()
        .await
        .context("cannot ask the controller for an enrollment token")?;
    if !created.status().is_success() {
        anyhow::bail!(
            "the controller refused an enrollment token for {server}: {}",
            created.text().await.unwrap_or_default()
        );
    }
    let created: serde_json::Value = created.json().await?;
    let (Some(secret), Some(fingerprint)) = (
        created["token"].as_str(),
        created["ca_fingerprint"].as_str(),
    ) else {
        anyhow::bail!("the controller's enrollment answer lacks the token or the fingerprint");
    };
    let output = Command::new(agent_binary)
        .arg("--config")
        .arg(config)
        .args(["enroll", "--controller", dashboard.trim_end_matches('/')])
        .args(["--ca-fingerprint", fingerprint])
        .env("FLOTILLA_ENROLLMENT_TOKEN", secret)
        .output()
        .await
        .with_context(|| format!("cannot run {}", agent_binary.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "flotilla-agent enroll failed for {server}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Writes a server's data folder: module folders with real files and a
/// version, `applicationspath.config`, and the agent's configuration
/// (its site and server id come from its enrollment).
fn lay_out(
    dir: &Path,
    server: &DemoServer,
    grpc_url: &str,
    trusted_key: &str,
) -> anyhow::Result<PathBuf> {
    let data = dir.join("servers").join(server.id);
    let config_dir = data.join("bin").join("config");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::create_dir_all(data.join("bin").join("updates").join("scripts"))?;
    let mut applications =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<applications>\n");
    for (name, kind, version) in server.modules {
        let folder = data.join("apps").join(name);
        std::fs::create_dir_all(folder.join("bin"))?;
        std::fs::write(folder.join("version.txt"), format!("{version}\n"))?;
        std::fs::write(
            folder.join("bin").join(format!("{name}.dll")),
            format!("{name} {version}\n"),
        )?;
        if *kind == "web" {
            std::fs::write(
                folder.join("web.config"),
                "<?xml version=\"1.0\"?>\n<configuration>\n  <e />\n</configuration>\n",
            )?;
        }
        applications.push_str(&format!(
            "  <application name=\"{name}\" kind=\"{kind}\" path=\"{}\" />\n",
            folder.display()
        ));
    }
    applications.push_str("</applications>\n");
    std::fs::write(config_dir.join("applicationspath.config"), applications)?;
    let config = data.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ncontroller_url = \"{grpc_url}\"\nportal_listen = \"127.0.0.1:0\"\nscan_interval_ms = 1000\ntrusted_keys = [\"{trusted_key}\"]\n",
            data.display().to_string(),
        ),
    )?;
    Ok(config)
}

/// Builds and signs each module's next version; returns the packages.
async fn build_release(dir: &Path, key: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut packages = Vec::new();
    for server in &SERVERS {
        for (name, kind, version) in server.modules {
            let version = next(version);
            let from = dir.join("release").join(name);
            std::fs::create_dir_all(from.join("bin"))?;
            std::fs::write(from.join("version.txt"), format!("{version}\n"))?;
            std::fs::write(
                from.join("bin").join(format!("{name}.dll")),
                format!("{name} {version}\n"),
            )?;
            let out = dir.join("release").join(format!("{name}-{version}.zip"));
            crate::publisher::build_package(&crate::publisher::BuildRequest {
                module: (*name).to_owned(),
                version,
                kind: (*kind).to_owned(),
                from,
                preserve: if *kind == "web" {
                    vec!["web.config".to_owned()]
                } else {
                    Vec::new()
                },
                health_url: None,
                out: out.clone(),
                key: Some(key.to_path_buf()),
                scripts: None,
                database: None,
                platform: None,
            })
            .await?;
            packages.push(out);
        }
    }
    Ok(packages)
}

/// Reads the agent's first line of output, which names its portal.
async fn portal_url(child: &mut Child) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("timed out")??
        .context("it exited")?;
    // Keep draining so the agent never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match line.split_once("portal: ") {
        Some((_, url)) => Ok(url.trim().to_owned()),
        None => bail!("unexpected first line: {line}"),
    }
}

/// Asks a child to stop (SIGTERM on Unix), then kills it if it lingers.
async fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(status) => {
            status?;
        }
        Err(_) => child.kill().await?,
    }
    Ok(())
}

/// A binary built next to the running one (`target/<profile>/`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the running executable")?;
    let path = me
        .parent()
        .context("the running executable has no folder")?
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release builds both binaries)",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_version_is_the_next_minor() {
        assert_eq!(super::next("5.8.0"), "5.9.0");
        assert_eq!(super::next("2.1.3"), "2.2.0");
    }

    /// Two demos get two folders nobody else can read or guess; a folder
    /// given is emptied and closed to others too.
    #[cfg(unix)]
    #[test]
    fn the_demos_folder_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |dir: &std::path::Path| {
            std::fs::metadata(dir).map_or(0, |m| m.permissions().mode() & 0o777)
        };
        let (first, second) = (super::demo_dir(None), super::demo_dir(None));
        let (Ok(first), Ok(second)) = (first, second) else {
            panic!("cannot make the demo's folders");
        };
        assert_ne!(first, second);
        assert_eq!(mode(&first), 0o700, "{}", first.display());
        let given = first.join("given");
        std::fs::create_dir_all(given.join("old")).unwrap_or_default();
        assert!(super::demo_dir(Some(&given)).is_ok());
        assert_eq!(mode(&given), 0o700);
        assert!(!given.join("old").exists(), "emptied");
        let _ = (
            std::fs::remove_dir_all(first),
            std::fs::remove_dir_all(second),
        );
    }
}
