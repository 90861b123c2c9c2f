//! Rollouts on real processes: a controller and one agent per server, three
//! customer sites of two or three servers each, a release published through
//! the REST API and pushed to the agents.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use flotilla_tests::sites::{
    Publisher, ServerSpec, assert_logged, hook, launch_server, post, site, steps,
    wait_for_downloads, wait_for_rollout,
};
use flotilla_tests::{Agent, Controller, Session, module, wait_until};
use serde_json::{Value, json};

const MODULES: [&str; 5] = [
    "database",
    "integration",
    "gestioncommerciale",
    "ecommerce",
    "phygitalapi",
];

const ALPHA: &[ServerSpec] = &[
    ServerSpec {
        id: "alpha-db",
        modules: &["database"],
    },
    ServerSpec {
        id: "alpha-app",
        modules: &["integration"],
    },
    ServerSpec {
        id: "alpha-web",
        modules: &["ecommerce", "phygitalapi"],
    },
];
const BRAVO: &[ServerSpec] = &[
    ServerSpec {
        id: "bravo-app",
        modules: &["database", "integration"],
    },
    ServerSpec {
        id: "bravo-web",
        modules: &["ecommerce", "gestioncommerciale"],
    },
];
const CHARLIE: &[ServerSpec] = &[
    ServerSpec {
        id: "charlie-app",
        modules: &["database", "integration"],
    },
    ServerSpec {
        id: "charlie-web",
        modules: &["ecommerce"],
    },
];

/// A controller, the agents of some sites, and release 2026.12 (every
/// module at 2.0.0) downloaded on every server.
struct Fleet {
    dir: tempfile::TempDir,
    controller: Controller,
    publisher: Publisher,
    agents: Vec<(String, Agent, &'static [&'static str])>,
}

impl Fleet {
    async fn start(sites: &[(&str, &'static [ServerSpec<'static>])]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::start(dir.path()).await;
        let publisher = Publisher::default();
        let mut agents = Vec::new();
        for (site, servers) in sites {
            for server in *servers {
                let agent = launch_server(
                    &dir.path().join("servers"),
                    &controller,
                    &publisher,
                    site,
                    *server,
                )
                .await;
                agents.push((site.to_string(), agent, server.modules));
            }
        }
        publisher
            .publish(&controller, dir.path(), "2026.12", "2.0.0", &MODULES)
            .await;
        let waiting: Vec<(&Agent, &[&str])> = agents.iter().map(|(_, a, m)| (a, *m)).collect();
        wait_for_downloads(&controller, &waiting, "2.0.0").await;
        Fleet {
            dir,
            controller,
            publisher,
            agents,
        }
    }

    fn agent(&self, id: &str) -> &Agent {
        &self.agents.iter().find(|(_, a, _)| a.id == id).unwrap().1
    }

    /// Every module of every server of `site`, as the controller sees it.
    async fn versions(&self, site: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (s, agent, modules) in &self.agents {
            if s != site {
                continue;
            }
            let server = self.controller.server(&agent.id).await.unwrap();
            for m in *modules {
                out.push((
                    agent.id.clone(),
                    m.to_string(),
                    module(&server, m)["installed_version"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned(),
                ));
            }
        }
        out
    }

    /// Waits until every module of `site` is at `version` on the controller
    /// and on disk.
    async fn wait_for_site_at(&self, site: &str, version: &str) {
        wait_until(
            &format!("every module of {site} at {version}"),
            async || {
                let versions = self.versions(site).await;
                if versions.iter().all(|(_, _, v)| v == version) {
                    Ok(())
                } else {
                    Err(format!("{versions:?}"))
                }
            },
        )
        .await;
        for (s, agent, modules) in &self.agents {
            if s == site {
                for m in *modules {
                    let on_disk = std::fs::read_to_string(
                        agent.data.join("apps").join(m).join("version.txt"),
                    )
                    .unwrap();
                    assert_eq!(on_disk.trim(), version, "{m} on {}", agent.id);
                }
            }
        }
    }

    /// The installs the controller recorded for a server.
    async fn installs(&self, server: &str) -> Vec<Value> {
        let (status, installs) = self
            .controller
            .get(&format!("/api/v1/servers/{server}/installs"))
            .await;
        assert_eq!(status, 200);
        installs.as_array().unwrap().clone()
    }
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

/// The default order: every install of a module starts after every install
/// of the modules it waits for has finished, on every server of the site.
fn assert_module_order(rollout: &Value, site_name: &str) {
    let steps = steps(rollout, site_name);
    let bounds = |module: &str| {
        let of: Vec<&Value> = steps.iter().filter(|s| s["module"] == module).collect();
        if of.is_empty() {
            return None;
        }
        let starts = of.iter().map(|s| time(&s["install"]["started_at"]));
        let ends = of.iter().map(|s| time(&s["install"]["finished_at"]));
        Some((starts.min().unwrap(), ends.max().unwrap()))
    };
    let order = [
        ("database", "integration"),
        ("integration", "ecommerce"),
        ("integration", "phygitalapi"),
        ("integration", "gestioncommerciale"),
    ];
    for (before, after) in order {
        if let (Some((_, before_end)), Some((after_start, _))) = (bounds(before), bounds(after)) {
            assert!(
                before_end <= after_start,
                "site {site_name}: {after} started at {after_start} before {before} finished at {before_end}"
            );
        }
    }
}

#[tokio::test]
async fn a_rollout_updates_every_site_in_module_order_across_servers() {
    let fleet = Fleet::start(&[("alpha", ALPHA), ("bravo", BRAVO), ("charlie", CHARLIE)]).await;
    let c = &fleet.controller;

    // The plan, before anything starts.
    let (status, plan) = post(
        c,
        "/api/v1/rollouts?dry_run=true",
        &json!({"release": "2026.12"}),
        "alice",
    )
    .await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["waves"], json!([["alpha", "bravo", "charlie"]]));
    let alpha = plan["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "alpha")
        .unwrap();
    assert_eq!(
        alpha["layers"],
        json!([["database"], ["integration"], ["ecommerce", "phygitalapi"]])
    );
    assert_eq!(alpha["steps"].as_array().unwrap().len(), 4);
    assert!(
        alpha["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["from_version"] == "1.0.0"
                && s["to_version"] == "2.0.0"
                && s["action"] == "install")
    );
    assert!(alpha["expected_downtime_ms"].as_i64().unwrap() > 0);
    assert!(
        alpha["planned_start"].is_string(),
        "no window: it can start now"
    );
    let (_, rollouts) = c.get("/api/v1/rollouts").await;
    assert_eq!(rollouts, json!([]), "a dry run starts nothing");
    assert!(fleet.installs("alpha-db").await.is_empty());

    // Bad requests name what is wrong and start nothing.
    let (status, error) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "1999.01"}),
        "alice",
    )
    .await;
    assert_eq!(status, 404, "{error}");
    let (status, error) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": {"order": {"database": ["ecommerce"], "ecommerce": ["integration"], "integration": ["database"]}}}),
        "alice",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("order: the module order has a cycle: "),
        "{error}"
    );
    let (status, error) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "sites": ["zulu"]}),
        "alice",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no site named \"zulu\""),
        "{error}"
    );
    let (status, error) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": {"wave": {}}}),
        "alice",
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("wave"),
        "{error}"
    );
    let (_, rollouts) = c.get("/api/v1/rollouts").await;
    assert_eq!(rollouts, json!([]));

    // Start it and watch it finish.
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12"}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let done = wait_for_rollout(c, id, "succeeded", |r| r["state"] == "succeeded").await;
    for name in ["alpha", "bravo", "charlie"] {
        assert_eq!(site(&done, name)["state"], "succeeded", "{done}");
        for step in steps(&done, name) {
            assert_eq!(step["state"], "succeeded", "{step}");
            assert_eq!(step["install"]["state"], "succeeded", "{step}");
            assert_eq!(step["attempts"], 1);
        }
        assert_module_order(&done, name);
        fleet.wait_for_site_at(name, "2.0.0").await;
    }
    let log = done["log"].as_array().unwrap();
    assert_eq!(log[0]["actor"], "alice");
    assert_eq!(log[0]["action"], "created");
    assert!(
        log.iter()
            .any(|l| l["action"] == "succeeded" && l["actor"] == "flotilla"),
        "{log:?}"
    );
    // Each module installed once, on every server.
    for (_, agent, modules) in &fleet.agents {
        assert_eq!(
            fleet.installs(&agent.id).await.len(),
            modules.len(),
            "{}",
            agent.id
        );
    }
}

