//! The end-to-end harness: starts the real `flotilla-controller` and
//! `flotilla-agent` binaries as separate processes, each on ephemeral ports
//! and in its own temporary folder, and talks to them the way users do: the
//! REST API, the portal, the files on disk, a browser.
//!
//! The binaries are the ones cargo built next to the test executable
//! (`target/<profile>/`); the README's test command builds them first.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test harness: a failure is a test failure

pub mod browser;
pub mod postgres;
pub mod self_update;
pub mod shop;
pub mod simulated;
pub mod sites;
pub mod tls;

pub use tls::{Session, admin_token, anonymous, ca_file, http};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any condition may take to come true before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Heartbeats used by test controllers: short, so offline detection is quick.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
pub const HEARTBEAT_TIMEOUT_MS: u64 = 3_000;

/// How often test agents rescan their modules.
pub const SCAN_INTERVAL_MS: u64 = 100;

/// A binary of the same build profile: next to this executable (a bench
/// binary in `target/<profile>/`) or one folder up (a test in
/// `target/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let here = exe.parent().unwrap();
    let candidates = [here.join(&file), here.parent().unwrap().join(&file)];
    candidates.iter().find(|path| path.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{file} is missing next to {}: run `cargo build --bins` first (the README's test command does)",
            exe.display()
        )
    })
}

/// Waits until `check` returns `Some`, polling; fails the test after
/// [`PATIENCE`] with `what` and the last thing `check` saw.
pub async fn wait_until<T>(what: &str, check: impl AsyncFnMut() -> Result<T, String>) -> T {
    wait_up_to(PATIENCE, what, check).await
}

