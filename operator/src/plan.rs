//! The decisions: what to do next to one cluster, as a pure function of the KVCluster (spec and
//! the operation recorded in its status) and of what was observed.
//!
//! One action per reconcile, one operation per cluster at a time. Every step is derived from
//! observed state, so running the same plan twice (an operator restart, a retried reconcile)
//! never repeats a membership change: a learner already in the member list is not added again, a
//! removed member is not removed again. The operation record in status only pins *which*
//! operation is under way (and its target and deadlines), so that a restarted operator resumes
//! it rather than starting another.
//!
//! Safety rules built in:
//! - membership follows `spec.replicas` and the member list, never pod counts;
//! - a change is started only when a quorum of the resulting group is healthy;
//! - a reused ordinal never rejoins with a stale claim: the claim is deleted before MemberAdd;
//! - pods are restarted one at a time, followers first, the leader last after MoveLeader, each
//!   only once the whole group is healthy and caught up; a restart that does not recover within
//!   the deadline halts the rollout.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::{KVCluster, Operation, OperationKind, PvcPolicy};
use crate::names::ClusterNames;
use crate::resources::{names, statefulset::template_revision};
use crate::state::{Membership, ObservedMember, ObservedState};

/// Tunables of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanConfig {
    /// How long a step may wait for a pod or member to become healthy before the operation is
    /// halted and the cluster reported `Degraded`.
    pub step_timeout: Duration,
    /// A member is caught up when its applied index is within this many entries of the leader's.
    pub max_lag: u64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self { step_timeout: Duration::from_secs(600), max_lag: 1000 }
    }
}

/// The one thing to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the cluster's objects; the members bootstrap themselves.
    Create,
    /// Everything matches the spec.
    Idle,
    /// Nothing can be done until something outside the operator changes.
    Wait(String),
    /// Delete the claim of an ordinal that is not a member (stale data, or the scale-down policy).
    DeletePvc { ordinal: i32 },
    /// MemberAdd the ordinal as a learner.
    AddLearner { ordinal: i32 },
    /// Set the StatefulSet's replicas.
    SetReplicas { replicas: i32 },
    /// MemberPromote a caught-up learner.
    Promote { ordinal: i32, id: u64 },
    /// Maintenance.MoveLeader from the current leader to `to`.
    MoveLeader { from: u64, to: u64, to_ordinal: i32 },
    /// MemberRemove.
    RemoveMember { ordinal: i32, id: u64 },
    /// Delete a pod so the StatefulSet recreates it from the current template.
    RestartPod { ordinal: i32 },
    /// The operation finished.
    Complete(OperationKind),
    /// The operation cannot finish (deadline passed); stop and report `Degraded`.
    Halt(String),
}

impl Action {
    /// Whether this action changes anything (and so deserves an Event and a fresh deadline).
    pub fn is_step(&self) -> bool {
        !matches!(self, Self::Idle | Self::Wait(_) | Self::Halt(_) | Self::Complete(_))
    }
}

/// The planner's answer: the action and the operation record to keep in status afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub action: Action,
    pub operation: Option<Operation>,
}

/// Decides the next action for `kvc`.
pub fn plan(kvc: &KVCluster, obs: &ObservedState, cfg: &PlanConfig) -> Decision {
    let recorded = kvc.status.as_ref().and_then(|s| s.operation.clone());
    let Some(sts) = &obs.statefulset else {
        return Decision { action: Action::Create, operation: recorded };
    };
    let Some(membership) = &obs.membership else {
        let what = if kvc.status.as_ref().is_some_and(|s| !s.members.is_empty()) {
            "no member answers the member list"
        } else {
            "waiting for the members to bootstrap"
        };
        return Decision { action: Action::Wait(what.to_string()), operation: recorded };
    };
    let ctx = Ctx { kvc, obs, cfg, membership, sts_replicas: sts.replicas, revision: template_revision(kvc) };

    if let Some(op) = recorded.filter(|op| ctx.still_relevant(op)) {
        if let Some(reason) = &op.failed {
            return Decision { action: Action::Wait(format!("halted: {reason}")), operation: Some(op) };
        }
        return ctx.continue_op(op);
    }
    match ctx.next_op() {
        Some(op) => ctx.continue_op(op),
        None => Decision { action: Action::Idle, operation: None },
    }
}

