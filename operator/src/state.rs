//! What the reconciler observed about one cluster, as plain data for the planner.
//!
//! Pods and claims are indexed by ordinal; membership comes from the cluster's own member list
//! and per-member status. The planner never counts pods to decide membership.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::membership::EndpointStatus;

/// The StatefulSet as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedStatefulSet {
    pub replicas: i32,
    /// The StatefulSet controller has seen the latest spec (`observedGeneration >= generation`),
    /// so pods it creates from now on use the latest template.
    pub up_to_date: bool,
}

/// A member pod as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPod {
    pub ready: bool,
    /// The `raftkv.dev/revision` annotation it was created with.
    pub revision: Option<String>,
    pub terminating: bool,
}

/// A member's data claim as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedClaim {
    /// `spec.resources.requests.storage`.
    pub requested: Option<String>,
    /// `status.capacity.storage`: what the volume holds now (absent until bound).
    pub capacity: Option<String>,
}

/// One member of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMember {
    pub id: u64,
    /// The ordinal its peer URL points at; `None` for a member this operator did not create.
    pub ordinal: Option<i32>,
    pub is_learner: bool,
    /// Its own status, when it answered.
    pub status: Option<EndpointStatus>,
}

impl ObservedMember {
    /// Answered, knows a leader, reports no errors.
    pub fn healthy(&self) -> bool {
        self.status.is_some_and(|s| s.leader != 0 && !s.has_errors)
    }

    /// Applied index within `max_lag` entries of the leader's last index.
    pub fn caught_up(&self, leader_index: u64, max_lag: u64) -> bool {
        self.status.is_some_and(|s| s.raft_applied_index.saturating_add(max_lag) >= leader_index)
    }
}

/// The Raft group, read through its own API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    pub members: Vec<ObservedMember>,
    pub leader: Option<u64>,
    /// The leader's last log index (0 when no leader answered).
    pub leader_index: u64,
}

impl Membership {
    pub fn by_ordinal(&self, ordinal: i32) -> Option<&ObservedMember> {
        self.members.iter().find(|m| m.ordinal == Some(ordinal))
    }

    pub fn voters(&self) -> impl Iterator<Item = &ObservedMember> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    pub fn leader_ordinal(&self) -> Option<i32> {
        let leader = self.leader?;
        self.members.iter().find(|m| m.id == leader)?.ordinal
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedState {
    pub now: Timestamp,
    pub statefulset: Option<ObservedStatefulSet>,
    pub pods: BTreeMap<i32, ObservedPod>,
    /// Data claims by ordinal.
    pub pvcs: BTreeMap<i32, ObservedClaim>,
    /// `None` when no member answered MemberList.
    pub membership: Option<Membership>,
}