#[tokio::test]
async fn a_failed_site_rolls_back_every_server_while_the_others_carry_on_and_the_threshold_pauses()
{
    let fleet = Fleet::start(&[("alpha", ALPHA), ("bravo", BRAVO), ("charlie", CHARLIE)]).await;
    let c = &fleet.controller;
    let failing = hook(
        fleet.agent("bravo-web"),
        "PREINSTALL",
        "ecommerce",
        "echo 'the shop database is out of disk' >&2\nexit 3",
    );
    let strategy = json!({"waves": {"batch_size": 2}, "failure": {"retries": 0}});
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["plan"]["waves"],
        json!([["alpha", "bravo"], ["charlie"]])
    );
    let id = created["id"].as_i64().unwrap();

    let paused = wait_for_rollout(
        c,
        id,
        "paused by the threshold, alpha done, bravo rolled back",
        |r| {
            r["state"] == "paused"
                && site(r, "alpha")["state"] == "succeeded"
                && site(r, "bravo")["state"] == "rolled_back"
        },
    )
    .await;
    assert!(
        paused["reason"]
            .as_str()
            .unwrap()
            .starts_with("1 of 3 sites failed"),
        "{paused}"
    );
    // The failed module names its phase and the hook's words.
    let bravo = steps(&paused, "bravo");
    let ecommerce = bravo.iter().find(|s| s["module"] == "ecommerce").unwrap();
    assert_eq!(ecommerce["state"], "failed");
    let message = ecommerce["message"].as_str().unwrap();
    assert!(message.contains("PREINSTALL"), "{message}");
    // Every other module of the site went back (or never started).
    for step in &bravo {
        if step["module"] != "ecommerce" {
            assert!(
                step["state"] == "rolled_back" || step["state"] == "cancelled",
                "{step}"
            );
        }
    }
    assert_eq!(
        bravo.iter().filter(|s| s["state"] == "rolled_back").count(),
        bravo
            .iter()
            .filter(|s| s["install"]["state"] == "succeeded" || s["state"] == "rolled_back")
            .count()
    );
    fleet.wait_for_site_at("bravo", "1.0.0").await;
    // The other site of the wave carried on; the next wave did not start.
    fleet.wait_for_site_at("alpha", "2.0.0").await;
    assert_eq!(site(&paused, "charlie")["state"], "waiting");
    assert!(fleet.installs("charlie-app").await.is_empty());
    assert!(fleet.installs("charlie-web").await.is_empty());
    // The database went back in reverse order: after the integration.
    let restores: Vec<Value> = fleet
        .installs("bravo-app")
        .await
        .into_iter()
        .filter(|i| i["to_version"] == "1.0.0")
        .collect();
    assert_eq!(restores.len(), 2, "{restores:?}");
    let when = |m: &str| time(&restores.iter().find(|i| i["module"] == m).unwrap()["started_at"]);
    assert!(when("integration") < when("database"));

    // Fixed: retry the failed site; the rollout goes on to the next wave.
    std::fs::remove_file(failing).unwrap();
    let (status, retried) = post(
        c,
        &format!("/api/v1/rollouts/{id}/retry"),
        &json!({}),
        "bob",
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    let done = wait_for_rollout(c, id, "succeeded", |r| r["state"] == "succeeded").await;
    for name in ["alpha", "bravo", "charlie"] {
        assert_eq!(site(&done, name)["state"], "succeeded");
        fleet.wait_for_site_at(name, "2.0.0").await;
    }
    assert_logged(
        &done,
        &[
            ("alice", "created"),
            ("flotilla", "site_failed"),
            ("flotilla", "site_rolled_back"),
            ("flotilla", "paused"),
            ("bob", "retried"),
            ("flotilla", "succeeded"),
        ],
    );
}

