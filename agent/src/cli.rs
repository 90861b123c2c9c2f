//! `flotilla-agent install` and `flotilla-agent rollback`: ask the running
//! agent, through its local portal's API, to install or restore a module, and
//! follow it to the end. The agent service stays the only one that installs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// What to ask the agent.
#[derive(Debug, Clone)]
pub enum Request {
    /// The pending package, or one of the agent's packages by its sha256.
    Install { sha256: Option<String> },
    Rollback {
        to: Option<String>,
        /// A database module: its files only, the database left as it is.
        keep_database: bool,
    },
}

/// `flotilla-agent doctor`: the running agent's report (its portal's
/// `GET /api/doctor`, at `portal` or the configured address); when it does
/// not answer, or another program does, the checks this command can run
/// itself, saying so. A configuration that does not load is a failure too.
pub async fn doctor(config: &Path, portal: Option<String>) -> flotilla_proto::doctor::Report {
    use flotilla_proto::doctor::{Check, Report};
    let settings = match crate::config::Settings::load_unenrolled(config) {
        Ok(settings) => settings,
        Err(e) => {
            return Report {
                server: "?".into(),
                at: Some(chrono::Utc::now()),
                checks: vec![Check::fail(
                    "config",
                    config.display().to_string(),
                    e.to_string(),
                    "fix the agent's configuration file (see the README), then run the doctor again",
                )],
            };
        }
    };
    // Not enrolled: the agent cannot run, and every check that needs no
    // controller runs here, the enrollment one FAIL among them.
    if let crate::config::ControllerTrust::NotEnrolled { why } = &settings.controller_trust {
        let mut address = settings.portal_listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let url = format!("http://{address}");
        let taken = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .is_ok_and(|connected| connected.is_ok());
        let portal = match taken {
            true => crate::doctor::portal_unreachable(
                &url,
                "",
                Some("the agent does not run before it is enrolled"),
            ),
            false => Check::ok(
                "portal",
                url,
                "the port is free for the agent's portal, which starts once the agent is enrolled and running",
            ),
        };
        let mut report = crate::doctor::run_alone(&settings, portal).await;
        report.checks.insert(0, crate::doctor::enrollment(why));
        return report;
    }
    let portal = portal.unwrap_or_else(|| {
        let mut address = settings.portal_listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}")
    });
    let url = format!("{}/api/doctor", portal.trim_end_matches('/'));
    let answer = reqwest::Client::new()
        .get(&url)
        .timeout(Duration::from_secs(120))
        .send()
        .await;
    let portal_check = match answer {
        Ok(response) if response.status().is_success() => {
            let status = response.status();
            match response.json::<Report>().await {
                Ok(report) => return report,
                Err(_) => crate::doctor::portal_unreachable(
                    &portal,
                    "",
                    Some(&format!(
                        "it answers {status} with something that is not a doctor's report"
                    )),
                ),
            }
        }
        Ok(response) => {
            let status = response.status();
            let server = response
                .headers()
                .get(reqwest::header::SERVER)
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(", Server: {v}"))
                .unwrap_or_default();
            // An agent from before the doctor answers too, on its page.
            let page = reqwest::Client::new()
                .get(format!("{}/", portal.trim_end_matches('/')))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let older_agent = match page {
                Ok(page) => page.text().await.unwrap_or_default().contains("Flotilla"),
                Err(_) => false,
            };
            if older_agent {
                crate::doctor::portal_unreachable(
                    &portal,
                    "an older Flotilla agent runs, without a doctor: upgrade it (the checks below ran without it)",
                    None,
                )
            } else {
                crate::doctor::portal_unreachable(
                    &portal,
                    "",
                    Some(&format!("GET /api/doctor answers {status}{server}")),
                )
            }
        }
        Err(e) => crate::doctor::portal_unreachable(
            &portal,
            &format!(
                "nothing answers at {portal} ({})",
                flotilla_proto::process::error_chain(&e)
            ),
            None,
        ),
    };
    crate::doctor::run_alone(&settings, portal_check).await
}

