//! Measures the foundation's figures on real processes (release build):
//!
//! - time from a module version changed on disk to the dashboard's event
//!   stream (`/api/v1/events`) carrying it, over repeated changes, with the
//!   agents' default 2 s scan interval;
//! - an idle agent's resident memory and CPU use over a quiet interval, with
//!   the default settings (2 s scans, 10 s heartbeats);
//! - the controller's resident memory with the demo's three agents connected.
//!
//! Run: `cargo build --release --bins && cargo run --release -p flotilla-tests --bin fleet-figures`
//! Linux only (reads `/proc`).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flotilla_tests::{Agent, Controller, cpu_ticks, rss_kib};

const CHANGES: usize = 20;
const SCAN_MS: u64 = 2_000;
const IDLE_SECONDS: u64 = 30;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    // The production defaults: 10 s heartbeats, 30 s timeout, 2 s scans.
    let controller =
        Controller::start_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0", 10_000, 30_000).await;
    let web = Agent::start_scanning_every(
        dir.path(),
        "acme-paris",
        "acme-web-01",
        &controller.grpc_url,
        &[
            ("ecommerce", "web", "5.8.0"),
            ("phygitalapi", "web", "2.1.3"),
        ],
        SCAN_MS,
    )
    .await;
    let _app = Agent::start_scanning_every(
        dir.path(),
        "acme-paris",
        "acme-app-01",
        &controller.grpc_url,
        &[
            ("integration", "service", "5.8.0"),
            ("gestioncommerciale", "web", "5.8.0"),
        ],
        SCAN_MS,
    )
    .await;
    let _db = Agent::start_scanning_every(
        dir.path(),
        "acme-paris",
        "acme-db-01",
        &controller.grpc_url,
        &[("database", "database", "5.8.0")],
        SCAN_MS,
    )
    .await;
    for id in ["acme-web-01", "acme-app-01", "acme-db-01"] {
        controller
            .wait_for_server(id, "online", |s| s["online"] == true)
            .await;
    }
    println!("settings: agents scan every {SCAN_MS} ms, heartbeat every 10 s (the defaults)");

    // Version change on disk -> event on the dashboard's stream.
    let mut events = flotilla_tests::http()
        .get(format!("{}/api/v1/events", controller.http_url))
        .send()
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..CHANGES {
        let version = format!("6.0.{i}");
        let needle = format!("\"installed_version\":\"{version}\"");
        // Spread the changes evenly over the scan interval, so the figures
        // cover every phase of the scan cycle rather than its worst case.
        tokio::time::sleep(Duration::from_millis(SCAN_MS * i as u64 / CHANGES as u64)).await;
        let started = Instant::now();
        web.set_version("ecommerce", &version);
        let mut seen = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&needle) {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "version change on disk -> dashboard event, {CHANGES} changes spread over the scan cycle: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(latencies[0]),
        ms(latencies[CHANGES / 2]),
        ms(latencies[CHANGES * 9 / 10]),
        ms(latencies[CHANGES - 1])
    );
    drop(events);

    // Idle agent and controller.
    let agent_pid = web.child.id().unwrap();
    let controller_pid = controller.child.id().unwrap();
    let (agent_cpu_before, controller_cpu_before) =
        (cpu_ticks(agent_pid), cpu_ticks(controller_pid));
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let agent_cpu =
        (cpu_ticks(agent_pid) - agent_cpu_before) as f64 / ticks_per_second / IDLE_SECONDS as f64
            * 100.0;
    let controller_cpu = (cpu_ticks(controller_pid) - controller_cpu_before) as f64
        / ticks_per_second
        / IDLE_SECONDS as f64
        * 100.0;
    println!(
        "idle agent over {IDLE_SECONDS} s (2 modules): RSS {} KiB, CPU {agent_cpu:.3}% of one core (resolution {:.3}%)",
        rss_kib(agent_pid),
        1.0 / ticks_per_second / IDLE_SECONDS as f64 * 100.0
    );
    println!(
        "controller with 3 agents connected: RSS {} KiB, CPU {controller_cpu:.2}% of one core",
        rss_kib(controller_pid)
    );
}