#[tokio::test]
async fn the_rest_round_trip_pause_resume_exclude_cancel() {
    let fleet = Fleet::start(&[("alpha", ALPHA), ("bravo", BRAVO), ("charlie", CHARLIE)]).await;
    let c = &fleet.controller;
    let strategy = json!({"waves": {"batch_size": 1, "gate": "manual"}});
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let action = async |name: &str| {
        post(
            c,
            &format!("/api/v1/rollouts/{id}/{name}"),
            &json!({}),
            "carol",
        )
        .await
    };

    // Paused by hand, resumed.
    let (status, paused) = action("pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["reason"], "paused by carol");
    let (status, _) = action("pause").await;
    assert_eq!(status, 409, "a paused rollout cannot be paused");
    let (status, resumed) = action("resume").await;
    assert_eq!(status, 200);
    assert_eq!(resumed["state"], "running");

    // The manual gate after the first wave.
    let gated = wait_for_rollout(c, id, "waiting at the gate of wave 2", |r| {
        r["state"] == "paused" && site(r, "alpha")["state"] == "succeeded"
    })
    .await;
    assert_eq!(gated["reason"], "wave 2 is ready; resume to start it");
    assert_eq!(site(&gated, "bravo")["state"], "waiting");
    assert!(fleet.installs("bravo-app").await.is_empty());
    // A server belongs to one rollout at a time.
    let (status, error) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "sites": ["bravo"]}),
        "mallory",
    )
    .await;
    assert_eq!(status, 409, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("bravo-app (rollout {id}, release 2026.12)")),
        "{error}"
    );

    // Leave one server of the next site out, then open the gate.
    let (status, excluded) = post(
        c,
        &format!("/api/v1/rollouts/{id}/servers/bravo-web/exclude"),
        &json!({}),
        "carol",
    )
    .await;
    assert_eq!(status, 200, "{excluded}");
    assert!(
        steps(&excluded, "bravo")
            .iter()
            .filter(|s| s["server"] == "bravo-web")
            .all(|s| s["state"] == "excluded")
    );
    let (status, _) = post(
        c,
        &format!("/api/v1/rollouts/{id}/servers/nowhere/exclude"),
        &json!({}),
        "carol",
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = action("resume").await;
    assert_eq!(status, 200);
    let gated = wait_for_rollout(c, id, "waiting at the gate of wave 3", |r| {
        r["state"] == "paused" && site(r, "bravo")["state"] == "succeeded"
    })
    .await;
    assert_eq!(gated["reason"], "wave 3 is ready; resume to start it");
    let bravo = fleet.versions("bravo").await;
    for (server, m, version) in bravo {
        let expected = if server == "bravo-web" {
            "1.0.0"
        } else {
            "2.0.0"
        };
        assert_eq!(version, expected, "{m} on {server}");
    }
    assert!(fleet.installs("bravo-web").await.is_empty());

    // Cancel: the last wave never starts; nothing more can be done.
    let (status, cancelled) = action("cancel").await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["state"], "cancelled");
    let over = wait_for_rollout(c, id, "finished", |r| !r["finished_at"].is_null()).await;
    assert_eq!(site(&over, "charlie")["state"], "cancelled");
    assert!(fleet.installs("charlie-app").await.is_empty());
    for name in ["resume", "pause", "cancel", "retry"] {
        let (status, error) = action(name).await;
        assert_eq!(status, 409, "{name}: {error}");
        assert_eq!(error["error"], "conflict");
    }
    let (status, _) = c.get("/api/v1/rollouts/999").await;
    assert_eq!(status, 404);
    let (_, list) = c.get("/api/v1/rollouts").await;
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["state"], "cancelled");

    // After the end, an operator takes one site back to what it had.
    let (status, error) = post(
        c,
        &format!("/api/v1/rollouts/{id}/sites/bravo/rollback"),
        &json!({}),
        "carol",
    )
    .await;
    assert_eq!(status, 200, "{error}");
    let over = wait_for_rollout(c, id, "bravo rolled back, the rollout over again", |r| {
        site(r, "bravo")["state"] == "rolled_back" && !r["finished_at"].is_null()
    })
    .await;
    assert_eq!(over["state"], "cancelled");
    fleet.wait_for_site_at("bravo", "1.0.0").await;
    assert_logged(
        &over,
        &[
            ("alice", "created"),
            ("carol", "paused"),
            ("carol", "resumed"),
            ("flotilla", "gate"),
            ("carol", "excluded a server"),
            ("carol", "cancelled"),
            ("carol", "rolled a site back"),
        ],
    );
    // The OpenAPI document describes the rollouts.
    let (_, openapi) = c.get("/api/v1/openapi.json").await;
    for path in [
        "/api/v1/rollouts",
        "/api/v1/rollouts/{id}",
        "/api/v1/rollouts/{id}/retry",
        "/api/v1/sites/{site}/schedule",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path}");
    }
}

