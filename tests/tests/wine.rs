//! The Windows agent under Wine, reporting to a real Linux controller, in a
//! Windows-shaped data folder on Wine's C: drive: an install with `.cmd`
//! and `.bat` hooks in every phase, a hook that times out, a service module
//! driven through `sc.exe` and a module's own stop command with spaces and
//! quotes, and the agent run as a Windows service under Wine's service
//! control manager.
//!
//! Run by `.ci/wine`, which builds `flotilla-agent.exe` and sets
//! `FLOTILLA_WINE_AGENT` and `WINEPREFIX`; the default test run leaves
//! these out (`.config/nextest.toml`), and says so in its count of skipped
//! tests. What Wine cannot show: its Restart Manager names no holder, its
//! PowerShell is a stub that runs no script (no test here counts on a
//! `.ps1` hook), it has no IIS (`appcmd`), no delayed start and no recovery
//! actions, and it renames a folder with a file held open inside.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use flotilla_agent::install::package::build;
use flotilla_tests::self_update::{NEXT, agent_package_for};
use flotilla_tests::{Controller, Lines, module, wait_until};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Where the Windows agent and Wine's C: drive are.
struct Wine {
    agent: PathBuf,
    drive_c: PathBuf,
}

fn wine() -> Wine {
    let agent = std::env::var_os("FLOTILLA_WINE_AGENT")
        .map(PathBuf::from)
        .expect("FLOTILLA_WINE_AGENT: these tests run through .ci/wine, which builds flotilla-agent.exe");
    let prefix = std::env::var_os("WINEPREFIX").expect("WINEPREFIX: run through .ci/wine");
    Wine {
        agent,
        drive_c: PathBuf::from(prefix).join("drive_c"),
    }
}

impl Wine {
    /// A fresh folder for one test on the C: drive: `C:\flotilla-tests\<name>`.
    fn folder(&self, name: &str) -> PathBuf {
        let folder = self.drive_c.join("flotilla-tests").join(name);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    /// `path` (on the C: drive) as Windows names it.
    fn path(&self, path: &Path) -> String {
        let inside = path.strip_prefix(&self.drive_c).unwrap();
        let parts: Vec<String> = inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        format!("C:\\{}", parts.join("\\"))
    }

    /// `flotilla-agent.exe args…` under Wine; what it printed, and whether it
    /// succeeded.
    async fn agent_cli(&self, args: &[&str]) -> (bool, String) {
        let output = Command::new("wine")
            .arg(&self.agent)
            .args(args)
            .output()
            .await
            .unwrap();
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// Unregisters a service an earlier run left (it would start with Wine,
    /// from a folder this run replaces), before anything is laid out.
    async fn no_service_left(&self) {
        let _ = self
            .agent_cli(&["--config", "C:\\none.toml", "service", "uninstall"])
            .await;
    }

    /// `sc.exe args…` under Wine: what it printed.
    async fn sc(&self, args: &[&str]) -> String {
        let output = Command::new("wine")
            .arg("sc.exe")
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A Windows server laid out on the C: drive: its data folder
/// `…\CPoint\[e]`, its modules under `…\Sites`, `agent.toml`.
struct Server {
    data: PathBuf,
    sites: PathBuf,
    config: PathBuf,
}

impl Server {
    fn lay_out(
        wine: &Wine,
        name: &str,
        controller: &Controller,
        applications: &[String],
        extra_toml: &str,
    ) -> Server {
        let root = wine.folder(name);
        let data = root.join("CPoint").join("[e]");
        let sites = root.join("Sites");
        std::fs::create_dir_all(data.join("bin/config")).unwrap();
        std::fs::create_dir_all(data.join("bin/updates/scripts")).unwrap();
        std::fs::create_dir_all(data.join("bin/updates/packages")).unwrap();
        std::fs::create_dir_all(&sites).unwrap();
        std::fs::write(
            data.join("bin/config/applicationspath.config"),
            format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<applications>\r\n{}</applications>\r\n",
                applications.concat()
            ),
        )
        .unwrap();
        flotilla_tests::tls::ca().enroll_on_disk(&data, "acme", name);
        let config = data.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "site = \"acme\"\nserver_id = \"{name}\"\ndata_dir = '{}'\ncontroller_url = \"{}\"\nportal_listen = \"127.0.0.1:0\"\nscan_interval_ms = 200\nreconnect_min_ms = 50\nreconnect_max_ms = 300\n{}\n{extra_toml}\n",
                wine.path(&data),
                controller.grpc_url,
                flotilla_tests::trusted_publisher(),
            ),
        )
        .unwrap();
        Server {
            data,
            sites,
            config,
        }
    }

    /// A module folder with `version.txt` and an index page.
    fn module(&self, name: &str, version: &str) -> PathBuf {
        let folder = self.sites.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("version.txt"), format!("{version}\r\n")).unwrap();
        std::fs::write(
            folder.join("index.html"),
            format!("<h1>{name} {version}</h1>"),
        )
        .unwrap();
        folder
    }

