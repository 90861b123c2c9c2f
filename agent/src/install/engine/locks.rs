//! Files held open: naming the processes that hold the module's files,
//! waiting for them for the whole lock budget, escalating, and saying what
//! is known when the folder cannot be set aside.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Run, StepResult};
use crate::install::EventKind;
use crate::install::files::is_held;
use crate::install::platform;

impl Run<'_, '_> {
    /// Names the processes holding files; waits with backoff within the
    /// budget, then stops the module's pool or service if it has one, then
    /// gives up naming them.
    pub(super) async fn wait_for_holders(&mut self, live: &Path) -> StepResult<()> {
        let budget = self.install.settings.lock_budget;
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0u32;
        let mut escalated = false;
        loop {
            attempt += 1;
            let holders = match platform::holders(live) {
                Ok(holders) => holders,
                Err(e) => {
                    self.say(
                        EventKind::Warning,
                        format!("cannot tell which processes hold files: {e}"),
                    );
                    return Ok(());
                }
            };
            if holders.is_empty() {
                if attempt > 1 {
                    self.say(
                        EventKind::Step,
                        format!("files released after {attempt} attempts"),
                    );
                }
                return Ok(());
            }
            let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
            self.say(
                EventKind::Warning,
                format!(
                    "attempt {attempt}: {} process(es) hold files in {}: {}",
                    holders.len(),
                    live.display(),
                    names.join("; ")
                ),
            );
            // The whole budget is waited out: the last wait is what remains.
            let remaining = budget.saturating_sub(started.elapsed());
            if !remaining.is_zero() {
                tokio::time::sleep(delay.min(remaining)).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
            let control = &self.install.control;
            if !escalated && !control.is_none() && !self.reached.control_stopped {
                escalated = true;
                self.say(
                    EventKind::Step,
                    format!(
                        "still held after {}: stopping {}",
                        seconds(started.elapsed()),
                        control.describe()
                    ),
                );
                control.stop().await.map_err(|e| (e, Vec::new()))?;
                self.reached.control_stopped = true;
                delay = Duration::from_millis(250);
                continue;
            }
            if escalated && attempt < 1000 && started.elapsed() < budget + Duration::from_secs(10) {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            return Err((
                format!(
                    "files in {} are still held after {attempt} attempts over {}: {}",
                    live.display(),
                    seconds(started.elapsed()),
                    names.join("; ")
                ),
                Vec::new(),
            ));
        }
    }

    /// Why the module folder could not be set aside, with what is known of
    /// who holds it.
    pub(super) fn not_renamed(&self, live: &Path, e: &io::Error) -> String {
        let mut text = format!("cannot rename {}: {e}", live.display());
        if !is_held(e) {
            return text;
        }
        match platform::holders(live) {
            Ok(holders) if !holders.is_empty() => {
                let names: Vec<String> = holders.iter().map(|h| h.to_string()).collect();
                text.push_str(&format!("; still held: {}", names.join("; ")));
            }
            Ok(_) => text.push_str(
                "; no process holds a file there, so something holds the folder itself or a folder in it: \
                 a process whose working directory is there (a console, a service started from it), \
                 an Explorer window or an antivirus scan (the Restart Manager names only the holders of files)",
            ),
            Err(why) => text.push_str(&format!("; the holders are unknown: {why}")),
        }
        text
    }
}

/// A measured duration as a person reads it: `1.8 s`.
fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}
