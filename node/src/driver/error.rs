//! What can go wrong in the driver, in two kinds kept apart on purpose:
//!
//! - [`DriverError`]: one request did not produce a result. The member goes on; the client API
//!   turns each variant into the status an etcd client expects (the driver never builds one).
//! - [`FatalError`]: the member cannot go on safely (its storage failed, a committed entry
//!   cannot be applied). The Raft loop stops, fails every waiting request, and the member
//!   exits non-zero rather than serving from a state machine that silently stopped moving.

use crate::raft::{RaftError, StorageError};
use crate::storage::StoreError;

/// Why a request to the Raft loop did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// No leader is known, so nothing was proposed or asked: trying again cannot apply a
    /// request twice.
    #[error("no leader")]
    NoLeader,
    /// A leader-only operation (leadership transfer, replication progress) reached a member
    /// that does not lead; `leader` is the one it knows of.
    #[error("not the leader")]
    NotLeader { leader: Option<u64> },
    /// The leader (or this member's core) refused the proposal: a leadership transfer or a
    /// membership change in progress, an invalid or unsafe membership change, a leader handing
    /// over. Nothing was appended.
    #[error("refused: {0}")]
    Refused(RaftError),
    /// The proposal will never be applied: its term ended without it (the entry was
    /// overwritten, or the message carrying it was lost with its leader).
    #[error("proposal lost with its leader's term")]
    ProposalLost,
    /// The member installed a snapshot while the request waited: the request may or may not be
    /// in it, and this member cannot tell.
    #[error("outcome unknown: the state was replaced by a snapshot")]
    OutcomeUnknown,
    /// Too many requests are queued or the applied index lags the commit index too far; the
    /// member sheds load instead of queueing without bound.
    #[error("too many requests")]
    TooManyRequests,
    /// The Raft loop has stopped (the member is shutting down, or failed).
    #[error("raft loop stopped")]
    Stopped,
    /// The request would not decode back from the entry that carries it, so it was not
    /// proposed: an entry every member must apply has to decode on every member.
    #[error("request does not decode back: {0}")]
    Undecodable(#[source] prost::DecodeError),
}

impl DriverError {
    /// The error a refusal of the core is reported as.
    pub(crate) fn from_raft(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader { leader_hint: None } => DriverError::NoLeader,
            RaftError::NotLeader { leader_hint } => DriverError::NotLeader { leader: leader_hint },
            other => DriverError::Refused(other),
        }
    }
}

/// Why the Raft loop stopped the member.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// The log or the key space could not be written or read.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// The consensus core could not read its log back.
    #[error("the consensus core failed: {0}")]
    Raft(#[source] RaftError),
    /// A committed entry does not decode. Every member holds the same bytes, so skipping it
    /// would be consistent, but it would silently drop a write a client was told succeeded;
    /// proposals are checked to decode before they are made, so this is corruption.
    #[error("committed entry {index} cannot be decoded: {source}")]
    UndecodableEntry {
        index: u64,
        #[source]
        source: prost::DecodeError,
    },
    /// The key-space sync thread is gone.
    #[error("the key-space sync thread stopped")]
    SyncThreadStopped,
    /// The loop's thread ended without reporting how (a panic).
    #[error("the raft loop ended unexpectedly")]
    LoopPanicked,
    /// A thread of the loop could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<RaftError> for FatalError {
    fn from(e: RaftError) -> Self {
        FatalError::Raft(e)
    }
}

impl From<StorageError> for FatalError {
    fn from(e: StorageError) -> Self {
        FatalError::Raft(RaftError::Storage(e))
    }
}
