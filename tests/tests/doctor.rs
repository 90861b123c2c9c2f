//! `flotilla-agent doctor`, its portal page and API, against real agents:
//! a healthy server, then each problem made for real (a missing module
//! folder, an undeclared one, a folder the agent cannot write, a stray
//! maintenance page, a misnamed hook, a process holding a file, an
//! unreachable controller, the portal's port taken by another program, a
//! pending package with no room to install), each with its fix.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;

use flotilla_agent::install::package::build;
use flotilla_tests::{Agent, Controller, binary};
use serde_json::Value;

/// Runs `flotilla-agent doctor --json` on `config`: its exit code and report.
async fn doctor(config: &Path, portal: &str) -> (i32, Value) {
    let output = tokio::process::Command::new(binary("flotilla-agent"))
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .args(["--portal", portal])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&output.stderr)));
    (output.status.code().unwrap(), report)
}

/// The checks named `check` of a report.
fn checks<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == check)
        .collect()
}

/// The one check `check` whose subject contains `subject`.
fn find<'a>(report: &'a Value, check: &str, subject: &str) -> &'a Value {
    checks(report, check)
        .into_iter()
        .find(|c| c["subject"].as_str().unwrap().contains(subject))
        .unwrap_or_else(|| panic!("no {check} check about {subject}: {report:#}"))
}

fn worst_code(report: &Value) -> i32 {
    let statuses: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    if statuses.contains(&"fail") {
        2
    } else if statuses.contains(&"warn") {
        1
    } else {
        0
    }
}

#[tokio::test]
async fn a_healthy_server_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let agent = Agent::start(
        dir.path(),
        "acme",
        "web-01",
        &controller.grpc_url,
        &[
            ("ecommerce", "web", "1.0.0"),
            ("integration", "service", "1.0.0"),
        ],
    )
    .await;
    controller
        .wait_for_server("web-01", "online", |s| s["online"] == true)
        .await;
    let scripts = agent.data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("PREINSTALL_ecommerce.sh"), "true").unwrap();

    let (code, report) = doctor(&agent.data.join("agent.toml"), &agent.portal_url).await;
    assert_eq!(report["server"], "web-01");
    for check in report["checks"].as_array().unwrap() {
        // Whether the agent runs as a service depends on the machine: here
        // no service manager started it.
        if check["check"] == "service" {
            continue;
        }
        assert_eq!(check["status"], "ok", "{check:#}");
    }
    for name in [
        "portal",
        "controller",
        "applications",
        "folders",
        "status",
        "hooks",
        "leftovers",
        "holders",
        "disk",
        "journal",
    ] {
        assert!(
            !checks(&report, name).is_empty(),
            "no {name} check: {report:#}"
        );
    }
    assert_eq!(code, worst_code(&report), "{report:#}");
    let link = find(&report, "controller", "link");
    let said = link["finding"].as_str().unwrap();
    assert!(
        said.starts_with("connected for") && said.contains("clocks agree within"),
        "{link}"
    );

    // The controller asks the agent for the same report (REST), and the
    // dashboard shows it.
    let (status, remote) = controller.get("/api/v1/servers/web-01/doctor").await;
    assert_eq!(status, 200, "{remote}");
    assert_eq!(remote["server"], "web-01");
    assert_eq!(
        remote["checks"].as_array().unwrap().len(),
        report["checks"].as_array().unwrap().len(),
        "{remote:#}"
    );
    assert_eq!(find(&remote, "folders", "packages")["status"], "ok");
    let (status, _) = controller.get("/api/v1/servers/nobody/doctor").await;
    assert_eq!(status, 404);
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&format!("{}/", controller.http_url)).await;
    browser
        .text_of(
            "the server on the dashboard",
            "button[data-doctor-button='web-01']",
        )
        .await;
    browser
        .eval(
            "document.querySelector(\"button[data-doctor-button='web-01']\").click(); return null",
        )
        .await;
    let row = browser
        .text_of(
            "the doctor's report on the dashboard",
            "tr[data-doctor-of='web-01'] tr[data-check='journal'][data-status='ok']",
        )
        .await;
    assert!(row.contains("no interrupted install"), "{row}");
    browser.quit().await;

    // The portal's Doctor page says the same, for a person.
    let page = flotilla_tests::http()
        .get(format!("{}/doctor", agent.portal_url.trim_end_matches('/')))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h1>Doctor of web-01</h1>"), "{page}");
    assert!(
        page.contains("data-check=\"folders\" data-status=\"ok\""),
        "{page}"
    );
}

