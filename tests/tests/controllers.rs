//! Several controllers on one PostgreSQL database, as a publisher runs them
//! behind a TCP load balancer: agents connect to either, one controller
//! drives the rollouts and reaches every agent through the database, an
//! operator may act through either, live views follow the whole fleet, and
//! when the driving controller dies the other takes over, its agents move,
//! and nothing is installed twice.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use flotilla_tests::postgres::Postgres;
use flotilla_tests::sites::{
    Publisher, ServerSpec, hook, launch_server_on, post_with as post, site, steps,
    wait_for_downloads, wait_for_rollout,
};
use flotilla_tests::{Agent, Controller, module, wait_until};
use serde_json::json;

const MODULES: [&str; 3] = ["database", "integration", "ecommerce"];

const ALPHA: &[ServerSpec] = &[
    ServerSpec {
        id: "alpha-db",
        modules: &["database"],
    },
    ServerSpec {
        id: "alpha-app",
        modules: &["integration", "ecommerce"],
    },
];
const BRAVO: &[ServerSpec] = &[
    ServerSpec {
        id: "bravo-app",
        modules: &["database", "integration"],
    },
    ServerSpec {
        id: "bravo-web",
        modules: &["ecommerce"],
    },
];

/// A controller in `dir` on the shared database, with the shared package
/// folder and the test CA (each controller serves from the same CA).
async fn controller(dir: &Path, url: &str, packages: &Path) -> Controller {
    let tls = dir.join("tls");
    flotilla_tests::tls::ca().seed(&tls);
    Controller::start_with_args(
        dir,
        &[
            "--db",
            url,
            "--packages",
            packages.to_str().unwrap(),
            "--tls-dir",
            tls.to_str().unwrap(),
        ],
    )
    .await
}

fn log_of(controller: &Controller) -> String {
    std::fs::read_to_string(&controller.log).unwrap_or_default()
}

const DRIVES: &str = "this controller now drives the rollouts";

