//! The Raft consensus core: a deterministic state machine with no I/O, no clock and no threads.
//!
//! The shape follows etcd-io/raft and raft-rs: the driver feeds [`RawNode::tick`],
//! [`RawNode::step`] and client inputs, then takes a [`Ready`] (what to persist, send and
//! apply) and calls [`RawNode::advance`]. The wire types are the seed's RPCs from
//! `proto/raft.proto` ([`pb`]).
//!
//! # What a driver must do
//!
//! - **Each `Ready`**: persist `snapshot`, then `entries` (replacing any conflicting suffix),
//!   then `hard_state`, durably; send `messages`; apply `committed_entries` in order; then
//!   call [`RawNode::advance`] with the `Ready`, before taking the next one.
//! - **What may happen before the fsync.** The safe order is persist, then send and apply.
//!   Two things may overtake the fsync (Raft thesis §10.2.1, and etcd's `doc.go`):
//!   - a *leader's* appends, snapshots and TimeoutNow: they claim nothing about the leader's
//!     own disk, and the leader counts its own copy towards commitment only in `advance`, so
//!     followers can write in parallel with it. Everything else — votes, and every response,
//!     which promises that what it acknowledges is durable — waits for the fsync, and so does
//!     every message of a `Ready` that changes the term or the vote;
//!   - applying `committed_entries`: they are durable on a quorum already. The state machine
//!     must then never become durable ahead of the local log across a crash (make it durable
//!     only after the log write that covers the applied entries, or recover it from the log).
//! - **Errors**: `tick`, `ready`, `advance` and the inputs fail only when storage does
//!   ([`RaftError::Storage`]); the node must then stop, not go on with work silently skipped.
//!   A peer message the core refuses ([`RaftError::InvalidMessage`]) is harmless and dropped.
//! - **Proposals and reads** may be made on any node. A follower forwards them to the leader
//!   it knows, inside Raft ([`Proposed::Forwarded`], a read index request); without a known
//!   leader they fail at once with nothing sent. A forwarded proposal can only commit in the
//!   term it was proposed in ([`Proposed::term`]), so a driver that applies an entry of a later
//!   term knows every unanswered proposal of earlier terms is lost; refused batches come back
//!   as [`Ready::rejected_proposals`]. Forwarded read index requests are not tracked by the
//!   follower's core: a driver that hears nothing asks again.
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

/// The peer protocol's messages (`proto/raft.proto`): the seed's RPCs and their extensions.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}

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
pub use core::{Proposed, RejectedProposal, Role, SoftState};
pub use error::RaftError;
pub use mem_storage::MemStorage;
pub use progress::ProgressState;
pub use raw_node::{ProgressStatus, RawNode, Ready, Status};
pub use read_only::ReadState;
pub use storage::{RaftState, Storage, StorageError};
