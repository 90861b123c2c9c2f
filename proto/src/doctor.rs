//! A server's self-diagnosis: the procedure's "Que faire si ?" run by the
//! agent. Each check says OK, WARN or FAIL, what it looked at, what it
//! found and, in plain words, how to fix it. The agent runs the checks
//! (`flotilla-agent doctor`, its portal's Doctor page, a controller's
//! command); the controller shows the report and, before a rollout takes a
//! site down, refuses to start on a FAIL among the checks that can block an
//! install.

use serde::{Deserialize, Serialize};

/// How a check came out, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<Status> {
        [Status::Ok, Status::Warn, Status::Fail]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Which check: `service`, `portal`, `controller`, `applications`,
    /// `folders`, `status`, `hooks`, `leftovers`, `holders`, `disk`,
    /// `journal`, `database`.
    pub check: String,
    pub status: Status,
    /// What it looked at: a file, a folder, an address, a module.
    pub subject: String,
    /// What it found.
    pub finding: String,
    /// How to fix it, in plain words; empty when there is nothing to fix.
    pub fix: String,
    /// Whether it can make an install fail (disk, package, holders, an
    /// interrupted install, drift, hooks): what a rollout's preflight asks.
    pub blocks_install: bool,
}

impl Check {
    pub fn ok(check: &str, subject: impl Into<String>, finding: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            status: Status::Ok,
            subject: subject.into(),
            finding: finding.into(),
            fix: String::new(),
            blocks_install: false,
        }
    }

    pub fn warn(
        check: &str,
        subject: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            fix: fix.into(),
            ..Check::ok(check, subject, finding)
        }
    }

    pub fn fail(
        check: &str,
        subject: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Fail,
            fix: fix.into(),
            ..Check::ok(check, subject, finding)
        }
    }

    /// Marks the check as one that can make an install fail.
    pub fn blocking(mut self) -> Check {
        self.blocks_install = true;
        self
    }
}

/// Every check of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The server's id.
    pub server: String,
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst result; OK when there is no check.
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// The checks a rollout's preflight looks at, failed.
    pub fn blocking_failures(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.blocks_install && c.status == Status::Fail)
    }

    /// The report for a person: one line per check, the fix under it.
    pub fn text(&self) -> String {
        let mut out = format!("doctor of {}\n", self.server);
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "OK  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{mark} {:<13} {}: {}\n",
                c.check, c.subject, c.finding
            ));
            if !c.fix.is_empty() {
                out.push_str(&format!("     {:<13} fix: {}\n", "", c.fix));
            }
        }
        let worst = self.worst();
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{}: {} ok, {} warn, {} fail\n",
            worst.as_str().to_uppercase(),
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_check_decides_and_the_text_gives_each_fix() {
        let mut report = Report {
            server: "web-01".into(),
            at: None,
            checks: vec![Check::ok("portal", "127.0.0.1:8080", "answers")],
        };
        assert_eq!(report.worst(), Status::Ok);
        report.checks.push(Check::warn(
            "hooks",
            "POSTINSTALL-phygital.ps1",
            "names no module",
            "rename it POSTINSTALL-phygitalapi.ps1",
        ));
        assert_eq!(report.worst(), Status::Warn);
        report.checks.push(
            Check::fail("disk", "/srv", "12 MB free, 300 MB needed", "free space").blocking(),
        );
        assert_eq!(report.worst(), Status::Fail);
        assert_eq!(report.blocking_failures().count(), 1);
        let text = report.text();
        assert!(
            text.contains("FAIL disk          /srv: 12 MB free, 300 MB needed\n"),
            "{text}"
        );
        assert!(
            text.contains("fix: rename it POSTINSTALL-phygitalapi.ps1"),
            "{text}"
        );
        assert!(text.ends_with("FAIL: 1 ok, 1 warn, 1 fail\n"), "{text}");
    }
}