#[tokio::test]
async fn two_controllers_share_a_rollout_and_the_survivor_finishes_it_when_the_driver_dies() {
    let postgres = Postgres::start();
    let url = postgres.create_database("fleet");
    let dir = tempfile::tempdir().unwrap();
    let packages = dir.path().join("packages");
    let first = controller(&dir.path().join("first"), &url, &packages).await;
    let second = controller(&dir.path().join("second"), &url, &packages).await;
    let first_url = first.grpc_url.clone();

    // alpha's agents dial the first controller, bravo's the second; each
    // knows both.
    let publisher = Publisher::default();
    let servers = dir.path().join("servers");
    let mut agents: Vec<(&str, Agent, &[&str])> = Vec::new();
    for (name, specs, controllers) in [
        (
            "alpha",
            ALPHA,
            format!("{} {}", first.grpc_url, second.grpc_url),
        ),
        (
            "bravo",
            BRAVO,
            format!("{} {}", second.grpc_url, first.grpc_url),
        ),
    ] {
        for spec in specs {
            let agent = launch_server_on(&servers, &controllers, &publisher, name, *spec).await;
            agents.push((name, agent, spec.modules));
        }
    }

    // One database: each controller lists every server, and its live view
    // follows servers connected to the other.
    let mut events = second.events().await;
    for controller in [&first, &second] {
        for (_, agent, _) in &agents {
            controller
                .wait_for_server(&agent.id, "online", |s| s["online"] == true)
                .await;
        }
    }
    let alpha_app = &agents
        .iter()
        .find(|(_, a, _)| a.id == "alpha-app")
        .unwrap()
        .1;
    alpha_app.set_version("ecommerce", "1.0.1");
    wait_until(
        "the second controller's events tell alpha-app's change",
        async || {
            let next = tokio::time::timeout(std::time::Duration::from_secs(1), events.next()).await;
            match next {
                Ok(Some((name, data)))
                    if name == "server" && data.contains("alpha-app") && data.contains("1.0.1") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    alpha_app.set_version("ecommerce", "1.0.0");

    // Published through the first, downloaded by every agent from the one
    // it is connected to.
    publisher
        .publish(&first, dir.path(), "2026.12", "2.0.0", &MODULES)
        .await;
    let waiting: Vec<(&Agent, &[&str])> = agents.iter().map(|(_, a, m)| (a, *m)).collect();
    wait_for_downloads(&second, &waiting, "2.0.0").await;

    // alpha-app's integration waits in STARTUPDATE until the test says go.
    let go = dir.path().join("go");
    hook(
        alpha_app,
        "STARTUPDATE",
        "integration",
        &format!(
            "while [ ! -f {:?} ]; do sleep 0.05; done",
            go.display().to_string()
        ),
    );
    let alice = second.token_for("alice", "operator").await;
    let (status, created) = post(
        &second,
        "/api/v1/rollouts",
        &json!({"release": "2026.12"}),
        &alice,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    wait_for_rollout(&first, id, "alpha's integration under way", |r| {
        steps(r, "alpha")
            .iter()
            .any(|s| s["module"] == "integration" && s["install"]["phase"] == "STARTUPDATE")
    })
    .await;

    // Exactly one controller drives; an operator acts through the other.
    let (driver, other) = match (
        log_of(&first).contains(DRIVES),
        log_of(&second).contains(DRIVES),
    ) {
        (true, false) => (first, second),
        (false, true) => (second, first),
        both => panic!("one controller drives the rollouts, not {both:?}"),
    };
    let (status, body) = post(
        &other,
        &format!("/api/v1/rollouts/{id}/pause"),
        &json!({}),
        &alice,
    )
    .await;
    assert_eq!(
        status, 200,
        "pause through the controller that does not drive: {body}"
    );
    wait_for_rollout(&driver, id, "paused", |r| r["state"] == "paused").await;
    let (status, body) = post(
        &other,
        &format!("/api/v1/rollouts/{id}/resume"),
        &json!({}),
        &alice,
    )
    .await;
    assert_eq!(status, 200, "resume: {body}");
    wait_for_rollout(&driver, id, "running", |r| r["state"] == "running").await;
    // The driver applied both, not the controller they were asked of.
    let relayed = "carrying out an operator's action relayed by another controller";
    wait_until(
        "the driver's log tells both actions it carried out",
        async || {
            let log = log_of(&driver);
            (log.matches(relayed).count() == 2).then_some(()).ok_or(log)
        },
    )
    .await;
    assert!(!log_of(&other).contains(relayed), "{}", log_of(&other));

    // The driver dies mid-install: the other takes over, the driver's
    // agents move to it, and the rollout ends as if nothing happened.
    let moved = if driver.grpc_url == first_url {
        "alpha"
    } else {
        "bravo"
    };
    let mut driver = driver;
    driver.kill().await;
    std::fs::write(&go, "").unwrap();
    let done = wait_for_rollout(&other, id, "succeeded", |r| r["state"] == "succeeded").await;
    assert!(log_of(&other).contains(DRIVES), "{}", log_of(&other));
    for name in ["alpha", "bravo"] {
        assert_eq!(site(&done, name)["state"], "succeeded");
        for step in steps(&done, name) {
            assert_eq!(step["attempts"], 1, "ordered once: {step}");
        }
    }
    for (name, agent, _) in &agents {
        if *name == moved {
            let log = agent.log();
            assert!(
                log.lines()
                    .any(|l| l.contains("connected to the controller")
                        && l.contains(&other.grpc_url)),
                "{} moved to the surviving controller: {log}",
                agent.id
            );
        }
    }
    let mut installs: HashMap<(String, String), usize> = HashMap::new();
    for (_, agent, modules) in &agents {
        let server = other
            .wait_for_server(&agent.id, "online at 2.0.0", |s| {
                s["online"] == true
                    && modules
                        .iter()
                        .all(|m| module(s, m)["installed_version"] == "2.0.0")
            })
            .await;
        assert_eq!(server["online"], true);
        let (status, list) = other
            .get(&format!("/api/v1/servers/{}/installs", agent.id))
            .await;
        assert_eq!(status, 200);
        for install in list.as_array().unwrap() {
            *installs
                .entry((
                    agent.id.clone(),
                    install["module"].as_str().unwrap().to_owned(),
                ))
                .or_default() += 1;
        }
    }
    for (_, agent, modules) in &agents {
        for m in *modules {
            assert_eq!(
                installs.get(&(agent.id.clone(), m.to_string())),
                Some(&1),
                "{m} on {} installed once",
                agent.id
            );
        }
    }
}
