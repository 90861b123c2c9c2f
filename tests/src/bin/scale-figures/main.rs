//! Measures the controller at fleet scale on a real controller process
//! (release build), with simulated agents speaking the real protocol over
//! loopback, each on its own connection (`flotilla_tests::simulated`):
//!
//! - CPU and RSS with every server connected and idle, over three heartbeat
//!   intervals at the production default (10 s heartbeats, 30 s timeout);
//! - the time from an inventory change an agent sends to its `server` event
//!   on `/api/v1/events`, p50 and p99, with every server connected;
//! - the fleet API's latency with every server connected: a page of
//!   servers, one site's, a filter by module and version, the offline
//!   ones, the fleet's summary, the sites (p50, p95, size);
//! - a reconnection storm: every agent dropped at once and all reconnecting
//!   at once; the time until every agent is welcomed and until the fleet is
//!   whole (every server online), the controller's peak RSS, and
//!   `GET /api/v1/sites` latency throughout;
//! - a rollout's fan-out: a release of every module published, then a
//!   rollout of every site started; the time until every agent has its
//!   first command, and until every site's first install is ordered (the
//!   simulated agents answer as real ones do, installs taking 60 s);
//! - with `--dashboard`, the dashboard's fleet page in a headless Chromium:
//!   the time until the first screen of servers is drawn;
//! - CPU and RSS of a restarted controller with every server in its
//!   database and none connected.
//!
//! Run: `cargo build --release --bins && target/release/scale-figures`
//! Options: `--servers N` (10000), `--changes N` (600), `--idle-seconds N`
//! (30), `--controller PATH` (another controller build, to compare),
//! `--plaintext` (the controller with `--insecure-plaintext`, to compare
//! with mutual TLS, each agent holding its own certificate), `--dashboard`.
//! The bench and the controller each hold one socket per server: `ulimit -n`
//! must be above the server count. Linux only (reads `/proc`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod storm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flotilla_tests::simulated::{Answering, Dial, SITE, SimulatedAgent, fleet_server};
use flotilla_tests::{Controller, ModuleSpec, binary, cpu_ticks, rss_kib};
use futures_util::StreamExt;

/// How many times each fleet API request is timed.
const REQUESTS: usize = 50;

/// How many agents connect at once while the fleet is brought up.
const CONNECTING_AT_ONCE: usize = 64;

struct Options {
    servers: usize,
    changes: usize,
    idle: Duration,
    /// Another controller build to measure; this build's otherwise.
    controller: Option<PathBuf>,
    /// Serve in plain text instead of TLS.
    plaintext: bool,
    /// Measure the dashboard's first screen in a headless Chromium.
    dashboard: bool,
}

fn options() -> Options {
    let mut options = Options {
        servers: 10_000,
        changes: 600,
        idle: Duration::from_secs(30),
        controller: None,
        plaintext: false,
        dashboard: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--plaintext" {
            options.plaintext = true;
            continue;
        }
        if flag == "--dashboard" {
            options.dashboard = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--servers" => options.servers = value.parse().expect("--servers: a number"),
            "--changes" => options.changes = value.parse().expect("--changes: a number"),
            "--idle-seconds" => {
                options.idle = Duration::from_secs(value.parse().expect("--idle-seconds: a number"))
            }
            "--controller" => options.controller = Some(PathBuf::from(value)),
            other => panic!("unknown option {other}"),
        }
    }
    options
}

/// Server `n` of the fleet: its site, id and modules.
pub(crate) fn server(n: usize) -> (String, String, &'static [ModuleSpec<'static>]) {
    fleet_server("customer", n)
}

/// How many servers the sites endpoint counts online.
async fn online(controller: &Controller) -> i64 {
    let (_, sites) = controller.get("/api/v1/sites").await;
    sites
        .as_array()
        .map(|sites| sites.iter().filter_map(|s| s["online"].as_i64()).sum())
        .unwrap_or(0)
}

