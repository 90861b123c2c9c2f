//! Rollouts: one coordinated update of a release across every server of a
//! set of sites.
//!
//! - [`strategy`]: what a rollout is asked to do (module order, waves,
//!   failure policy, users' notice) and sites' maintenance windows, with the
//!   calendar arithmetic. Pure.
//! - [`plan`]: the plan shown before anything starts. Pure.
//! - [`decide`]: what happens next to a rollout, given its rows, the fleet
//!   and the time. Pure, and tested by tables.
//! - [`engine`]: the task that moves rollouts forward from their rows in
//!   the database, the only writer of those rows: it reads, calls
//!   [`decide`], writes, then orders. With several controllers on one
//!   database, only the one holding the lock drives ([`relayed`] carries
//!   the others' operators' actions to it).

pub mod decide;
pub mod engine;
pub mod plan;
pub mod relayed;
pub mod strategy;

pub use engine::Rollouts;
