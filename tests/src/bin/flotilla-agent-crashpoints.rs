//! The agent with crash points: exactly `flotilla-agent run`, except that
//! it kills itself and every process it started with SIGKILL (no cleanup,
//! as in a power cut) when an install, or an update of the agent, reaches
//! the point named in `FLOTILLA_CRASH_AT`. It lives in the test harness so
//! no shipped binary can reach a crash point.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use flotilla_agent::config::Settings;
use flotilla_agent::install::CrashPoints;

#[derive(Debug)]
struct AbortAt(String);

impl CrashPoints for AbortAt {
    fn reached(&self, point: &str) {
        if point == self.0 {
            eprintln!("crash point {point} reached: SIGKILL");
            // SIGKILL, as the issue asks: no handler, no cleanup, nothing
            // flushed; first to what it started (a new version on trial).
            let mut pids = flotilla_tests::descendants(std::process::id());
            pids.push(std::process::id());
            for pid in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            std::process::abort();
        }
    }
}

#[tokio::main]
async fn main() {
    let config = std::path::PathBuf::from(std::env::args().nth(2).expect("--config <path>"));
    let settings = Settings::load(&config).unwrap();
    let point = std::env::var("FLOTILLA_CRASH_AT").unwrap_or_default();
    flotilla_agent::serve(
        &config,
        settings,
        Arc::new(AbortAt(point)),
        std::future::pending(),
        || {},
    )
    .await
    .unwrap();
}
