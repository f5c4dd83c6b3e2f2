//! Single-server membership changes: validated by the leader that appends them (with etcd's
//! strict reconfiguration check, which needs the leader's view of its followers), applied by
//! every node when the entry is applied.

use crate::pb::{ConfChange, ConfChangeType, ConfState};

use super::super::error::RaftError;
use super::super::storage::Storage;
use super::{Raft, Role, StepDown};

/// A learner is promoted only once its log reaches this share of the leader's (etcd: 90%).
const LEARNER_READY_PERCENT: u64 = 90;

impl<S: Storage> Raft<S> {
    pub(super) fn validate_conf_change(&self, cc: &ConfChange) -> Result<(), RaftError> {
        let kind = ConfChangeType::try_from(cc.change_type)
            .map_err(|_| RaftError::InvalidConfChange(format!("unknown change type {}", cc.change_type)))?;
        let id = cc.node_id;
        if id == 0 {
            return Err(RaftError::InvalidConfChange("node id 0".into()));
        }
        let t = &self.tracker;
        let last_voter = t.voters.len() == 1 && t.is_voter(id);
        match kind {
            ConfChangeType::ConfChangeAddNode if t.is_voter(id) => {
                Err(RaftError::InvalidConfChange(format!("{id} is already a voter")))
            }
            ConfChangeType::ConfChangeAddLearnerNode if t.learners.contains(&id) => {
                Err(RaftError::InvalidConfChange(format!("{id} is already a learner")))
            }
            ConfChangeType::ConfChangeRemoveNode if !t.is_member(id) => {
                Err(RaftError::InvalidConfChange(format!("{id} is not a member")))
            }
            ConfChangeType::ConfChangeAddLearnerNode | ConfChangeType::ConfChangeRemoveNode if last_voter => {
                Err(RaftError::InvalidConfChange("cannot remove the last voter".into()))
            }
            _ if self.strict_reconfig_check => self.check_reconfig_safe(kind, id),
            _ => Ok(()),
        }
    }

    /// etcd's strict reconfiguration check, made by the one node that knows: after the change,
    /// a quorum of the voters must be members this leader heard from recently, and a learner
    /// is promoted only once its log is within [`LEARNER_READY_PERCENT`] of the leader's.
    fn check_reconfig_safe(&self, kind: ConfChangeType, id: u64) -> Result<(), RaftError> {
        let t = &self.tracker;
        let active = |v: &u64| *v == self.id || t.progress.get(v).is_some_and(|p| p.recently_heard());
        let mut voters_after: Vec<u64> = t.voters.iter().copied().collect();
        match kind {
            ConfChangeType::ConfChangeAddNode => {
                if t.learners.contains(&id) {
                    let leader_match = t.progress.get(&self.id).map_or(0, |p| p.matched);
                    let learner = t.progress.get(&id);
                    let matched = learner.map_or(0, |p| p.matched);
                    let ready = learner.is_some_and(|p| p.recently_heard())
                        && matched > 0
                        && matched.saturating_mul(100) >= leader_match.saturating_mul(LEARNER_READY_PERCENT);
                    if !ready {
                        return Err(RaftError::LearnerNotReady);
                    }
                }
                voters_after.push(id);
            }
            ConfChangeType::ConfChangeRemoveNode => voters_after.retain(|v| *v != id),
            ConfChangeType::ConfChangeAddLearnerNode => return Ok(()),
        }
        // A brand-new voter is not running yet, and counts as unreachable.
        let reachable = voters_after.iter().filter(|v| t.is_member(**v) && active(v)).count();
        if reachable < voters_after.len() / 2 + 1 {
            return Err(RaftError::NotEnoughActiveVoters);
        }
        Ok(())
    }

    /// Applies a committed conf change to the membership. Deterministic given the current
    /// membership, so every node that applies the same log reaches the same configuration;
    /// changes that would leave no voter are ignored.
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, RaftError> {
        let kind = ConfChangeType::try_from(cc.change_type)
            .map_err(|_| RaftError::InvalidConfChange(format!("unknown change type {}", cc.change_type)))?;
        let id = cc.node_id;
        if id == 0 {
            return Err(RaftError::InvalidConfChange("node id 0".into()));
        }
        let next = self.log.last_index()? + 1;
        let last_voter = self.tracker.voters.len() == 1 && self.tracker.is_voter(id);
        match kind {
            ConfChangeType::ConfChangeAddNode => self.tracker.add_voter(id, next),
            ConfChangeType::ConfChangeAddLearnerNode if !last_voter => self.tracker.add_learner(id, next),
            ConfChangeType::ConfChangeRemoveNode if !last_voter => {
                if self.role == Role::Leader && id != self.id {
                    self.send_farewell(id)?;
                }
                self.tracker.remove(id)
            }
            _ => tracing::warn!(
                id = self.id,
                node = id,
                "ignoring conf change that would remove the last voter"
            ),
        }
        tracing::info!(id = self.id, node = id, ?kind, "applied conf change");
        if matches!(self.role, Role::Candidate | Role::PreCandidate) && !self.promotable() {
            // Removed (or demoted) while campaigning: a non-voter never takes office.
            self.become_follower(self.term, 0)?;
        }
        if self.role == Role::Leader {
            if !self.promotable() && self.step_down.is_none() {
                tracing::info!(id = self.id, "leader is no longer a voter: handing over, then stepping down");
                self.round += 1;
                self.step_down = Some(StepDown {
                    round: self.round,
                    commit: self.log.committed,
                    informed: Default::default(),
                });
            }
            if self.lead_transferee.is_some_and(|t| !self.tracker.is_voter(t)) {
                self.lead_transferee = None;
            }
            self.confirm_reads();
            // The quorum may have changed, and a new member should hear from us now.
            self.maybe_commit()?;
            self.bcast_append()?;
        }
        Ok(self.tracker.conf_state())
    }
}
