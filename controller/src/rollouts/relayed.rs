//! An operator's action on a rollout taken by a controller that does not
//! drive the rollouts, when several share one database: carried to the one
//! that does, through the database's relay, and its answer brought back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::decide::Action;
use super::engine::{ActionError, Rollouts};
use crate::db::Database;
use crate::fleet::relay::{Relay, Relayed, Unanswered};

/// An action as relayed.
#[derive(Debug, Serialize, Deserialize)]
struct ActRequest {
    id: i64,
    action: Action,
    actor: String,
}

/// How it ended, as relayed.
#[derive(Debug, Serialize, Deserialize)]
enum ActOutcome {
    Done,
    NotFound(i64),
    Conflict(String),
    Database(String),
}

/// How long the driving controller may take to apply an action.
const PATIENCE: Duration = Duration::from_secs(30);

/// Applies `action` through the controller that drives the rollouts;
/// `None` when none does (no rollout under way: this controller may act).
pub async fn act(
    relay: &Relay,
    db: &Database,
    id: i64,
    action: &Action,
    actor: &str,
) -> Option<Result<(), ActionError>> {
    let request = serde_json::to_string(&ActRequest {
        id,
        action: action.clone(),
        actor: actor.to_owned(),
    })
    .ok()?;
    let answer = relay
        .request(db, "engine", None, &Relayed::Engine { request }, PATIENCE)
        .await;
    match answer {
        Ok(outcome) => Some(match serde_json::from_str(&outcome) {
            Ok(ActOutcome::Done) => Ok(()),
            Ok(ActOutcome::NotFound(id)) => Err(ActionError::NotFound(id)),
            Ok(ActOutcome::Conflict(message)) => Err(ActionError::Conflict(message)),
            Ok(ActOutcome::Database(message)) => Err(ActionError::Conflict(format!(
                "the controller that drives the rollouts cannot read or write the database: {message}"
            ))),
            Err(e) => Err(ActionError::Conflict(format!(
                "the answer of the controller that drives the rollouts does not read: {e}"
            ))),
        }),
        Err(Unanswered::NotTaken) => None,
        Err(Unanswered::NoAnswer) => Some(Err(ActionError::Conflict(
            "the controller that drives the rollouts did not answer in time; try again".into(),
        ))),
        Err(Unanswered::Database(message)) => Some(Err(ActionError::Conflict(format!(
            "cannot reach the controller that drives the rollouts through the database: {message}"
        )))),
    }
}

/// Carries out an action another controller relayed here; its outcome as
/// relayed.
pub async fn carry_out(rollouts: &Rollouts, request: &str) -> String {
    let outcome = match serde_json::from_str::<ActRequest>(request) {
        Ok(request) => match rollouts
            .act_here(request.id, request.action, &request.actor)
            .await
        {
            Ok(()) => ActOutcome::Done,
            Err(ActionError::NotFound(id)) => ActOutcome::NotFound(id),
            Err(ActionError::Conflict(message)) => ActOutcome::Conflict(message),
            Err(ActionError::Database(e)) => ActOutcome::Database(e.to_string()),
        },
        Err(e) => ActOutcome::Conflict(format!("the relayed action does not read: {e}")),
    };
    serde_json::to_string(&outcome).unwrap_or_default()
}
