//! The agent updates itself, side by side, on real processes (Linux): the
//! next version is this very code built with `FLOTILLA_BUILD_VERSION`
//! (once, into `target/agent-next/`), packaged and signed as the module
//! `flotilla-agent`. It takes over, proves itself, and the controller sees
//! it; broken new versions (one that exits at start, one that never
//! connects, one that crashes after connecting) and a power cut during the
//! trial leave the previous version running and the update failed with its
//! reason.

#![allow(clippy::unwrap_used)]

use flotilla_tests::self_update::{
    NEXT, agent_package, agent_package_for, current, managed_agent, managed_agent_with, next_agent,
    package_agent, script_agent, update,
};
use flotilla_tests::sites::{Publisher, ServerSpec, applications};
use flotilla_tests::{Controller, module, wait_until};
use serde_json::Value;

/// The latest install of flotilla-agent to `to` the controller knows, once ended.
async fn agent_update_ended(controller: &Controller, to: &str) -> Value {
    agent_update_where(controller, &format!("the update to {to} to end"), |i| {
        i["to_version"] == to && i["state"] != "running"
    })
    .await
}

/// The first of the agent's updates the controller knows that `wanted`
/// picks, once there is one.
async fn agent_update_where(
    controller: &Controller,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(what, async || {
        let updates = agent_updates(controller).await;
        updates
            .iter()
            .find(|i| wanted(i))
            .cloned()
            .ok_or_else(|| format!("{updates:?}"))
    })
    .await
}

#[tokio::test]
async fn the_agent_updates_itself_and_the_previous_version_stays_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let old = flotilla_tests::binary("flotilla-agent");
    let old_version = String::from_utf8(
        std::process::Command::new(&old)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .trim_start_matches("flotilla-agent ")
    .to_owned();
    let server = controller.server("web-01").await.unwrap();
    assert_eq!(server["agent_version"], old_version.as_str());
    assert_eq!(
        module(&server, "flotilla-agent")["installed_version"],
        old_version.as_str(),
        "{server}"
    );

    let sha256 = package_agent(&agent, dir.path(), NEXT, &next_agent());
    update(&agent, &sha256).await;
    let ended = agent_update_ended(&controller, NEXT).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    // Reported once the new version proved itself: `current` is its.
    // Online with its new version, which its inventory shows too.
    controller
        .wait_for_server("web-01", "the new version online", |s| {
            s["online"] == true
                && s["agent_version"] == NEXT
                && module(s, "flotilla-agent")["installed_version"] == NEXT
        })
        .await;
    assert_eq!(current(&agent), NEXT);
    // Side by side: the previous version is kept.
    assert!(
        agent
            .data
            .join(format!("bin/agent/versions/{old_version}/flotilla-agent"))
            .is_file()
    );
    assert!(!agent.data.join("bin/agent/trial.json").exists());

    // A restart runs the new version directly, with the same identity.
    let current_exe = agent.data.join("bin/agent/current/flotilla-agent");
    agent.relaunch_from(&current_exe, &[]).await;
    controller
        .wait_for_server("web-01", "back online, new version", |s| {
            s["online"] == true && s["agent_version"] == NEXT
        })
        .await;
    agent.kill_all().await;
}

