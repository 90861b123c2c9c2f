//! Customer sites for rollout tests: several agents per site, each hosting
//! some of the procedure's modules at 1.0.0, a publisher whose key they
//! trust, and releases published through the controller's REST API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_agent::install::package::{build, sha256_file};
use flotilla_proto::signing::SecretKey;
use serde_json::{Value, json};

use crate::{Agent, Controller, module, wait_up_to};

/// How long a whole rollout may take in a test.
pub const ROLLOUT_PATIENCE: Duration = Duration::from_secs(90);

/// A server of a site: its id and the modules it hosts.
#[derive(Debug, Clone, Copy)]
pub struct ServerSpec<'a> {
    pub id: &'a str,
    pub modules: &'a [&'a str],
}

/// The procedure's modules and their kinds.
pub fn kind_of(module: &str) -> &'static str {
    match module {
        "database" => "database",
        _ => "web",
    }
}

/// A signing key the agents trust.
#[derive(Debug)]
pub struct Publisher {
    key: &'static SecretKey,
}

impl Default for Publisher {
    /// A publisher of its own (its key lives as long as the test).
    fn default() -> Self {
        Publisher {
            key: Box::leak(Box::new(SecretKey::generate().unwrap())),
        }
    }
}

impl Publisher {
    /// The process's test publisher, [`crate::publisher`], which
    /// [`crate::trusted_publisher`] tells agents to trust.
    pub fn shared() -> Self {
        Publisher {
            key: crate::publisher(),
        }
    }

    /// The agent configuration line that trusts this publisher.
    pub fn trusted_toml(&self) -> String {
        format!("trusted_keys = [\"{}\"]", self.key.public().to_hex())
    }

    /// Builds, signs, uploads and publishes `modules` at `version` as
    /// release `release`.
    pub async fn publish(
        &self,
        controller: &Controller,
        dir: &Path,
        release: &str,
        version: &str,
        modules: &[&str],
    ) {
        let mut packages = Vec::new();
        for module in modules {
            let path = dir.join(format!("{module}-{version}.zip"));
            let manifest = format!(
                "module = \"{module}\"\nversion = \"{version}\"\nkind = \"{}\"\n",
                kind_of(module)
            );
            let page = format!("<h1>{module} {version}</h1>");
            build::from_entries(
                &path,
                &manifest,
                &[
                    ("index.html", page.as_bytes()),
                    ("version.txt", format!("{version}\n").as_bytes()),
                ],
            )
            .unwrap();
            let sha256 = sha256_file(&path).unwrap();
            let status = controller
                .upload(&sha256, &std::fs::read(&path).unwrap())
                .await;
            assert!(status == 201 || status == 200, "upload {module}: {status}");
            packages.push(json!({"sha256": sha256, "signature": self.key.sign_package(&sha256)}));
        }
        let response = crate::http()
            .post(format!("{}/api/v1/releases", controller.http_url))
            .json(&json!({"version": release, "notes": "", "packages": packages}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "publish: {}",
            response.text().await.unwrap()
        );
    }
}

/// Lays out a server's modules at 1.0.0 under `<dir>/<id>/apps/` and starts
/// its agent in `site`.
pub async fn launch_server(
    dir: &Path,
    controller: &Controller,
    publisher: &Publisher,
    site: &str,
    server: ServerSpec<'_>,
) -> Agent {
    launch_server_on(dir, &controller.grpc_url, publisher, site, server).await
}

/// [`launch_server`] with the agent given `controllers`: one controller's
/// URL, or several sharing a database, separated by spaces.
pub async fn launch_server_on(
    dir: &Path,
    controllers: &str,
    publisher: &Publisher,
    site: &str,
    server: ServerSpec<'_>,
) -> Agent {
    let xml = applications(dir, server);
    Agent::launch_with(
        dir,
        site,
        server.id,
        controllers,
        &xml,
        100,
        &publisher.trusted_toml(),
    )
    .await
}

/// Lays out a server's modules at 1.0.0 under `<dir>/<id>/apps/`; its
/// `applicationspath.config`.
pub fn applications(dir: &Path, server: ServerSpec<'_>) -> String {
    let mut xml = String::from("<applications>\n");
    for module in server.modules {
        let folder = dir.join(server.id).join("apps").join(module);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("version.txt"), "1.0.0\n").unwrap();
        std::fs::write(
            folder.join("index.html"),
            format!("<h1>{module} 1.0.0</h1>"),
        )
        .unwrap();
        xml.push_str(&format!(
            "<application name=\"{module}\" kind=\"{}\" path=\"{}\"/>\n",
            kind_of(module),
            folder.display()
        ));
    }
    xml.push_str("</applications>\n");
    xml
}

