//! Measures an install of a web module of 10,000 files / 500 MB from version
//! A to version B on a real agent (release build): how long the maintenance
//! page was up (the backup finished before POSTBACKUP, inside it), how long
//! unpacking and the early compression took (before the downtime).
//!
//! Run: `cargo build --release --bins && cargo run --release -p flotilla-tests --bin install-figures`
//! Optional arguments: number of files, total megabytes (default 10000 500).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use flotilla_agent::install::package::build;
use flotilla_tests::{Agent, wait_until};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().map_or(10_000, |a| a.parse().unwrap());
    let megabytes: usize = args.next().map_or(500, |a| a.parse().unwrap());
    let file_size = megabytes * 1_000_000 / files;

    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let data = dir.path().join("web-01");
    let module = data.join("sites/ecommerce");
    let started = Instant::now();
    lay_out(&module, files, file_size, 1);
    std::fs::write(module.join("version.txt"), "1.0.0\n").unwrap();
    let source = dir.path().join("v2");
    lay_out(&source, files, file_size, 2);
    std::fs::write(source.join("version.txt"), "2.0.0\n").unwrap();
    let packages = data.join("bin/updates/packages");
    std::fs::create_dir_all(&packages).unwrap();
    let package = packages.join("ecommerce-2.0.0.zip");
    build::from_folder(
        &package,
        "module = \"ecommerce\"\nversion = \"2.0.0\"\nkind = \"web\"\n",
        &source,
    )
    .unwrap();
    // Signed by the test publisher, whom the agent trusts.
    flotilla_tests::sign_beside(&package);
    std::fs::remove_dir_all(&source).unwrap();
    println!(
        "laid out {files} files of {file_size} bytes ({megabytes} MB) twice and a {} MB package in {:.1} s",
        std::fs::metadata(&package).unwrap().len() / 1_000_000,
        started.elapsed().as_secs_f64()
    );

    let xml = format!(
        "<applications><application name=\"ecommerce\" kind=\"web\" path=\"{}\"/></applications>",
        module.display()
    );
    let agent = Agent::launch_with(
        dir.path(),
        "acme",
        "web-01",
        "https://127.0.0.1:9",
        &xml,
        2_000,
        &flotilla_tests::trusted_publisher(),
    )
    .await;
    let client = agent.portal_http();
    let url = format!("{}/api/modules/ecommerce/install", agent.portal_base());
    let started = Instant::now();
    let response = client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let status: Value = wait_until("the install to finish", async || {
        let status: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        if status["running"] == false {
            Ok(status)
        } else {
            Err(String::new())
        }
    })
    .await;
    let total = started.elapsed();
    assert_eq!(status["result"]["ok"], true, "{status}");
    for event in status["events"].as_array().unwrap() {
        let text = event["text"].as_str().unwrap();
        if text.starts_with("unpacked")
            || text.starts_with("backup")
            || text.starts_with("old version compressed")
        {
            println!("  {text}");
        }
    }
    println!(
        "maintenance page up for {} ms (install total {:.1} s, including verification, unpacking and the backup)",
        status["result"]["downtime_ms"],
        total.as_secs_f64()
    );
    assert!(!module.join("app_offline.htm").exists());
}

/// `count` files of `size` bytes of text-like content in 100 folders.
fn lay_out(root: &Path, count: usize, size: usize, seed: u64) {
    let words = [
        "order", "customer", "invoice", "stock", "price", "<div>", "</div>", "class=", "function",
        "return", "0x1f", "2026",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..count {
        let folder = root.join(format!("area{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        let mut content = Vec::with_capacity(size + 16);
        while content.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            content.extend_from_slice(words[(state % words.len() as u64) as usize].as_bytes());
            content.extend_from_slice(format!("{} ", state % 100_000).as_bytes());
        }
        content.truncate(size);
        std::fs::write(folder.join(format!("file{i:05}.dat")), content).unwrap();
    }
}
