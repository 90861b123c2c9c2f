//! A doctor's report on the wire and back.

use crate::doctor::{Check, Report, Status};
use crate::domain::ParseError;
use crate::v1;

impl From<(String, Report)> for v1::DoctorReport {
    fn from((command_id, report): (String, Report)) -> Self {
        v1::DoctorReport {
            command_id,
            at_unix_ms: report.at.map_or(0, |t| t.timestamp_millis()),
            checks: report
                .checks
                .into_iter()
                .map(|c| v1::DoctorCheck {
                    check: c.check,
                    status: c.status.as_str().to_owned(),
                    subject: c.subject,
                    finding: c.finding,
                    fix: c.fix,
                    blocks_install: c.blocks_install,
                })
                .collect(),
        }
    }
}

impl v1::DoctorReport {
    /// The command id and the report of `server`; a status this build does
    /// not know is refused, naming the check.
    pub fn into_report(self, server: String) -> Result<(String, Report), ParseError> {
        let wire = self;
        let checks = wire
            .checks
            .into_iter()
            .map(|c| {
                let status = Status::parse(&c.status).ok_or_else(|| {
                    ParseError::new(format!(
                        "doctor check {}: unknown status \"{}\"",
                        c.check, c.status
                    ))
                })?;
                Ok(Check {
                    check: c.check,
                    status,
                    subject: c.subject,
                    finding: c.finding,
                    fix: c.fix,
                    blocks_install: c.blocks_install,
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?;
        Ok((
            wire.command_id,
            Report {
                server,
                at: chrono::DateTime::from_timestamp_millis(wire.at_unix_ms),
                checks,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_the_round_trip_and_an_unknown_status_is_refused() {
        let report = Report {
            server: "web-01".into(),
            at: chrono::DateTime::from_timestamp_millis(1_796_000_000_000),
            checks: vec![
                Check::ok("portal", "127.0.0.1:8080", "answers"),
                Check::fail("disk", "D:\\Sites", "12 MB free", "free space").blocking(),
            ],
        };
        let wire = v1::DoctorReport::from(("c1".to_owned(), report.clone()));
        let back = wire.clone().into_report("web-01".to_owned());
        assert_eq!(back.ok(), Some(("c1".to_owned(), report)));
        let mut odd = wire;
        odd.checks[0].status = "maybe".into();
        let refused = odd.into_report("web-01".to_owned());
        assert!(refused.err().is_some_and(|e| {
            e.to_string()
                .contains("doctor check portal: unknown status")
        }),);
    }
}
