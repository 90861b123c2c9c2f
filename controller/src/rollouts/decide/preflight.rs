//! Before a rollout takes a site out of service, every server with work in
//! it runs the doctor's checks that can make an install fail (disk, the
//! package, holders, an interrupted install, rights, hooks, the database).
//! A FAIL keeps the site in `preflight_failed`, nothing touched: the
//! servers are asked again every minute, an operator may retry at once or
//! override. A WARN is shown and does not block.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use flotilla_proto::doctor::{Report, Status};
use serde::{Deserialize, Serialize};

use super::operator::Answer;
use super::{Job, Pass, command_id};
use crate::db::RolloutSiteRecord;
use crate::fleet::Order;
use crate::states::SiteState;

/// How long after a failed preflight the servers are asked again.
const RETRY: Duration = Duration::seconds(60);

/// How long the servers have to answer before the silent ones fail it.
const PATIENCE: Duration = Duration::seconds(150);

/// Answers older than this are asked again (a rollout paused after the
/// question, a window missed).
const STALE: Duration = Duration::minutes(5);

/// What an old agent answers to a command it does not know.
const UNKNOWN_COMMAND: &str = "does not know this command";

/// The tag of the round of questions asked at `at`, in its command ids:
/// an answer to an earlier round is not taken for this one.
pub(crate) fn round(at: DateTime<Utc>) -> String {
    format!("preflight-{}", at.timestamp_millis())
}

/// One server's answer to a site's preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPreflight {
    pub at: DateTime<Utc>,
    /// The round of questions it answers (see [`round`]).
    #[serde(default)]
    pub round: String,
    /// "check subject: finding (fix)" of each blocking FAIL.
    pub failures: Vec<String>,
    /// The same of each WARN among the checks.
    pub warnings: Vec<String>,
}

/// Every server's answer, by server id, as stored on the site.
pub type SitePreflight = BTreeMap<String, ServerPreflight>;

/// The answers stored on `record`.
pub fn answers(record: &RolloutSiteRecord) -> SitePreflight {
    record
        .preflight
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

fn line(check: &flotilla_proto::doctor::Check) -> String {
    let fix = if check.fix.is_empty() {
        String::new()
    } else {
        format!(" (fix: {})", check.fix)
    };
    format!("{} {}: {}{fix}", check.check, check.subject, check.finding)
}

/// A server's report as the site keeps it.
pub fn summary(report: &Report, at: DateTime<Utc>) -> ServerPreflight {
    ServerPreflight {
        at,
        round: String::new(),
        failures: report.blocking_failures().map(line).collect(),
        warnings: report
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .map(line)
            .collect(),
    }
}

impl Pass<'_> {
    /// Whether the site, its window open, may be taken down now: asks its
    /// servers, waits for their answers, and stops it on a FAIL.
    pub(super) fn preflight_passed(&mut self, i: usize) -> bool {
        let now = self.ctx.now;
        let record = &self.sites[i];
        if record.preflight_override_by.is_some() {
            return true;
        }
        let site = record.site.clone();
        let mut servers: Vec<String> = self
            .site_steps(&site)
            .filter(|s| !s.state.is_done() && s.state.is_waiting())
            .map(|s| s.server_id.clone())
            .collect();
        servers.sort();
        servers.dedup();
        let asked = record.preflight_at;
        let due = match asked {
            None => true,
            Some(at) => {
                (record.state == SiteState::PreflightFailed && now - at >= RETRY)
                    || now - at >= STALE
            }
        };
        if due {
            self.ask(i, &servers);
            return false;
        }
        let asked = asked.unwrap_or(now);
        let answers = answers(&self.sites[i]);
        let missing: Vec<&String> = servers
            .iter()
            .filter(|s| answers.get(*s).is_none_or(|a| a.round != round(asked)))
            .collect();
        if !missing.is_empty() && now - asked < PATIENCE {
            return false;
        }
        let mut failures: Vec<String> = missing
            .iter()
            .map(|s| {
                format!(
                    "{s}: did not answer the preflight within {} s",
                    PATIENCE.num_seconds()
                )
            })
            .collect();
        let mut warnings = Vec::new();
        for server in &servers {
            if let Some(answer) = answers.get(server).filter(|a| a.round == round(asked)) {
                failures.extend(answer.failures.iter().map(|f| format!("{server}: {f}")));
                warnings.extend(answer.warnings.iter().map(|w| format!("{server}: {w}")));
            }
        }
        if failures.is_empty() {
            let detail = if warnings.is_empty() {
                format!("site {site}: {} server(s) ready", servers.len())
            } else {
                format!(
                    "site {site}: {} server(s) ready; warnings: {}",
                    servers.len(),
                    warnings.join("; ")
                )
            };
            self.say("preflight", detail);
            return true;
        }
        let failures = failures.join("; ");
        let message = format!(
            "preflight failed, nothing was touched: {failures}. Checked again every {} s; retry now or override",
            RETRY.num_seconds()
        );
        let record = &mut self.sites[i];
        // Logged when it fails, not at each round that finds it still failing
        // (the message says the latest).
        let first = record.state != SiteState::PreflightFailed;
        record.state = SiteState::PreflightFailed;
        if record.message.as_ref() != Some(&message) {
            record.message = Some(message);
        }
        if first {
            self.say("preflight_failed", format!("site {site}: {failures}"));
        }
        false
    }

    /// Asks each server for its preflight, about the modules it will
    /// install.
    fn ask(&mut self, i: usize, servers: &[String]) {
        let now = self.ctx.now;
        let record = &mut self.sites[i];
        record.preflight_at = Some(now);
        let site = record.site.clone();
        if record.state != SiteState::PreflightFailed {
            record.message = Some(format!(
                "checking {} server(s) before taking the site down",
                servers.len()
            ));
        }
        for server in servers {
            let mut modules: Vec<String> = self
                .site_steps(&site)
                .filter(|s| &s.server_id == server && s.state.is_waiting())
                .map(|s| s.module.clone())
                .collect();
            modules.sort();
            modules.dedup();
            self.jobs.push(Job {
                server: server.clone(),
                module: String::new(),
                command_id: command_id(server, &format!("{site}-{}", round(now)), now, 0),
                order: Order::Doctor {
                    preflight: true,
                    modules,
                },
            });
        }
    }
}

