//! Commands, package offers, holds, command outcomes and install reports:
//! the domain types of [`crate::link`] to and from their wire messages.

use chrono::{DateTime, Utc};

use crate::domain::{ParseError, Version};
use crate::link::{
    AgentCommand, CommandOutcome, InstallProgress, InstallResult, PackageOffer, ToAgent,
};
use crate::v1::{self, command, controller_message};

/// Empty on the wire is `None` here.
pub(super) fn non_empty(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

/// A time on the wire (unix ms); 0 is `None`.
pub(super) fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms != 0)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// A time that must be there; a missing one reads as now.
fn time_or_now(ms: i64) -> DateTime<Utc> {
    time(ms).unwrap_or_else(Utc::now)
}

impl From<ToAgent> for v1::ControllerMessage {
    fn from(message: ToAgent) -> Self {
        let body = match message {
            ToAgent::Command { id, command } => controller_message::Body::Command(v1::Command {
                command_id: id,
                kind: command.map(command::Kind::from),
            }),
            ToAgent::Announce {
                packages,
                withdrawn,
            } => controller_message::Body::AvailablePackages(v1::AvailablePackages {
                packages: packages
                    .into_iter()
                    .map(v1::AvailablePackage::from)
                    .collect(),
                withdrawn_sha256: withdrawn,
            }),
            ToAgent::Hold(rollout) => controller_message::Body::Hold(v1::Hold {
                rollout: rollout.unwrap_or_default(),
            }),
        };
        v1::ControllerMessage { body: Some(body) }
    }
}

impl From<AgentCommand> for command::Kind {
    fn from(command: AgentCommand) -> Self {
        match command {
            AgentCommand::RefreshInventory => {
                command::Kind::RefreshInventory(v1::RefreshInventory {})
            }
            AgentCommand::Install {
                module,
                sha256,
                allow_downgrade,
                version,
                planned_end,
                agent_update_budget_seconds,
            } => command::Kind::InstallModule(v1::InstallModule {
                module,
                sha256: sha256.unwrap_or_default(),
                allow_downgrade,
                version: version.unwrap_or_default(),
                planned_end_unix_ms: planned_end.map_or(0, |t| t.timestamp_millis()),
                agent_update_budget_seconds: agent_update_budget_seconds.unwrap_or(0),
            }),
            AgentCommand::Rollback {
                module,
                to,
                keep_database,
            } => command::Kind::RollbackModule(v1::RollbackModule {
                module,
                to_version: to.unwrap_or_default(),
                keep_database,
            }),
            AgentCommand::DatabaseDiscard { module, version } => {
                command::Kind::DatabaseDiscard(v1::DatabaseDiscard { module, version })
            }
            AgentCommand::DatabaseRestore {
                module,
                version,
                by,
            } => command::Kind::DatabaseRestore(v1::DatabaseRestore {
                module,
                version,
                by,
            }),
            AgentCommand::DatabaseReview { module } => {
                command::Kind::DatabaseReview(v1::DatabaseReview { module })
            }
            AgentCommand::Doctor { preflight, modules } => {
                command::Kind::Doctor(v1::Doctor { preflight, modules })
            }
            AgentCommand::DatabaseScript {
                module,
                script,
                by,
                mark_applied,
            } => command::Kind::DatabaseScript(v1::DatabaseScript {
                module,
                script,
                by,
                mark_applied,
            }),
        }
    }
}

impl From<command::Kind> for AgentCommand {
    fn from(kind: command::Kind) -> Self {
        match kind {
            command::Kind::RefreshInventory(_) => AgentCommand::RefreshInventory,
            command::Kind::InstallModule(order) => AgentCommand::Install {
                module: order.module,
                sha256: non_empty(order.sha256),
                allow_downgrade: order.allow_downgrade,
                version: non_empty(order.version),
                planned_end: time(order.planned_end_unix_ms),
                agent_update_budget_seconds: Some(order.agent_update_budget_seconds)
                    .filter(|s| *s > 0),
            },
            command::Kind::RollbackModule(order) => AgentCommand::Rollback {
                module: order.module,
                to: non_empty(order.to_version),
                keep_database: order.keep_database,
            },
            command::Kind::DatabaseDiscard(order) => AgentCommand::DatabaseDiscard {
                module: order.module,
                version: order.version,
            },
            command::Kind::DatabaseRestore(order) => AgentCommand::DatabaseRestore {
                module: order.module,
                version: order.version,
                by: order.by,
            },
            command::Kind::DatabaseReview(order) => AgentCommand::DatabaseReview {
                module: order.module,
            },
            command::Kind::Doctor(order) => AgentCommand::Doctor {
                preflight: order.preflight,
                modules: order.modules,
            },
            command::Kind::DatabaseScript(order) => AgentCommand::DatabaseScript {
                module: order.module,
                script: order.script,
                by: order.by,
                mark_applied: order.mark_applied,
            },
        }
    }
}