struct Ctx<'a> {
    kvc: &'a KVCluster,
    obs: &'a ObservedState,
    cfg: &'a PlanConfig,
    membership: &'a Membership,
    sts_replicas: i32,
    revision: String,
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Ctx<'_> {
    fn generation(&self) -> Option<i64> {
        self.kvc.metadata.generation
    }

    fn new_op(&self, kind: OperationKind, ordinal: Option<i32>) -> Operation {
        let now = Time(self.obs.now);
        let rollout = kind == OperationKind::Rollout;
        Operation {
            kind,
            ordinal,
            target_revision: rollout.then(|| self.revision.clone()),
            target_version: rollout.then(|| self.kvc.spec.version_label()),
            pod: None,
            step: "started".to_string(),
            started_at: now.clone(),
            step_started_at: now,
            failed: None,
            generation: self.generation(),
        }
    }

    /// A recorded operation is dropped when the spec moved on: a failed one when the spec
    /// changed (the user's fix), a rollout to a revision no longer wanted, a scale-up of an
    /// ordinal beyond the new `spec.replicas` (a scale-down then removes it properly).
    fn still_relevant(&self, op: &Operation) -> bool {
        if op.failed.is_some() && op.generation != self.generation() {
            return false;
        }
        match op.kind {
            OperationKind::Rollout => op.target_revision.as_deref() == Some(self.revision.as_str()),
            OperationKind::ScaleUp => op.ordinal.is_some_and(|o| o < self.kvc.spec.replicas),
            OperationKind::ScaleDown => op.ordinal.is_some(),
        }
    }

    /// The operation the spec calls for, if any: membership first, then the rollout.
    fn next_op(&self) -> Option<Operation> {
        let want = self.kvc.spec.replicas;
        let m = self.membership;
        if let Some(learner) = m.members.iter().find(|x| x.is_learner) {
            // A learner left by an interrupted scale-up: finish adding it or take it out.
            let ordinal = learner.ordinal?;
            let kind = if ordinal < want { OperationKind::ScaleUp } else { OperationKind::ScaleDown };
            return Some(self.new_op(kind, Some(ordinal)));
        }
        let voters = m.voters().count();
        let want_count = usize::try_from(want).unwrap_or(0);
        if voters < want_count {
            let ordinal = (0..want).find(|o| m.by_ordinal(*o).is_none())?;
            return Some(self.new_op(OperationKind::ScaleUp, Some(ordinal)));
        }
        if voters > want_count {
            let ordinal = m.voters().filter_map(|x| x.ordinal).max()?;
            return Some(self.new_op(OperationKind::ScaleDown, Some(ordinal)));
        }
        let current = self.kvc.status.as_ref().and_then(|s| s.current_revision.as_deref());
        if !self.outdated().is_empty() || current != Some(self.revision.as_str()) {
            return Some(self.new_op(OperationKind::Rollout, None));
        }
        None
    }

    fn continue_op(&self, op: Operation) -> Decision {
        let action = match (op.kind, op.ordinal) {
            (OperationKind::ScaleUp, Some(ordinal)) => self.scale_up(&op, ordinal),
            (OperationKind::ScaleDown, Some(ordinal)) => self.scale_down(&op, ordinal),
            _ => self.rollout(&op),
        };
        let operation = self.record(op, &action);
        Decision { action, operation }
    }

    /// The operation record after `action`: a fresh deadline after each step, cleared when done.
    fn record(&self, mut op: Operation, action: &Action) -> Option<Operation> {
        match action {
            Action::Complete(_) => return None,
            Action::Halt(reason) => op.failed = Some(reason.clone()),
            a if a.is_step() => {
                op.step = describe(a, &names(self.kvc));
                op.step_started_at = Time(self.obs.now);
                op.pod = match a {
                    Action::RestartPod { ordinal } => Some(names(self.kvc).member(*ordinal)),
                    _ => None,
                };
            }
            _ => {}
        }
        Some(op)
    }

    fn timed_out(&self, op: &Operation) -> bool {
        let limit = SignedDuration::try_from(self.cfg.step_timeout).unwrap_or(SignedDuration::MAX);
        self.obs.now.duration_since(op.step_started_at.0) > limit
    }

    fn wait_or_halt(&self, op: &Operation, what: String) -> Action {
        if self.timed_out(op) {
            Action::Halt(format!("{what} for longer than {}s", self.cfg.step_timeout.as_secs()))
        } else {
            Action::Wait(what)
        }
    }

    fn pod_ready(&self, ordinal: i32) -> bool {
        self.obs.pods.get(&ordinal).is_some_and(|p| p.ready && !p.terminating)
    }

    fn healthy_and_caught_up(&self, m: &ObservedMember) -> bool {
        m.healthy() && m.caught_up(self.membership.leader_index, self.cfg.max_lag)
    }

    /// Ordinals whose pod runs a template other than the desired one.
    fn outdated(&self) -> Vec<i32> {
        self.obs
            .pods
            .iter()
            .filter(|(o, p)| **o < self.sts_replicas && p.revision.as_deref() != Some(self.revision.as_str()))
            .map(|(o, _)| *o)
            .collect()
    }

    fn scale_up(&self, op: &Operation, ordinal: i32) -> Action {
        let m = self.membership;
        let Some(member) = m.by_ordinal(ordinal) else {
            if ordinal < self.sts_replicas {
                // A pod runs under this ordinal without being a member (someone removed it by
                // hand): stop it first, the StatefulSet's highest ordinal only.
                return if ordinal == self.sts_replicas - 1 {
                    Action::SetReplicas { replicas: ordinal }
                } else {
                    Action::Halt(format!("pod of ordinal {ordinal} runs but is not a member"))
                };
            }
            if self.obs.pvcs.contains_key(&ordinal) {
                // The claim holds the data of a member removed earlier: never let it rejoin.
                return Action::DeletePvc { ordinal };
            }
            let unhealthy = m.voters().filter(|v| !v.healthy()).count();
            if unhealthy > 0 {
                return self
                    .wait_or_halt(op, format!("{unhealthy} member(s) unhealthy before adding {ordinal}"));
            }
            return Action::AddLearner { ordinal };
        };
        if self.sts_replicas <= ordinal {
            return Action::SetReplicas { replicas: ordinal + 1 };
        }
        if member.is_learner {
            if !self.healthy_and_caught_up(member) {
                return self.wait_or_halt(op, format!("learner {ordinal} is not started and caught up"));
            }
            // After promotion the group has one more voter; its majority must be healthy.
            let voters = m.voters().count() + 1;
            let healthy = m.voters().filter(|v| v.healthy()).count() + 1;
            if healthy < majority(voters) {
                return self.wait_or_halt(op, format!("promoting {ordinal} would leave no healthy quorum"));
            }
            return Action::Promote { ordinal, id: member.id };
        }
        if member.healthy() && self.pod_ready(ordinal) {
            Action::Complete(OperationKind::ScaleUp)
        } else {
            self.wait_or_halt(op, format!("member {ordinal} is not healthy"))
        }
    }

    /// The healthiest voter other than `except`, to take over leadership: caught up first, then
    /// running the desired template, then the lowest ordinal.
    fn transferee(&self, except: u64) -> Option<(u64, i32)> {
        self.membership
            .voters()
            .filter(|v| v.id != except && v.healthy())
            .filter_map(|v| Some((v, v.ordinal?)))
            .filter(|(_, o)| self.pod_ready(*o))
            .min_by_key(|(v, o)| {
                let updated =
                    self.obs.pods.get(o).and_then(|p| p.revision.as_deref()) == Some(&self.revision);
                (!self.healthy_and_caught_up(v), !updated, *o)
            })
            .map(|(v, o)| (v.id, o))
    }

    fn scale_down(&self, op: &Operation, ordinal: i32) -> Action {
        let m = self.membership;
        if let Some(member) = m.by_ordinal(ordinal) {
            let remaining: Vec<&ObservedMember> = m.voters().filter(|v| v.id != member.id).collect();
            let healthy = remaining.iter().filter(|v| v.healthy()).count();
            if !member.is_learner && healthy < majority(remaining.len()) {
                return self.wait_or_halt(op, format!("removing {ordinal} would leave no healthy quorum"));
            }
            if m.leader == Some(member.id) {
                return match self.transferee(member.id) {
                    Some((to, to_ordinal)) => Action::MoveLeader { from: member.id, to, to_ordinal },
                    None => self.wait_or_halt(op, "no healthy member to take over leadership".to_string()),
                };
            }
            return Action::RemoveMember { ordinal, id: member.id };
        }
        if self.sts_replicas > ordinal {
            return Action::SetReplicas { replicas: ordinal };
        }
        if self.obs.pods.contains_key(&ordinal) {
            return self.wait_or_halt(op, format!("pod of removed member {ordinal} is still terminating"));
        }
        if self.kvc.spec.pvc_retention_policy.when_scaled == PvcPolicy::Delete
            && self.obs.pvcs.contains_key(&ordinal)
        {
            return Action::DeletePvc { ordinal };
        }
        Action::Complete(OperationKind::ScaleDown)
    }

    fn rollout(&self, op: &Operation) -> Action {
        let m = self.membership;
        if !self.obs.statefulset.as_ref().is_some_and(|s| s.up_to_date) {
            return Action::Wait("the StatefulSet controller has not seen the new template".to_string());
        }
        let missing: Vec<i32> = (0..self.sts_replicas).filter(|o| !self.pod_ready(*o)).collect();
        let lagging: Vec<i32> =
            m.members.iter().filter(|x| !self.healthy_and_caught_up(x)).filter_map(|x| x.ordinal).collect();
        let outdated = self.outdated();
        // An outdated member that is down already costs nothing to restart, and restarting it is
        // the only way out when the outdated version itself is what broke it (a rollback).
        let unhealthy = |o: &i32| m.by_ordinal(*o).is_some_and(|x| !x.healthy());
        if let Some(down) = outdated.iter().find(|o| missing.contains(o) || unhealthy(o)) {
            let terminating = self.obs.pods.get(down).is_some_and(|p| p.terminating);
            if !terminating {
                return Action::RestartPod { ordinal: *down };
            }
        }
        if !missing.is_empty() || !lagging.is_empty() {
            let what = format!("pods not ready {missing:?}, members unhealthy or behind {lagging:?}");
            // Only a restart this rollout made can be blamed on the new version.
            return if op.pod.is_some() { self.wait_or_halt(op, what) } else { Action::Wait(what) };
        }
        if outdated.is_empty() {
            return Action::Complete(OperationKind::Rollout);
        }
        let leader = m.leader_ordinal();
        if let Some(follower) = outdated.iter().rev().find(|o| Some(**o) != leader) {
            return Action::RestartPod { ordinal: *follower };
        }
        // Only the leader is left: hand leadership over first (unless it is alone).
        let Some(leader_id) = m.leader else {
            return Action::Wait("no leader".to_string());
        };
        match self.transferee(leader_id) {
            Some((to, to_ordinal)) => Action::MoveLeader { from: leader_id, to, to_ordinal },
            None if m.voters().count() == 1 => Action::RestartPod { ordinal: outdated[0] },
            None => Action::Wait("no healthy member to take over leadership".to_string()),
        }
    }
}