/// A server's preflight answer: stored on its site (the one of this
/// rollout waiting for it); `None` when no site waits for it.
pub(super) fn answered(
    sites: &[RolloutSiteRecord],
    steps: &[crate::db::RolloutStepRecord],
    now: DateTime<Utc>,
    answer: &Answer,
) -> Option<RolloutSiteRecord> {
    // A server is in one site of a rollout: its site first, then whether
    // that site waits for this round's answers (looking at every site's
    // steps for each answer cost sites x steps, with thousands of answers).
    let site = &steps.iter().find(|t| t.server_id == answer.server)?.site;
    let mut record = sites
        .iter()
        .find(|s| {
            &s.site == site
                && matches!(s.state, SiteState::Scheduled | SiteState::PreflightFailed)
                && s.preflight_at
                    .is_some_and(|at| answer.command_id.contains(&round(at)))
        })?
        .clone();
    let this_round = round(record.preflight_at?);
    let mut all = answers(&record);
    let mut mine = match (&answer.result, &answer.report) {
        (Ok(_), Some(report)) => summary(report, now),
        // An agent older than the preflight: said, and not held against it.
        (Err(crate::fleet::OrderError::Refused { message, .. }), _)
            if message.contains(UNKNOWN_COMMAND) =>
        {
            ServerPreflight {
                at: now,
                round: String::new(),
                failures: Vec::new(),
                warnings: vec![format!(
                    "no preflight: {message} (its installs are not checked beforehand)"
                )],
            }
        }
        (Err(e), _) => ServerPreflight {
            at: now,
            round: String::new(),
            failures: vec![format!("the preflight could not run: {e}")],
            warnings: Vec::new(),
        },
        (Ok(_), None) => ServerPreflight {
            at: now,
            round: String::new(),
            failures: vec!["the preflight answered no report".to_owned()],
            warnings: Vec::new(),
        },
    };
    mine.round = this_round;
    all.insert(answer.server.clone(), mine);
    record.preflight = serde_json::to_string(&all).ok();
    Some(record)
}

/// An operator lets a site whose preflight failed start anyway.
pub(super) fn override_failed(
    sites: &mut [RolloutSiteRecord],
    site: &str,
    actor: &str,
) -> Result<String, String> {
    let Some(record) = sites.iter_mut().find(|s| s.site == site) else {
        return Err(format!("site {site} is not part of this rollout"));
    };
    if record.state != SiteState::PreflightFailed {
        return Err(format!(
            "site {site} is {}; only a site whose preflight failed can be overridden",
            record.state
        ));
    }
    let failures: Vec<String> = answers(record)
        .into_iter()
        .flat_map(|(server, a)| {
            a.failures
                .into_iter()
                .map(move |f| format!("{server}: {f}"))
        })
        .collect();
    record.state = SiteState::Scheduled;
    record.preflight_override_by = Some(actor.to_owned());
    record.message = Some(format!("preflight overridden by {actor}"));
    Ok(format!(
        "site {site} starts despite: {}",
        if failures.is_empty() {
            "nothing recorded".to_owned()
        } else {
            failures.join("; ")
        }
    ))
}