/// What an agent makes of a controller's message: `None` for a welcome
/// (the handshake reads it) or an empty body.
impl TryFrom<v1::ControllerMessage> for ToAgent {
    type Error = ParseError;

    fn try_from(message: v1::ControllerMessage) -> Result<Self, ParseError> {
        match message.body {
            Some(controller_message::Body::Command(command)) => Ok(ToAgent::Command {
                id: command.command_id,
                command: command.kind.map(AgentCommand::from),
            }),
            Some(controller_message::Body::AvailablePackages(available)) => Ok(ToAgent::Announce {
                // A package whose version does not parse is one this agent
                // cannot order by version: it is left out.
                packages: available
                    .packages
                    .into_iter()
                    .filter_map(|p| PackageOffer::try_from(p).ok())
                    .collect(),
                withdrawn: available.withdrawn_sha256,
            }),
            Some(controller_message::Body::Hold(hold)) => {
                Ok(ToAgent::Hold(non_empty(hold.rollout)))
            }
            Some(controller_message::Body::Welcome(_)) => Err(ParseError::new(
                "a welcome outside the handshake".to_owned(),
            )),
            None => Err(ParseError::new("an empty controller message".to_owned())),
        }
    }
}

impl From<PackageOffer> for v1::AvailablePackage {
    fn from(p: PackageOffer) -> Self {
        v1::AvailablePackage {
            module: p.module,
            version: p.version.to_string(),
            kind: p.kind,
            sha256: p.sha256,
            signature: p.signature,
            url: p.url,
            size: p.size,
            release_version: p.release_version,
            release_notes: p.release_notes,
            platform: p.platform,
        }
    }
}

impl TryFrom<v1::AvailablePackage> for PackageOffer {
    type Error = ParseError;

    fn try_from(p: v1::AvailablePackage) -> Result<Self, ParseError> {
        Ok(PackageOffer {
            version: Version::parse(&p.version)?,
            module: p.module,
            kind: p.kind,
            sha256: p.sha256,
            signature: p.signature,
            url: p.url,
            size: p.size,
            release_version: p.release_version,
            release_notes: p.release_notes,
            platform: p.platform,
        })
    }
}

impl From<CommandOutcome> for v1::CommandOutcome {
    fn from(o: CommandOutcome) -> Self {
        v1::CommandOutcome {
            command_id: o.command_id,
            ok: o.ok,
            message: o.message,
        }
    }
}

impl From<v1::CommandOutcome> for CommandOutcome {
    fn from(o: v1::CommandOutcome) -> Self {
        CommandOutcome {
            command_id: o.command_id,
            ok: o.ok,
            message: o.message,
        }
    }
}

impl From<InstallProgress> for v1::InstallProgress {
    fn from(p: InstallProgress) -> Self {
        v1::InstallProgress {
            install_id: p.install_id,
            module: p.module,
            to_version: p.to_version,
            phase: p.phase.unwrap_or_default(),
            kind: p.kind,
            text: p.text,
            at_unix_ms: p.at.timestamp_millis(),
            command_id: p.command_id.unwrap_or_default(),
        }
    }
}

impl From<v1::InstallProgress> for InstallProgress {
    fn from(p: v1::InstallProgress) -> Self {
        InstallProgress {
            install_id: p.install_id,
            module: p.module,
            to_version: p.to_version,
            command_id: non_empty(p.command_id),
            phase: non_empty(p.phase),
            kind: p.kind,
            text: p.text,
            at: time_or_now(p.at_unix_ms),
        }
    }
}

impl From<InstallResult> for v1::InstallResult {
    fn from(r: InstallResult) -> Self {
        v1::InstallResult {
            install_id: r.install_id,
            module: r.module,
            from_version: r.from_version.unwrap_or_default(),
            to_version: r.to_version,
            ok: r.ok,
            downtime_ms: r.downtime_ms,
            message: r.message,
            phase: r.phase.unwrap_or_default(),
            hook_output: r.hook_output,
            rolled_back: r.rolled_back,
            rollback_error: r.rollback_error.unwrap_or_default(),
            warnings: r.warnings,
            started_at_unix_ms: r.started_at.timestamp_millis(),
            finished_at_unix_ms: r.finished_at.timestamp_millis(),
            command_id: r.command_id.unwrap_or_default(),
        }
    }
}