#[tokio::test]
async fn each_problem_is_found_and_says_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("web-02");
    let apps = data.join("apps");
    let ecommerce = apps.join("ecommerce");
    std::fs::create_dir_all(&ecommerce).unwrap();
    std::fs::write(ecommerce.join("version.txt"), "1.0.0\n").unwrap();
    // Beside the module, one nobody declared.
    let legacy = apps.join("legacy");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("version.txt"), "0.9.0\n").unwrap();
    // The backups go where a file is in the way: not writable.
    let blocked = dir.path().join("backups-are-a-file");
    std::fs::write(&blocked, "not a folder").unwrap();
    // A pending package of ecommerce, and a reserve no disk has.
    let packages = data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("ecommerce-2.0.0.zip");
    build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[("version.txt", b"2.0.0\n")],
    )
    .unwrap();
    flotilla_tests::sign_beside(&package);
    let xml = format!(
        "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/><application name=\"shop\" kind=\"web\" path=\"{}\"/></applications>",
        ecommerce.display(),
        apps.join("shop").display()
    );
    // No controller listens on port 9.
    let agent = Agent::launch_with(
        dir.path(),
        "acme",
        "web-02",
        "https://127.0.0.1:9",
        &xml,
        100,
        &format!(
            "{}\nbackup_dir = {:?}\ndisk_reserve_mb = 100000000000\n",
            flotilla_tests::trusted_publisher(),
            blocked.display().to_string()
        ),
    )
    .await;
    // A maintenance page left behind (the agent removes those it finds at
    // its start; this one came after).
    std::fs::write(ecommerce.join("app_offline.htm"), "down").unwrap();
    // A hook naming a module that does not exist here.
    let scripts = data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(scripts.join("POSTINSTALL-ecomerce.sh"), "true").unwrap();
    // A process holding one of the module's files open.
    let mut holder = tokio::process::Command::new("sleep")
        .arg("60")
        .stdin(std::fs::File::open(ecommerce.join("version.txt")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let (code, report) = doctor(&data.join("agent.toml"), &agent.portal_url).await;
    assert_eq!(code, 2, "{report:#}");

    let missing = find(&report, "applications", "shop");
    assert_eq!(missing["status"], "fail");
    assert!(
        missing["fix"]
            .as_str()
            .unwrap()
            .contains("correct its path"),
        "{missing}"
    );
    let undeclared = find(&report, "applications", "legacy");
    assert_eq!(undeclared["status"], "warn");
    assert!(
        undeclared["fix"]
            .as_str()
            .unwrap()
            .starts_with("declare it"),
        "{undeclared}"
    );

    let folder = find(&report, "folders", "backups-are-a-file");
    assert_eq!(folder["status"], "fail", "{folder}");
    assert!(
        folder["finding"]
            .as_str()
            .unwrap()
            .contains("not writable by"),
        "{folder}"
    );
    assert!(
        folder["fix"].as_str().unwrap().contains("modify rights"),
        "{folder}"
    );

    let page = find(&report, "leftovers", "app_offline.htm");
    assert_eq!(page["status"], "warn");
    assert!(
        page["finding"]
            .as_str()
            .unwrap()
            .contains("maintenance page"),
        "{page}"
    );

    let hook = find(&report, "hooks", "POSTINSTALL-ecomerce.sh");
    assert_eq!(hook["status"], "warn");
    assert!(
        hook["finding"]
            .as_str()
            .unwrap()
            .contains("did you mean \"ecommerce\"?"),
        "{hook}"
    );
    assert_eq!(hook["fix"], "rename it for \"ecommerce\"");

    let held = find(&report, "holders", "ecommerce");
    assert_eq!(held["status"], "warn");
    let finding = held["finding"].as_str().unwrap();
    assert!(
        finding.contains(&format!("pid {}", holder.id().unwrap()))
            && finding.contains("sleep")
            && finding.contains("version.txt"),
        "{held}"
    );
    assert!(
        held["fix"].as_str().unwrap().contains("stopCommand"),
        "{held}"
    );

    let disk = find(&report, "disk", "ecommerce");
    assert_eq!(disk["status"], "fail", "{disk}");
    assert!(
        disk["finding"]
            .as_str()
            .unwrap()
            .contains("not enough space"),
        "{disk}"
    );

    let controller = &checks(&report, "controller")[0];
    assert_eq!(controller["status"], "fail", "{controller}");
    assert!(
        controller["finding"]
            .as_str()
            .unwrap()
            .contains("TCP 9 does not take a connection"),
        "{controller}"
    );
    assert!(
        controller["fix"].as_str().unwrap().contains("firewall"),
        "{controller}"
    );
    holder.kill().await.unwrap();

    // The agent stopped: the command runs what it can itself, and says the
    // agent does not answer.
    let portal = agent.portal_url.clone();
    drop(agent);
    let (code, alone) = doctor(&data.join("agent.toml"), &portal).await;
    assert_eq!(code, 2);
    let portal_check = &checks(&alone, "portal")[0];
    assert_eq!(portal_check["status"], "fail");
    assert!(
        portal_check["finding"]
            .as_str()
            .unwrap()
            .starts_with("the agent does not answer"),
        "{portal_check}"
    );
    assert!(
        portal_check["fix"]
            .as_str()
            .unwrap()
            .contains("service start")
    );
    assert_eq!(find(&alone, "applications", "shop")["status"], "fail");

    // Another program holds the portal's port (the old updater, say).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nServer: Microsoft-IIS/10.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let (code, other) = doctor(&data.join("agent.toml"), &taken).await;
    assert_eq!(code, 2);
    let portal_check = &checks(&other, "portal")[0];
    assert!(
        portal_check["finding"]
            .as_str()
            .unwrap()
            .contains("another program answers")
            && portal_check["finding"]
                .as_str()
                .unwrap()
                .contains("Microsoft-IIS/10.0"),
        "{portal_check}"
    );
    assert!(
        portal_check["fix"]
            .as_str()
            .unwrap()
            .contains("[e] - service principal"),
        "{portal_check}"
    );
}

/// Two sites; bravo's server has no room for the new version. Bravo waits
/// in `preflight_failed` with nothing touched while alpha completes; the
/// dry run said so beforehand; once the space is freed, a retry completes
/// bravo.
#[tokio::test]
async fn a_site_whose_server_lacks_space_is_never_taken_down_and_completes_once_it_has_room() {
    use flotilla_tests::sites::{
        Publisher, ServerSpec, launch_server, post, site, wait_for_downloads, wait_for_rollout,
    };
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let publisher = Publisher::default();
    let servers = dir.path().join("servers");
    let alpha = launch_server(
        &servers,
        &controller,
        &publisher,
        "alpha",
        ServerSpec {
            id: "alpha-web",
            modules: &["ecommerce"],
        },
    )
    .await;
    let mut bravo = launch_server(
        &servers,
        &controller,
        &publisher,
        "bravo",
        ServerSpec {
            id: "bravo-web",
            modules: &["ecommerce"],
        },
    )
    .await;
    // Bravo's volume cannot hold the new version beside the old one: a
    // reserve no disk has.
    let config = bravo.data.join("agent.toml");
    let roomy = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{roomy}\ndisk_reserve_mb = 100000000000\n"),
    )
    .unwrap();
    bravo.relaunch("flotilla-agent", &[]).await;
    publisher
        .publish(&controller, dir.path(), "2026.12", "2.0.0", &["ecommerce"])
        .await;
    wait_for_downloads(
        &controller,
        &[(&alpha, &["ecommerce"]), (&bravo, &["ecommerce"])],
        "2.0.0",
    )
    .await;

    // The dry run shows it before anything starts.
    let (status, plan) = post(
        &controller,
        "/api/v1/rollouts?dry_run=true",
        &serde_json::json!({"release": "2026.12"}),
        "alice",
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    let planned = |name: &str| {
        plan["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["site"] == name)
            .unwrap()["preflight"][0]
            .clone()
    };
    assert_eq!(
        planned("alpha")["failures"],
        serde_json::json!([]),
        "{plan:#}"
    );
    let ahead = planned("bravo")["failures"][0].as_str().unwrap().to_owned();
    assert!(
        ahead.starts_with("disk ") && ahead.contains("not enough space"),
        "{ahead}"
    );

    let (status, created) = post(
        &controller,
        "/api/v1/rollouts",
        &serde_json::json!({"release": "2026.12"}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let waiting = wait_for_rollout(&controller, id, "alpha done, bravo held back", |r| {
        site(r, "alpha")["state"] == "succeeded" && site(r, "bravo")["state"] == "preflight_failed"
    })
    .await;
    let held = site(&waiting, "bravo");
    assert!(
        held["message"]
            .as_str()
            .unwrap()
            .starts_with("preflight failed, nothing was touched: bravo-web: disk "),
        "{held}"
    );
    assert_eq!(held["preflight"][0]["server"], "bravo-web");
    assert_eq!(waiting["state"], "running", "the rollout waits for bravo");
    // Nothing of bravo was touched: no install, no maintenance page.
    let (_, installs) = controller.get("/api/v1/servers/bravo-web/installs").await;
    assert_eq!(installs, serde_json::json!([]));
    let module = servers.join("bravo-web/apps/ecommerce");
    assert!(!module.join("app_offline.htm").exists());
    assert_eq!(
        std::fs::read_to_string(module.join("version.txt"))
            .unwrap()
            .trim(),
        "1.0.0"
    );
    assert!(
        waiting["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["action"] == "preflight_failed"),
        "{waiting:#}"
    );

    // The rollout page shows each server's answer, and offers to start
    // anyway.
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser
        .goto(&format!("{}/rollouts#{id}", controller.http_url))
        .await;
    let shown = browser
        .text_of(
            "bravo's failed preflight on the dashboard",
            "section.rollout-site[data-site='bravo'] li.preflight-server[data-server='bravo-web'][data-failed='true']",
        )
        .await;
    assert!(shown.contains("not enough space"), "{shown}");
    browser
        .text_of(
            "the override button",
            "section.rollout-site[data-site='bravo'] button[data-override='bravo']",
        )
        .await;
    browser.quit().await;

    // The space is freed; an operator retries at once.
    std::fs::write(&config, &roomy).unwrap();
    bravo.relaunch("flotilla-agent", &[]).await;
    controller
        .wait_for_server("bravo-web", "back online", |s| s["online"] == true)
        .await;
    let (status, body) = post(
        &controller,
        &format!("/api/v1/rollouts/{id}/retry"),
        &serde_json::json!({}),
        "alice",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_for_rollout(&controller, id, "succeeded", |r| r["state"] == "succeeded").await;
    assert_eq!(site(&done, "bravo")["state"], "succeeded", "{done:#}");
    assert_eq!(
        std::fs::read_to_string(module.join("version.txt"))
            .unwrap()
            .trim(),
        "2.0.0"
    );
}

/// An existing installation's folder, before the agent first runs there:
/// the doctor says what it found and what the agent will change.
#[tokio::test]
async fn an_existing_installation_is_described_before_the_agent_takes_it_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("CPoint").join("[e]");
    let module = data.join("Sites").join("ecommerce");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "5.8.0\n").unwrap();
    std::fs::create_dir_all(data.join("bin/config")).unwrap();
    std::fs::write(
        data.join("bin/config/applicationspath.config"),
        format!(
            "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>",
            module.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(data.join("bin/updates/scripts")).unwrap();
    std::fs::write(
        data.join("bin/updates/scripts/PREINSTALL_ecommerce.ps1"),
        "Stop-WebAppPool ecommerce",
    )
    .unwrap();
    // The older updater's own status file.
    std::fs::write(
        data.join("bin/updates/status.xml"),
        "<?xml version=\"1.0\"?><Status><Module Name=\"ecommerce\" Version=\"5.8.0\"/></Status>",
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "site = \"acme\"\nserver_id = \"web-03\"\ndata_dir = {:?}\ncontroller_url = \"http://127.0.0.1:9\"\ninsecure_plaintext = true\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let (code, report) = doctor(&config, "http://127.0.0.1:9").await;
    assert_eq!(code, 2, "the agent does not run yet: {report:#}");
    let found = &checks(&report, "takeover")[0];
    assert_eq!(found["status"], "ok");
    let finding = found["finding"].as_str().unwrap();
    assert!(
        finding
            .contains("applicationspath.config with 1 module(s), 1 hook script(s) run as they are")
            && finding.contains("status.xml written by another updater, which the agent rewrites"),
        "{found}"
    );
    assert_eq!(
        find(&report, "applications", "applicationspath.config")["status"],
        "ok"
    );
    // Nothing was changed by looking.
    assert!(
        std::fs::read_to_string(data.join("bin/updates/status.xml"))
            .unwrap()
            .contains("<Status>")
    );
    assert!(!data.join("bin/updates/packages").exists());
}

#[tokio::test]
async fn a_server_not_enrolled_yet_is_checked_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("CPoint").join("[e]");
    let module = data.join("Sites").join("phygitalapi");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "2.1.3\n").unwrap();
    std::fs::create_dir_all(data.join("bin/config")).unwrap();
    std::fs::write(
        data.join("bin/config/applicationspath.config"),
        format!(
            "<applications><application name=\"phygitalapi\" kind=\"web\" path=\"{}\"/></applications>",
            module.display()
        ),
    )
    .unwrap();
    // The procedure's own example name, beside a module named otherwise.
    std::fs::create_dir_all(data.join("bin/updates/scripts")).unwrap();
    std::fs::write(
        data.join("bin/updates/scripts/POSTINSTALL-phygital.ps1"),
        "Write-Host edited",
    )
    .unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\ncontroller_url = \"https://controller.acme.local:7443\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let (code, report) = doctor(&config, "http://127.0.0.1:9").await;
    assert_eq!(code, 2, "{report:#}");
    // Not enrolled is one failure among the checks, with what fixes it.
    let enrollment = &checks(&report, "enrollment")[0];
    assert_eq!(enrollment["status"], "fail");
    assert!(
        enrollment["finding"]
            .as_str()
            .unwrap()
            .contains("this agent is not enrolled")
            && enrollment["fix"]
                .as_str()
                .unwrap()
                .contains("--ca-fingerprint"),
        "{enrollment}"
    );
    // Everything else that needs no controller ran.
    let hook = find(&report, "hooks", "POSTINSTALL-phygital.ps1");
    assert!(
        hook["finding"]
            .as_str()
            .unwrap()
            .contains("did you mean \"phygitalapi\"?"),
        "{hook}"
    );
    assert_eq!(
        find(&report, "applications", "applicationspath.config")["status"],
        "ok"
    );
    for check in [
        "takeover",
        "folders",
        "leftovers",
        "holders",
        "disk",
        "journal",
    ] {
        assert!(!checks(&report, check).is_empty(), "{check}: {report:#}");
    }
    assert!(checks(&report, "controller").is_empty(), "nothing dialled");
}

/// An agent's key that other users can read is closed to them at the
/// agent's start; found again later, it is a FAIL of the doctor, which says
/// what to do.
#[cfg(unix)]
#[tokio::test]
async fn secrets_other_users_can_read_are_closed_at_start_and_a_doctor_failure() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    // The harness enrolls the agent on disk with plain writes: its key is
    // left readable by everyone (mode 644), as a copy made by hand would be.
    let agent = Agent::start(
        dir.path(),
        "acme",
        "web-01",
        &controller.grpc_url,
        &[("ecommerce", "web", "1.0.0")],
    )
    .await;
    let data = agent.data.clone();
    let key = data.join("identity/agent.pem");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "closed at start");
    assert_eq!(mode(&data.join("identity")), 0o700);
    assert_eq!(mode(&data.join("identity/portal.token")), 0o600);
    assert!(
        agent.log().contains("other users could read this secret"),
        "{}",
        agent.log()
    );
    let (_, report) = doctor(&agent.data.join("agent.toml"), &agent.portal_url).await;
    assert_eq!(
        find(&report, "secrets", "agent.pem")["status"],
        "ok",
        "{report:#}"
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, report) = doctor(&agent.data.join("agent.toml"), &agent.portal_url).await;
    let found = find(&report, "secrets", "agent.pem");
    assert_eq!(found["status"], "fail", "{found:#}");
    assert!(
        found["finding"].as_str().unwrap().contains("mode 640"),
        "{found:#}"
    );
    assert!(
        found["fix"].as_str().unwrap().contains("revoke it"),
        "{found:#}"
    );
    assert_eq!(code, 2);
}
