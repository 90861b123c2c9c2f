//! The states a rollout, its sites and its steps can be in, and an
//! install's as agents report it: one enum each,
//! stored by name (the schema's `CHECK` constraints refuse any other), shown
//! by label, and asked what they allow (the engine refuses with the same
//! answers the dashboard reads from `GET /api/v1/rollouts/states`).
//!
//! Adding a state is a compiler error everywhere a `match` must decide
//! about it, and a migration to widen the `CHECK`.

use serde::Serialize;
use utoipa::ToSchema;

/// Declares a state enum with its stored name and its label, in one list.
macro_rules! states {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal, $label:literal;)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every state, in the order of the lifecycle.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// What an operator reads.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        // Stored as text on either engine (a `TEXT` column with a `CHECK`).
        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            for<'a> &'a str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                $name::ALL
                    .iter()
                    .copied()
                    .find(|state| state.as_str() == text)
                    .ok_or_else(|| format!("no {} is called {text:?}", stringify!($name)).into())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// A rollout's state.
    RolloutState {
        Running = "running", "running";
        /// No new site starts: an operator paused it, a gate waits, or too
        /// many sites failed.
        Paused = "paused", "paused";
        Cancelled = "cancelled", "cancelled";
        Succeeded = "succeeded", "succeeded";
        Failed = "failed", "failed";
    }
}

states! {
    /// A site's state within a rollout.
    SiteState {
        /// Its wave has not come.
        Waiting = "waiting", "waiting for its wave";
        /// Its wave has come; waiting for its users' notice or its window.
        Scheduled = "scheduled", "scheduled";
        Running = "running", "running";
        Succeeded = "succeeded", "succeeded";
        /// Stopped for an operator.
        Failed = "failed", "failed";
        RollingBack = "rolling_back", "rolling back";
        RolledBack = "rolled_back", "rolled back";
        RollbackFailed = "rollback_failed", "rollback failed";
        Cancelled = "cancelled", "cancelled";
        /// Its files are back, an upgraded database is not: an operator
        /// restores its backup or keeps it.
        DatabaseDecision = "database_decision", "waiting for a database decision";
        /// A server of the site failed the checks made before taking it
        /// down: nothing was touched; checked again, or an operator
        /// overrides.
        PreflightFailed = "preflight_failed", "preflight failed";
    }
}

states! {
    /// One module on one server within a rollout.
    StepState {
        Pending = "pending", "pending";
        /// Ordered; the agent has not accepted yet.
        Starting = "starting", "starting";
        Running = "running", "running";
        Succeeded = "succeeded", "succeeded";
        /// Already at (or beyond) the release's version.
        Skipped = "skipped", "skipped";
        Failed = "failed", "failed";
        /// An operator left it out.
        Excluded = "excluded", "excluded";
        Cancelled = "cancelled", "cancelled";
        RollingBack = "rolling_back", "rolling back";
        RolledBack = "rolled_back", "rolled back";
        RollbackFailed = "rollback_failed", "rollback failed";
        /// A customized database waits for its guided upgrade.
        Review = "review", "waiting for a database review";
        /// Its files are back; its database stays at the new version until
        /// an operator (or the strategy) restores its backup or keeps it.
        DatabaseDecision = "database_decision", "files back, database waiting for a decision";
        /// Its database is being restored from the backup taken before the
        /// upgrade.
        RestoringDatabase = "restoring_database", "restoring its database";
    }
}

states! {
    /// An install (or restore) on a server, as its agent reports it.
    InstallState {
        Running = "running", "running";
        Succeeded = "succeeded", "succeeded";
        Failed = "failed", "failed";
    }
}

/// What an operator can ask of a rollout, a site or a server in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Allowed {
    Pause,
    Resume,
    Cancel,
    /// Failed sites try again.
    Retry,
    /// A server's modules not yet started are left out.
    Exclude,
    /// A site goes back to the versions it had.
    Rollback,
    /// A rolled-back site's upgraded databases are restored from their
    /// backups: what was written since is lost. A step allows it when its
    /// database is one of those.
    RestoreDatabase,
    /// A rolled-back site's upgraded databases stay at the new version. A
    /// step allows it when its database is one of those.
    KeepDatabase,
    /// A site whose preflight failed starts anyway.
    OverridePreflight,
}

impl RolloutState {
    /// Still moving: sites may start, and operators may steer it.
    pub fn is_live(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }

    /// What an operator may ask of a rollout in this state.
    pub fn allows(self) -> &'static [Allowed] {
        match self {
            RolloutState::Running => &[
                Allowed::Pause,
                Allowed::Cancel,
                Allowed::Retry,
                Allowed::Exclude,
            ],
            RolloutState::Paused => &[
                Allowed::Resume,
                Allowed::Cancel,
                Allowed::Retry,
                Allowed::Exclude,
            ],
            RolloutState::Failed => &[Allowed::Retry],
            RolloutState::Cancelled | RolloutState::Succeeded => &[],
        }
    }
}

