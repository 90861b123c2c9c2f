//! How long an agent takes to update itself, measured on real processes:
//! a controller, an agent run as its service runs it, and this code built
//! as the next version (in the same profile, into `target/agent-next/`).
//!
//! ```sh
//! cargo build --release --bins && cargo run --release -p flotilla-tests --bin self-update-figures
//! ```
//!
//! Prints, from the update's start (its package already on the server, as
//! the downloader leaves it): when the link dropped, when the new version
//! was online with its version on the controller, how long the link was
//! down, and when the update was reported done (after the settle time).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flotilla_tests::Controller;
use flotilla_tests::self_update::{NEXT, managed_agent, next_agent, package_agent, update};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir_in(".").unwrap();
    let next = next_agent();
    let controller = Controller::start(dir.path()).await;
    let mut agent = managed_agent(dir.path(), &controller).await;
    let size = std::fs::metadata(&next).unwrap().len();
    let sha256 = package_agent(&agent, dir.path(), NEXT, &next);
    let http = flotilla_tests::http();
    let server = format!("{}/api/v1/servers/web-01", controller.http_url);
    let installs = format!("{server}/installs");

    let start = Instant::now();
    update(&agent, &sha256).await;
    let (mut dropped, mut online, mut done) = (None, None, None);
    while done.is_none() && start.elapsed() < Duration::from_secs(120) {
        let now = start.elapsed();
        let state: serde_json::Value = http
            .get(&server)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if dropped.is_none() && state["online"] == false {
            dropped = Some(now);
        }
        if online.is_none() && state["online"] == true && state["agent_version"] == NEXT {
            online = Some(now);
        }
        let list: serde_json::Value = http
            .get(&installs)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ended = list.as_array().into_iter().flatten().any(|i| {
            i["module"] == "flotilla-agent" && i["to_version"] == NEXT && i["state"] == "succeeded"
        });
        if ended {
            done = Some(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms =
        |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
    println!("agent executable: {:.1} MB", size as f64 / 1e6);
    println!("link dropped after:            {}", ms(dropped));
    println!("new version online after:      {}", ms(online));
    if let (Some(dropped), Some(online)) = (dropped, online) {
        println!(
            "link down:                     {} ms",
            (online - dropped).as_millis()
        );
    }
    println!(
        "update reported done after:    {} (the settle time, 2 s, included)",
        ms(done)
    );
    agent.kill_all().await;
}