async fn wait_online(controller: &Controller, expected: i64, patience: Duration) {
    let started = Instant::now();
    loop {
        let now = online(controller).await;
        if now == expected {
            return;
        }
        assert!(
            started.elapsed() < patience,
            "{now} servers online after {patience:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// CPU (% of one core) and RSS of the controller over `window`.
async fn usage(controller: &Controller, window: Duration) -> (f64, u64) {
    let pid = controller.child.id().unwrap();
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    let ticks = cpu_ticks(pid) - before;
    // USER_HZ is 100 on Linux.
    let cpu = ticks as f64 / 100.0 / window.as_secs_f64() * 100.0;
    (cpu, rss_kib(pid))
}

/// Connects `servers` agents, [`CONNECTING_AT_ONCE`] at a time.
async fn connect_all(dial: &Dial, servers: usize) -> Vec<SimulatedAgent> {
    futures_util::stream::iter(0..servers)
        .map(|n| {
            let dial = dial.clone();
            async move {
                let (site, id, modules) = server(n);
                SimulatedAgent::connect_with(&dial, &site, &id, modules)
                    .await
                    .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
            }
        })
        .buffer_unordered(CONNECTING_AT_ONCE)
        .collect()
        .await
}

pub(crate) fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let options = options();
    let program = options
        .controller
        .clone()
        .unwrap_or_else(|| binary("flotilla-controller"));
    let dir = tempfile::tempdir().unwrap();
    let start = async || {
        Controller::start_program(
            &program,
            dir.path(),
            "127.0.0.1:0",
            "127.0.0.1:0",
            10_000,
            30_000,
            if options.plaintext {
                &["--insecure-plaintext"]
            } else {
                &[]
            },
        )
        .await
    };
    let mut controller = start().await;
    println!(
        "controller {}; {} servers in {} sites; heartbeats every 10 s (the default)",
        program.display(),
        options.servers,
        options.servers.div_ceil(SITE.len())
    );

    if !options.plaintext {
        // Each agent's certificate, issued before the clock starts (as
        // enrollment does once per agent, long before).
        for n in 0..options.servers {
            let (site, id, _) = server(n);
            flotilla_tests::tls::ca().agent_certificate(&site, &id);
        }
    }
    let started = Instant::now();
    let answering = Answering::new(Duration::from_secs(60), Duration::ZERO);
    let tally = answering.tally.clone();
    let dial = Dial {
        answering: Some(answering),
        ..Dial::idle(&controller.grpc_url)
    };
    let mut agents = connect_all(&dial, options.servers).await;
    wait_online(
        &controller,
        options.servers as i64,
        Duration::from_secs(300),
    )
    .await;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{} agents connected and online in {took:.1} s ({:.0} connections a second: handshake, hello, inventory, {} at once), over {}",
        agents.len(),
        agents.len() as f64 / took,
        CONNECTING_AT_ONCE,
        if options.plaintext {
            "plain text"
        } else {
            "mutual TLS"
        }
    );
    // Let the inventories land before measuring quiet.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (cpu, rss) = usage(&controller, options.idle).await;
    println!(
        "connected and idle ({} servers, over {} s): controller CPU {cpu:.1}% of one core, RSS {} MiB",
        options.servers,
        options.idle.as_secs(),
        rss / 1024
    );

    // Inventory change -> its event on the dashboard's stream.
    let mut events = controller.events().await;
    let mut latencies = Vec::new();
    let mut missed = 0;
    for i in 0..options.changes {
        let n = (i * 7919) % agents.len();
        let agent = &mut agents[n];
        let module = agent.modules().swap_remove(0);
        let version = format!("9.{i}.0");
        let needles = [
            format!("\"id\":\"{}\"", agent.id),
            format!("\"installed_version\":\"{version}\""),
        ];
        let sent = Instant::now();
        agent.set_version(&module, &version).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some((name, data)) = events.next().await {
                if name == "server" && needles.iter().all(|needle| data.contains(needle)) {
                    return true;
                }
            }
            false
        })
        .await;
        match seen {
            Ok(true) => latencies.push(sent.elapsed()),
            _ => missed += 1,
        }
        // About twenty changes a second, as a busy fleet reports them.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(events);
    latencies.sort();
    println!(
        "inventory change -> /api/v1/events with {} connected, {} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, missed {missed}",
        options.servers,
        latencies.len(),
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        percentile(&latencies, 100),
    );

    // The fleet API with every server connected.
    let http = flotilla_tests::http();
    for path in [
        "/api/v1/servers".to_owned(),
        format!("/api/v1/servers?site={}", server(options.servers / 2).0),
        "/api/v1/servers?module=ecommerce&version=5.8.0".to_owned(),
        "/api/v1/servers?state=offline".to_owned(),
        "/api/v1/fleet/summary".to_owned(),
        "/api/v1/sites".to_owned(),
    ] {
        let mut took = Vec::new();
        let mut bytes = 0;
        for _ in 0..REQUESTS {
            let sent = Instant::now();
            let response = http
                .get(format!("{}{path}", controller.http_url))
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            bytes = response.bytes().await.unwrap().len();
            took.push(sent.elapsed());
        }
        took.sort();
        println!(
            "GET {path} with {} servers ({REQUESTS} requests): p50 {:.1} ms, p95 {:.1} ms, {} KiB",
            options.servers,
            percentile(&took, 50),
            percentile(&took, 95),
            bytes / 1024
        );
    }

    if options.dashboard {
        storm::dashboard(&controller).await;
    }
    storm::storm(&controller, &dial, &mut agents).await;

    drop(agents);
    wait_online(&controller, 0, Duration::from_secs(300)).await;
    controller.kill().await;
    let _ = controller.child.wait().await;
    controller = start().await;
    // Let start-up (migrations, marking servers offline) finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu, rss) = usage(&controller, options.idle).await;
    println!(
        "restarted, {} servers in the database, none connected (over {} s): controller CPU {cpu:.1}% of one core, RSS {} MiB",
        options.servers,
        options.idle.as_secs(),
        rss / 1024
    );

    // The fan-out last: the rollout it starts keeps the controller busy.
    let dial = Dial {
        url: controller.grpc_url.clone(),
        ..dial
    };
    let agents = connect_all(&dial, options.servers).await;
    wait_online(
        &controller,
        options.servers as i64,
        Duration::from_secs(300),
    )
    .await;
    storm::fan_out(&controller, dir.path(), &agents, &tally).await;
    if std::env::var_os("FLOTILLA_BENCH_KEEP").is_some() {
        // The controller's database and log, to look at afterwards.
        println!("kept the controller's folder: {}", dir.keep().display());
    }
}
