//! The Raft consensus core: a deterministic state machine with no I/O, no clock and no threads.
//!
//! The shape follows etcd-io/raft and raft-rs: the driver feeds [`RawNode::tick`],
//! [`RawNode::step`] and client inputs, then takes a [`Ready`] (what to persist, send and
//! apply) and calls [`RawNode::advance`]. The wire types are the seed's RPCs from
//! `proto/raft.proto` ([`crate::proto::raftpb`]).
//!
//! # What a driver must do
//!
//! - **Each `Ready`**: persist `snapshot`, then `entries` (replacing any conflicting suffix),
//!   then `hard_state`, durably; only then send `messages`, apply `committed_entries` in
//!   order and call [`RawNode::advance`] with the `Ready`, before taking the next one.
//! - **Membership** takes effect when applied: for an `ENTRY_CONF_CHANGE` entry call
//!   [`RawNode::apply_conf_change`] and persist the returned `ConfState` atomically with the
//!   applied index, so that [`Storage::initial_state`] always returns the membership *as of
//!   the applied index*. Installing a snapshot sets it from the snapshot's metadata.
//! - **Restart**: set [`Config::applied`] to the state machine's persisted applied index; if
//!   the storage's snapshot is newer than the state machine, restore the state machine from
//!   it first.
//! - **A new cluster**: every founding member persists [`bootstrap`]'s entries and hard state
//!   with an *empty* membership and starts with `applied = 0`; the membership is then built
//!   by applying those entries, exactly as on a member that joins later with empty storage.
//! - **Snapshots** for compaction: create one at the applied index (data, `ConfState` at that
//!   index) and compact up to it; a lagging follower then receives it in chunks. Bytes of a
//!   snapshot should be the same for the same (index, term) on one node, so that a transfer
//!   interrupted by the leader's restart resumes instead of starting over.
//! - **Removed members** never campaign but may still be asked to vote by a member that has
//!   not yet learned of the change; keep them running a little while after their removal.
//!   A leader that is removed keeps leading (refusing proposals) until the new voters know of
//!   the change, then steps down; moving leadership away first avoids that pause.

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