/// Puts a package file into the agent's packages folder, with its checksum
/// and, if one lies beside it (`<file>.sig`), its signature; returns its
/// sha256. The agent installs it only if that signature is trusted (or
/// unsigned packages are allowed), as any other package.
pub fn stage(packages: &Path, file: &Path) -> anyhow::Result<String> {
    let manifest = flotilla_proto::package::read_manifest(file)
        .with_context(|| format!("{} is not a package", file.display()))?;
    let sha256 = flotilla_proto::package::sha256_file(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    std::fs::create_dir_all(packages)
        .with_context(|| format!("cannot create {}", packages.display()))?;
    let target = packages.join(format!("{}-{}.zip", manifest.module, manifest.version));
    let sidecar =
        |path: &Path, extension: &str| PathBuf::from(format!("{}.{extension}", path.display()));
    if let Ok(existing) = std::fs::read_to_string(sidecar(&target, "sha256"))
        && existing.trim() != sha256
    {
        bail!(
            "another package of {} {} is already waiting in {}: remove it first",
            manifest.module,
            manifest.version,
            packages.display()
        );
    }
    std::fs::copy(file, &target)
        .with_context(|| format!("cannot copy {} into {}", file.display(), packages.display()))?;
    match std::fs::read_to_string(sidecar(file, "sig")) {
        Ok(signature) => std::fs::write(sidecar(&target, "sig"), signature)?,
        Err(_) => {
            let _ = std::fs::remove_file(sidecar(&target, "sig"));
        }
    }
    std::fs::write(sidecar(&target, "sha256"), format!("{sha256}\n"))?;
    Ok(sha256)
}

/// The portal's local token, from the file only the agent's account
/// (root, Administrators) reads: what proves the command line runs as an
/// administrator of this server.
pub fn local_token(layout: &crate::config::DataLayout) -> anyhow::Result<String> {
    let file = layout.portal_token_file();
    let token = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read the portal's token {}: run this as an administrator (root), on a server whose agent runs",
            file.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

/// A one-time link that signs a browser in to the portal at `portal`.
pub async fn portal_link(portal: &str, token: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/links", portal.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {portal}: is the service running?"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    match answer["link"].as_str() {
        Some(link) if status.is_success() => Ok(link.to_owned()),
        _ => bail!(
            "the agent did not make a link ({status}): {}",
            answer["message"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// Starts the install or rollback of `module` on the agent whose portal is
/// at `portal` (e.g. `http://127.0.0.1:8080`), as an administrator (the
/// local `token`), prints its progress, and returns whether it succeeded.
pub async fn run(
    portal: &str,
    token: &str,
    module: &str,
    request: Request,
) -> anyhow::Result<bool> {
    let client = reqwest::Client::new();
    let base = format!("{}/api/modules/{module}", portal.trim_end_matches('/'));
    let (url, body) = match request {
        Request::Install { sha256: None } => (format!("{base}/install"), json!({})),
        Request::Install {
            sha256: Some(sha256),
        } => (format!("{base}/install"), json!({"sha256": sha256})),
        Request::Rollback { to, keep_database } => (
            format!("{base}/rollback"),
            json!({"to": to, "database": if keep_database { "keep" } else { "restore" }}),
        ),
    };
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the agent at {portal}: is the service running?"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{}",
            answer["message"].as_str().unwrap_or("the agent refused")
        );
    }
    println!(
        "{module}: installing {}",
        answer["to"].as_str().unwrap_or("?")
    );
    let mut shown = 0usize;
    loop {
        let progress: Value = client
            .get(format!("{base}/install"))
            .send()
            .await
            .context("lost the agent")?
            .json()
            .await
            .context("unreadable progress")?;
        let events = progress["events"].as_array().cloned().unwrap_or_default();
        for event in events.iter().skip(shown) {
            let text = event["text"].as_str().unwrap_or_default();
            match event["kind"].as_str().unwrap_or_default() {
                "phase" => println!("== {text}"),
                "stdout" | "stderr" => println!("   | {text}"),
                "warning" => println!("!! {text}"),
                _ => println!("   {text}"),
            }
        }
        shown = events.len();
        if progress["running"] == false {
            let result = &progress["result"];
            if result["ok"] == true {
                println!(
                    "{module} {} installed; out of service for {} ms",
                    result["to"].as_str().unwrap_or("?"),
                    result["downtime_ms"]
                );
                return Ok(true);
            }
            println!(
                "{}",
                result["message"].as_str().unwrap_or("the install failed")
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
