//! The load generator's simulated agents answer the controller as real
//! agents do, so that the figures they give are those of a real fleet: a
//! rollout over them runs to its end, and the `flotilla-load` binary brings
//! a fleet up over mutual TLS and through a storm against any controller.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use flotilla_tests::simulated::{Answering, Dial, SimulatedAgent, Tally, fleet_server};
use flotilla_tests::sites::{Publisher, post, steps, wait_for_rollout};
use flotilla_tests::{Controller, Lines, binary, version_of, wait_until};
use serde_json::json;

const MODULES: [&str; 5] = [
    "database",
    "integration",
    "gestioncommerciale",
    "ecommerce",
    "phygitalapi",
];

#[tokio::test]
async fn a_rollout_over_simulated_agents_runs_to_its_end_in_the_procedures_order() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let answering = Answering::new(Duration::from_millis(300), Duration::from_millis(50));
    let tally = answering.tally.clone();
    let dial = Dial {
        answering: Some(answering),
        ..Dial::idle(&controller.grpc_url)
    };
    // Two sites of four servers.
    let mut agents = Vec::new();
    for n in 0..8 {
        let (site, id, modules) = fleet_server("sim", n);
        agents.push(
            SimulatedAgent::connect_with(&dial, &site, &id, modules)
                .await
                .unwrap(),
        );
    }
    Publisher::default()
        .publish(&controller, dir.path(), "2027.01", "6.0.0", &MODULES)
        .await;
    wait_until(
        "every simulated agent has the release pending",
        async || {
            let pending = Tally::get(&tally.downloads);
            if pending == agents.len() {
                Ok(())
            } else {
                Err(format!("{pending} of {}", agents.len()))
            }
        },
    )
    .await;

    let (status, created) = post(
        &controller,
        "/api/v1/rollouts",
        &json!({"release": "2027.01"}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = wait_for_rollout(&controller, id, "over", |r| !r["finished_at"].is_null()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for site in ["sim-00000", "sim-00001"] {
        // The database first, the web modules last, as the procedure says.
        let finished = |module: &str| {
            steps(&done, site)
                .into_iter()
                .find(|s| s["module"] == module)
                .and_then(|s| s["finished_at"].as_str().map(str::to_owned))
                .unwrap()
        };
        let started = |module: &str| {
            steps(&done, site)
                .into_iter()
                .filter(|s| s["module"] == module)
                .filter_map(|s| s["started_at"].as_str().map(str::to_owned))
                .min()
                .unwrap()
        };
        assert!(finished("database") <= started("integration"), "{done}");
        assert!(finished("integration") <= started("ecommerce"), "{done}");
    }
    // Every agent was preflighted, and each module installed once.
    assert_eq!(Tally::get(&tally.doctor_runs), agents.len());
    assert_eq!(Tally::get(&tally.installs_done), 12);
    for agent in &agents {
        let server = controller.server(&agent.id).await.unwrap();
        for module in agent.modules() {
            assert_eq!(version_of(&server, &module), Some("6.0.0"), "{server}");
        }
    }
}

#[tokio::test]
async fn the_load_generator_brings_a_fleet_up_over_mutual_tls_and_through_a_storm() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let mut load = tokio::process::Command::new(binary("flotilla-load"))
        .args(["--grpc", &controller.grpc_url, "--tls-dir"])
        .arg(dir.path().join("tls"))
        .args(["--agents", "12", "--ramp", "50", "--storm-every", "1"])
        .args(["--prefix", "load"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Lines::follow(&mut load);
    assert_eq!(
        lines.value_after("storm: ").await,
        "12 agents dropped at once; all reconnect at once"
    );
    let after = lines
        .value_after("storm: every agent welcomed again in ")
        .await;
    assert!(after.ends_with(" s"), "{after}");
    wait_until("the 12 servers online again", async || {
        let (_, summary) = controller.get("/api/v1/fleet/summary").await;
        let online = summary["online"].as_i64();
        if online == Some(12) {
            Ok(())
        } else {
            Err(summary.to_string())
        }
    })
    .await;
    let (_, page) = controller.get("/api/v1/servers?site=load-00002").await;
    let ids: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "load-00002-app",
            "load-00002-db",
            "load-00002-web1",
            "load-00002-web2"
        ]
    );

    // Without the controller's CA, no certificates: a clear refusal.
    let refused = tokio::process::Command::new(binary("flotilla-load"))
        .args(["--grpc", &controller.grpc_url, "--agents", "1"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--tls-dir is needed over https"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