/// Receives webhook POSTs; each JSON body goes to the channel.
async fn webhook() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Over TLS, with a certificate from the test CA (the controller's own).
    let url = format!("https://{}/notice", listener.local_addr().unwrap());
    let acceptor = flotilla_tests::tls::ca().acceptor();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut socket) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = socket.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        let _ = tx.send(serde_json::from_str(body).unwrap_or(Value::Null));
                        break;
                    }
                }
            }
            let _ = socket
                .write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    (url, rx)
}

async fn set_schedule(c: &Controller, site: &str, schedule: Value) {
    let response = flotilla_tests::http()
        .put(format!("{}/api/v1/sites/{site}/schedule", c.http_url))
        .json(&schedule)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "{}",
        response.text().await.unwrap()
    );
}

#[tokio::test]
async fn a_closed_window_starts_nothing_until_it_opens_and_users_are_warned() {
    const DELTA: &[ServerSpec] = &[ServerSpec {
        id: "delta-01",
        modules: &["database", "ecommerce"],
    }];
    const ECHO: &[ServerSpec] = &[ServerSpec {
        id: "echo-01",
        modules: &["ecommerce"],
    }];
    let fleet = Fleet::start(&[("delta", DELTA), ("echo", ECHO)]).await;
    let c = &fleet.controller;
    let paris = chrono_tz::Europe::Paris;
    let at = |t: DateTime<Utc>| t.with_timezone(&paris).format("%H:%M:%S").to_string();
    // delta's window opens in 12 s; echo's is open but closes in 20 s,
    // too soon for an install estimated at 30 s.
    let now = Utc::now();
    let opens = now + chrono::Duration::seconds(12);
    let opens = opens - chrono::Duration::nanoseconds(i64::from(opens.timestamp_subsec_nanos()));
    set_schedule(c, "delta", json!({"time_zone": "Europe/Paris", "windows": [{"start": at(opens), "end": at(opens + chrono::Duration::hours(1))}]})).await;
    // (Just after midnight, the window starts at midnight rather than wrap.)
    let mut echo_start = at(now - chrono::Duration::minutes(1));
    if echo_start > at(now + chrono::Duration::seconds(20)) {
        echo_start = "00:00:00".into();
    }
    set_schedule(c, "echo", json!({"time_zone": "Europe/Paris", "windows": [{"start": echo_start, "end": at(now + chrono::Duration::seconds(20))}]})).await;
    // A bad schedule names the field and changes nothing.
    let response = flotilla_tests::http()
        .put(format!("{}/api/v1/sites/delta/schedule", c.http_url))
        .json(&json!({"time_zone": "Europe/Pariss", "windows": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("time_zone: \"Europe/Pariss\""),
        "{error}"
    );
    let (_, schedule) = c.get("/api/v1/sites/delta/schedule").await;
    assert_eq!(schedule["time_zone"], "Europe/Paris");

    // The maintenance page, as a hook sees it while the module is out of service.
    let page_copy = fleet.dir.path().join("page.html");
    hook(
        fleet.agent("delta-01"),
        "PREINSTALL",
        "ecommerce",
        &format!(
            "cp \"${{E_MODULE_PATH}}app_offline.htm\" {:?}",
            page_copy.display().to_string()
        ),
    );
    let (url, mut notices) = webhook().await;
    // Webhooks are HTTPS only, to hosts on the allowlist (--webhook-host).
    for (bad, says) in [
        (
            url.replace("https://", "http://"),
            "only https:// URLs are accepted",
        ),
        (
            "https://hooks.example.com/notice".to_owned(),
            "the host \"hooks.example.com\" on port 443 is not on the allowlist of webhook hosts (--webhook-host)",
        ),
    ] {
        let (status, refused) = post(
            c,
            "/api/v1/rollouts",
            &json!({"release": "2026.12", "strategy": {"notice": {"webhook_url": bad, "lead_seconds": 4}}}),
            "alice",
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(says),
            "{refused}"
        );
    }
    let strategy = json!({
        "notice": {"webhook_url": url, "lead_seconds": 4},
        "default_install_seconds": 30,
    });
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();

    // The site waits for its window and says when it starts.
    let waiting = wait_for_rollout(c, id, "delta scheduled at its window", |r| {
        site(r, "delta")["state"] == "scheduled" && site(r, "delta")["planned_start"].is_string()
    })
    .await;
    let delta = site(&waiting, "delta");
    assert_eq!(time(&delta["planned_start"]), opens, "{delta}");
    assert!(
        delta["planned_start_local"]
            .as_str()
            .unwrap()
            .contains(&at(opens)),
        "{delta}"
    );
    assert_eq!(delta["time_zone"], "Europe/Paris");

    // While it is held by the rollout, the server refuses local installs.
    let agent = fleet.agent("delta-01");
    wait_until("the agent held by the rollout", async || {
        agent
            .log()
            .contains("held by rollout")
            .then_some(())
            .ok_or(String::new())
    })
    .await;
    let refused = agent
        .portal_http()
        .post(format!(
            "{}/api/modules/ecommerce/install",
            agent.portal_base()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains(&format!("rollout {id} (release 2026.12)")),
        "{text}"
    );
    // And so does the controller, for one-off orders.
    let (status, error) = post(
        c,
        "/api/v1/servers/delta-01/modules/ecommerce/install",
        &json!({}),
        "alice",
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("part of rollout {id} (release 2026.12)")),
        "{error}"
    );

    // Users are warned `lead_seconds` ahead.
    let notice = tokio::time::timeout(std::time::Duration::from_secs(20), notices.recv())
        .await
        .expect("the notice within 20 s")
        .unwrap();
    let noticed_at = Utc::now();
    assert_eq!(notice["site"], "delta");
    assert_eq!(notice["modules"], json!(["database", "ecommerce"]));
    assert_eq!(time(&notice["planned_start"]), opens);
    assert!(time(&notice["planned_end"]) > opens);
    assert!(noticed_at < opens, "warned before the window opens");

    let done = wait_for_rollout(c, id, "delta updated", |r| {
        site(r, "delta")["state"] == "succeeded"
    })
    .await;
    let first = steps(&done, "delta")
        .iter()
        .map(|s| time(&s["install"]["started_at"]))
        .min()
        .unwrap();
    assert!(
        first >= opens,
        "the first install started at {first}, the window opened at {opens}"
    );
    assert!(
        site(&done, "delta")["notice_result"]
            .as_str()
            .unwrap()
            .starts_with("delivered"),
        "{done}"
    );
    // The maintenance page said when the planned maintenance ends.
    let planned_end = time(&site(&done, "delta")["planned_end"]);
    let page = std::fs::read_to_string(&page_copy).unwrap();
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&chrono::Local)
            .format("%H:%M:%S")
            .to_string()
    };
    assert!(
        page.contains(&local(planned_end))
            || page.contains(&local(planned_end + chrono::Duration::seconds(1))),
        "{page} shows {}",
        local(planned_end)
    );

    // echo's window closes before its install could finish: it waits for the next one.
    let echo = site(&done, "echo");
    assert_eq!(echo["state"], "scheduled", "{echo}");
    // Its users will be warned ahead of that window, not of this one.
    assert!(
        echo["message"].as_str().unwrap().contains("starts at"),
        "{echo}"
    );
    assert!(echo["notice_sent_at"].is_null(), "{echo}");
    assert!(
        time(&echo["planned_start"]) > Utc::now() + chrono::Duration::hours(12),
        "{echo}"
    );
    assert!(fleet.installs("echo-01").await.is_empty());
    let (status, _) = post(
        c,
        &format!("/api/v1/rollouts/{id}/cancel"),
        &json!({}),
        "alice",
    )
    .await;
    assert_eq!(status, 200);
    let over = wait_for_rollout(c, id, "cancelled and over", |r| !r["finished_at"].is_null()).await;
    assert_eq!(site(&over, "echo")["state"], "cancelled");
    assert_eq!(site(&over, "delta")["state"], "succeeded");
    wait_until("the agent released", async || {
        agent
            .log()
            .contains("no longer held")
            .then_some(())
            .ok_or(String::new())
    })
    .await;
}