/// Writes an executable hook for `phase` of `module` on `agent`.
pub fn hook(agent: &Agent, phase: &str, module: &str, body: &str) -> PathBuf {
    let scripts = agent.data.join("bin/updates/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let path = scripts.join(format!("{phase}_{module}.sh"));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    path
}

/// Waits until every server of `agents` has `version` of each of its
/// modules downloaded and pending.
pub async fn wait_for_downloads(
    controller: &Controller,
    agents: &[(&Agent, &[&str])],
    version: &str,
) {
    for (agent, modules) in agents {
        controller
            .wait_for_server(&agent.id, &format!("{version} pending"), |s| {
                s["online"] == true
                    && modules
                        .iter()
                        .all(|m| module(s, m)["pending_version"] == version)
            })
            .await;
    }
}

/// POSTs JSON to the controller as `actor` (an operator's API token);
/// returns the status and body.
pub async fn post(controller: &Controller, path: &str, body: &Value, actor: &str) -> (u16, Value) {
    let token = controller.token_for(actor, "operator").await;
    post_with(controller, path, body, &token).await
}

/// POSTs JSON to the controller with an operator's `token`; returns the
/// status and body.
pub async fn post_with(
    controller: &Controller,
    path: &str,
    body: &Value,
    token: &str,
) -> (u16, Value) {
    let response = crate::http()
        .post(format!("{}{path}", controller.http_url))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until rollout `id` satisfies `condition`; returns its JSON.
pub async fn wait_for_rollout(
    controller: &Controller,
    id: i64,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    wait_up_to(
        ROLLOUT_PATIENCE,
        &format!("rollout {id}: {what}"),
        async || {
            let (status, rollout) = controller.get(&format!("/api/v1/rollouts/{id}")).await;
            if status == 200 && condition(&rollout) {
                Ok(rollout)
            } else {
                Err(format!(
                    "{} {:?} sites {:?}",
                    rollout["state"],
                    rollout["reason"],
                    rollout["sites"].as_array().map(|sites| sites
                        .iter()
                        .map(|s| format!("{}={} ({})", s["site"], s["state"], s["message"]))
                        .collect::<Vec<_>>())
                ))
            }
        },
    )
    .await
}

/// A site of a rollout's JSON.
pub fn site<'a>(rollout: &'a Value, name: &str) -> &'a Value {
    rollout["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|s| s["site"] == name))
        .unwrap_or(&Value::Null)
}

/// Every step of a rollout's site, with its server id added.
pub fn steps(rollout: &Value, site_name: &str) -> Vec<Value> {
    site(rollout, site_name)["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|server| {
            server["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|step| {
                    let mut step = step.clone();
                    step["server"] = server["server"].clone();
                    step
                })
        })
        .collect()
}

/// Asserts the rollout's log has each `(actor, action)`.
pub fn assert_logged(rollout: &Value, expected: &[(&str, &str)]) {
    let log: Vec<(&str, &str)> = rollout["log"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["actor"].as_str().unwrap_or_default(),
                l["action"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for entry in expected {
        assert!(log.contains(entry), "{entry:?} in {log:?}");
    }
}
