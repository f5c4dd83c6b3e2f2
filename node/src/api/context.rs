//! What every client-facing service of a member shares: its identity and limits, and the waits
//! a request makes on the way through the driver (for a leader, for its write to apply here,
//! for a linearizable read index). Any member serves any request: a follower's writes and
//! read index requests travel to the leader inside Raft, and the answer comes from this
//! member's own apply.

use std::time::Duration;

use tokio::time::Instant;

use crate::driver::{DriverError, NodeHandle};
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::{AlarmRequest, AlarmType, ResponseHeader};
use crate::proto::kvserverpb::{InternalRequest, internal_request};
use crate::proto::raftpb::ConfChange;
use crate::storage::{ApplyResult, KvStore, Store};

use super::errors::EtcdError;

/// Limits on client requests (etcd's `--max-request-bytes`, `--max-txn-ops`, quota).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Writes that add data are refused once the database file is larger than this.
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a write or linearizable read may wait for consensus before failing.
    pub request_timeout: Duration,
    /// How long a request waits for a leader to appear before failing with "no leader".
    pub leader_wait: Duration,
}

/// Shared by the client services of one member.
pub struct ApiContext {
    pub node: NodeHandle,
    pub store: Store,
    pub kv: KvStore,
    pub cluster_id: u64,
    pub member_id: u64,
    pub cluster_token: String,
    pub limits: Limits,
}

impl ApiContext {
    pub fn new(
        node: NodeHandle,
        store: Store,
        cluster_id: u64,
        member_id: u64,
        cluster_token: String,
        limits: Limits,
    ) -> Self {
        Self { node, kv: store.kv().clone(), store, cluster_id, member_id, cluster_token, limits }
    }

    /// A response header as of `revision` (the revision the answer reflects).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.status().term,
        }
    }

    /// A header at the store's current revision.
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.kv.current_revision().unwrap_or(0))
    }

    /// Rejects requests larger than `--max-request-bytes`, as etcd does before proposing.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), EtcdError> {
        if encoded_len > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }

    /// Refuses writes that add data once the database is over `--quota-backend-bytes`, as
    /// etcd does (deletes and compactions stay allowed so space can be freed).
    pub async fn check_quota(&self) -> Result<(), EtcdError> {
        if self.kv.active_alarms().nospace() {
            return Err(EtcdError::NoSpace);
        }
        match self.store.file_size() {
            Ok(size) if size > self.limits.quota_backend_bytes => {
                // As etcd: the member that finds the database full raises NOSPACE through the
                // log, so every member refuses what would add data until it is disarmed.
                let raise = AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: self.member_id,
                    alarm: AlarmType::Nospace as i32,
                };
                if let Err(e) = self.propose(internal_request::Request::Alarm(raise)).await {
                    tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
                }
                Err(EtcdError::NoSpace)
            }
            _ => Ok(()),
        }
    }

    /// Proposes a write and waits until this member has applied it. A proposal dropped for
    /// want of a leader was never sent, so it is made again once a leader is known (within
    /// `--election-timeout`-derived bounds): while an election settles a client sees success,
    /// "no leader" or a timeout, never a spurious failure.
    pub async fn propose(&self, request: internal_request::Request) -> Result<ApplyResult, EtcdError> {
        let request = InternalRequest { request: Some(request), ..Default::default() };
        self.until_leader_known(|| self.node.propose(request.clone())).await
    }

    /// Proposes a membership change (through the leader, inside Raft) and waits until this
    /// member has applied it.
    pub async fn conf_change(&self, cc: ConfChange) -> Result<ApplyResult, EtcdError> {
        self.until_leader_known(|| self.node.conf_change(cc.clone())).await
    }

    async fn until_leader_known<F, Fut>(&self, call: F) -> Result<ApplyResult, EtcdError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<ApplyResult, DriverError>>,
    {
        let deadline = Instant::now() + self.limits.request_timeout;
        let leader_deadline = Instant::now() + self.limits.leader_wait;
        loop {
            match tokio::time::timeout_at(deadline, call()).await {
                Err(_) => return Err(EtcdError::Timeout),
                Ok(Err(DriverError::NoLeader)) => self.wait_for_leader(leader_deadline.min(deadline)).await?,
                Ok(result) => return result.map_err(EtcdError::from),
            }
        }
    }

    /// Waits until this member knows a leader, or fails with "no leader" at `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<(), EtcdError> {
        let mut rx = self.node.subscribe();
        let known = async {
            loop {
                if rx.borrow_and_update().leader_id.is_some() {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(EtcdError::Stopped);
                }
            }
        };
        tokio::time::timeout_at(deadline, known).await.unwrap_or(Err(EtcdError::NoLeader))
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex:
    /// on a follower, the leader is asked inside Raft and the read is then served here).
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        match tokio::time::timeout_at(deadline, self.node.read_barrier()).await {
            Ok(result) => result.map(drop).map_err(EtcdError::from),
            Err(_) if self.node.status().leader_id.is_none() => Err(EtcdError::NoLeader),
            Err(_) => Err(EtcdError::Timeout),
        }
    }
}