#[tokio::test]
async fn a_new_version_that_fails_its_trial_is_rolled_back_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let old_version = current(&agent);

    // Built for another platform: refused before anything changes.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(
        script_agent(dir.path(), "9.8.0", "exit 0"),
        foreign.join("flotilla-agent"),
    )
    .unwrap();
    let package = agent
        .data
        .join("bin/updates/packages/flotilla-agent-9.8.0.zip");
    std::fs::create_dir_all(package.parent().unwrap()).unwrap();
    flotilla_agent::install::package::build::from_folder(
        &package,
        "module = \"flotilla-agent\"\nversion = \"9.8.0\"\nkind = \"agent\"\nplatform = \"plan9-mips\"\n",
        &foreign,
    )
    .unwrap();
    update(&agent, &flotilla_tests::sign_beside(&package)).await;
    let ended = agent_update_ended(&controller, "9.8.0").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended
            .to_string()
            .contains("refused before anything changed: the package is built for plan9-mips"),
        "{ended}"
    );
    assert!(!agent.data.join("bin/agent/versions/9.8.0").exists());
    assert!(!agent.data.join("bin/agent/trial.json").exists());
    assert_eq!(current(&agent), old_version);

    for (to, then, reason) in [
        ("9.9.1", "exit 3", "ended before it proved itself"),
        (
            "9.9.2",
            "exec sleep 600",
            "did not connect and stay connected 2 s within 8 s",
        ),
    ] {
        let exe = script_agent(dir.path(), to, then);
        let sha256 = package_agent(&agent, dir.path(), to, &exe);
        update(&agent, &sha256).await;
        let ended = agent_update_ended(&controller, to).await;
        assert_eq!(ended["state"], "failed", "{ended}");
        let message = ended.to_string();
        assert!(message.contains(reason), "{to}: {message}");
        // The previous version runs again, online, as the service's.
        controller
            .wait_for_server("web-01", "the previous version online", |s| {
                s["online"] == true && s["agent_version"] == old_version.as_str()
            })
            .await;
        assert_eq!(current(&agent), old_version);
        assert!(!agent.data.join("bin/agent/trial.json").exists());
        // Its portal answers again, at the address it now prints.
        let page = agent.portal_after_restart().await;
        assert!(page.contains("Recent installs"), "{page}");
    }

    // The real next version, which connects and then crashes before it
    // has stayed connected long enough (a second, of the two it needs).
    let next = next_agent();
    let crashing = script_agent(
        dir.path(),
        NEXT,
        &format!(
            "{next:?} \"$@\" &\npid=$!\nsleep 1\nkill -9 $pid\nexit 9",
            next = next.display().to_string()
        ),
    );
    let sha256 = package_agent(&agent, dir.path(), NEXT, &crashing);
    update(&agent, &sha256).await;
    let ended = agent_update_ended(&controller, NEXT).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended.to_string().contains("ended before it proved itself"),
        "{ended}"
    );
    let log = agent.log();
    let started = log
        .find(&format!(
            "agent starting server=web-01 site=acme data={} version=\"{NEXT}\"",
            agent.data.display()
        ))
        .unwrap_or_else(|| panic!("the new version started: {log}"));
    assert!(
        log[started..].contains("connected to the controller"),
        "it connected first: {log}"
    );
    controller
        .wait_for_server("web-01", "the previous version online", |s| {
            s["online"] == true && s["agent_version"] == old_version.as_str()
        })
        .await;
    assert_eq!(current(&agent), old_version);
    agent.portal_after_restart().await;

    // A power cut during a trial: the previous version comes back, and
    // says the update was interrupted.
    let exe = script_agent(dir.path(), "9.9.3", "exec sleep 600");
    let sha256 = package_agent(&agent, dir.path(), "9.9.3", &exe);
    update(&agent, &sha256).await;
    let trial = agent.data.join("bin/agent/trial.json");
    wait_until("the trial to start", async || {
        trial.exists().then_some(()).ok_or(String::new())
    })
    .await;
    let current_exe = agent.data.join("bin/agent/current/flotilla-agent");
    agent.relaunch_from(&current_exe, &[]).await;
    let ended = agent_update_ended(&controller, "9.9.3").await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(ended.to_string().contains("was interrupted"), "{ended}");
    assert_eq!(current(&agent), old_version);
    assert!(!trial.exists());
    agent.kill_all().await;
}