/// [`wait_until`] with its own patience, for what takes many steps (a
/// whole rollout).
pub async fn wait_up_to<T>(
    patience: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < patience {
        match check().await {
            Ok(value) => return value,
            Err(seen) => last = seen,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {patience:?} waiting for {what}; last seen: {last}");
}

/// A process's stdout lines, collected as they come.
#[derive(Debug, Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collects `child`'s stdout (which must be piped).
    pub fn follow(child: &mut Child) -> Self {
        let lines = Lines::default();
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    /// The text after `prefix` on the first line that has it.
    pub async fn value_after(&self, prefix: &str) -> String {
        wait_until(&format!("a line with {prefix:?}"), async || {
            let lines = self.0.lock().unwrap();
            lines
                .iter()
                .find_map(|line| line.split_once(prefix).map(|(_, v)| v.trim().to_owned()))
                .ok_or_else(|| format!("{lines:?}"))
        })
        .await
    }
}

/// Runs `flotilla-controller` with `args` (the publisher's commands);
/// returns whether it succeeded and what it printed.
pub async fn controller_cli(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("flotilla-controller"))
        .args(args)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Sends a signal with the system's `kill` (no unsafe code in tests).
pub async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("process still running");
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    pub child: Child,
    /// Where agents connect, `https://127.0.0.1:port`.
    pub grpc_url: String,
    /// The dashboard, `https://127.0.0.1:port`, no trailing slash.
    pub http_url: String,
    /// `sha256:…` of the CA it serves from, as it printed it; `None` in
    /// plain text.
    pub ca_fingerprint: Option<String>,
    /// The first admin's password, when this start was the first.
    pub admin_password: Option<String>,
    /// What it printed on its standard output before its endpoints.
    pub printed: Vec<String>,
    /// Operator tokens made by [`Controller::token_for`], by name.
    tokens: Mutex<std::collections::HashMap<String, String>>,
    pub db: PathBuf,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Controller {
    /// Starts a controller on a database in `dir`, on ephemeral ports.
    pub async fn start(dir: &Path) -> Controller {
        Self::start_on(dir, "127.0.0.1:0", "127.0.0.1:0").await
    }

    /// Starts a controller on given addresses (to restart on the same ports).
    pub async fn start_on(dir: &Path, grpc: &str, http: &str) -> Controller {
        Self::start_with(dir, grpc, http, HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS).await
    }

    /// Starts a controller with the given heartbeat settings.
    pub async fn start_with(
        dir: &Path,
        grpc: &str,
        http: &str,
        heartbeat_ms: u64,
        timeout_ms: u64,
    ) -> Controller {
        let program = binary("flotilla-controller");
        Self::start_program(&program, dir, grpc, http, heartbeat_ms, timeout_ms, &[]).await
    }

    /// Starts a controller with more arguments; with `--insecure-plaintext`,
    /// `--tls-dir …` or `--tls-cert …` its TLS folder is not given the test CA.
    pub async fn start_with_args(dir: &Path, args: &[&str]) -> Controller {
        let program = binary("flotilla-controller");
        Self::start_program(
            &program,
            dir,
            "127.0.0.1:0",
            "127.0.0.1:0",
            HEARTBEAT_INTERVAL_MS,
            HEARTBEAT_TIMEOUT_MS,
            args,
        )
        .await
    }

    /// Starts the controller binary `program` (a bench compares two builds).
    /// It is given the harness's admin token (`--admin-token-file`), and at
    /// its first start the harness makes the account `admin` with it.
    pub async fn start_program(
        program: &Path,
        dir: &Path,
        grpc: &str,
        http: &str,
        heartbeat_ms: u64,
        timeout_ms: u64,
        args: &[&str],
    ) -> Controller {
        let mut controller = Self::launch(
            program,
            dir,
            (grpc, http),
            (heartbeat_ms, timeout_ms),
            args,
            true,
        )
        .await;
        controller.admin_password = controller.make_admin().await;
        controller
    }

    /// Starts a controller as a person does, with no admin token: at its
    /// first start it names the file holding the admin's password, read
    /// into [`Controller::admin_password`] (to be changed at the first
    /// sign-in).
    pub async fn start_as_a_person(dir: &Path, grpc: &str, http: &str) -> Controller {
        let program = binary("flotilla-controller");
        let heartbeats = (HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS);
        Self::launch(&program, dir, (grpc, http), heartbeats, &[], false).await
    }

    /// The account `admin` with a new password, made with the admin token;
    /// `None` when it exists (a restart), or when the harness cannot reach
    /// the controller (one serving a CA of its own, not the test CA).
    async fn make_admin(&self) -> Option<String> {
        let password = flotilla_proto::web::random_secret()[..24].to_owned();
        let response = self
            .http
            .post(format!("{}/api/v1/accounts", self.http_url))
            .json(&serde_json::json!({"name": "admin", "role": "admin", "password": password, "must_change_password": false}))
            .send()
            .await
            .ok()?;
        match response.status().as_u16() {
            201 => Some(password),
            409 => None,
            status => panic!(
                "making the admin's account: {status} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    async fn launch(
        program: &Path,
        dir: &Path,
        (grpc, http): (&str, &str),
        (heartbeat_ms, timeout_ms): (u64, u64),
        args: &[&str],
        admin_token: bool,
    ) -> Controller {
        let db = dir.join("controller.db");
        let log = dir.join("controller.log");
        let mut database: Vec<std::ffi::OsString> = Vec::new();
        if !args.contains(&"--db") {
            database.push("--db".into());
            match postgres::controller_database(dir) {
                // The same end-to-end tests on PostgreSQL: the packages'
                // and TLS folders are given, as nothing is beside the database.
                Some(url) => {
                    database.push(url.into());
                    database.push("--packages".into());
                    database.push(dir.join("packages").into());
                    if !args
                        .iter()
                        .any(|a| a.starts_with("--tls") || *a == "--insecure-plaintext")
                    {
                        database.push("--tls-dir".into());
                        database.push(dir.join("tls").into());
                    }
                }
                None => database.push(db.clone().into()),
            }
        }
        // The controller's TLS folder defaults to `tls` beside its database.
        if !args
            .iter()
            .any(|a| a.starts_with("--tls") || *a == "--insecure-plaintext")
        {
            tls::ca().seed(&dir.join("tls"));
        }
        let mut child = Command::new(program)
            .args(&database)
            .args(["--grpc-listen", grpc, "--http-listen", http])
            .args(["--heartbeat-interval-ms", &heartbeat_ms.to_string()])
            .args(["--heartbeat-timeout-ms", &timeout_ms.to_string()])
            .args(
                admin_token
                    .then(|| {
                        [
                            "--admin-token-file".into(),
                            tls::admin_token_file().into_os_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            // Tests' webhook receivers listen on loopback.
            .args(["--webhook-host", "127.0.0.1:*"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Lines::follow(&mut child);
        let grpc_url = lines.value_after("flotilla-controller agents: ").await;
        let http_url = lines
            .value_after("flotilla-controller dashboard: ")
            .await
            .trim_end_matches('/')
            .to_owned();
        // Printed before the endpoints: the CA when it serves TLS, and the
        // first admin's password at its first start.
        let printed = lines.0.lock().unwrap().clone();
        let after = |prefix: &str| {
            printed
                .iter()
                .find_map(|line| line.strip_prefix(prefix).map(str::to_owned))
        };
        let ca_fingerprint = after("flotilla-controller CA fingerprint: ");
        // The first admin's password, from the file the controller named.
        let admin_password =
            after("flotilla-controller first start: account \"admin\", its password in ")
                .and_then(|rest| rest.split(" (").next().map(str::to_owned))
                .map(|file| {
                    std::fs::read_to_string(&file)
                        .unwrap_or_else(|e| panic!("the admin's password file {file}: {e}"))
                        .trim()
                        .to_owned()
                });
        Controller {
            child,
            grpc_url,
            http_url,
            ca_fingerprint,
            admin_password,
            printed,
            db,
            log,
            http: tls::http(),
            tokens: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// `host:port` of the gRPC endpoint.
    pub fn grpc_addr(&self) -> String {
        address(&self.grpc_url)
    }

    pub fn http_addr(&self) -> String {
        address(&self.http_url)
    }

    /// GET a path; returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.http_url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Uploads package bytes (`PUT /api/v1/packages/{sha256}`); returns the status.
    pub async fn upload(&self, sha256: &str, bytes: &[u8]) -> u16 {
        self.http
            .put(format!("{}/api/v1/packages/{sha256}", self.http_url))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The server's JSON from `GET /api/v1/servers/{id}`, if it exists.
    pub async fn server(&self, id: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/api/v1/servers/{id}")).await;
        (status == 200).then_some(body)
    }

    /// Waits until the server's JSON satisfies `condition`.
    pub async fn wait_for_server(
        &self,
        id: &str,
        what: &str,
        condition: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(&format!("server {id}: {what}"), async || {
            match self.server(id).await {
                Some(server) if condition(&server) => Ok(server),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// The secret of an API token named `name` with `role`, made on first
    /// use: to act as that person.
    pub async fn token_for(&self, name: &str, role: &str) -> String {
        if let Some(secret) = self.tokens.lock().unwrap().get(name) {
            return secret.clone();
        }
        let response = self
            .http
            .post(format!("{}/api/v1/tokens", self.http_url))
            .json(&serde_json::json!({"name": name, "role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "creating token {name}");
        let created: Value = response.json().await.unwrap();
        let secret = created["secret"].as_str().unwrap().to_owned();
        self.tokens
            .lock()
            .unwrap()
            .insert(name.to_owned(), secret.clone());
        secret
    }

    /// Subscribes to the dashboard's live stream.
    pub async fn events(&self) -> Events {
        let response = self
            .http
            .get(format!("{}/api/v1/events", self.http_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /api/v1/events");
        Events {
            response,
            buffer: String::new(),
        }
    }
}

/// The dashboard's live stream, `/api/v1/events`, read event by event.
#[derive(Debug)]
pub struct Events {
    response: reqwest::Response,
    /// What arrived and is not yet a whole event.
    buffer: String,
}

impl Events {
    /// The next event's name and data, as they come; `None` when the
    /// stream ended. Keep-alive comments are skipped.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if !data.is_empty() {
                    return Some((name, data.join("\n")));
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// `host:port` of a URL.
fn address(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_owned()
}

/// A module of a server's JSON, or null when the server has not reported it yet.
pub fn module<'a>(server: &'a Value, name: &str) -> &'a Value {
    server["modules"]
        .as_array()
        .and_then(|modules| modules.iter().find(|m| m["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The texts of an install's events (agent or controller JSON), in order.
pub fn event_texts(install: &Value) -> Vec<&str> {
    install["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["text"].as_str()).collect())
        .unwrap_or_default()
}

/// The installed version the controller shows for a module of a server.
pub fn version_of<'a>(server: &'a Value, module: &str) -> Option<&'a str> {
    server["modules"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == module)?["installed_version"]
        .as_str()
}

/// A running agent, with its own data folder.
#[derive(Debug)]
pub struct Agent {
    pub child: Child,
    pub id: String,
    pub data: PathBuf,
    pub portal_url: String,
    pub log: PathBuf,
    /// What the agent printed (its portal's address, again each time its
    /// portal listens anew).
    lines: Lines,
}

/// The portal's local token of the agent whose data folder is `data`.
pub fn portal_token(data: &Path) -> String {
    let file = data.join("identity/portal.token");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("the portal's token {}: {e}", file.display()))
        .trim()
        .to_owned()
}

/// An HTTP client carrying the portal's local token of the agent whose
/// data folder is `data`: what an administrator's script sends.
pub fn portal_http(data: &Path) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", portal_token(data)).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A module to lay out on an agent's server: name, kind, version.
pub type ModuleSpec<'a> = (&'a str, &'a str, &'a str);

impl Agent {
    /// Lays out a data folder under `dir` with `modules` (each a folder with a
    /// `version.txt`) and an `applicationspath.config` naming them, then
    /// starts an agent on it.
    pub async fn start(
        dir: &Path,
        site: &str,
        id: &str,
        controller_url: &str,
        modules: &[ModuleSpec<'_>],
    ) -> Agent {
        Self::start_scanning_every(dir, site, id, controller_url, modules, SCAN_INTERVAL_MS).await
    }

    /// Like [`Agent::start`], rescanning modules every `scan_interval_ms`.
    pub async fn start_scanning_every(
        dir: &Path,
        site: &str,
        id: &str,
        controller_url: &str,
        modules: &[ModuleSpec<'_>],
        scan_interval_ms: u64,
    ) -> Agent {
        let data = dir.join(id);
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<applications>\n");
        for (name, kind, version) in modules {
            let folder = data.join("apps").join(name);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("version.txt"), format!("{version}\n")).unwrap();
            xml.push_str(&format!(
                "  <application name=\"{name}\" kind=\"{kind}\" path=\"{}\" />\n",
                folder.display()
            ));
        }
        xml.push_str("</applications>\n");
        Self::launch(dir, site, id, controller_url, &xml, scan_interval_ms).await
    }

    /// Starts an agent whose `applicationspath.config` holds `applications_xml`.
    pub async fn start_with_config(
        dir: &Path,
        site: &str,
        id: &str,
        controller_url: &str,
        applications_xml: &str,
    ) -> Agent {
        Self::launch(
            dir,
            site,
            id,
            controller_url,
            applications_xml,
            SCAN_INTERVAL_MS,
        )
        .await
    }

    async fn launch(
        dir: &Path,
        site: &str,
        id: &str,
        controller_url: &str,
        applications_xml: &str,
        scan_interval_ms: u64,
    ) -> Agent {
        Self::launch_with(
            dir,
            site,
            id,
            controller_url,
            applications_xml,
            scan_interval_ms,
            // Hand-made packages are signed by the test publisher.
            &trusted_publisher(),
        )
        .await
    }

    /// Lays out `applications_xml` and an `agent.toml` (plus `extra_toml`),
    /// then starts the agent.
    pub async fn launch_with(
        dir: &Path,
        site: &str,
        id: &str,
        controller_url: &str,
        applications_xml: &str,
        scan_interval_ms: u64,
        extra_toml: &str,
    ) -> Agent {
        let data = dir.join(id);
        let config_dir = data.join("bin").join("config");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(config_dir.join("applicationspath.config"), applications_xml).unwrap();
        let config = data.join("agent.toml");
        // Several controllers sharing a database: their URLs separated by spaces.
        let urls: Vec<String> = controller_url
            .split(' ')
            .map(|url| format!("{url:?}"))
            .collect();
        let controllers = match urls.as_slice() {
            [one] => one.clone(),
            several => format!("[{}]", several.join(", ")),
        };
        // Test controllers serve TLS from the test CA, and the agent holds
        // a certificate from it, as enrollment leaves it.
        let trust = match controller_url.starts_with("https://") {
            true => {
                tls::ca().enroll_on_disk(&data, site, id);
                format!(
                    "controller_ca = {:?}\n",
                    tls::ca().file().display().to_string()
                )
            }
            false => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "site = \"{site}\"\nserver_id = \"{id}\"\ndata_dir = {:?}\ncontroller_url = {controllers}\n{trust}\
                 portal_listen = \"127.0.0.1:0\"\nscan_interval_ms = {scan_interval_ms}\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n{extra_toml}\n",
                data.display().to_string()
            ),
        )
        .unwrap();
        let (child, portal_url, log, lines) =
            Self::spawn(&data, &binary("flotilla-agent"), &[]).await;
        Agent {
            child,
            id: id.to_owned(),
            data,
            portal_url,
            log,
            lines,
        }
    }

    async fn spawn(
        data: &Path,
        program: &Path,
        env: &[(&str, &str)],
    ) -> (Child, String, PathBuf, Lines) {
        let log = data.join("agent.log");
        let mut child = Command::new(program)
            .arg("--config")
            .arg(data.join("agent.toml"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = Lines::follow(&mut child);
        let portal_url = lines.value_after(" portal: ").await;
        // The line comes once the portal's port is bound; the portal answers
        // once the agent has recovered any interrupted install and scanned
        // its modules: what a test looks at next.
        wait_until(
            "the agent's portal to answer",
            async || match reqwest::get(&portal_url).await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(response.status().to_string()),
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
        (child, portal_url, log, lines)
    }

    /// Stops the agent (if running) and starts `program` on the same data
    /// folder and configuration.
    pub async fn relaunch(&mut self, program: &str, env: &[(&str, &str)]) {
        self.relaunch_from(&binary(program), env).await;
    }

    /// Stops the agent (if running, with whatever it started) and starts
    /// the executable `program` on the same data folder and configuration.
    pub async fn relaunch_from(&mut self, program: &Path, env: &[(&str, &str)]) {
        self.kill_all().await;
        let (child, portal_url, _, lines) = Self::spawn(&self.data, program, env).await;
        self.child = child;
        self.portal_url = portal_url;
        self.lines = lines;
    }

    /// The portal's page at the address the agent printed last, once it
    /// answers (the agent prints it again when its portal listens anew, as
    /// after its own update is rolled back).
    pub async fn portal_after_restart(&mut self) -> String {
        let (url, page) = wait_until("the agent's portal to answer again", async || {
            let url = {
                let lines = self.lines.0.lock().unwrap();
                lines.iter().rev().find_map(|line| {
                    line.split_once(" portal: ")
                        .map(|(_, v)| v.trim().to_owned())
                })
            };
            let Some(url) = url else {
                return Err("no portal line".to_owned());
            };
            match reqwest::get(&url).await {
                Ok(response) if response.status().is_success() => {
                    Ok((url, response.text().await.unwrap_or_default()))
                }
                Ok(response) => Err(format!("{url}: {}", response.status())),
                Err(e) => Err(format!("{url}: {e}")),
            }
        })
        .await;
        self.portal_url = url;
        page
    }

    /// Kills the agent and every process it started (SIGKILL, as a power
    /// cut does): an agent updating itself runs its new version as a child.
    pub async fn kill_all(&mut self) {
        // The agent first: killed after its hook, it could still see the
        // hook end and report that, which a power cut never lets it do.
        let started = self.child.id().map(descendants).unwrap_or_default();
        let _ = self.child.start_kill();
        for descendant in started {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &descendant.to_string()])
                .status();
        }
        let _ = self.child.wait().await;
    }

    /// The portal's base URL without the trailing slash.
    pub fn portal_base(&self) -> String {
        self.portal_url.trim_end_matches('/').to_owned()
    }

    /// Writes a module's version file, as an install would.
    pub fn set_version(&self, module: &str, version: &str) {
        let file = self.data.join("apps").join(module).join("version.txt");
        std::fs::write(file, format!("{version}\n")).unwrap();
    }

    /// Posts one of the portal's own forms (`/install/ecommerce`), with the
    /// token its page carries, as the page's button does.
    pub async fn submit_form(&self, action: &str) -> reqwest::Response {
        let page = self.portal().await;
        let token = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the portal's page carries its forms' token")
            .to_owned();
        self.portal_http()
            .post(format!("{}{action}", self.portal_base()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={token}"))
            .send()
            .await
            .unwrap()
    }

    /// The portal's local token, as an administrator reads it (the file
    /// the agent writes at each start).
    pub fn portal_token(&self) -> String {
        portal_token(&self.data)
    }

    /// An HTTP client that changes things through this agent's portal as
    /// an administrator of its server: the local token on every request.
    pub fn portal_http(&self) -> reqwest::Client {
        portal_http(&self.data)
    }

    /// An HTTP client standing for a browser signed in to the portal with a
    /// one-time link: its session cookie on every request, no token.
    pub async fn portal_signed_in(&self) -> reqwest::Client {
        let link = self.portal_link().await;
        let followed = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(&link)
            .send()
            .await
            .unwrap();
        assert_eq!(followed.status(), 303, "following {link}");
        let cookie = followed.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::COOKIE, cookie.parse().unwrap());
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap()
    }

    /// A one-time link that signs a browser in to the portal, as
    /// `flotilla-agent portal-link` prints it.
    pub async fn portal_link(&self) -> String {
        let answer: Value = self
            .portal_http()
            .post(format!("{}/api/links", self.portal_base()))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["link"]
            .as_str()
            .unwrap_or_else(|| panic!("no link: {answer}"))
            .to_owned()
    }

    /// The portal's page.
    pub async fn portal(&self) -> String {
        http()
            .get(&self.portal_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn status_xml(&self) -> String {
        std::fs::read_to_string(self.data.join("bin/updates/status.xml")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `systemd-analyze verify` says nothing about the unit (Debian's systemd
/// package; `.ci/run` installs it).
pub fn systemd_verify(unit: &Path) {
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "{said}");
}

/// The processes `pid` started, and theirs (Linux: `/proc`).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten();
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// User + system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Resident set size of a process.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The process's test publisher key: what tests sign hand-made packages
/// with, and what [`trusted_publisher`] tells agents to trust.
pub fn publisher() -> &'static flotilla_proto::signing::SecretKey {
    static KEY: std::sync::OnceLock<flotilla_proto::signing::SecretKey> =
        std::sync::OnceLock::new();
    KEY.get_or_init(|| flotilla_proto::signing::SecretKey::generate().unwrap())
}

/// The `trusted_keys` line of an agent that trusts [`publisher`].
pub fn trusted_publisher() -> String {
    format!("trusted_keys = [\"{}\"]", publisher().public().to_hex())
}

/// Writes a package's checksum (`<zip>.sha256`) and [`publisher`]'s
/// signature (`<zip>.sig`) beside it, as a download leaves them; returns the
/// sha256.
pub fn sign_beside(package: &Path) -> String {
    let sha256 = flotilla_proto::package::sha256_file(package).unwrap();
    std::fs::write(format!("{}.sha256", package.display()), &sha256).unwrap();
    std::fs::write(
        format!("{}.sig", package.display()),
        publisher().sign_package(&sha256),
    )
    .unwrap();
    sha256
}
