//! raftkv's node: a Raft-replicated key-value store on redb that serves the etcd v3 API.
//!
//! Layers, each depending only on the ones above it:
//! - [`proto`]: generated wire types (peer protocol; etcd API).
//! - [`raft`]: the consensus core, a deterministic state machine with no I/O.
//! - [`storage`]: the member's redb database: Raft log and the MVCC key-value state machine.
//! - [`config`]: the command-line/environment flags, shared with the operator's tests.

pub mod config;
pub mod proto;
/// The consensus core (crate `raft`), re-exported so `kvnode::raft` names it.
pub use raft;
pub mod server;
pub mod storage;
