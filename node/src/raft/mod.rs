//! The Raft consensus core: a deterministic state machine with no I/O, no clock and no threads.
//!
//! The shape follows etcd-io/raft and raft-rs: the driver feeds [`RawNode::tick`],
//! [`RawNode::step`] and client inputs, then takes a [`Ready`] (what to persist, send and
//! apply) and calls [`RawNode::advance`]. The wire types are the seed's RPCs from
//! `proto/raft.proto` ([`crate::proto::raftpb`]).

mod bootstrap;
mod config;
mod core;
mod error;
mod log;
mod mem_storage;
mod progress;
mod raw_node;
mod read_only;
mod rng;
mod snapshot_transfer;
pub mod storage;
mod unstable;

#[cfg(test)]
mod tests;

pub use bootstrap::{Bootstrap, bootstrap, bootstrap_with_context};
pub use config::Config;
pub use core::{Role, SoftState};
pub use error::RaftError;
pub use mem_storage::MemStorage;
pub use progress::ProgressState;
pub use raw_node::{ProgressStatus, RawNode, Ready, Status};
pub use read_only::ReadState;
pub use storage::{RaftState, Storage, StorageError};
