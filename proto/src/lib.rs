//! The agent <-> controller wire contract.
//!
//! Only this crate and the thin gRPC adapters in the agent and controller see
//! these `prost` types; everything else works on domain types and converts at
//! the edge. The shared vocabulary (`domain`: module names, kinds, versions)
//! lives here too, with the one place that converts it to and from the wire.

pub mod acl;
mod convert;
#[cfg(feature = "database")]
pub mod database;
pub mod doctor;
pub mod domain;
pub mod link;
#[cfg(feature = "runtime")]
pub mod logging;
pub mod package;
#[cfg(feature = "runtime")]
pub mod process;
#[cfg(feature = "runtime")]
pub mod service;
pub mod signing;
pub mod tls;
pub mod web;

/// Generated messages and services of package `flotilla.v1`.
#[allow(missing_debug_implementations)] // generated service code
#[allow(clippy::all)] // generated code
pub mod v1 {
    tonic::include_proto!("flotilla.v1");
}

/// The protocol version this build speaks. Bump it for any change an older
/// peer cannot safely ignore; additive fields and variants need no bump.
///
/// - 1: the link as first shipped.
/// - 2: database commands are answered with a `DatabaseAnswer` (typed),
///   not with JSON in a `CommandOutcome`'s message. No fleet ran protocol 1
///   outside this repository's tests and demo, so it is not accepted.
pub const PROTOCOL_VERSION: u32 = 2;

/// The protocol versions a controller of this build accepts from agents.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[u32] = &[2];

/// The largest message either side accepts on the link: a message above it
/// ends the stream (`OUT_OF_RANGE`, "decoded message length too large")
/// before it is read into memory.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Whether a peer speaking `version` can talk to this build.
pub fn is_supported(version: u32) -> bool {
    SUPPORTED_PROTOCOL_VERSIONS.contains(&version)
}
