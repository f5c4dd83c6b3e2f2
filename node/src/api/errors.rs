//! The errors clients see, as etcd states them.
//!
//! etcd clients (etcdctl, clientv3, the `etcd-client` crate, jetcd) recognise failures by the
//! gRPC code and the exact message text (`etcdserver: no leader`, ...): some retry on them,
//! some surface them to users verbatim. Each variant here renders one of those messages and maps
//! to the code etcd uses for it, so raftkv fails the way those clients expect.

use tonic::{Code, Status};

use crate::driver::DriverError;
use crate::raft::RaftError;
use crate::storage::KvError;

/// A client-visible failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: leadership transfer in progress")]
    TransferInProgress,
    #[error("etcdserver: a membership change is already in progress")]
    ConfChangePending,
    #[error("etcdserver: not capable")]
    NotCapable,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The Lock and Election services' own errors carry no `etcdserver:` prefix and no code
    /// (etcd's recipes return plain Go errors, which gRPC sends as Unknown).
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("session expired")]
    SessionExpired,
    #[error("etcdserver: invalid argument: {0}")]
    InvalidArgument(String),
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl EtcdError {
    /// The gRPC code etcd answers this failure with.
    pub fn code(&self) -> Code {
        use EtcdError::*;
        match self {
            EmptyKey | RequestTooLarge | TooManyOps | DuplicateKey | KeyNotFound | ValueProvided
            | LeaseProvided | InvalidArgument(_) => Code::InvalidArgument,
            Compacted | FutureRevision => Code::OutOfRange,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists => Code::FailedPrecondition,
            LeaseTtlTooLarge => Code::OutOfRange,
            NoLeader | LeaderChanged | Timeout | Stopped | Unhealthy | NotEnoughStartedMembers => {
                Code::Unavailable
            }
            NotLeader | PeerUrlExists | MemberExists | MemberNotLearner | LearnerNotReady
            | BadLeaderTransferee | TransferInProgress | ConfChangePending => Code::FailedPrecondition,
            NotCapable => Code::Unimplemented,
            Corrupt => Code::DataLoss,
            ElectionNotLeader | ElectionNoLeader | MissingLeaderKey | SessionExpired => Code::Unknown,
            NoSpace | TooManyRequests => Code::ResourceExhausted,
            Internal(_) => Code::Internal,
        }
    }
}

impl From<DriverError> for EtcdError {
    /// What a client hears when the driver could not produce a result. A definitely lost
    /// proposal is "leader changed" (the request can be retried); one whose outcome this member
    /// cannot know is "request timed out", which clients treat as "maybe applied".
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::NoLeader => EtcdError::NoLeader,
            DriverError::NotLeader { .. } => EtcdError::NotLeader,
            DriverError::ProposalLost => EtcdError::LeaderChanged,
            DriverError::OutcomeUnknown => EtcdError::Timeout,
            DriverError::TooManyRequests => EtcdError::TooManyRequests,
            DriverError::Stopped => EtcdError::Stopped,
            DriverError::Undecodable(e) => EtcdError::InvalidArgument(e.to_string()),
            DriverError::Refused(r) => match r {
                RaftError::NotLeader { leader_hint: None } => EtcdError::NoLeader,
                RaftError::NotLeader { .. } => EtcdError::NotLeader,
                RaftError::TransferInProgress => EtcdError::TransferInProgress,
                RaftError::ConfChangePending => EtcdError::ConfChangePending,
                RaftError::NotEnoughActiveVoters => EtcdError::NotEnoughStartedMembers,
                RaftError::LearnerNotReady => EtcdError::LearnerNotReady,
                RaftError::ProposalDropped(_) => EtcdError::LeaderChanged,
                RaftError::InvalidConfChange(reason) => EtcdError::InvalidArgument(reason),
                other => EtcdError::Internal(other.to_string()),
            },
        }
    }
}

impl From<&KvError> for EtcdError {
    fn from(e: &KvError) -> Self {
        match e {
            KvError::EmptyKey => EtcdError::EmptyKey,
            KvError::ValueProvided => EtcdError::ValueProvided,
            KvError::LeaseProvided => EtcdError::LeaseProvided,
            KvError::KeyNotFound => EtcdError::KeyNotFound,
            KvError::LeaseNotFound => EtcdError::LeaseNotFound,
            KvError::LeaseExists => EtcdError::LeaseExists,
            KvError::DuplicateKey => EtcdError::DuplicateKey,
            KvError::TooManyOps => EtcdError::TooManyOps,
            KvError::InvalidSortOption => EtcdError::InvalidArgument("invalid sort option".into()),
            KvError::Compacted { .. } => EtcdError::Compacted,
            KvError::FutureRevision => EtcdError::FutureRevision,
            KvError::NoSpace => EtcdError::NoSpace,
            KvError::Corrupt => EtcdError::Corrupt,
            KvError::Store(s) => EtcdError::Internal(s.to_string()),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_etcd_messages_and_codes() {
        let s: Status = EtcdError::NoLeader.into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: no leader");
        let s: Status = EtcdError::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(s.message(), "etcdserver: mvcc: required revision has been compacted");
        let s: Status = EtcdError::TooManyOps.into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: too many operations in txn request")
        );
    }
}
