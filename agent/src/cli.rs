//! `flotilla-agent install` and `flotilla-agent rollback`: ask the running
//! agent, through its local portal's API, to install or restore a module, and
//! follow it to the end. The agent service stays the only one that installs.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// What to ask the agent.
#[derive(Debug, Clone)]
pub enum Request {
    Install { package: Option<(String, String)> },
    Rollback { to: Option<String> },
}

/// Starts the install or rollback of `module` on the agent whose portal is
/// at `portal` (e.g. `http://127.0.0.1:8080`), prints its progress, and
/// returns whether it succeeded.
pub async fn run(portal: &str, module: &str, request: Request) -> anyhow::Result<bool> {
    let client = reqwest::Client::new();
    let base = format!("{}/api/modules/{module}", portal.trim_end_matches('/'));
    let (url, body) = match request {
        Request::Install { package: None } => (format!("{base}/install"), json!({})),
        Request::Install {
            package: Some((package, sha256)),
        } => (
            format!("{base}/install"),
            json!({"package": package, "sha256": sha256}),
        ),
        Request::Rollback { to } => (format!("{base}/rollback"), json!({"to": to})),
    };
    let response = client
        .post(&url)
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
