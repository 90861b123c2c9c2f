//! Measures how long naming the processes that hold files in a module
//! folder takes, on a tree shaped like `install-figures`' (files in 100
//! folders): on Windows one Restart Manager session registering every file
//! (up to 20,000) in one call; on Linux a walk of `/proc`.
//!
//! Run on Windows, or here under Wine (where the Restart Manager is a stub
//! that names no one, so this measures the cost of the call, not its answer):
//! `.ci/wine run --release --example holders-figures -- 20000`; on Linux:
//! `cargo run --release -p flotilla-agent --example holders-figures -- 20000`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flotilla_agent::install::platform;

fn main() {
    let files: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("ecommerce");
    for i in 0..files {
        let folder = module.join(format!("folder-{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        std::fs::write(folder.join(format!("file-{i:05}.dll")), b"x").unwrap();
    }
    let mut times: Vec<Duration> = Vec::new();
    let mut named = 0;
    for _ in 0..7 {
        let started = Instant::now();
        named = platform::holders(&module).unwrap().len();
        times.push(started.elapsed());
    }
    // The walk alone, to tell it from the Restart Manager's share.
    let mut walks: Vec<Duration> = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        assert_eq!(count(&module), files);
        walks.push(started.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let summary = |mut times: Vec<Duration>| {
        times.sort();
        format!(
            "min {:.0} ms, median {:.0} ms, max {:.0} ms",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        )
    };
    println!(
        "{files} files, 7 runs: holders (named {named}): {}; the walk alone: {}",
        summary(times),
        summary(walks)
    );
}

fn count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count(&e.path())
            } else {
                1
            }
        })
        .sum()
}
