//! The load generator: N simulated agents in one process, each on its own
//! connection, speaking the real protocol to any controller
//! (`flotilla_tests::simulated`): hello, an inventory of its site role's
//! modules, heartbeats at the interval the controller asks, packages that
//! "download" in a set time, and commands answered as a real agent would,
//! installs and restores reporting the six phases over a set time, then
//! their result and the new version. Agents connect at a ramp rate; in
//! storm mode every one of them drops at once, on a period, and all
//! reconnect at once.
//!
//! Over mutual TLS (an `https://` URL), each simulated agent holds a
//! certificate issued from the controller's own CA, read from its TLS
//! folder (`--tls-dir`, `tls` beside the controller's database by default),
//! as enrollment would issue it.
//!
//! Run: `cargo build --release --bins && target/release/flotilla-load --grpc https://127.0.0.1:7000 --tls-dir /var/lib/flotilla/tls --agents 10000`
//! Each agent holds one socket: `ulimit -n` must be above `--agents`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_tests::simulated::{Answering, Dial, SimulatedAgent, Tally, fleet_server};
use futures_util::StreamExt;

/// Simulated agents against a controller.
#[derive(Debug, Parser)]
#[command(name = "flotilla-load")]
struct Options {
    /// The controller's gRPC URL (`https://` for mutual TLS).
    #[arg(long)]
    grpc: String,
    /// The controller's TLS folder, with its CA's `ca.pem` and `ca-key.pem`.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// The sites' name prefix: sites are `<prefix>-00000`…, four servers
    /// each (db, app, web1, web2).
    #[arg(long, default_value = "load")]
    prefix: String,
    /// New connections a second while the fleet comes up.
    #[arg(long, default_value_t = 500)]
    ramp: u32,
    /// How long an install or a restore takes (seconds).
    #[arg(long, default_value_t = 30.0)]
    install_seconds: f64,
    /// How long a published package takes to download (seconds).
    #[arg(long, default_value_t = 0.0)]
    download_seconds: f64,
    /// Storm mode: every this many seconds once all are connected, every
    /// agent drops its connection at once and all reconnect at once.
    #[arg(long)]
    storm_every: Option<u64>,
    /// Stop after this many seconds (by default, run until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
}

/// How many connections are being set up at once at most on the ramp.
const DIALLING_AT_ONCE: usize = 256;

/// Connects every agent: on the ramp, a few hundred dialling at once; in a
/// storm (`ramp` None), all at once, as agents whose link dropped together do.
async fn connect_all(dial: &Dial, options: &Options, ramp: Option<u32>) -> Vec<SimulatedAgent> {
    let at_once = match ramp {
        Some(_) => DIALLING_AT_ONCE,
        None => options.agents.max(1),
    };
    let started = Instant::now();
    futures_util::stream::iter(0..options.agents)
        .map(|n| {
            let dial = dial.clone();
            let prefix = options.prefix.clone();
            async move {
                if let Some(rate) = ramp {
                    let due = started + Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
                    tokio::time::sleep_until(due.into()).await;
                }
                let (site, id, modules) = fleet_server(&prefix, n);
                // Until it connects: a load generator does not give up.
                SimulatedAgent::connect_retrying(&dial, &site, &id, modules, Duration::MAX)
                    .await
                    .map(|(agent, _)| agent)
                    .unwrap_or_else(|e| panic!("{id}: {e}"))
            }
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}

fn report(started: Instant, connected: usize, tally: &Tally) {
    println!(
        "{:>6.0} s  connected {connected}  commands {}  doctor runs {}  downloads {}  installs started {} done {}",
        started.elapsed().as_secs_f64(),
        Tally::get(&tally.commands),
        Tally::get(&tally.doctor_runs),
        Tally::get(&tally.downloads),
        Tally::get(&tally.installs_started),
        Tally::get(&tally.installs_done),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    flotilla_proto::tls::install_crypto_provider();
    let ca = match (&options.tls_dir, options.grpc.starts_with("https://")) {
        (Some(dir), _) => flotilla_tests::tls::TestCa::load(dir)?,
        (None, true) => anyhow::bail!(
            "--tls-dir is needed over https: the controller's TLS folder, whose CA issues the agents' certificates"
        ),
        (None, false) => flotilla_tests::tls::ca(),
    };
    let answering = Answering::new(
        Duration::from_secs_f64(options.install_seconds),
        Duration::from_secs_f64(options.download_seconds),
    );
    let tally: Arc<Tally> = answering.tally.clone();
    let dial = Dial {
        url: options.grpc.clone(),
        ca,
        answering: Some(answering),
    };
    if dial.url.starts_with("https://") {
        // Issued before the clock starts, as enrollment does long before.
        for n in 0..options.agents {
            let (site, id, _) = fleet_server(&options.prefix, n);
            ca.agent_certificate(&site, &id);
        }
    }
    let started = Instant::now();
    let end = options.seconds.map(|s| started + Duration::from_secs(s));
    let mut agents = connect_all(&dial, &options, Some(options.ramp)).await;
    println!(
        "{} agents connected in {:.1} s (ramp {} a second)",
        agents.len(),
        started.elapsed().as_secs_f64(),
        options.ramp
    );
    let mut next_storm = options
        .storm_every
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticker.tick() => report(started, agents.len(), &tally),
            _ = tokio::signal::ctrl_c() => break,
        }
        if end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if let Some(storm) = next_storm.filter(|at| Instant::now() >= *at) {
            let count = agents.len();
            drop(std::mem::take(&mut agents));
            let dropped = Instant::now();
            println!("storm: {count} agents dropped at once; all reconnect at once");
            agents = connect_all(&dial, &options, None).await;
            println!(
                "storm: every agent welcomed again in {:.1} s",
                dropped.elapsed().as_secs_f64()
            );
            next_storm = options
                .storm_every
                .map(|s| storm.max(Instant::now()) + Duration::from_secs(s));
        }
    }
    report(started, agents.len(), &tally);
    Ok(())
}
