//! The figures that move the whole fleet: a reconnection storm, a rollout's
//! fan-out, and the dashboard's first screen.

use std::time::{Duration, Instant};

use flotilla_tests::simulated::{Dial, SimulatedAgent, Tally};
use flotilla_tests::{Controller, rss_kib};
use futures_util::StreamExt;
use serde_json::json;

use crate::{percentile, server};

/// Every agent drops at once and all reconnect at once: the time until
/// every one is welcomed again, and until the controller shows the fleet
/// whole (every server online); the controller's peak RSS, and
/// `GET /api/v1/sites` latency throughout.
pub async fn storm(controller: &Controller, dial: &Dial, agents: &mut Vec<SimulatedAgent>) {
    let servers = agents.len();
    let pid = controller.child.id().unwrap();
    drop(std::mem::take(agents));
    let dropped = Instant::now();
    let reconnect = {
        let dial = dial.clone();
        tokio::spawn(async move {
            let agents = futures_util::stream::iter(0..servers)
                .map(|n| {
                    let dial = dial.clone();
                    async move {
                        let (site, id, modules) = server(n);
                        let patience = Duration::from_secs(300);
                        SimulatedAgent::connect_retrying(&dial, &site, &id, modules, patience)
                            .await
                            .unwrap_or_else(|e| panic!("{id} cannot reconnect: {e}"))
                    }
                })
                .buffer_unordered(servers)
                .collect::<Vec<(SimulatedAgent, usize)>>()
                .await;
            let failures: usize = agents.iter().map(|(_, f)| f).sum();
            let agents = agents.into_iter().map(|(a, _)| a).collect::<Vec<_>>();
            (agents, failures, dropped.elapsed())
        })
    };
    let http = flotilla_tests::http();
    let mut latencies = Vec::new();
    let mut peak_rss = 0;
    let mut whole = None;
    let mut lowest = i64::MAX;
    while whole.is_none() {
        assert!(
            dropped.elapsed() < Duration::from_secs(600),
            "the fleet is not whole 600 s after the storm"
        );
        peak_rss = peak_rss.max(rss_kib(pid));
        let sent = Instant::now();
        let response = http
            .get(format!("{}/api/v1/sites", controller.http_url))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "sites: {}",
            response.status()
        );
        let sites: serde_json::Value = response.json().await.unwrap();
        latencies.push(sent.elapsed());
        let online: i64 = sites
            .as_array()
            .map(|sites| sites.iter().filter_map(|s| s["online"].as_i64()).sum())
            .unwrap_or(0);
        lowest = lowest.min(online);
        if online == servers as i64 && reconnect.is_finished() {
            whole = Some(dropped.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (reconnected, failures, welcomed) = reconnect.await.unwrap();
    *agents = reconnected;
    latencies.sort();
    println!(
        "reconnection storm, {servers} agents dropped at once and all reconnecting at once: every agent welcomed in {:.1} s ({failures} dials failed and were tried again), the fleet whole (all online) in {:.1} s (fewest online seen: {lowest}); controller peak RSS {} MiB; GET /api/v1/sites meanwhile ({} requests): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        welcomed.as_secs_f64(),
        whole.unwrap_or_default().as_secs_f64(),
        peak_rss / 1024,
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 95),
        percentile(&latencies, 100),
    );
}

/// Publishes a release of every module, waits for every agent to have it,
/// then starts a rollout of every site: the time until every agent has its
/// first command (the preflight's doctor run), and until every site's first
/// install is ordered.
pub async fn fan_out(
    controller: &Controller,
    dir: &std::path::Path,
    agents: &[SimulatedAgent],
    tally: &Tally,
) {
    let sites = agents.len().div_ceil(flotilla_tests::simulated::SITE.len());
    let before = Tally::get(&tally.commands);
    let downloads = Tally::get(&tally.downloads);
    let published = Instant::now();
    flotilla_tests::sites::Publisher::default()
        .publish(
            controller,
            dir,
            "2027.01",
            "6.0.0",
            &[
                "database",
                "integration",
                "gestioncommerciale",
                "ecommerce",
                "phygitalapi",
            ],
        )
        .await;
    while Tally::get(&tally.downloads) < downloads + agents.len() {
        assert!(
            published.elapsed() < Duration::from_secs(300),
            "{} of {} agents have the release after 300 s",
            Tally::get(&tally.downloads) - downloads,
            agents.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "release published (5 packages uploaded, signed, announced): every one of {} agents had it pending {:.1} s after the first upload began",
        agents.len(),
        published.elapsed().as_secs_f64()
    );
    assert_eq!(before, 0, "no command reached an agent before the rollout");
    let started = Instant::now();
    let response = flotilla_tests::http()
        .post(format!("{}/api/v1/rollouts", controller.http_url))
        .json(&json!({"release": "2027.01"}))
        .send()
        .await
        .unwrap();
    let created = started.elapsed();
    assert_eq!(response.status().as_u16(), 201, "start the rollout");
    let patience = Duration::from_secs(600);
    while !agents.iter().all(|a| a.first_command().is_some()) {
        assert!(
            started.elapsed() < patience,
            "after 600 s, {} of {} agents had a command",
            agents
                .iter()
                .filter(|a| a.first_command().is_some())
                .count(),
            agents.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let every_agent = started.elapsed();
    let mut firsts: Vec<Duration> = agents
        .iter()
        .filter_map(|a| a.first_command())
        .map(|at| at.saturating_duration_since(started))
        .collect();
    firsts.sort();
    println!(
        "rollout fan-out to {} agents in {sites} sites (POST answered in {:.0} ms): every agent had its first command (the preflight doctor run) {:.2} s after the POST was sent (p50 {:.0} ms, p99 {:.0} ms)",
        agents.len(),
        created.as_secs_f64() * 1000.0,
        every_agent.as_secs_f64(),
        percentile(&firsts, 50),
        percentile(&firsts, 99),
    );
    let mut reported = Instant::now();
    while Tally::get(&tally.installs_started) < sites && started.elapsed() < patience {
        if reported.elapsed() >= Duration::from_secs(60) {
            println!(
                "  {:.0} s: first installs ordered at {} of {sites} sites",
                started.elapsed().as_secs_f64(),
                Tally::get(&tally.installs_started)
            );
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ordered = Tally::get(&tally.installs_started);
    println!(
        "rollout fan-out: the first install ordered at {ordered} of {sites} sites {:.2} s after the POST{}",
        started.elapsed().as_secs_f64(),
        if ordered < sites {
            " (gave up waiting)"
        } else {
            ""
        }
    );
}

/// The dashboard's fleet page in a headless Chromium: the time from
/// navigation until the first screen of servers is drawn.
pub async fn dashboard(controller: &Controller) {
    let browser = flotilla_tests::browser::Browser::start().await;
    browser.sign_in(controller).await;
    let mut shown = Vec::new();
    for _ in 0..5 {
        browser.goto(&format!("{}/", controller.http_url)).await;
        let started = Instant::now();
        loop {
            let at = browser
                .eval(
                    "return document.querySelector('[data-site] tbody tr') ? performance.now() : null",
                )
                .await;
            if let Some(ms) = at.as_f64() {
                shown.push(Duration::from_secs_f64(ms / 1000.0));
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no server shown 60 s after the page loaded"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    browser.quit().await;
    shown.sort();
    println!(
        "dashboard fleet page in headless Chromium: first screen of servers shown {:.0} ms after navigation (median of {}; min {:.0}, max {:.0})",
        percentile(&shown, 50),
        shown.len(),
        percentile(&shown, 0),
        percentile(&shown, 100),
    );
}
