//! Where a binary's log goes: stderr in a console and under systemd (the
//! journal keeps it); rolling daily files under the Windows service control
//! manager, where nothing reads stderr.

use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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
        .with_writer(OneLine(std::io::stderr))
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
        .with_writer(OneLine(writer))
        .init();
    Some(guard)
}

/// A log writer that keeps each event on one line: a line break or carriage
/// return inside an event (a sign-in name, a server id or a message an
/// agent sent) is written as `\n` or `\r`, so that nobody can forge a line
/// of the log. The formatter writes each event whole, with its one final
/// line break, in one call.
#[derive(Debug, Clone)]
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// The writer [`OneLine`] makes.
#[derive(Debug)]
pub struct OneLineWriter<W>(W);

impl<W: std::io::Write> std::io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&one_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `event` with its inner line breaks escaped; a final `\n` stays.
pub fn one_line(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut escaped = Vec::with_capacity(event.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => escaped.extend_from_slice(b"\\n"),
            b'\r' => escaped.extend_from_slice(b"\\r"),
            other => escaped.push(other),
        }
    }
    escaped.extend_from_slice(end);
    std::borrow::Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_on_one_line() {
        assert_eq!(&*one_line(b"plain\n"), b"plain\n");
        assert_eq!(
            &*one_line(b"name=a\nFORGED line\r\n"),
            b"name=a\\nFORGED line\\r\n"
        );
        assert_eq!(&*one_line(b"no end\nx"), b"no end\\nx");
    }
}
