//! The rollout decisions as tables: a rollout's rows, what the fleet
//! reports and the time go in; what the decision changes, logs, orders and
//! posts comes out as text, compared with `expect![[…]]`. Run with
//! `UPDATE_EXPECT=1` to rewrite the expectations after a deliberate change,
//! and read the diff.
//!
//! Every transition of a rollout, a site and a step has a row here:
//! [`sites`] (waves, windows, notices, failure and rollback), [`steps`]
//! (what keeps an install from being ordered, what became of the orders)
//! and [`operators`] (operators' actions, agents' answers).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use expect_test::Expect;
use serde_json::json;

use super::*;

mod databases;
mod operators;
mod preflight;
mod sites;
mod steps;
use crate::db::{ModuleRecord, RolloutSiteRecord, RolloutStepRecord, ServerRecord};
use crate::fleet::OrderError;
use crate::rollouts::strategy::Schedule;
use crate::states::{InstallState, RolloutState, SiteState};

/// Tuesday 1 December 2026, 10:00 UTC.
fn now() -> DateTime<Utc> {
    "2026-12-01T10:00:00Z".parse().unwrap()
}

/// A rollout's rows and the fleet around it.
struct World {
    ctx: Context,
    strategy: Strategy,
    rows: RolloutRows,
    installs: Vec<CommandInstall>,
    in_flight: HashSet<String>,
}

/// A running rollout of release 2.0.0 with wave 1 open, under `strategy`
/// (JSON, as an operator gives it).
fn world(strategy: serde_json::Value) -> World {
    World {
        ctx: Context {
            now: now(),
            servers: HashMap::new(),
            calendars: HashMap::new(),
            history: Vec::new(),
        },
        strategy: serde_json::from_value(strategy).unwrap(),
        rows: (
            RolloutRecord {
                id: 7,
                release: "2.0.0".into(),
                strategy: "{}".into(),
                state: RolloutState::Running,
                reason: None,
                opened_wave: 1,
                wave_ready_at: None,
                acknowledged_failures: 0,
                created_by: "alice".into(),
                created_at: now() - Duration::hours(1),
                finished_at: None,
            },
            Vec::new(),
            Vec::new(),
        ),
        installs: Vec::new(),
        in_flight: HashSet::new(),
    }
}

impl World {
    fn rollout(mut self, change: impl FnOnce(&mut RolloutRecord)) -> World {
        change(&mut self.rows.0);
        self
    }

    fn with_strategy(mut self, strategy: serde_json::Value) -> World {
        self.strategy = serde_json::from_value(strategy).unwrap();
        self
    }

    fn site(mut self, name: &str, wave: i64, state: SiteState) -> World {
        self.rows.1.push(RolloutSiteRecord {
            rollout_id: 7,
            site: name.into(),
            wave,
            state,
            message: None,
            planned_start: None,
            planned_end: None,
            notice_sent_at: None,
            notice_result: None,
            started_at: None,
            finished_at: None,
            preflight: None,
            preflight_at: None,
            preflight_override_by: None,
        });
        self
    }

    /// Every site's servers answered the preflight a second ago, all clear.
    fn preflight_ok(mut self) -> World {
        let at = now() - Duration::seconds(1);
        for site in &mut self.rows.1 {
            let answers: crate::rollouts::decide::preflight::SitePreflight = self
                .rows
                .2
                .iter()
                .filter(|s| s.site == site.site)
                .map(|s| {
                    (
                        s.server_id.clone(),
                        crate::rollouts::decide::preflight::ServerPreflight {
                            at,
                            round: crate::rollouts::decide::preflight::round(at),
                            failures: Vec::new(),
                            warnings: Vec::new(),
                        },
                    )
                })
                .collect();
            site.preflight_at = Some(at);
            site.preflight = serde_json::to_string(&answers).ok();
        }
        self
    }

    fn with_site(mut self, name: &str, change: impl FnOnce(&mut RolloutSiteRecord)) -> World {
        change(self.rows.1.iter_mut().find(|s| s.site == name).unwrap());
        self
    }

    /// A step of `site`: `server/module` at `layer`, from 1.0.0 to 2.0.0.
    fn step(mut self, site: &str, id: &str, layer: i64, state: StepState) -> World {
        let (server, module) = id.split_once('/').unwrap();
        self.rows.2.push(RolloutStepRecord {
            rollout_id: 7,
            site: site.into(),
            server_id: server.into(),
            module: module.into(),
            layer,
            from_version: Some("1.0.0".into()),
            to_version: "2.0.0".into(),
            state,
            attempts: 0,
            next_attempt_at: None,
            command_id: None,
            rollback_command_id: None,
            ordered_at: None,
            message: None,
            started_at: None,
            finished_at: None,
            database_decided_by: None,
        });
        self
    }

    fn with_step(mut self, id: &str, change: impl FnOnce(&mut RolloutStepRecord)) -> World {
        let (server, module) = id.split_once('/').unwrap();
        change(
            self.rows
                .2
                .iter_mut()
                .find(|s| s.server_id == server && s.module == module)
                .unwrap(),
        );
        self
    }