/// Human-readable description of a step, for the operation record and Events.
pub fn describe(action: &Action, names: &ClusterNames) -> String {
    match action {
        Action::Create => "created the cluster's objects".to_string(),
        Action::Idle => "idle".to_string(),
        Action::Wait(why) => format!("waiting: {why}"),
        Action::DeletePvc { ordinal } => format!("deleted claim {}", names.pvc(*ordinal)),
        Action::AddLearner { ordinal } => format!("added {} as a learner", names.member(*ordinal)),
        Action::SetReplicas { replicas } => format!("set StatefulSet replicas to {replicas}"),
        Action::Promote { ordinal, id } => {
            format!("promoted {} ({id:x}) to voter", names.member(*ordinal))
        }
        Action::MoveLeader { from, to, to_ordinal } => {
            format!("moved leadership from {from:x} to {} ({to:x})", names.member(*to_ordinal))
        }
        Action::RemoveMember { ordinal, id } => {
            format!("removed member {} ({id:x})", names.member(*ordinal))
        }
        Action::RestartPod { ordinal } => format!("restarted pod {}", names.member(*ordinal)),
        Action::Complete(kind) => format!("{kind:?} complete"),
        Action::Halt(why) => format!("halted: {why}"),
    }
}

/// StatefulSet replicas to apply with this decision: the planner's when it sets them, the live
/// value otherwise; on creation the members last known (a re-created set) or `spec.replicas`.
pub fn statefulset_replicas(kvc: &KVCluster, obs: &ObservedState, action: &Action) -> i32 {
    if let Action::SetReplicas { replicas } = action {
        return *replicas;
    }
    if let Some(sts) = &obs.statefulset {
        return sts.replicas;
    }
    let known = kvc.status.as_ref().map_or(0, |s| s.members.len());
    if known > 0 { i32::try_from(known).unwrap_or(kvc.spec.replicas) } else { kvc.spec.replicas }
}

