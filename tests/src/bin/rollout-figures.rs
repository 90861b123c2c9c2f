//! Measures the rollout figures on real processes (release build):
//!
//! - time from "start" (the `POST /api/v1/rollouts` that creates a rollout)
//!   to the first agent beginning its install, over several rollouts;
//! - the controller's overhead per site: the CPU time it spends during a
//!   whole rollout of N sites (one server each, `database` then
//!   `ecommerce`), divided by N, and its resident memory.
//!
//! Run: `cargo build --release --bins && cargo run --release -p flotilla-tests --bin rollout-figures [N ...]`
//! (default N: 10 and 40). Linux only (reads `/proc`).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use chrono::{DateTime, Utc};
use flotilla_tests::sites::{
    Publisher, ServerSpec, launch_server, post, steps, wait_for_downloads, wait_for_rollout,
};
use flotilla_tests::{Agent, Controller, cpu_ticks, rss_kib};
use serde_json::json;

const MODULES: &[&str] = &["database", "ecommerce"];
const ROUNDS: u32 = 5;

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number of sites"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 40]
    } else {
        sizes
    };
    let ticks_per_second = 100.0; // USER_HZ on Linux
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        // The production heartbeats: 10 s, 30 s timeout.
        let controller =
            Controller::start_with(dir.path(), "127.0.0.1:0", "127.0.0.1:0", 10_000, 30_000).await;
        let pid = controller.child.id().unwrap();
        let publisher = Publisher::default();
        let mut agents: Vec<Agent> = Vec::new();
        let ids: Vec<String> = (0..n).map(|i| format!("server-{i:03}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let spec = ServerSpec {
                id,
                modules: MODULES,
            };
            agents.push(
                launch_server(
                    &dir.path().join("servers"),
                    &controller,
                    &publisher,
                    &format!("site-{i:03}"),
                    spec,
                )
                .await,
            );
        }
        let rss_idle = rss_kib(pid);
        let mut first_starts = Vec::new();
        for round in 0..ROUNDS {
            let version = format!("{}.0.0", round + 2);
            let release = format!("2026.{}", round + 1);
            publisher
                .publish(&controller, dir.path(), &release, &version, MODULES)
                .await;
            let waiting: Vec<(&Agent, &[&str])> = agents.iter().map(|a| (a, MODULES)).collect();
            wait_for_downloads(&controller, &waiting, &version).await;
            let cpu_before = cpu_ticks(pid);
            let posted: DateTime<Utc> = Utc::now();
            let started = Instant::now();
            let (status, created) = post(
                &controller,
                "/api/v1/rollouts",
                &json!({"release": release}),
                "bench",
            )
            .await;
            assert_eq!(status, 201, "{created}");
            let id = created["id"].as_i64().unwrap();
            let done =
                wait_for_rollout(&controller, id, "succeeded", |r| r["state"] == "succeeded").await;
            let took = started.elapsed();
            let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second;
            let first = (0..n)
                .flat_map(|i| steps(&done, &format!("site-{i:03}")))
                .map(|s| {
                    s["install"]["started_at"]
                        .as_str()
                        .unwrap()
                        .parse::<DateTime<Utc>>()
                        .unwrap()
                })
                .min()
                .unwrap();
            let first_ms = (first - posted).num_milliseconds();
            first_starts.push(first_ms);
            println!(
                "{n} sites, rollout {}: {} installs in {:.2} s; first install began {first_ms} ms after start; \
                 controller CPU {:.0} ms = {:.2} ms per site; controller RSS {} KiB",
                id,
                n * MODULES.len(),
                took.as_secs_f64(),
                cpu * 1000.0,
                cpu * 1000.0 / n as f64,
                rss_kib(pid)
            );
        }
        first_starts.sort_unstable();
        println!(
            "{n} sites: start -> first install began: min {} ms, median {} ms, max {} ms over {ROUNDS} rollouts; \
             controller RSS idle {rss_idle} KiB, after {} KiB",
            first_starts[0],
            first_starts[first_starts.len() / 2],
            first_starts[first_starts.len() - 1],
            rss_kib(pid)
        );
    }
}
