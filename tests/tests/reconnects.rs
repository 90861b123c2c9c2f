//! Connections that drop and come back: the fleet must show the truth after
//! every agent reconnects at once, and after one agent's connection blips,
//! in the REST API and in what the dashboard builds from its live stream.
//! Many servers are simulated agents speaking the real protocol.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_tests::simulated::SimulatedAgent;
use flotilla_tests::{Controller, HEARTBEAT_TIMEOUT_MS, wait_until};
use futures_util::StreamExt;
use serde_json::Value;

const MODULES: &[(&str, &str, &str)] = &[("ecommerce", "web", "5.8.0")];

/// Server `n`: four to a site.
fn server(n: usize) -> (String, String) {
    let site = format!("storm-{:03}", n / 4);
    let id = format!("{site}-{:02}", n % 4);
    (site, id)
}

async fn connect_all(controller: &Controller, servers: usize) -> Vec<SimulatedAgent> {
    let url = controller.grpc_url.clone();
    futures_util::stream::iter(0..servers)
        .map(|n| {
            let url = url.clone();
            async move {
                let (site, id) = server(n);
                SimulatedAgent::connect(&url, &site, &id, MODULES)
                    .await
                    .unwrap_or_else(|e| panic!("{id} cannot connect: {e}"))
            }
        })
        // All at once, as after a network cut.
        .buffer_unordered(servers)
        .collect()
        .await
}

/// Every `server` event the live stream carried, in order, by server id.
#[derive(Debug, Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(String, Value)>>>);

impl Recorded {
    async fn start(controller: &Controller) -> Recorded {
        let recorded = Recorded::default();
        let mut events = controller.events().await;
        let sink = recorded.clone();
        tokio::spawn(async move {
            while let Some((name, data)) = events.next().await {
                let value = match name.as_str() {
                    "server" => serde_json::from_str(&data).unwrap(),
                    "resync" => Value::Null,
                    _ => continue,
                };
                sink.0.lock().unwrap().push((name, value));
            }
        });
        recorded
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.0.lock().unwrap().clone()
    }
}

/// What the dashboard shows: the servers list, updated by each `server`
/// event and reloaded at each `resync`.
async fn dashboard_view(controller: &Controller, recorded: &Recorded) -> HashMap<String, bool> {
    let events = recorded.events();
    let resynced = events.iter().rposition(|(name, _)| name == "resync");
    let mut view: HashMap<String, bool> = HashMap::new();
    if resynced.is_some() {
        let (_, servers) = controller.get("/api/v1/servers").await;
        for s in servers.as_array().unwrap() {
            view.insert(s["id"].as_str().unwrap().to_owned(), s["online"] == true);
        }
    }
    let after = resynced.map_or(0, |i| i + 1);
    for (_, server) in &events[after..] {
        view.insert(
            server["id"].as_str().unwrap().to_owned(),
            server["online"] == true,
        );
    }
    view
}

/// The servers the REST API does not show online, and the sites' count.
async fn offline_in_rest(controller: &Controller) -> (Vec<String>, i64) {
    let (status, servers) = controller.get("/api/v1/servers").await;
    assert_eq!(status, 200);
    let offline = servers
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["online"] != true)
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let (_, sites) = controller.get("/api/v1/sites").await;
    let online = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["online"].as_i64().unwrap())
        .sum();
    (offline, online)
}

/// Waits until every one of `servers` is online in the REST API, in the
/// sites' counts and in the dashboard's view; then holds for a heartbeat
/// timeout, failing if any of them is shown offline meanwhile.
async fn all_stay_online(controller: &Controller, recorded: &Recorded, servers: usize) {
    wait_until(&format!("all {servers} servers online everywhere"), async || {
        let (offline, online) = offline_in_rest(controller).await;
        let view = dashboard_view(controller, recorded).await;
        let view_offline = view.values().filter(|online| !**online).count();
        if offline.is_empty() && online == servers as i64 && view.len() == servers && view_offline == 0 {
            Ok(())
        } else {
            Err(format!(
                "REST offline: {offline:?}; sites count {online} online; dashboard view: {} servers, {view_offline} offline",
                view.len()
            ))
        }
    })
    .await;
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_millis(HEARTBEAT_TIMEOUT_MS) {
        let (offline, online) = offline_in_rest(controller).await;
        assert!(
            offline.is_empty() && online == servers as i64,
            "connected servers shown offline {:?} after all were online: {offline:?}",
            hold.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No event goes back in time: per server, each event's connection is the
/// same as or newer than the one before, and no event shows a server
/// offline because a connection older than its current one ended.
fn assert_in_order(recorded: &Recorded) {
    let mut last: HashMap<String, String> = HashMap::new();
    for (name, server) in recorded.events() {
        if name != "server" {
            continue;
        }
        let id = server["id"].as_str().unwrap().to_owned();
        let connected = server["connected_at"].as_str().unwrap().to_owned();
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap();
        if let Some(previous) = last.get(&id) {
            assert!(
                at(&connected) >= at(previous),
                "{id}: an event for the connection of {connected} came after one for {previous}"
            );
        }
        if server["online"] != true {
            let silent = server["went_silent_at"].as_str().unwrap();
            assert!(
                at(silent) >= at(&connected),
                "{id}: shown offline, silent since {silent}, before its current connection at {connected}: {server}"
            );
        }
        last.insert(id, connected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_every_agent_reconnects_at_once_every_server_is_online_everywhere() {
    const SERVERS: usize = 300;
    const STORMS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let recorded = Recorded::start(&controller).await;

    let mut agents = connect_all(&controller, SERVERS).await;
    all_stay_online(&controller, &recorded, SERVERS).await;
    for _ in 0..STORMS {
        // Every connection dropped, and every agent back at once.
        agents.clear();
        agents = connect_all(&controller, SERVERS).await;
    }
    all_stay_online(&controller, &recorded, SERVERS).await;
    assert_in_order(&recorded);

    // And they really are connected: a change still reaches the dashboard.
    let (_, id) = server(7);
    let agent = agents.iter_mut().find(|a| a.id == id).unwrap();
    agent.set_version("ecommerce", "5.9.0").await.unwrap();
    controller
        .wait_for_server(&id, "the new version", |s| {
            flotilla_tests::version_of(s, "ecommerce") == Some("5.9.0")
        })
        .await;
}

#[tokio::test]
async fn a_connection_cut_and_reopened_within_milliseconds_leaves_the_server_online() {
    const BLIPS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(dir.path()).await;
    let recorded = Recorded::start(&controller).await;
    let (site, id) = ("acme-paris", "acme-web-01");

    let mut agent = SimulatedAgent::connect(&controller.grpc_url, site, id, MODULES)
        .await
        .unwrap();
    for _ in 0..BLIPS {
        drop(agent);
        agent = SimulatedAgent::connect(&controller.grpc_url, site, id, MODULES)
            .await
            .unwrap();
    }
    all_stay_online(&controller, &recorded, 1).await;
    assert_in_order(&recorded);
    let server = controller.server(id).await.unwrap();
    assert!(
        server["offline_reason"].is_null() && server["went_silent_at"].is_null(),
        "{server}"
    );
    drop(agent);
    controller
        .wait_for_server(id, "offline once really gone", |s| s["online"] == false)
        .await;
}