#[tokio::test]
async fn a_controller_killed_mid_rollout_resumes_where_it_was() {
    let mut fleet = Fleet::start(&[("alpha", ALPHA), ("bravo", BRAVO)]).await;
    let go = fleet.dir.path().join("go");
    hook(
        fleet.agent("alpha-app"),
        "STARTUPDATE",
        "integration",
        &format!(
            "while [ ! -f {:?} ]; do sleep 0.05; done",
            go.display().to_string()
        ),
    );
    let (status, created) = post(
        &fleet.controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.12"}),
        "alice",
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().unwrap();
    wait_for_rollout(
        &fleet.controller,
        id,
        "alpha's integration under way",
        |r| {
            steps(r, "alpha")
                .iter()
                .any(|s| s["module"] == "integration" && s["install"]["phase"] == "STARTUPDATE")
        },
    )
    .await;

    // The controller dies; the install finishes without it.
    let grpc = fleet.controller.grpc_addr();
    let http = fleet.controller.http_addr();
    fleet.controller.kill().await;
    std::fs::write(&go, "").unwrap();
    wait_until("integration 2.0.0 on alpha-app's disk", async || {
        let v = std::fs::read_to_string(
            fleet
                .agent("alpha-app")
                .data
                .join("apps/integration/version.txt"),
        )
        .unwrap_or_default();
        (v.trim() == "2.0.0").then_some(()).ok_or(v)
    })
    .await;

    // Back on the same database: the rollout carries on from where it was.
    fleet.controller = Controller::start_on(fleet.dir.path(), &grpc, &http).await;
    let done = wait_for_rollout(&fleet.controller, id, "succeeded", |r| {
        r["state"] == "succeeded"
    })
    .await;
    for name in ["alpha", "bravo"] {
        assert_eq!(site(&done, name)["state"], "succeeded");
        assert_module_order(&done, name);
        fleet.wait_for_site_at(name, "2.0.0").await;
    }
    // Nothing installed twice, nothing forgotten.
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (_, agent, _) in &fleet.agents {
        for install in fleet.installs(&agent.id).await {
            *counts
                .entry((
                    agent.id.clone(),
                    install["module"].as_str().unwrap().to_owned(),
                ))
                .or_default() += 1;
        }
    }
    for (_, agent, modules) in &fleet.agents {
        for m in *modules {
            assert_eq!(
                counts.get(&(agent.id.clone(), m.to_string())),
                Some(&1),
                "{m} on {}",
                agent.id
            );
        }
    }
    for name in ["alpha", "bravo"] {
        for step in steps(&done, name) {
            assert_eq!(step["attempts"], 1, "ordered once: {step}");
        }
    }
}

#[tokio::test]
async fn flaky_installs_are_retried_and_stuck_ones_end_before_their_site_rolls_back() {
    const FOXTROT: &[ServerSpec] = &[ServerSpec {
        id: "foxtrot-01",
        modules: &["database", "ecommerce"],
    }];
    const GOLF: &[ServerSpec] = &[ServerSpec {
        id: "golf-01",
        modules: &["database", "ecommerce"],
    }];
    let fleet = Fleet::start(&[("foxtrot", FOXTROT), ("golf", GOLF)]).await;
    let c = &fleet.controller;
    // foxtrot's database fails once, then goes through.
    let marker = fleet.dir.path().join("failed-once");
    hook(
        fleet.agent("foxtrot-01"),
        "PREINSTALL",
        "database",
        &format!(
            "if [ ! -f {m:?} ]; then touch {m:?}; echo 'lock wait timeout' >&2; exit 1; fi",
            m = marker.display().to_string()
        ),
    );
    // golf's ecommerce hangs, silent, until released.
    let release = fleet.dir.path().join("release");
    let hung = hook(
        fleet.agent("golf-01"),
        "STARTUPDATE",
        "ecommerce",
        &format!(
            "while [ ! -f {r:?} ]; do sleep 0.05; done",
            r = release.display().to_string()
        ),
    );
    let strategy = json!({"failure": {
    "retries": 1, "retry_backoff_seconds": 1, "stuck_after_seconds": 4, "max_failed_sites": 1
    }});
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();

    // Stuck: failed, and the site waits for the install to end before undoing anything.
    let stuck = wait_for_rollout(c, id, "golf's ecommerce stuck", |r| {
        steps(r, "golf").iter().any(|s| {
            s["module"] == "ecommerce"
                && s["state"] == "failed"
                && s["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("stuck: no progress for"))
        })
    })
    .await;
    assert_eq!(site(&stuck, "golf")["state"], "running", "{stuck}");
    assert!(
        site(&stuck, "golf")["message"]
            .as_str()
            .unwrap()
            .contains("waiting for the running installs to end before rolling back"),
        "{stuck}"
    );
    std::fs::write(&release, "").unwrap();

    let over = wait_for_rollout(c, id, "over", |r| !r["finished_at"].is_null()).await;
    assert_eq!(over["state"], "failed", "{over}");
    assert_eq!(over["reason"], "1 of 2 sites did not update");
    // The flaky install was tried again after its backoff.
    assert_eq!(site(&over, "foxtrot")["state"], "succeeded");
    let database = steps(&over, "foxtrot")
        .into_iter()
        .find(|s| s["module"] == "database")
        .unwrap();
    assert_eq!(database["attempts"], 2, "{database}");
    fleet.wait_for_site_at("foxtrot", "2.0.0").await;
    // The stuck install finished late at 2.0.0; the rollback undid it too.
    assert_eq!(site(&over, "golf")["state"], "rolled_back", "{over}");
    fleet.wait_for_site_at("golf", "1.0.0").await;
    let actions: Vec<&str> = over["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    for expected in [
        "retry",
        "stuck",
        "site_failed",
        "site_rolled_back",
        "failed",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }

    // Stop for an operator, who then rolls the site back.
    std::fs::remove_file(hung).unwrap();
    hook(
        fleet.agent("golf-01"),
        "PREINSTALL",
        "ecommerce",
        "echo 'payment provider unreachable' >&2\nexit 2",
    );
    fleet
        .publisher
        .publish(
            c,
            fleet.dir.path(),
            "2027.01",
            "3.0.0",
            &["database", "ecommerce"],
        )
        .await;
    wait_for_downloads(
        c,
        &[(fleet.agent("golf-01"), &["database", "ecommerce"][..])],
        "3.0.0",
    )
    .await;
    let strategy = json!({"failure": {"site": "stop", "retries": 0}});
    let (status, created) = post(
        c,
        "/api/v1/rollouts",
        &json!({"release": "2027.01", "sites": ["golf"], "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let stopped = wait_for_rollout(c, id, "golf stopped for an operator", |r| {
        site(r, "golf")["state"] == "failed" && !r["finished_at"].is_null()
    })
    .await;
    assert!(
        site(&stopped, "golf")["message"]
            .as_str()
            .unwrap()
            .contains("waiting for an operator"),
        "{stopped}"
    );
    let versions = fleet.versions("golf").await;
    assert!(
        versions.contains(&("golf-01".into(), "database".into(), "3.0.0".into())),
        "left as it is: {versions:?}"
    );
    let (status, _) = post(
        c,
        &format!("/api/v1/rollouts/{id}/sites/golf/rollback"),
        &json!({}),
        "dave",
    )
    .await;
    assert_eq!(status, 200);
    let rolled = wait_for_rollout(c, id, "golf rolled back by the operator", |r| {
        site(r, "golf")["state"] == "rolled_back" && !r["finished_at"].is_null()
    })
    .await;
    fleet.wait_for_site_at("golf", "1.0.0").await;
    assert_logged(&rolled, &[("dave", "rolled a site back")]);
}

#[tokio::test]
async fn the_demo_publishes_a_release_its_three_agents_roll_out() {
    use flotilla_tests::{Lines, binary, signal, wait_up_to};
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(binary("flotilla-controller"))
        .args(["demo", "--port", "0", "--dir"])
        .arg(dir.path().join("demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Lines::follow(&mut demo);
    let page = lines.value_after("plan and start its rollout at ").await;
    let base = page
        .trim_end_matches("rollouts")
        .trim_end_matches('/')
        .to_owned();
    // The demo serves TLS from its own CA, which it prints and keeps in its folder.
    let ca_line = lines.value_after("over TLS from the demo's own CA, ").await;
    let ca_path = dir.path().join("demo").join("tls").join("ca.pem");
    assert!(
        ca_line.starts_with(&ca_path.display().to_string()),
        "{ca_line}"
    );
    assert!(base.starts_with("https://"), "{base}");
    let ca = std::fs::read(&ca_path).unwrap();
    flotilla_proto::tls::install_crypto_provider();
    let trusting = || {
        reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
    };
    // Signed in as the admin whose password the demo printed, as a person would.
    let password = lines.value_after("Sign in as     admin / ").await;
    let session = Session::sign_in(&trusting().build().unwrap(), &base, "admin", &password).await;
    let http = trusting()
        .default_headers(session.headers())
        .build()
        .unwrap();
    let get = async |path: &str| -> Value {
        http.get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    wait_up_to(
        flotilla_tests::sites::ROLLOUT_PATIENCE,
        "the release downloaded on the three servers",
        async || {
            let servers = get("/api/v1/servers").await;
            let ready = servers.as_array().is_some_and(|s| {
                s.len() == 3
                    && s.iter().all(|server| {
                        server["online"] == true
                            && server["modules"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .filter(|m| m["name"] != "flotilla-agent")
                                .all(|m| !m["pending_version"].is_null())
                    })
            });
            ready.then_some(()).ok_or(servers.to_string())
        },
    )
    .await;
    let created: Value = http
        .post(format!("{base}/api/v1/rollouts"))
        .json(&json!({"release": "2026.12"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    let done = wait_up_to(
        flotilla_tests::sites::ROLLOUT_PATIENCE,
        "the demo's rollout",
        async || {
            let rollout = get(&format!("/api/v1/rollouts/{id}")).await;
            (rollout["state"] == "succeeded")
                .then_some(rollout.clone())
                .ok_or(rollout.to_string())
        },
    )
    .await;
    assert_eq!(site(&done, "acme-paris")["state"], "succeeded");
    let servers = get("/api/v1/servers").await;
    for server in servers.as_array().unwrap() {
        for m in server["modules"].as_array().unwrap() {
            let expected = if m["name"] == "phygitalapi" {
                "2.2.0"
            } else if m["name"] == "flotilla-agent" {
                // The release carries no agent: it stays as it is.
                env!("CARGO_PKG_VERSION")
            } else {
                "5.9.0"
            };
            assert_eq!(m["installed_version"], expected, "{m}");
        }
    }
    signal(&demo, "TERM").await;
    lines.value_after("Stopped.").await;
}

#[tokio::test]
async fn an_agent_killed_mid_install_recovers_and_the_rollout_tries_again() {
    const HOTEL: &[ServerSpec] = &[ServerSpec {
        id: "hotel-01",
        modules: &["database", "ecommerce"],
    }];
    let mut fleet = Fleet::start(&[("hotel", HOTEL)]).await;
    let go = fleet.dir.path().join("go");
    // Out of service and waiting: the agent dies in the middle of the swap.
    let hang = hook(
        fleet.agent("hotel-01"),
        "PREINSTALL",
        "ecommerce",
        &format!(
            "while [ ! -f {g:?} ]; do sleep 0.05; done",
            g = go.display().to_string()
        ),
    );
    let strategy = json!({"failure": {"retries": 1, "retry_backoff_seconds": 1}});
    let (status, created) = post(
        &fleet.controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.12", "strategy": strategy}),
        "alice",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    wait_for_rollout(&fleet.controller, id, "ecommerce in PREINSTALL", |r| {
        steps(r, "hotel")
            .iter()
            .any(|s| s["module"] == "ecommerce" && s["install"]["phase"] == "PREINSTALL")
    })
    .await;

    std::fs::remove_file(&hang).unwrap();
    let agent = &mut fleet
        .agents
        .iter_mut()
        .find(|(_, a, _)| a.id == "hotel-01")
        .unwrap()
        .1;
    agent.relaunch("flotilla-agent", &[]).await; // SIGKILL, then start again
    std::fs::write(&go, "").unwrap(); // lets the orphaned hook end

    let done = wait_for_rollout(&fleet.controller, id, "succeeded", |r| {
        r["state"] == "succeeded"
    })
    .await;
    let ecommerce = steps(&done, "hotel")
        .into_iter()
        .find(|s| s["module"] == "ecommerce")
        .unwrap();
    assert_eq!(ecommerce["attempts"], 2, "{ecommerce}");
    fleet.wait_for_site_at("hotel", "2.0.0").await;
    // The interrupted install is closed, as the agent's recovery left it.
    let interrupted: Vec<Value> = fleet
        .installs("hotel-01")
        .await
        .into_iter()
        .filter(|i| i["module"] == "ecommerce" && i["state"] == "failed")
        .collect();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    assert_eq!(
        interrupted[0]["message"],
        "the agent restarted during the install and rolled it back at start"
    );
}

#[tokio::test]
async fn a_withdrawn_release_is_dropped_by_agents_and_the_next_newest_rolls_out() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(&dir.path().join("controller")).await;
    let publisher = Publisher::default();
    let agent = launch_server(
        dir.path(),
        &controller,
        &publisher,
        "acme",
        ServerSpec {
            id: "acme-web-01",
            modules: &["ecommerce"],
        },
    )
    .await;
    let packages = dir.path().join("built");
    std::fs::create_dir_all(&packages).unwrap();
    publisher
        .publish(&controller, &packages, "2026.11", "2.0.0", &["ecommerce"])
        .await;
    publisher
        .publish(&controller, &packages, "2026.12", "3.0.0", &["ecommerce"])
        .await;
    wait_for_downloads(&controller, &[(&agent, &["ecommerce"])], "3.0.0").await;
    let (status, refused) = post(
        &controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.11"}),
        "olga",
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    // Only an admin withdraws, and says why.
    let url = format!("{}/api/v1/releases/2026.12/withdraw", controller.http_url);
    let operator = controller.token_for("olga", "operator").await;
    let forbidden = flotilla_tests::anonymous()
        .post(&url)
        .bearer_auth(&operator)
        .json(&json!({"reason": "breaks checkout"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let no_reason = flotilla_tests::http()
        .post(&url)
        .json(&json!({"reason": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_reason.status(), 400);
    let withdrawn: Value = flotilla_tests::http()
        .post(&url)
        .json(&json!({"reason": "breaks checkout"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(withdrawn["withdrawn"]["by"], "bootstrap", "{withdrawn}");
    assert_eq!(withdrawn["withdrawn"]["reason"], "breaks checkout");

    // The agent drops 3.0.0 and fetches the newest version still published.
    wait_for_downloads(&controller, &[(&agent, &["ecommerce"])], "2.0.0").await;
    let dropped = agent.data.join("bin/updates/packages/ecommerce-3.0.0.zip");
    wait_until("the withdrawn package gone from the agent", async || {
        if dropped.exists() {
            Err(dropped.display().to_string())
        } else {
            Ok(())
        }
    })
    .await;
    // The agent says so just after removing it.
    wait_until("the agent's log saying why it removed it", async || {
        let log = agent.log();
        log.contains("removed a package whose release was withdrawn")
            .then_some(())
            .ok_or(log)
    })
    .await;

    // No rollout of the withdrawn release; the next newest rolls out.
    let (status, refused) = post(
        &controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.12"}),
        "olga",
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("was withdrawn by bootstrap"),
        "{refused}"
    );
    let (status, created) = post(
        &controller,
        "/api/v1/rollouts",
        &json!({"release": "2026.11"}),
        "olga",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    wait_for_rollout(&controller, id, "succeeded", |r| r["state"] == "succeeded").await;
    let server = controller.server("acme-web-01").await.unwrap();
    assert_eq!(module(&server, "ecommerce")["installed_version"], "2.0.0");
    let (_, trail) = controller.get("/api/v1/audit?actor=bootstrap").await;
    assert!(
        trail.as_array().unwrap().iter().any(|e| e["action"]
            == "POST /api/v1/releases/{version}/withdraw"
            && e["outcome"] == 200),
        "{trail}"
    );
}

/// Operators starting rollouts of the same servers at the same moment: one
/// starts, the others are refused naming the servers the first holds, and
/// no server is ever in two unfinished rollouts.
#[tokio::test]
async fn rollouts_of_the_same_servers_started_at_once_start_only_one() {
    let fleet = Fleet::start(&[("alpha", ALPHA), ("bravo", BRAVO)]).await;
    let c = &fleet.controller;
    // The gate keeps bravo waiting, so the first rollout holds its servers
    // for as long as the test looks.
    let body =
        json!({"release": "2026.12", "strategy": {"waves": {"batch_size": 1, "gate": "manual"}}});
    let mut tokens = Vec::new();
    for name in ["alice", "bob", "carol", "dave"] {
        tokens.push(c.token_for(name, "operator").await);
    }
    let http = flotilla_tests::http();
    let create = async |token: &str| {
        let response = http
            .post(format!("{}/api/v1/rollouts", c.http_url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (a, b, d, e) = tokio::join!(
        create(&tokens[0]),
        create(&tokens[1]),
        create(&tokens[2]),
        create(&tokens[3])
    );
    let answers = [a, b, d, e];
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    let id = started[0]["id"].as_i64().unwrap();
    for (status, body) in answers.iter().filter(|(status, _)| *status != 201) {
        assert_eq!(*status, 409, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("bravo-app (rollout {id}, release 2026.12)")),
            "{message}"
        );
    }
    let (_, rollouts) = c.get("/api/v1/rollouts").await;
    assert_eq!(rollouts.as_array().unwrap().len(), 1, "{rollouts}");
}