#[tokio::test]
async fn a_rollout_brings_the_next_agent_to_every_server_of_a_site() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agents = Vec::new();
    for id in ["web-01", "web-02", "web-03"] {
        let xml = applications(
            dir.path(),
            ServerSpec {
                id,
                modules: &["ecommerce"],
            },
        );
        agents.push(managed_agent_with(dir.path(), &controller, id, &xml).await);
    }
    let old_version = current(&agents[0]);
    // A module release first: the history the update must keep.
    let modules = Publisher::shared();
    let releases = dir.path().join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    modules
        .publish(&controller, &releases, "2026.11", "2.0.0", &["ecommerce"])
        .await;
    roll_out(&controller, &agents, "2026.11", "2.0.0").await;
    let identities: Vec<Vec<u8>> = agents
        .iter()
        .map(|a| std::fs::read(a.data.join("identity/agent.pem")).unwrap())
        .collect();

    // The next agent, published in a release as any module is, one package
    // per platform: each server takes the one built for its own.
    let dist = dir.path().join("dist");
    let mut packages = Vec::new();
    for platform in ["windows-x86_64", &flotilla_proto::domain::platform()] {
        let package = agent_package_for(platform, dir.path(), &dist, NEXT, &next_agent());
        let sha256 = flotilla_agent::install::package::sha256_file(&package).unwrap();
        let status = controller
            .upload(&sha256, &std::fs::read(&package).unwrap())
            .await;
        assert!(status == 201 || status == 200, "upload: {status}");
        let signature = flotilla_tests::publisher().sign_package(&sha256);
        packages.push(serde_json::json!({"sha256": sha256, "signature": signature}));
    }
    let publisher = controller.token_for("ci", "publisher").await;
    // One package per module and platform: the same platform twice is refused.
    let (status, body) = flotilla_tests::sites::post_with(
        &controller,
        "/api/v1/releases",
        &serde_json::json!({"version": "2026.12", "notes": "", "packages": [packages[0], packages[0]]}),
        &publisher,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains(&format!(
            "one package of flotilla-agent {NEXT} for windows-x86_64"
        )),
        "{body}"
    );
    let (status, body) = flotilla_tests::sites::post_with(
        &controller,
        "/api/v1/releases",
        &serde_json::json!({"version": "2026.12", "notes": "The agent, next.", "packages": packages}),
        &publisher,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let platforms: Vec<&str> = body["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms.len(), 2, "{body}");
    assert!(platforms.contains(&"windows-x86_64"), "{body}");
    let windows = packages[0]["sha256"].as_str().unwrap();
    for agent in &agents {
        controller
            .wait_for_server(&agent.id, "the next agent downloaded", |s| {
                module(s, "flotilla-agent")["pending_version"] == NEXT
            })
            .await;
        // Only its own platform's package.
        let downloaded = std::fs::read_dir(agent.data.join("bin/updates/packages"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .any(|text| text.trim() == windows);
        assert!(!downloaded, "{} downloaded the Windows agent", agent.id);
    }

    // Rolled out like any module: every server runs it, as its service's.
    let (status, created) = flotilla_tests::sites::post(
        &controller,
        "/api/v1/rollouts",
        &serde_json::json!({"release": "2026.12"}),
        "olivia",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = flotilla_tests::sites::wait_for_rollout(&controller, id, "succeeded", |r| {
        r["state"] == "succeeded" || r["state"] == "failed"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for agent in &agents {
        controller
            .wait_for_server(&agent.id, "the next agent online", |s| {
                s["online"] == true
                    && s["agent_version"] == NEXT
                    && module(s, "flotilla-agent")["installed_version"] == NEXT
            })
            .await;
        assert_eq!(current(agent), NEXT);
        assert!(
            agent
                .data
                .join(format!("bin/agent/versions/{old_version}/flotilla-agent"))
                .is_file()
        );
    }
    // The dashboard shows the new version on each server.
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(&controller).await;
    browser.goto(&format!("{}/", controller.http_url)).await;
    for agent in &agents {
        wait_until(&format!("{} at {NEXT} on the dashboard", agent.id), async || {
            let cell = browser
                .eval(&format!(
                    "const c = document.querySelector('tr[data-server=\"{}\"] td[data-module=\"flotilla-agent\"]'); return c ? c.textContent : null",
                    agent.id
                ))
                .await;
            // The version, then the last install's mark.
            match cell.as_str() {
                Some(text) if text.starts_with(&format!("{NEXT}✓")) => Ok(()),
                _ => Err(cell.to_string()),
            }
        })
        .await;
    }
    browser.quit().await;

    // The new agents keep their identity and history, and install modules.
    modules
        .publish(&controller, &releases, "2026.13", "3.0.0", &["ecommerce"])
        .await;
    roll_out(&controller, &agents, "2026.13", "3.0.0").await;
    for (agent, identity) in agents.iter_mut().zip(&identities) {
        assert_eq!(
            &std::fs::read(agent.data.join("identity/agent.pem")).unwrap(),
            identity,
            "{}'s identity changed",
            agent.id
        );
        let (_, installs) = controller
            .get(&format!("/api/v1/servers/{}/installs", agent.id))
            .await;
        for (module, version) in [
            ("ecommerce", "2.0.0"),
            ("flotilla-agent", NEXT),
            ("ecommerce", "3.0.0"),
        ] {
            assert!(
                installs
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|i| i["module"] == module
                        && i["to_version"] == version
                        && i["state"] == "succeeded"),
                "{}: no succeeded install of {module} {version} in {installs}",
                agent.id
            );
        }
        // The agent's own history, kept on its disk, spans both versions
        // (the new agent's portal listens anew).
        agent.portal_after_restart().await;
        let history = flotilla_tests::http()
            .get(format!("{}/history/ecommerce", agent.portal_base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for version in ["2.0.0", "3.0.0"] {
            assert!(
                history.contains(version),
                "{}: {version} not in {history}",
                agent.id
            );
        }
    }
    // A release whose agent package is for another platform only: these
    // Linux servers keep their agent, and the plan says why.
    let (status, body) = flotilla_tests::sites::post_with(
        &controller,
        "/api/v1/releases",
        &serde_json::json!({"version": "2026.14", "notes": "", "packages": [packages[0]]}),
        &publisher,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let (status, plan) = flotilla_tests::sites::post(
        &controller,
        "/api/v1/rollouts?dry_run=true",
        &serde_json::json!({"release": "2026.14"}),
        "olivia",
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert!(
        !plan.to_string().contains("\"module\":\"flotilla-agent\""),
        "no step for the agent: {plan}"
    );
    assert!(
        plan["warnings"].to_string().contains(&format!(
            "the release carries no flotilla-agent package for its platform ({})",
            flotilla_proto::domain::platform()
        )),
        "{plan}"
    );
    for agent in &mut agents {
        agent.kill_all().await;
    }
}

/// Rolls `release` out and waits for it to succeed and for every agent to
/// report `ecommerce` at `version`.
async fn roll_out(
    controller: &Controller,
    agents: &[flotilla_tests::Agent],
    release: &str,
    version: &str,
) {
    let pairs: Vec<(&flotilla_tests::Agent, &[&str])> =
        agents.iter().map(|a| (a, &["ecommerce"][..])).collect();
    flotilla_tests::sites::wait_for_downloads(controller, &pairs, version).await;
    let (status, created) = flotilla_tests::sites::post(
        controller,
        "/api/v1/rollouts",
        &serde_json::json!({"release": release}),
        "olivia",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = flotilla_tests::sites::wait_for_rollout(controller, id, "ended", |r| {
        r["state"] == "succeeded" || r["state"] == "failed"
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for agent in agents {
        controller
            .wait_for_server(&agent.id, &format!("ecommerce {version}"), |s| {
                module(s, "ecommerce")["installed_version"] == version
            })
            .await;
    }
}

#[tokio::test]
async fn a_broken_agent_release_fails_its_step_with_the_reason_and_stops_the_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let old_version = current(&agent);
    // A new version that never connects.
    let broken = script_agent(dir.path(), "9.9.5", "exec sleep 600");
    let package = agent_package(dir.path(), &dir.path().join("dist"), "9.9.5", &broken);
    let sha256 = flotilla_agent::install::package::sha256_file(&package).unwrap();
    let status = controller
        .upload(&sha256, &std::fs::read(&package).unwrap())
        .await;
    assert!(status == 201 || status == 200, "upload: {status}");
    let publisher = controller.token_for("ci", "publisher").await;
    let (status, body) = flotilla_tests::sites::post_with(
        &controller,
        "/api/v1/releases",
        &serde_json::json!({"version": "2026.13", "notes": "", "packages": [{"sha256": sha256, "signature": flotilla_tests::publisher().sign_package(&sha256)}]}),
        &publisher,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    controller
        .wait_for_server("web-01", "the broken agent downloaded", |s| {
            module(s, "flotilla-agent")["pending_version"] == "9.9.5"
        })
        .await;
    let (status, created) = flotilla_tests::sites::post(
        &controller,
        "/api/v1/rollouts",
        // The rollout's own trial budget, shorter than the agent's (8 s).
        &serde_json::json!({"release": "2026.13", "strategy": {"failure": {"retries": 0}, "agent_update_budget_seconds": 5}}),
        "olivia",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let stopped =
        flotilla_tests::sites::wait_for_rollout(&controller, id, "stopped by its failure", |r| {
            r["state"] != "running"
        })
        .await;
    // The threshold (any failed site) stops it.
    assert!(
        stopped["state"] == "paused" || stopped["state"] == "failed",
        "{stopped}"
    );
    assert!(
        stopped["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["action"] == "paused"
                && entry["detail"]
                    .as_str()
                    .unwrap()
                    .contains("past the threshold")),
        "{stopped}"
    );
    let steps = flotilla_tests::sites::steps(&stopped, "acme");
    let step = steps
        .iter()
        .find(|s| s["module"] == "flotilla-agent")
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(
        step.to_string()
            .contains("did not connect and stay connected 2 s within 5 s"),
        "the step says why: {step}"
    );
    controller
        .wait_for_server("web-01", "the previous version online", |s| {
            s["online"] == true && s["agent_version"] == old_version.as_str()
        })
        .await;
    assert_eq!(current(&agent), old_version);
    agent.kill_all().await;
}

/// The agent's updates the controller knows, by install id.
async fn agent_updates(controller: &Controller) -> Vec<Value> {
    let (_, installs) = controller.get("/api/v1/servers/web-01/installs").await;
    installs
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["module"] == "flotilla-agent")
        .cloned()
        .collect()
}

/// Points `<data>/bin/agent/current` at `version`, as a service install
/// left it.
fn set_current(agent: &flotilla_tests::Agent, version: &str) {
    let link = agent.data.join("bin/agent/current");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(std::path::Path::new("versions").join(version), &link).unwrap();
}

#[tokio::test]
async fn a_power_cut_while_the_new_version_is_made_the_services_leaves_it_running_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let old_version = current(&agent);
    let next = next_agent();
    let current_exe = agent.data.join("bin/agent/current/flotilla-agent");
    // The old version is the agent with crash points: it cuts the power on
    // itself and on the new version it supervises.
    agent.kill_all().await;
    std::fs::copy(
        flotilla_tests::binary("flotilla-agent-crashpoints"),
        agent
            .data
            .join(format!("bin/agent/versions/{old_version}/flotilla-agent")),
    )
    .unwrap();
    // After `current` is switched; after the trial is removed, before the
    // new version is told.
    for point in ["agent-switched", "agent-committed"] {
        set_current(&agent, &old_version);
        agent
            .relaunch_from(&current_exe, &[("FLOTILLA_CRASH_AT", point)])
            .await;
        controller
            .wait_for_server("web-01", "the old version online", |s| {
                s["online"] == true && s["agent_version"] == old_version.as_str()
            })
            .await;
        let before: Vec<Value> = agent_updates(&controller)
            .await
            .into_iter()
            .map(|i| i["install_id"].clone())
            .collect();
        // The new version is on disk already from the first round: the
        // update replaces it whole.
        let sha256 = package_agent(&agent, dir.path(), NEXT, &next);
        update(&agent, &sha256).await;
        wait_until(&format!("the power cut at {point}"), async || {
            match agent.child.try_wait() {
                Ok(Some(status)) => Ok(status),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert!(
            agent
                .log()
                .contains(&format!("crash point {point} reached")),
            "{}",
            agent.log()
        );
        // Power back: the service starts what `current` names, the new
        // version, which reports the update done.
        assert_eq!(current(&agent), NEXT, "at {point}");
        agent.relaunch_from(&current_exe, &[]).await;
        let update = agent_update_where(
            &controller,
            &format!("the update cut at {point} to end"),
            |i| {
                !before.contains(&i["install_id"])
                    && i["to_version"] == NEXT
                    && i["state"] != "running"
            },
        )
        .await;
        assert_eq!(update["state"], "succeeded", "at {point}: {update}");
        controller
            .wait_for_server("web-01", "the new version online", |s| {
                s["online"] == true
                    && s["agent_version"] == NEXT
                    && module(s, "flotilla-agent")["installed_version"] == NEXT
            })
            .await;
        assert!(!agent.data.join("bin/agent/trial.json").exists());
    }
    agent.kill_all().await;
}

#[tokio::test]
async fn an_update_of_the_agent_waits_for_a_running_install_and_never_cuts_it() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let xml = applications(
        dir.path(),
        ServerSpec {
            id: "web-01",
            modules: &["ecommerce"],
        },
    );
    let mut agent = managed_agent_with(dir.path(), &controller, "web-01", &xml).await;
    // An install of ecommerce whose PREINSTALL hook takes a few seconds.
    flotilla_tests::sites::hook(&agent, "PREINSTALL", "ecommerce", "sleep 3");
    let package = agent.data.join("bin/updates/packages/ecommerce-2.0.0.zip");
    std::fs::create_dir_all(package.parent().unwrap()).unwrap();
    flotilla_agent::install::package::build::from_entries(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &[
            ("version.txt", b"2.0.0\n"),
            ("index.html", b"<h1>2.0.0</h1>"),
        ],
    )
    .unwrap();
    flotilla_tests::sign_beside(&package);
    let started = agent
        .portal_http()
        .post(format!(
            "{}/api/modules/ecommerce/install",
            agent.portal_base()
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    // The update is asked for while the install runs.
    let sha256 = package_agent(&agent, dir.path(), NEXT, &next_agent());
    update(&agent, &sha256).await;
    let ended = agent_update_ended(&controller, NEXT).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");

    let (_, installs) = controller.get("/api/v1/servers/web-01/installs").await;
    let cut = installs
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["module"] == "ecommerce")
        .unwrap_or_else(|| panic!("{installs}"))
        .clone();
    assert_eq!(cut["state"], "succeeded", "the install was cut: {cut}");
    let (_, detail) = controller
        .get(&format!(
            "/api/v1/servers/web-01/installs/{}",
            ended["install_id"].as_str().unwrap()
        ))
        .await;
    let texts = flotilla_tests::event_texts(&detail);
    assert!(
        texts[0].starts_with("waiting for any install to end"),
        "{texts:?}"
    );
    // The new version was unpacked only once the install had ended.
    let unpacked = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["text"].as_str().unwrap().contains("unpacked"))
        .unwrap_or_else(|| panic!("{detail}"));
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(
        at(&cut["finished_at"]) <= at(&unpacked["at"]),
        "unpacked at {} while the install ran until {}",
        unpacked["at"],
        cut["finished_at"]
    );
    controller
        .wait_for_server("web-01", "both new versions", |s| {
            s["online"] == true
                && s["agent_version"] == NEXT
                && module(s, "ecommerce")["installed_version"] == "2.0.0"
        })
        .await;
    agent.kill_all().await;
}

#[tokio::test]
async fn a_new_version_that_fails_after_it_was_made_the_services_is_taken_back_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let old_version = current(&agent);
    // The real next version, killed as soon as it has been made the
    // service's (its proof done, `current` switched to it): a crash loop
    // in the making.
    let link = agent.data.join("bin/agent/current");
    let crashing = script_agent(
        dir.path(),
        NEXT,
        &format!(
            // (sh gives a background command /dev/null as its input: the
            // supervisor's pipe, which the agent reads, goes by fd 3.)
            "exec 3<&0\n{next:?} \"$@\" <&3 &\npid=$!\nwhile [ \"$(readlink {link:?})\" != \"versions/{NEXT}\" ]; do sleep 0.1; done\nsleep 0.3\nkill -9 $pid\nexit 9",
            next = next_agent().display().to_string(),
            link = link.display().to_string(),
        ),
    );
    let sha256 = package_agent(&agent, dir.path(), NEXT, &crashing);
    update(&agent, &sha256).await;
    let ended = agent_update_where(&controller, "the update taken back", |i| {
        i["to_version"] == NEXT && i["state"] == "failed"
    })
    .await;
    assert!(
        ended
            .to_string()
            .contains(&format!("version {NEXT} proved itself, then ended")),
        "{ended}"
    );
    assert_eq!(current(&agent), old_version);
    controller
        .wait_for_server("web-01", "the previous version online", |s| {
            s["online"] == true && s["agent_version"] == old_version.as_str()
        })
        .await;
    // Its history on the server says so too.
    agent.portal_after_restart().await;
    let history = flotilla_tests::http()
        .get(format!("{}/history/flotilla-agent", agent.portal_base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        history.contains(&format!("{old_version} → {NEXT}"))
            && history.contains("failed, rolled back"),
        "{history}"
    );
    agent.kill_all().await;
}