    /// A signed package of `module` `version` (`kind`), pending for the agent.
    fn package(&self, module: &str, version: &str, kind: &str) {
        let package = self
            .data
            .join(format!("bin/updates/packages/{module}-{version}.zip"));
        build::from_entries(
            &package,
            &format!("module = \"{module}\"\nversion = \"{version}\"\nkind = \"{kind}\"\n"),
            &[
                (
                    "index.html",
                    format!("<h1>{module} {version}</h1>").as_bytes(),
                ),
                ("version.txt", format!("{version}\r\n").as_bytes()),
            ],
        )
        .unwrap();
        flotilla_tests::sign_beside(&package);
    }

    fn hook(&self, file_name: &str, body: &[u8]) {
        std::fs::write(self.data.join("bin/updates/scripts").join(file_name), body).unwrap();
    }

    fn log(&self) -> PathBuf {
        self.data.join("agent.log")
    }

    /// Starts the agent in a console (not as a service); waits for its portal.
    async fn start(&self, wine: &Wine) -> (Child, String) {
        let mut child = Command::new("wine")
            .arg(&wine.agent)
            .arg("--config")
            .arg(wine.path(&self.config))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let portal = Lines::follow(&mut child).value_after(" portal: ").await;
        (child, portal.trim_end_matches('/').to_owned())
    }
}

/// Installs `module`'s pending package through the agent's portal, as an
/// administrator of the server whose data folder is `data`, and waits for
/// the result.
async fn install(data: &Path, portal: &str, module: &str) -> Value {
    let client = flotilla_tests::portal_http(data);
    let url = format!("{portal}/api/modules/{module}/install");
    let response = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{}",
        response.text().await.unwrap()
    );
    wait_until("the install to finish", async || {
        let status: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        if status["running"] == false {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    })
    .await
}

fn application(name: &str, kind: &str, path: &Path, wine: &Wine, extra: &str) -> String {
    format!(
        "  <application name=\"{name}\" kind=\"{kind}\" path=\"{}\" {extra}/>\r\n",
        wine.path(path)
    )
}

