//! The cluster's own membership API (etcd v3 Cluster and Maintenance services), behind a trait.
//!
//! Membership is read from and changed through the running cluster, never inferred from pods:
//! a pod that is briefly gone is still a member, and only the member list says who votes. The
//! trait keeps the reconciler testable: [`etcd::EtcdMembership`] talks to real members (kvnode
//! or etcd; `operator/tests/membership_kvnode.rs` and `reconcile_kvnode.rs` run it against
//! in-process kvnode members), and the tests' `FakeCluster` (`operator/tests/support/
//! fake_cluster.rs`, test-only code) simulates a Raft group in memory for the scenarios that need
//! faults kvnode cannot be told to have (a lagging or broken member).

pub mod etcd;
pub mod secret_tls;

use async_trait::async_trait;

/// One entry of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published its name.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What one member says about itself (Maintenance.Status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStatus {
    pub member_id: u64,
    /// Leader as this member knows it; 0 when it has none.
    pub leader: u64,
    /// Index of the last entry in this member's log.
    pub raft_index: u64,
    /// Index of the last entry applied to this member's state machine.
    pub raft_applied_index: u64,
    pub raft_term: u64,
    pub is_learner: bool,
    /// The member reported errors (alarms such as NOSPACE or CORRUPT).
    pub has_errors: bool,
}

/// A failed membership call.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("no member answered at {endpoints:?}: {message}")]
    Unreachable { endpoints: Vec<String>, message: String },
    #[error("membership call {call} refused: {message}")]
    Refused { call: &'static str, message: String },
}

/// Calls on one cluster's Cluster and Maintenance APIs. `endpoints` are client URLs of the
/// members; calls that must reach a particular member (Status, MoveLeader) take one endpoint.
#[async_trait]
pub trait MembershipClient: Send + Sync {
    /// MemberList through any reachable member.
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, MembershipError>;
    /// Maintenance.Status of the member serving `endpoint`.
    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, MembershipError>;
    /// MemberAdd with `isLearner`: the new member receives the log but does not vote.
    async fn add_learner(&self, endpoints: &[String], peer_url: &str) -> Result<Member, MembershipError>;
    /// MemberPromote: the learner becomes a voter (refused by the cluster until caught up).
    async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError>;
    /// MemberRemove.
    async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError>;
    /// Maintenance.MoveLeader, sent to the current leader's endpoint.
    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), MembershipError>;
}

/// Formats a member id as `etcdctl` does (lower-case hex, no prefix).
pub fn format_id(id: u64) -> String {
    format!("{id:x}")
}

/// Parses an id printed by [`format_id`].
pub fn parse_id(id: &str) -> Option<u64> {
    u64::from_str_radix(id, 16).ok()
}
