//! Measures the release figures on real processes (release build):
//!
//! - the controller's peak resident memory while receiving a 1 GB upload;
//! - the agent's download throughput against `curl` fetching the same file
//!   from the same controller in the same run (both write to disk);
//! - the agent's peak resident memory while downloading it.
//!
//! Run: `cargo build --release --bins && cargo run --release -p flotilla-tests --bin release-figures [megabytes]`
//! (default 1000 MB; needs `curl`; Linux only, reads `/proc`). Works in a
//! temporary folder under the current directory.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flotilla_proto::package::{build, sha256_file};
use flotilla_proto::signing::SecretKey;
use flotilla_tests::{Agent, Controller};
use serde_json::json;

#[tokio::main]
async fn main() {
    let megabytes: u64 = std::env::args().nth(1).map_or(1000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let controller_dir = dir.path().join("controller");
    std::fs::create_dir_all(&controller_dir).unwrap();
    let controller = Controller::start(&controller_dir).await;

    // A package of incompressible bytes.
    let payload = dir.path().join("payload");
    std::fs::create_dir_all(&payload).unwrap();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(payload.join("blob.bin")).unwrap());
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..megabytes * 1_000_000 / block.len() as u64 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let package = dir.path().join("ecommerce-2.0.0.zip");
    build::from_folder(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &payload,
    )
    .unwrap();
    std::fs::remove_dir_all(&payload).unwrap();
    let size = std::fs::metadata(&package).unwrap().len();
    let sha = sha256_file(&package).unwrap();
    let key = SecretKey::generate().unwrap();
    println!("package: {} MB", size / 1_000_000);

    // Upload, sampling the controller's memory.
    let controller_pid = controller.child.id().unwrap();
    let (peak, sampling) = sample_rss(controller_pid);
    let started = Instant::now();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::open(&package).await.unwrap(),
        256 * 1024,
    ));
    let response = flotilla_tests::http()
        .put(format!("{}/api/v1/packages/{sha}", controller.http_url))
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        201,
        "{}",
        response.text().await.unwrap()
    );
    let upload = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    println!(
        "upload of {} MB: {:.1} s ({:.0} MB/s, including the final fsync); controller peak RSS {} MB",
        size / 1_000_000,
        upload.as_secs_f64(),
        size as f64 / 1e6 / upload.as_secs_f64(),
        peak.load(Ordering::Relaxed) / 1024
    );

    // curl, from the same controller, to disk.
    let url = format!("{}/api/v1/packages/{sha}/file", controller.http_url);
    let copy = dir.path().join("curl.zip");
    let started = Instant::now();
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&copy)
        .arg(&url)
        .status()
        .unwrap();
    assert!(status.success());
    let curl = started.elapsed();
    std::fs::remove_file(&copy).unwrap();

    // The agent, pushed the release.
    let agents = dir.path().join("agents");
    let module = agents.join("web-01/sites/ecommerce");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("version.txt"), "1.0.0").unwrap();
    let xml = format!(
        "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>",
        module.display()
    );
    let trusted = format!("trusted_keys = [\"{}\"]", key.public().to_hex());
    let agent = Agent::launch_with(
        &agents,
        "acme",
        "web-01",
        &controller.grpc_url,
        &xml,
        2_000,
        &trusted,
    )
    .await;
    controller
        .wait_for_server("web-01", "online", |s| s["online"] == true)
        .await;
    let agent_pid = agent.child.id().unwrap();
    let (peak, sampling) = sample_rss(agent_pid);
    let part = agent.data.join(format!("bin/updates/downloads/{sha}.part"));
    // Timed from the publish: the push, the request, every byte to disk.
    let started = Instant::now();
    let published = flotilla_tests::http()
        .post(format!("{}/api/v1/releases", controller.http_url))
        .json(&json!({"version": "1.0", "packages": [{"sha256": sha, "signature": key.sign_package(&sha)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 201);
    let filed = agent.data.join("bin/updates/packages/ecommerce-2.0.0.zip");
    let mut downloaded = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if downloaded.is_none() && (len(&part) == size || filed.exists()) {
            downloaded = Some(started.elapsed());
        }
        if filed.exists() && Path::new(&format!("{}.sha256", filed.display())).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let verified = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let agent_time = downloaded.expect("the agent downloaded the package");
    // curl again, now that the controller's file is as warm in the page
    // cache as it was for the agent: the fair comparison.
    let started_curl = Instant::now();
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&copy)
        .arg(&url)
        .status()
        .unwrap();
    assert!(status.success());
    let curl_warm = started_curl.elapsed();
    std::fs::remove_file(&copy).unwrap();
    println!(
        "curl (first, cold cache): {:.0} MB/s ({:.1} s)",
        size as f64 / 1e6 / curl.as_secs_f64(),
        curl.as_secs_f64()
    );
    let curl = curl_warm;
    let agent_rate = size as f64 / 1e6 / agent_time.as_secs_f64();
    let curl_rate = size as f64 / 1e6 / curl.as_secs_f64();
    println!(
        "curl (after the agent, warm cache): {:.0} MB/s ({:.1} s)",
        curl_rate,
        curl.as_secs_f64()
    );
    println!(
        "agent: {:.0} MB/s ({:.1} s from the publish to the last byte on disk, {:.1} s with sha256 + signature checks); ratio agent/curl {:.2}",
        agent_rate,
        agent_time.as_secs_f64(),
        verified.as_secs_f64(),
        agent_rate / curl_rate
    );
    println!(
        "agent peak RSS while downloading: {} MB",
        peak.load(Ordering::Relaxed) / 1024
    );
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Samples a process's RSS every 20 ms in a thread; returns the peak (KiB)
/// and the switch that stops it.
fn sample_rss(pid: u32) -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    let peak = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let (p, r) = (peak.clone(), running.clone());
    std::thread::spawn(move || {
        while r.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                && let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                p.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (peak, running)
}