impl SiteState {
    /// Nothing more happens to it unless an operator acts.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            SiteState::Succeeded
                | SiteState::Failed
                | SiteState::RolledBack
                | SiteState::RollbackFailed
                | SiteState::Cancelled
        )
    }

    /// Counts against the rollout's failure threshold.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            SiteState::Failed
                | SiteState::RollingBack
                | SiteState::RolledBack
                | SiteState::RollbackFailed
                | SiteState::DatabaseDecision
        )
    }

    /// Its wave or its window has not come, or its servers were not ready:
    /// nothing of it was touched.
    pub fn is_not_started(self) -> bool {
        matches!(
            self,
            SiteState::Waiting | SiteState::Scheduled | SiteState::PreflightFailed
        )
    }

    /// What an operator may ask of a site in this state.
    pub fn allows(self) -> &'static [Allowed] {
        match self {
            SiteState::Failed => &[Allowed::Retry, Allowed::Rollback],
            SiteState::RolledBack | SiteState::RollbackFailed => &[Allowed::Retry],
            SiteState::DatabaseDecision => &[Allowed::RestoreDatabase, Allowed::KeepDatabase],
            SiteState::PreflightFailed => &[Allowed::Retry, Allowed::OverridePreflight],
            SiteState::Cancelled | SiteState::Succeeded => &[Allowed::Rollback],
            SiteState::Waiting
            | SiteState::Scheduled
            | SiteState::Running
            | SiteState::RollingBack => &[],
        }
    }
}

impl StepState {
    /// The module is where the rollout wants it (or left out).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Skipped | StepState::Excluded
        )
    }

    /// Not started yet: it may still be ordered, cancelled or excluded.
    pub fn is_waiting(self) -> bool {
        matches!(self, StepState::Pending | StepState::Review)
    }

    /// An install is ordered or running (a restore is told by its command).
    pub fn is_installing(self) -> bool {
        matches!(self, StepState::Starting | StepState::Running)
    }

    /// Its files or its database are being put back by a site rollback.
    pub fn is_restoring(self) -> bool {
        matches!(self, StepState::RollingBack | StepState::RestoringDatabase)
    }

    /// Something happens on the server now: its output is worth showing.
    pub fn is_under_way(self) -> bool {
        self.is_installing() || self.is_restoring()
    }

    /// What an operator may ask of a step in this state: to leave it out
    /// (through its server), or to restore or keep its database (through
    /// its site, whose decision is for every step waiting for one).
    pub fn allows(self) -> &'static [Allowed] {
        match self {
            step if step.is_waiting() => &[Allowed::Exclude],
            StepState::DatabaseDecision => &[Allowed::RestoreDatabase, Allowed::KeepDatabase],
            _ => &[],
        }
    }
}

/// A state as the dashboard reads it.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateInfo {
    /// The stored name.
    pub name: &'static str,
    pub label: &'static str,
    /// What an operator may ask in this state (of a step: through its
    /// server, or for a database through its site).
    pub allows: &'static [Allowed],
    /// Whether something still happens: a rollout still moves, a site is
    /// not settled, a step's install or restore runs (its output is shown).
    pub under_way: bool,
}

/// Every state of rollouts, sites and steps, with labels and what they allow.
#[derive(Debug, Serialize, ToSchema)]
pub struct States {
    pub rollout: Vec<StateInfo>,
    pub site: Vec<StateInfo>,
    pub step: Vec<StateInfo>,
}

impl States {
    pub fn all() -> States {
        States {
            rollout: infos(RolloutState::ALL, |s| {
                (s.as_str(), s.label(), s.allows(), s.is_live())
            }),
            site: infos(SiteState::ALL, |s| {
                (s.as_str(), s.label(), s.allows(), !s.is_settled())
            }),
            step: infos(StepState::ALL, |s| {
                (s.as_str(), s.label(), s.allows(), s.is_under_way())
            }),
        }
    }
}

/// One [`StateInfo`] per state, from its name, label, allowed actions and
/// whether it is under way.
fn infos<S: Copy>(
    all: &[S],
    describe: impl Fn(S) -> (&'static str, &'static str, &'static [Allowed], bool),
) -> Vec<StateInfo> {
    all.iter()
        .map(|&s| {
            let (name, label, allows, under_way) = describe(s);
            StateInfo {
                name,
                label,
                allows,
                under_way,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_the_serialized_names_and_every_state_has_a_label() {
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let stored = |all: Vec<&str>| all.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            names(serde_json::json!(RolloutState::ALL)),
            stored(RolloutState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names(serde_json::json!(SiteState::ALL)),
            stored(SiteState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            names(serde_json::json!(StepState::ALL)),
            stored(StepState::ALL.iter().map(|s| s.as_str()).collect())
        );
        let all = States::all();
        assert_eq!(all.step.len(), StepState::ALL.len());
        assert!(all.step.iter().all(|s| !s.label.is_empty()));
    }
}