    /// A server of `site` with `modules`: `(name, installed, pending)`.
    fn server(mut self, id: &str, online: bool, modules: &[(&str, &str, Option<&str>)]) -> World {
        let site = id.split('-').next().unwrap().to_owned();
        self.ctx.servers.insert(
            id.into(),
            ServerRecord {
                id: id.into(),
                site,
                hostname: id.into(),
                os: "windows".into(),
                agent_version: "1.0.0".into(),
                protocol_version: 1,
                peer_address: None,
                online,
                first_seen_at: now() - Duration::days(30),
                connected_at: Some(now() - Duration::hours(2)),
                last_seen_at: now(),
                went_silent_at: None,
                offline_reason: None,
                modules: modules
                    .iter()
                    .map(|(name, installed, pending)| ModuleRecord {
                        pending_version: pending.map(str::to_owned),
                        download_state: None,
                        download_version: None,
                        download_detail: None,
                        last_install: None,
                        name: (*name).into(),
                        kind: if *name == "database" {
                            "database"
                        } else {
                            "web"
                        }
                        .into(),
                        install_path: format!("C:/Sites/{name}"),
                        installed_version: Some((*installed).into()),
                        state: "installed".into(),
                        detail: String::new(),
                        updated_at: now(),
                    })
                    .collect(),
                problems: Vec::new(),
            },
        );
        self
    }

    fn with_server(mut self, id: &str, change: impl FnOnce(&mut ServerRecord)) -> World {
        change(self.ctx.servers.get_mut(id).unwrap());
        self
    }

    /// What the agent reported of the install ordered as `command`.
    fn install(
        mut self,
        command: &str,
        state: InstallState,
        phase: Option<&str>,
        message: &str,
    ) -> World {
        self.installs.push(CommandInstall {
            server_id: String::new(),
            command_id: command.into(),
            install_id: format!("install-{command}"),
            state,
            phase: phase.map(str::to_owned),
            message: (!message.is_empty()).then(|| message.to_owned()),
            downtime_ms: (state == InstallState::Succeeded).then_some(120),
            rollback_error: None,
            rolled_back: false,
            hook_output: None,
            started_at: now() - Duration::seconds(60),
            finished_at: (state != InstallState::Running).then(|| now() - Duration::seconds(5)),
            last_event_at: Some(now() - Duration::seconds(10)),
        });
        self
    }

    /// What the failing hook of the install ordered as `command` wrote to
    /// stderr.
    fn stderr(mut self, command: &str, lines: &[&str]) -> World {
        let install = self
            .installs
            .iter_mut()
            .find(|i| i.command_id == command)
            .unwrap();
        install.hook_output = Some(lines.join("\n"));
        self
    }

    /// Windows for `site`, in UTC.
    fn windows(mut self, site: &str, windows: serde_json::Value) -> World {
        let schedule = Schedule {
            time_zone: "UTC".into(),
            windows: serde_json::from_value(windows).unwrap(),
        };
        self.ctx
            .calendars
            .insert(site.into(), schedule.calendar().unwrap());
        self
    }
}

/// A time as seen from now: `+30s`, `-5s`.
fn rel(t: DateTime<Utc>) -> String {
    format!("{:+}s", (t - now()).num_seconds())
}

fn render_changes(text: &mut String, changes: &RolloutChanges) {
    if let Some(r) = &changes.rollout {
        write!(text, "rollout: {}, wave {} open", r.state, r.opened_wave).unwrap();
        if let Some(at) = r.wave_ready_at {
            write!(text, ", next wave at {}", rel(at)).unwrap();
        }
        if r.acknowledged_failures > 0 {
            write!(text, ", {} failures acknowledged", r.acknowledged_failures).unwrap();
        }
        if r.finished_at.is_some() {
            text.push_str(", finished");
        }
        if let Some(reason) = &r.reason {
            write!(text, "\n  reason: {reason}").unwrap();
        }
        text.push('\n');
    }
    for s in &changes.sites {
        write!(text, "site {}: {}", s.site, s.state).unwrap();
        if let (Some(start), Some(end)) = (s.planned_start, s.planned_end) {
            write!(text, ", planned {} to {}", rel(start), rel(end)).unwrap();
        }
        if s.notice_sent_at.is_some() {
            text.push_str(", users warned");
        }
        if s.finished_at.is_some() {
            text.push_str(", finished");
        }
        if let Some(message) = &s.message {
            write!(text, "\n  {message}").unwrap();
        }
        text.push('\n');
    }
    for s in &changes.steps {
        write!(text, "step {}/{}: {}", s.server_id, s.module, s.state).unwrap();
        if s.attempts > 0 {
            write!(text, ", attempt {}", s.attempts).unwrap();
        }
        if let Some(at) = s.next_attempt_at {
            write!(text, ", next at {}", rel(at)).unwrap();
        }
        if s.finished_at.is_some() {
            text.push_str(", finished");
        }
        if let Some(by) = &s.database_decided_by {
            write!(text, ", database decided by {by}").unwrap();
        }
        if let Some(message) = &s.message {
            write!(text, "\n  {message}").unwrap();
        }
        text.push('\n');
    }
    for (actor, action, detail) in &changes.log {
        writeln!(text, "log {actor} {action}: {detail}").unwrap();
    }
}

