//! Where a binary's log goes: stderr in a console and under systemd (the
//! journal keeps it); rolling daily files under the Windows service control
//! manager, where nothing reads stderr.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Days of log files kept.
const KEPT: usize = 14;

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Logs to stderr, at `default` level unless `RUST_LOG` says otherwise;
/// colours only on a terminal, not in a file or the journal.
pub fn to_stderr(default: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter(default))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Logs to `<dir>/<name>.<date>.log`, keeping the last 14 days; the
/// returned guard flushes the last lines when dropped. `None` when the
/// folder cannot be made.
pub fn to_files(dir: &Path, name: &str) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(name)
        .filename_suffix("log")
        .max_log_files(KEPT)
        .build(dir)
        .ok()?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_ansi(false)
        .with_writer(writer)
        .init();
    Some(guard)
}
