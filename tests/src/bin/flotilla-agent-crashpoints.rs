//! The agent with crash points: exactly `flotilla-agent`, except that it
//! kills itself with SIGKILL (no cleanup, as in a power cut) when an install reaches
//! the point named in `FLOTILLA_CRASH_AT`. It lives in the test harness so no
//! shipped binary can reach a crash point.

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
            // SIGKILL, as the issue asks: no handler, no cleanup, nothing flushed.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }
}

#[tokio::main]
async fn main() {
    let config = std::env::args().nth(2).expect("--config <path>");
    let settings = Settings::load(std::path::Path::new(&config)).unwrap();
    let listener = tokio::net::TcpListener::bind(settings.portal_listen)
        .await
        .unwrap();
    println!(
        "flotilla-agent {} portal: http://{}/",
        settings.server_id,
        listener.local_addr().unwrap()
    );
    let point = std::env::var("FLOTILLA_CRASH_AT").unwrap_or_default();
    let _ended = flotilla_agent::run(
        settings,
        listener,
        Arc::new(AbortAt(point)),
        std::future::pending(),
    )
    .await
    .unwrap();
}
