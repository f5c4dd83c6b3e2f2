//! Errors the core returns to its driver.

use super::storage::StorageError;

/// Why the core refused an input. Stale or hostile peer messages are never a reason to panic:
/// they are ignored (`Ok`) or reported with [`RaftError::InvalidMessage`] so the driver can
/// count them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Only the leader accepts proposals and reads; `leader_hint` is the leader this node
    /// currently knows of, so the caller can forward.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<u64> },
    /// The proposal cannot be accepted right now (for example, this leader was removed).
    #[error("proposal dropped: {0}")]
    ProposalDropped(&'static str),
    /// A configuration change is already in the log and not yet applied; changes go one at a
    /// time so that consecutive configurations always share a majority.
    #[error("a configuration change is already pending")]
    ConfChangePending,
    /// Leadership is being handed over; proposals would be lost with the old leader.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// After the membership change fewer voters than a quorum would be members the leader
    /// currently hears from (etcd's strict reconfiguration check).
    #[error("not enough active voters after the membership change")]
    NotEnoughActiveVoters,
    /// The learner to promote has not caught up with the leader's log yet.
    #[error("the learner is not caught up with the leader")]
    LearnerNotReady,
    /// The configuration given to the core is unusable.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The membership change is not valid against the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// A peer message was malformed or contradicts this node's state; it was ignored.
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// Persisted state could not be read or is inconsistent.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