fn render(decisions: &Decisions) -> String {
    let mut text = String::new();
    render_changes(&mut text, &decisions.changes);
    for job in &decisions.jobs {
        match &job.order {
            Order::Install { version, .. } => writeln!(
                text,
                "order install {} {} on {}",
                job.module,
                version.as_deref().unwrap_or("pending"),
                job.server
            ),
            Order::Rollback { to, .. } => writeln!(
                text,
                "order restore {} {} on {}",
                job.module,
                to.as_deref().unwrap_or("previous"),
                job.server
            ),
            Order::DatabaseDiscard { version } => writeln!(
                text,
                "order database discard {} {version} on {}",
                job.module, job.server
            ),
            Order::DatabaseRestore { version, by } => writeln!(
                text,
                "order database restore {} {version} on {} by {by}",
                job.module, job.server
            ),
            Order::Doctor { .. } => writeln!(text, "order preflight on {}", job.server),
            other => writeln!(text, "order {other:?}"),
        }
        .unwrap();
    }
    for notice in &decisions.notices {
        writeln!(text, "notice {} to {}", notice.site, notice.url).unwrap();
    }
    if text.is_empty() {
        text.push_str("nothing\n");
    }
    text
}

/// One pass over `world`.
fn check(world: World, expect: Expect) {
    let decisions = pass(
        &world.ctx,
        &world.strategy,
        &world.rows,
        &world.installs,
        &world.in_flight,
    );
    expect.assert_eq(&render(&decisions));
}

/// An operator's `action` on `world`.
fn check_act(world: World, action: Action, expect: Expect) {
    let text = match act(&world.ctx, &world.rows, &world.installs, &action, "carol") {
        Ok(changes) => {
            let mut text = String::new();
            render_changes(&mut text, &changes);
            text
        }
        Err(conflict) => format!("refused: {conflict}\n"),
    };
    expect.assert_eq(&text);
}

/// The agent's `result` for the order `command` of `server/module`.
fn check_answer(
    world: World,
    id: &str,
    kind: Ordered,
    result: Result<&str, OrderError>,
    expect: Expect,
) {
    let (server, module) = id.split_once('/').unwrap();
    let answer = Answer {
        server: server.into(),
        module: module.into(),
        command_id: "c1".into(),
        kind,
        result: result.map(str::to_owned),
        report: None,
    };
    let text = match ordered(&world.rows, &world.strategy, now(), &answer) {
        Some(changes) => {
            let mut text = String::new();
            render_changes(&mut text, &changes);
            text
        }
        None => "ignored\n".into(),
    };
    expect.assert_eq(&text);
}

/// Site acme, one server with the database and ecommerce, both pending.
fn acme(strategy: serde_json::Value) -> World {
    world(strategy)
        .site("acme", 1, SiteState::Running)
        .step("acme", "acme-web/database", 0, StepState::Pending)
        .step("acme", "acme-web/ecommerce", 1, StepState::Pending)
        .server(
            "acme-web",
            true,
            &[
                ("database", "1.0.0", Some("2.0.0")),
                ("ecommerce", "1.0.0", Some("2.0.0")),
            ],
        )
}

fn ordered_step(state: StepState) -> World {
    acme(json!({})).with_step("acme-web/database", |s| {
        s.state = state;
        s.attempts = 1;
        s.command_id = Some("c1".into());
        s.ordered_at = Some(now() - Duration::seconds(60));
        s.started_at = Some(now() - Duration::seconds(60));
    })
}

/// Acme with the database installed and ecommerce failed for good.
fn half_updated(strategy: serde_json::Value) -> World {
    acme(strategy)
        .with_step("acme-web/database", |s| {
            s.state = StepState::Succeeded;
            s.attempts = 1;
            s.command_id = Some("c0".into());
        })
        .with_step("acme-web/ecommerce", |s| {
            s.state = StepState::Failed;
            s.attempts = 2;
            s.command_id = Some("c1".into());
            s.message = Some("failed in phase POSTINSTALL: exit code 1".into());
        })
        .with_server("acme-web", |s| {
            s.modules[0].installed_version = Some("2.0.0".into())
        })
        .install(
            "c1",
            InstallState::Failed,
            Some("POSTINSTALL"),
            "exit code 1",
        )
}

fn rolling_back() -> World {
    half_updated(json!({"failure": {"max_failed_sites": 1}}))
        .with_site("acme", |s| s.state = SiteState::RollingBack)
        .with_step("acme-web/database", |s| {
            s.state = StepState::RollingBack;
            s.rollback_command_id = Some("r1".into());
            s.ordered_at = Some(now() - Duration::seconds(30));
        })
}