impl From<v1::InstallResult> for InstallResult {
    fn from(r: v1::InstallResult) -> Self {
        InstallResult {
            install_id: r.install_id,
            module: r.module,
            from_version: non_empty(r.from_version),
            to_version: r.to_version,
            command_id: non_empty(r.command_id),
            ok: r.ok,
            downtime_ms: r.downtime_ms,
            message: r.message,
            phase: non_empty(r.phase),
            hook_output: r.hook_output,
            rolled_back: r.rolled_back,
            rollback_error: non_empty(r.rollback_error),
            warnings: r.warnings,
            started_at: time_or_now(r.started_at_unix_ms),
            finished_at: time_or_now(r.finished_at_unix_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: ToAgent) -> ToAgent {
        ToAgent::try_from(v1::ControllerMessage::from(message.clone())).expect("parses")
    }

    #[test]
    fn every_command_survives_the_round_trip() {
        let at = DateTime::from_timestamp_millis(1_796_000_000_000).expect("time");
        for command in [
            AgentCommand::RefreshInventory,
            AgentCommand::Install {
                module: "ecommerce".into(),
                sha256: Some("ab".repeat(32)),
                allow_downgrade: true,
                version: Some("2.0.0".into()),
                planned_end: Some(at),
                agent_update_budget_seconds: Some(600),
            },
            AgentCommand::Install {
                module: "ecommerce".into(),
                sha256: None,
                allow_downgrade: false,
                version: None,
                planned_end: None,
                agent_update_budget_seconds: None,
            },
            AgentCommand::Rollback {
                module: "ecommerce".into(),
                to: Some("1.0.0".into()),
                keep_database: true,
            },
            AgentCommand::DatabaseReview {
                module: "database".into(),
            },
            AgentCommand::DatabaseDiscard {
                module: "database".into(),
                version: "1.0.0".into(),
            },
            AgentCommand::DatabaseRestore {
                module: "database".into(),
                version: "1.0.0".into(),
                by: "alice".into(),
            },
            AgentCommand::Doctor {
                preflight: true,
                modules: vec!["ecommerce".into()],
            },
            AgentCommand::DatabaseScript {
                module: "database".into(),
                script: "001.sql".into(),
                by: "carol".into(),
                mark_applied: true,
            },
        ] {
            let message = ToAgent::Command {
                id: "c1".into(),
                command: Some(command),
            };
            assert_eq!(round_trip(message.clone()), message);
        }
        for message in [
            ToAgent::Hold(Some("rollout 7 (release 2.0.0)".into())),
            ToAgent::Hold(None),
            ToAgent::Announce {
                packages: vec![PackageOffer {
                    module: "ecommerce".into(),
                    version: Version::parse("2.0.0").expect("version"),
                    kind: "web".into(),
                    sha256: "ab".repeat(32),
                    signature: "cd".repeat(64),
                    url: "https://controller/api/v1/packages/x/file".into(),
                    size: 42,
                    release_version: "2026.12".into(),
                    release_notes: "# Notes".into(),
                    platform: "linux-x86_64".into(),
                }],
                withdrawn: vec!["ef".repeat(32)],
            },
        ] {
            assert_eq!(round_trip(message.clone()), message);
        }
    }

    #[test]
    fn a_command_this_build_does_not_know_is_kept_as_unknown() {
        let wire = v1::ControllerMessage {
            body: Some(controller_message::Body::Command(v1::Command {
                command_id: "c9".into(),
                kind: None,
            })),
        };
        assert_eq!(
            ToAgent::try_from(wire).expect("parses"),
            ToAgent::Command {
                id: "c9".into(),
                command: None
            }
        );
    }

    #[test]
    fn install_reports_survive_the_round_trip() {
        let at = DateTime::from_timestamp_millis(1_796_000_000_000).expect("time");
        let progress = InstallProgress {
            install_id: "i1".into(),
            module: "ecommerce".into(),
            to_version: "2.0.0".into(),
            command_id: Some("c1".into()),
            phase: Some("PREINSTALL".into()),
            kind: "stdout".into(),
            text: "copying".into(),
            at,
        };
        assert_eq!(
            InstallProgress::from(v1::InstallProgress::from(progress.clone())),
            progress
        );
        let result = InstallResult {
            install_id: "i1".into(),
            module: "ecommerce".into(),
            from_version: Some("1.0.0".into()),
            to_version: "2.0.0".into(),
            command_id: None,
            ok: false,
            downtime_ms: 120,
            message: "PREINSTALL failed".into(),
            phase: Some("PREINSTALL".into()),
            hook_output: vec!["exit 2".into()],
            rolled_back: true,
            rollback_error: None,
            warnings: vec!["no backup".into()],
            started_at: at,
            finished_at: at,
        };
        assert_eq!(
            InstallResult::from(v1::InstallResult::from(result.clone())),
            result
        );
    }
}