/// The size of the Raft group the disruption budget protects: `spec.replicas`, or fewer while
/// the group is smaller (during a scale-up, or right after a scale-down).
pub fn pdb_voters(kvc: &KVCluster, obs: &ObservedState) -> i32 {
    let voters = obs.membership.as_ref().map(|m| i32::try_from(m.voters().count()).unwrap_or(i32::MAX));
    match voters {
        Some(v) if v > 0 => v.min(kvc.spec.replicas),
        _ => kvc.spec.replicas,
    }
}

/// Seconds left before `op`'s step deadline, for requeueing (never negative).
pub fn deadline_in(op: &Operation, now: Timestamp, cfg: &PlanConfig) -> Duration {
    let elapsed = now.duration_since(op.step_started_at.0);
    let limit = SignedDuration::try_from(cfg.step_timeout).unwrap_or(SignedDuration::MAX);
    Duration::try_from(limit - elapsed).unwrap_or(Duration::ZERO)
}

/// Name of the KVCluster, for logs.
pub fn display_name(kvc: &KVCluster) -> String {
    format!("{}/{}", kvc.namespace().unwrap_or_default(), kvc.name_any())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::crd::KVClusterStatus;
    use crate::fixtures::example;
    use crate::membership::EndpointStatus;
    use crate::state::{ObservedClaim, ObservedPod, ObservedStatefulSet};

    const NOW: i64 = 1_000_000;

    fn status(id: u64, leader: u64, applied: u64) -> EndpointStatus {
        EndpointStatus {
            member_id: id,
            leader,
            raft_index: applied,
            raft_applied_index: applied,
            raft_term: 2,
            is_learner: false,
            has_errors: false,
        }
    }

    /// A settled cluster of `n` members (ids 1..=n, ordinal = id-1) led by ordinal `leader`.
    fn healthy(kvc: &mut KVCluster, n: i32, leader: i32) -> ObservedState {
        let revision = template_revision(kvc);
        kvc.status = Some(KVClusterStatus { current_revision: Some(revision.clone()), ..Default::default() });
        let leader_id = leader as u64 + 1;
        let members = (0..n)
            .map(|o| ObservedMember {
                id: o as u64 + 1,
                ordinal: Some(o),
                is_learner: false,
                status: Some(status(o as u64 + 1, leader_id, 100)),
            })
            .collect();
        ObservedState {
            now: Timestamp::from_second(NOW).unwrap(),
            statefulset: Some(ObservedStatefulSet { replicas: n, up_to_date: true }),
            pods: (0..n)
                .map(|o| {
                    (o, ObservedPod { ready: true, revision: Some(revision.clone()), terminating: false })
                })
                .collect::<BTreeMap<_, _>>(),
            pvcs: (0..n).map(|o| (o, ObservedClaim::default())).collect(),
            membership: Some(Membership { members, leader: Some(leader_id), leader_index: 100 }),
        }
    }

    fn decide(kvc: &KVCluster, obs: &ObservedState) -> Decision {
        plan(kvc, obs, &PlanConfig { step_timeout: Duration::from_secs(60), max_lag: 10 })
    }

    fn with_op(kvc: &mut KVCluster, d: &Decision) {
        kvc.status.get_or_insert_with(Default::default).operation = d.operation.clone();
    }

    fn members(obs: &mut ObservedState) -> &mut Membership {
        obs.membership.as_mut().unwrap()
    }

    #[test]
    fn creates_when_there_is_no_statefulset_and_idles_when_settled() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 0);
        assert_eq!(decide(&kvc, &obs), Decision { action: Action::Idle, operation: None });
        obs.statefulset = None;
        assert_eq!(decide(&kvc, &obs).action, Action::Create);
    }

    #[test]
    fn unreachable_cluster_only_waits() {
        let mut kvc = example(1);
        let mut obs = healthy(&mut kvc, 3, 0);
        obs.membership = None;
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
    }

    #[test]
    fn a_missing_pod_is_not_a_scale_in() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 0);
        obs.pods.remove(&1);
        members(&mut obs).members[1].status = None;
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::Idle, "nothing to change: membership matches spec");
        assert_eq!(statefulset_replicas(&kvc, &obs, &d.action), 3);
        assert_eq!(pdb_voters(&kvc, &obs), 3);
    }

    #[test]
    fn scale_up_adds_the_lowest_free_ordinal_after_deleting_its_stale_claim() {
        let mut kvc = example(5);
        let mut obs = healthy(&mut kvc, 3, 0);
        obs.pvcs.insert(3, ObservedClaim::default());
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::DeletePvc { ordinal: 3 });
        let op = d.operation.clone().unwrap();
        assert_eq!((op.kind, op.ordinal), (OperationKind::ScaleUp, Some(3)));
        with_op(&mut kvc, &d);
        obs.pvcs.remove(&3);
        assert_eq!(decide(&kvc, &obs).action, Action::AddLearner { ordinal: 3 });
    }

    #[test]
    fn scale_up_waits_for_unhealthy_voters_then_halts_at_the_deadline() {
        let mut kvc = example(5);
        let mut obs = healthy(&mut kvc, 3, 0);
        members(&mut obs).members[2].status = None;
        let d = decide(&kvc, &obs);
        assert!(matches!(d.action, Action::Wait(_)), "{:?}", d.action);
        with_op(&mut kvc, &d);
        obs.now = Timestamp::from_second(NOW + 61).unwrap();
        let d = decide(&kvc, &obs);
        assert!(matches!(d.action, Action::Halt(_)));
        assert!(d.operation.unwrap().failed.is_some());
    }

    #[test]
    fn learner_is_started_then_promoted_only_when_caught_up() {
        let mut kvc = example(5);
        let mut obs = healthy(&mut kvc, 3, 0);
        members(&mut obs).members.push(ObservedMember {
            id: 9,
            ordinal: Some(3),
            is_learner: true,
            status: None,
        });
        assert_eq!(decide(&kvc, &obs).action, Action::SetReplicas { replicas: 4 });
        obs.statefulset = Some(ObservedStatefulSet { replicas: 4, up_to_date: true });
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
        let mut behind = status(9, 1, 50);
        behind.is_learner = true;
        members(&mut obs).members[3].status = Some(behind);
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
        members(&mut obs).members[3].status = Some(status(9, 1, 95));
        assert_eq!(decide(&kvc, &obs).action, Action::Promote { ordinal: 3, id: 9 });
    }

    #[test]
    fn a_learner_beyond_spec_is_removed() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 0);
        members(&mut obs).members.push(ObservedMember {
            id: 9,
            ordinal: Some(3),
            is_learner: true,
            status: None,
        });
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::RemoveMember { ordinal: 3, id: 9 });
        assert_eq!(d.operation.unwrap().kind, OperationKind::ScaleDown);
    }

    #[test]
    fn scale_down_moves_leadership_off_the_victim_then_removes_then_shrinks() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 5, 4);
        members(&mut obs).members[0].status = Some(status(1, 5, 80)); // behind: not the first choice
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::MoveLeader { from: 5, to: 2, to_ordinal: 1 });
        with_op(&mut kvc, &d);
        *members(&mut obs) = healthy(&mut kvc.clone(), 5, 1).membership.unwrap();
        assert_eq!(decide(&kvc, &obs).action, Action::RemoveMember { ordinal: 4, id: 5 });
        members(&mut obs).members.retain(|m| m.id != 5);
        assert_eq!(decide(&kvc, &obs).action, Action::SetReplicas { replicas: 4 });
        obs.statefulset = Some(ObservedStatefulSet { replicas: 4, up_to_date: true });
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)), "pod 4 still terminating");
        obs.pods.remove(&4);
        // Retain: the claim stays and the operation completes.
        let d = decide(&kvc, &obs);
        assert_eq!(d, Decision { action: Action::Complete(OperationKind::ScaleDown), operation: None });
        kvc.spec.pvc_retention_policy.when_scaled = PvcPolicy::Delete;
        assert_eq!(decide(&kvc, &obs).action, Action::DeletePvc { ordinal: 4 });
    }

    #[test]
    fn scale_down_never_breaks_quorum() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 5, 0);
        // Two of the four remaining members are down: removing ordinal 4 leaves 2 of 4 healthy.
        members(&mut obs).members[1].status = None;
        members(&mut obs).members[2].status = None;
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
        // If the victim is the one that is down, removing it is fine.
        members(&mut obs).members[2].status = Some(status(3, 1, 100));
        members(&mut obs).members[4].status = None;
        assert_eq!(decide(&kvc, &obs).action, Action::RemoveMember { ordinal: 4, id: 5 });
    }

    fn upgraded(kvc: &mut KVCluster) {
        kvc.spec.version = Some("0.2.0".into());
        kvc.metadata.generation = Some(2);
    }

    #[test]
    fn rollout_restarts_followers_first_from_the_highest_ordinal_and_the_leader_last() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 2);
        upgraded(&mut kvc);
        let new = template_revision(&kvc);
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::RestartPod { ordinal: 1 });
        assert_eq!(d.operation.as_ref().unwrap().pod.as_deref(), Some("kv-1"));
        with_op(&mut kvc, &d);
        obs.pods.get_mut(&1).unwrap().revision = Some(new.clone());
        assert_eq!(decide(&kvc, &obs).action, Action::RestartPod { ordinal: 0 });
        obs.pods.get_mut(&0).unwrap().revision = Some(new.clone());
        // Only the leader is left: move leadership to an updated, caught-up follower.
        assert_eq!(decide(&kvc, &obs).action, Action::MoveLeader { from: 3, to: 1, to_ordinal: 0 });
        *members(&mut obs) = healthy(&mut kvc.clone(), 3, 0).membership.unwrap();
        assert_eq!(decide(&kvc, &obs).action, Action::RestartPod { ordinal: 2 });
        obs.pods.get_mut(&2).unwrap().revision = Some(new);
        assert_eq!(decide(&kvc, &obs).action, Action::Complete(OperationKind::Rollout));
    }

    #[test]
    fn rollout_waits_for_a_lagging_member_and_halts_only_after_its_own_restart() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 0);
        upgraded(&mut kvc);
        members(&mut obs).members[0].status = Some(status(1, 1, 100));
        members(&mut obs).members[1].status = Some(status(2, 1, 20)); // behind the leader
        let d = decide(&kvc, &obs);
        assert!(matches!(d.action, Action::Wait(_)));
        with_op(&mut kvc, &d);
        obs.now = Timestamp::from_second(NOW + 3600).unwrap();
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)), "nothing the rollout did is to blame");

        members(&mut obs).members[1].status = Some(status(2, 1, 100));
        let d = decide(&kvc, &obs);
        assert_eq!(d.action, Action::RestartPod { ordinal: 2 });
        with_op(&mut kvc, &d);
        obs.pods.get_mut(&2).unwrap().ready = false;
        obs.pods.get_mut(&2).unwrap().revision = Some(template_revision(&kvc));
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
        obs.now = Timestamp::from_second(NOW + 3600 + 61).unwrap();
        let d = decide(&kvc, &obs);
        assert!(matches!(d.action, Action::Halt(_)));
        with_op(&mut kvc, &d);
        // Halted: nothing more until the spec changes.
        obs.pods.get_mut(&2).unwrap().ready = true;
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(ref w) if w.starts_with("halted")));
        kvc.metadata.generation = Some(3);
        assert!(matches!(decide(&kvc, &obs).action, Action::RestartPod { .. }));
    }

    #[test]
    fn rollout_waits_for_the_statefulset_controller() {
        let mut kvc = example(3);
        let mut obs = healthy(&mut kvc, 3, 0);
        upgraded(&mut kvc);
        obs.statefulset = Some(ObservedStatefulSet { replicas: 3, up_to_date: false });
        assert!(matches!(decide(&kvc, &obs).action, Action::Wait(_)));
    }

    #[test]
    fn a_single_member_is_restarted_in_place() {
        let mut kvc = example(1);
        let obs = healthy(&mut kvc, 1, 0);
        upgraded(&mut kvc);
        assert_eq!(decide(&kvc, &obs).action, Action::RestartPod { ordinal: 0 });
    }

    #[test]
    fn budget_and_replicas_follow_membership() {
        let mut kvc = example(5);
        let obs = healthy(&mut kvc, 3, 0);
        assert_eq!(pdb_voters(&kvc, &obs), 3);
        assert_eq!(statefulset_replicas(&kvc, &obs, &Action::Idle), 3);
        assert_eq!(statefulset_replicas(&kvc, &obs, &Action::SetReplicas { replicas: 4 }), 4);
        let mut fresh = obs.clone();
        fresh.statefulset = None;
        fresh.membership = None;
        assert_eq!(statefulset_replicas(&example(5), &fresh, &Action::Create), 5);
    }
}