#[tokio::test]
async fn an_install_ordered_by_the_controller_runs_cmd_and_bat_hooks_with_the_procedures_environment()
 {
    let wine = wine();
    let controller_dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(controller_dir.path()).await;
    let root = wine.drive_c.join("flotilla-tests").join("web-01");
    let module_path = root.join("Sites").join("ecommerce");
    let server = Server::lay_out(
        &wine,
        "web-01",
        &controller,
        &[application("ecommerce", "web", &module_path, &wine, "")],
        "",
    );
    server.module("ecommerce", "1.0.0");
    server.package("ecommerce", "2.0.0", "web");
    let trace = root.join("trace.txt");
    for (i, phase) in [
        "STARTUPDATE",
        "PREBACKUP",
        "POSTBACKUP",
        "PREINSTALL",
        "POSTINSTALL",
        "ENDUPDATE",
    ]
    .iter()
    .enumerate()
    {
        // Both extensions and both separators, as the procedure's examples use.
        let name = format!(
            "{phase}{}ecommerce.{}",
            if i % 2 == 0 { '_' } else { '-' },
            if i % 3 == 0 { "bat" } else { "cmd" }
        );
        let mut body = format!(
            "@echo off\r\nif exist \"%E_MODULE_PATH%app_offline.htm\" (set OFF=yes) else (set OFF=no)\r\n>>\"{}\" echo %E_PHASE%;%E_MODULE%;%E_MODULE_PATH%;%E_BACKUP_PATH%;%E_FROM_VERSION%;%E_TO_VERSION%;offline=%OFF%\r\necho hook %E_PHASE% ran\r\n",
            wine.path(&trace)
        )
        .into_bytes();
        if *phase == "POSTINSTALL" {
            // "café" in a code page, not UTF-8, then one more line.
            body.extend_from_slice(b"echo caf\xe9\r\necho after the accent\r\n");
        }
        server.hook(&name, &body);
    }
    let (_agent, _portal) = server.start(&wine).await;
    controller
        .wait_for_server("web-01", "2.0.0 pending", |s| {
            module(s, "ecommerce")["pending_version"] == "2.0.0"
        })
        .await;
    let client = flotilla_tests::http();
    let response = client
        .post(format!(
            "{}/api/v1/servers/web-01/modules/ecommerce/install",
            controller.http_url
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let done = controller
        .wait_for_server("web-01", "2.0.0 installed", |s| {
            let m = module(s, "ecommerce");
            m["installed_version"] == "2.0.0" && m["last_install"]["state"] == "succeeded"
        })
        .await;

    let module_win = format!("{}\\", wine.path(&module_path));
    let backups_win = format!(
        "{}\\",
        wine.path(&server.data.join("bin").join("updates").join("backups"))
    );
    assert!(
        backups_win.contains("\\CPoint\\[e]\\bin\\updates\\backups\\"),
        "{backups_win}"
    );
    let expect = |phase: &str, offline: &str| {
        format!("{phase};ecommerce;{module_win};{backups_win};1.0.0;2.0.0;offline={offline}")
    };
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(
        trace.lines().collect::<Vec<_>>(),
        [
            expect("STARTUPDATE", "no"),
            expect("PREBACKUP", "yes"),
            expect("POSTBACKUP", "yes"),
            expect("PREINSTALL", "yes"),
            expect("POSTINSTALL", "yes"),
            expect("ENDUPDATE", "no"),
        ]
    );
    let id = module(&done, "ecommerce")["last_install"]["install_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = controller
        .get(&format!("/api/v1/servers/web-01/installs/{id}"))
        .await;
    let printed: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "stdout" && e["phase"] == "POSTINSTALL")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(printed[0], "hook POSTINSTALL ran");
    assert!(
        printed[1].starts_with("caf")
            && printed[1].chars().count() == 4
            && !printed[1].contains('\u{fffd}'),
        "decoded through the console's code page: {printed:?}"
    );
    assert_eq!(printed[2], "after the accent", "the reading went on");
    assert_eq!(
        std::fs::read_to_string(module_path.join("index.html")).unwrap(),
        "<h1>ecommerce 2.0.0</h1>"
    );
    assert!(!module_path.join("app_offline.htm").exists());
    let zips: Vec<String> = std::fs::read_dir(server.data.join("bin/updates/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        zips.len() == 1 && zips[0].starts_with("ecommerce_1.0.0_") && zips[0].ends_with(".zip"),
        "{zips:?}"
    );
}

#[tokio::test]
async fn a_hook_that_times_out_is_stopped_and_the_module_rolled_back() {
    let wine = wine();
    let controller_dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(controller_dir.path()).await;
    let module_path = wine
        .drive_c
        .join("flotilla-tests")
        .join("web-02")
        .join("Sites")
        .join("ecommerce");
    let server = Server::lay_out(
        &wine,
        "web-02",
        &controller,
        &[application("ecommerce", "web", &module_path, &wine, "")],
        "hook_timeout_seconds = 2",
    );
    server.module("ecommerce", "1.0.0");
    server.package("ecommerce", "2.0.0", "web");
    // A child that runs for ever, and a hook that waits for ever.
    server.hook(
        "PREINSTALL_ecommerce.cmd",
        b"@echo off\r\nstart \"\" /b cmd /c \"for /L %%i in (1,0,2) do @rem\"\r\nfor /L %%i in (1,0,2) do @rem\r\n",
    );
    let (_agent, portal) = server.start(&wine).await;
    let status = install(&server.data, &portal, "ecommerce").await;
    let result = &status["result"];
    assert_eq!(result["ok"], false, "{status}");
    assert_eq!(result["rolled_back"], true, "{status}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 2 s and was stopped"),
        "{status}"
    );
    assert_eq!(
        std::fs::read_to_string(module_path.join("index.html")).unwrap(),
        "<h1>ecommerce 1.0.0</h1>",
        "rolled back"
    );
    assert!(!module_path.join("app_offline.htm").exists());
}

#[tokio::test]
async fn service_modules_are_stopped_and_started_through_sc_and_their_own_quoted_commands() {
    let wine = wine();
    let controller_dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(controller_dir.path()).await;
    let root = wine.drive_c.join("flotilla-tests").join("app-01");
    let spooler_path = root.join("Sites").join("printing");
    let tool_path = root.join("Sites").join("integration");
    // A module's own commands, in a folder with spaces, quoted, with arguments.
    let tools = wine.drive_c.join("Program Files").join("Flotilla Tools");
    std::fs::create_dir_all(&tools).unwrap();
    let trace = root.join("commands.txt");
    for verb in ["stop", "start"] {
        std::fs::write(
            tools.join(format!("{verb} svc.cmd")),
            format!(
                "@echo off\r\n>>\"{}\" echo {verb} %1\r\n",
                wine.path(&trace)
            ),
        )
        .unwrap();
    }
    let command = |verb: &str| format!("&quot;{}\\{verb} svc.cmd&quot; now", wine.path(&tools));
    let server = Server::lay_out(
        &wine,
        "app-01",
        &controller,
        &[
            application(
                "printing",
                "service",
                &spooler_path,
                &wine,
                "service=\"Spooler\"",
            ),
            application(
                "integration",
                "service",
                &tool_path,
                &wine,
                &format!(
                    "stopCommand=\"{}\" startCommand=\"{}\"",
                    command("stop"),
                    command("start")
                ),
            ),
        ],
        "",
    );
    server.module("printing", "1.0.0");
    server.module("integration", "1.0.0");
    server.package("printing", "2.0.0", "service");
    server.package("integration", "2.0.0", "service");
    // While out of service, the hook sees the service stopped.
    let states = root.join("states.txt");
    server.hook(
        "PREBACKUP_printing.cmd",
        format!(
            "@echo off\r\nsc query Spooler | find \"STATE\" >> \"{}\"\r\n",
            wine.path(&states)
        )
        .as_bytes(),
    );
    let (_agent, portal) = server.start(&wine).await;

    // Already stopped before the install: stopping it is done, and it is
    // started again after.
    wine.sc(&["stop", "Spooler"]).await;
    let status = install(&server.data, &portal, "printing").await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    assert!(wine.sc(&["query", "Spooler"]).await.contains("RUNNING"));

    // Running before the next one: stopped for the swap, started after.
    server.package("printing", "3.0.0", "service");
    wait_until("3.0.0 to be pending", async || {
        let page = flotilla_tests::http()
            .get(format!("{portal}/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.contains("3.0.0").then_some(()).ok_or(page)
    })
    .await;
    let status = install(&server.data, &portal, "printing").await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    assert!(wine.sc(&["query", "Spooler"]).await.contains("RUNNING"));
    let seen = std::fs::read_to_string(&states).unwrap();
    assert_eq!(
        seen.matches("STOPPED").count(),
        2,
        "stopped during both installs: {seen}"
    );

    let status = install(&server.data, &portal, "integration").await;
    assert_eq!(status["result"]["ok"], true, "{status}");
    assert_eq!(
        std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["stop now", "start now"]
    );
}

#[tokio::test]
async fn the_agent_runs_as_a_windows_service_and_stops_cleanly_on_sc_stop() {
    let wine = wine();
    wine.no_service_left().await;
    let controller_dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(controller_dir.path()).await;
    let module_path = wine
        .drive_c
        .join("flotilla-tests")
        .join("svc-01")
        .join("Sites")
        .join("ecommerce");
    let server = Server::lay_out(
        &wine,
        "svc-01",
        &controller,
        &[application("ecommerce", "web", &module_path, &wine, "")],
        "",
    );
    server.module("ecommerce", "1.0.0");
    let config = wine.path(&server.config);
    let cli = async |action: &str| {
        wine.agent_cli(&["--config", &config, "service", action])
            .await
    };

    let (ok, said) = cli("install").await;
    assert!(ok, "{said}");
    assert!(
        said.contains("flotilla-agent registered (Flotilla agent)"),
        "{said}"
    );
    let (ok, said) = cli("start").await;
    assert!(ok && said.contains("flotilla-agent is running"), "{said}");
    let (_, said) = cli("status").await;
    assert!(said.contains("flotilla-agent: running, pid"), "{said}");
    assert!(said.contains("start mode Automatic"), "{said}");
    controller
        .wait_for_server("svc-01", "the service to report", |s| {
            s["online"] == true && module(s, "ecommerce")["installed_version"] == "1.0.0"
        })
        .await;

    let stopped = wine.sc(&["stop", "flotilla-agent"]).await;
    assert!(
        stopped.contains("STOP_PENDING") || stopped.contains("STOPPED"),
        "{stopped}"
    );
    wait_until("the service to stop", async || {
        let state = wine.sc(&["query", "flotilla-agent"]).await;
        state.contains("STOPPED").then_some(()).ok_or(state)
    })
    .await;
    controller
        .wait_for_server("svc-01", "the server to go offline", |s| {
            s["online"] == false
        })
        .await;
    let logs: Vec<PathBuf> = std::fs::read_dir(server.data.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        log.contains("agent starting") && log.contains("shutting down"),
        "{log}"
    );

    let (ok, said) = cli("uninstall").await;
    assert!(ok && said.contains("stopped and unregistered"), "{said}");
    let (ok, said) = cli("status").await;
    assert!(!ok && said.contains("not installed"), "{said}");
}

/// The next version of the Windows agent: this code built with
/// `FLOTILLA_BUILD_VERSION` = [`NEXT`] by `.ci/wine`.
fn next_agent() -> PathBuf {
    std::env::var_os("FLOTILLA_WINE_AGENT_NEXT")
        .map(PathBuf::from)
        .expect("FLOTILLA_WINE_AGENT_NEXT: .ci/wine builds the next version of flotilla-agent.exe")
}

/// A port free on loopback now, for an agent run as a service, whose
/// output no one reads.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_windows_service_is_pointed_at_the_new_agent_or_keeps_the_old_one_when_it_fails() {
    let wine = wine();
    wine.no_service_left().await;
    let controller_dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::start(controller_dir.path()).await;
    let port = free_port();
    let server = Server::lay_out(
        &wine,
        "upd-01",
        &controller,
        &[],
        "update_budget_seconds = 40\nupdate_settle_seconds = 3\n",
    );
    // The service's portal on a known port.
    let toml = std::fs::read_to_string(&server.config).unwrap().replace(
        "portal_listen = \"127.0.0.1:0\"",
        &format!("portal_listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&server.config, toml).unwrap();
    let portal = format!("http://127.0.0.1:{port}");
    let config = wine.path(&server.config);
    let cli = async |action: &str| {
        wine.agent_cli(&["--config", &config, "service", action])
            .await
    };
    let (_, said) = wine.agent_cli(&["--version"]).await;
    let old = said.trim().trim_start_matches("flotilla-agent ").to_owned();
    assert_ne!(old, NEXT);

    // Installed, the service runs its version's own copy.
    let (ok, said) = cli("install").await;
    assert!(ok, "{said}");
    let home = server.data.join("bin").join("agent");
    let old_exe = format!("bin\\agent\\versions\\{old}\\flotilla-agent.exe");
    let (_, qc) = cli("status").await;
    assert!(qc.contains(&old_exe), "{qc}");
    assert_eq!(
        std::fs::read_to_string(home.join("current.txt"))
            .unwrap()
            .trim(),
        old
    );
    let (ok, said) = cli("start").await;
    assert!(ok, "{said}");
    controller
        .wait_for_server("upd-01", "the service online", |s| {
            s["online"] == true && s["agent_version"] == old.as_str()
        })
        .await;

    // The new version cannot reach the controller (stopped): it never
    // proves itself, and the old one runs again, still the service's.
    let dist = controller_dir.path().join("dist");
    let package = agent_package_for(
        "windows-x86_64",
        controller_dir.path(),
        &dist,
        NEXT,
        &next_agent(),
    );
    let pending = server
        .data
        .join(format!("bin/updates/packages/flotilla-agent-{NEXT}.zip"));
    std::fs::copy(&package, &pending).unwrap();
    let sha256 = flotilla_tests::sign_beside(&pending);
    let (grpc, http) = (controller.grpc_addr(), controller.http_addr());
    controller.kill().await;
    let _ = controller.child.wait().await;
    let response = flotilla_tests::portal_http(&server.data)
        .post(format!("{portal}/api/modules/flotilla-agent/install"))
        .json(&json!({"sha256": sha256}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let ended =
        flotilla_tests::wait_up_to(Duration::from_secs(120), "the trial to fail", async || {
            let text = std::fs::read_to_string(home.join("last-update.json")).unwrap_or_default();
            match text.contains("\"ok\": false") {
                true => Ok(text),
                false => Err(text),
            }
        })
        .await;
    assert!(
        ended.contains(&format!(
            "version {NEXT} did not connect and stay connected 3 s within 40 s"
        )),
        "{ended}"
    );
    let (_, qc) = cli("status").await;
    assert!(qc.contains(&old_exe), "{qc}");
    assert!(
        wine.sc(&["query", "flotilla-agent"])
            .await
            .contains("RUNNING")
    );
    controller = Controller::start_on(controller_dir.path(), &grpc, &http).await;
    controller
        .wait_for_server("upd-01", "the old version back online", |s| {
            s["online"] == true && s["agent_version"] == old.as_str()
        })
        .await;

    // A release with an agent package per platform, rolled out: this
    // server takes the Windows one, proves it, and the service control
    // manager runs it from now on.
    // (The Linux package's executable is never run here: a stand-in.)
    let stand_in = controller_dir.path().join("linux-agent");
    std::fs::write(&stand_in, "#!/bin/sh\n").unwrap();
    let linux = agent_package_for(
        "linux-x86_64",
        controller_dir.path(),
        &dist,
        NEXT,
        &stand_in,
    );
    let mut packages = Vec::new();
    for package in [&package, &linux] {
        let sha256 = flotilla_agent::install::package::sha256_file(package).unwrap();
        let status = controller
            .upload(&sha256, &std::fs::read(package).unwrap())
            .await;
        assert!(status == 201 || status == 200, "upload: {status}");
        let signature = flotilla_tests::publisher().sign_package(&sha256);
        packages.push(json!({"sha256": sha256, "signature": signature}));
    }
    let publisher = controller.token_for("ci", "publisher").await;
    let (status, body) = flotilla_tests::sites::post_with(
        &controller,
        "/api/v1/releases",
        &json!({"version": "2026.12", "notes": "", "packages": packages}),
        &publisher,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let (status, created) = flotilla_tests::sites::post(
        &controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.12"}),
        "olivia",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = flotilla_tests::sites::wait_for_rollout(&controller, id, "ended", |r| {
        r["state"] == "succeeded" || r["state"] == "failed"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    controller
        .wait_for_server("upd-01", "the new version online", |s| {
            s["online"] == true && s["agent_version"] == NEXT
        })
        .await;
    let new_exe = format!("bin\\agent\\versions\\{NEXT}\\flotilla-agent.exe");
    let (_, qc) = cli("status").await;
    assert!(qc.contains(&new_exe), "{qc}");
    assert_eq!(
        std::fs::read_to_string(home.join("current.txt"))
            .unwrap()
            .trim(),
        NEXT
    );
    assert!(
        home.join(format!("versions/{old}/flotilla-agent.exe"))
            .is_file()
    );
    let linux_sha = packages[1]["sha256"].as_str().unwrap();
    let took_linux = std::fs::read_dir(server.data.join("bin/updates/packages"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .any(|text| text.trim() == linux_sha);
    assert!(
        !took_linux,
        "the Windows agent downloaded the Linux package"
    );

    // Restarted, the service runs the new version itself.
    let (ok, said) = cli("stop").await;
    assert!(ok, "{said}");
    controller
        .wait_for_server("upd-01", "the server offline", |s| s["online"] == false)
        .await;
    let (ok, said) = cli("start").await;
    assert!(ok, "{said}");
    controller
        .wait_for_server("upd-01", "the new version online after a restart", |s| {
            s["online"] == true && s["agent_version"] == NEXT
        })
        .await;
    let (ok, said) = cli("uninstall").await;
    assert!(ok, "{said}");
}
