//! Rollouts: one coordinated update of a release across every server of a
//! set of sites.
//!
//! - [`strategy`]: what a rollout is asked to do (module order, waves,
//!   failure policy, users' notice) and sites' maintenance windows, with the
//!   calendar arithmetic. Pure.
//! - [`plan`]: the plan shown before anything starts. Pure.
//! - [`engine`]: the task that moves rollouts forward from their rows in
//!   SQLite, the only writer of those rows.
//! - [`api`]: the REST endpoints.

pub mod api;
pub mod engine;
pub mod plan;
pub mod strategy;

pub use engine::Rollouts;
