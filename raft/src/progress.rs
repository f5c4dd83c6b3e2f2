//! The leader's view of each follower (nextIndex[], matchIndex[] and flow control), and the
//! membership with its quorum arithmetic.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::pb::ConfState;

use super::snapshot_transfer::SnapshotSender;

/// How the leader currently replicates to a follower (the states of etcd-raft).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's log position is unknown: send one append at a time and back up on
    /// rejection until a match is found.
    Probe,
    /// The follower matched: stream appends optimistically, up to the in-flight window.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot is being transferred.
    Snapshot,
}

/// A bounded window of in-flight AppendEntries messages, each remembered by its last index.
#[derive(Debug, Clone)]
pub(crate) struct Inflights {
    cap: usize,
    last_indexes: VecDeque<u64>,
}

impl Inflights {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, last_indexes: VecDeque::new() }
    }

    pub(crate) fn full(&self) -> bool {
        self.last_indexes.len() >= self.cap
    }

    pub(crate) fn add(&mut self, last_index: u64) {
        self.last_indexes.push_back(last_index);
    }

    /// Forgets every message whose entries are all acknowledged (last index <= `index`).
    pub(crate) fn free_le(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&i| i <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Frees one slot so a window full of lost messages cannot stall replication forever.
    pub(crate) fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }

    pub(crate) fn count(&self) -> usize {
        self.last_indexes.len()
    }
}

/// One follower's replication state as seen by the leader.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// matchIndex: highest index known replicated on the follower.
    pub(crate) matched: u64,
    /// nextIndex: index of the next entry to send.
    pub(crate) next: u64,
    pub(crate) state: ProgressState,
    /// In Probe: an append was sent and its answer has not arrived (nor a heartbeat passed).
    pub(crate) probe_sent: bool,
    /// In Snapshot: index of the snapshot being sent.
    pub(crate) pending_snapshot: u64,
    /// Heard from this peer since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// `recent_active` as it was at the end of the previous check-quorum round, so a peer
    /// heard from a moment before the round ended does not look silent right after it.
    pub(crate) was_active: bool,
    /// Highest heartbeat round this follower acknowledged in the current term.
    pub(crate) acked_round: u64,
    /// A heartbeat went out and no answer without news came back yet. Only that answer may
    /// unpause a probe, free a window slot or trigger a resend: were every stale or
    /// duplicated answer allowed to, each would start its own endless exchange.
    pub(crate) heartbeat_pending: bool,
    /// The highest commit index this follower can have learned from what was sent to it
    /// (leader_commit capped by the entries the message proved it holds).
    pub(crate) sent_commit: u64,
    pub(crate) inflights: Inflights,
    /// The chunked snapshot being sent, while in Snapshot state.
    pub(crate) snapshot_send: Option<SnapshotSender>,
}

impl Progress {
    pub(crate) fn new(next: u64, max_inflight: usize) -> Self {
        Self {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            recent_active: false,
            was_active: false,
            acked_round: 0,
            heartbeat_pending: false,
            sent_commit: 0,
            inflights: Inflights::new(max_inflight),
            snapshot_send: None,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
        self.snapshot_send = None;
    }

    /// Heard from within the last one or two check-quorum rounds.
    pub(crate) fn recently_heard(&self) -> bool {
        self.recent_active || self.was_active
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: u64, sender: SnapshotSender) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
        self.snapshot_send = Some(sender);
    }

    /// A success acknowledged `index`: raise matchIndex (and nextIndex past it). Returns
    /// whether matchIndex moved.
    pub(crate) fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Whether the leader should hold back appends to this follower for now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

/// Result of counting votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Pending,
    Won,
    Lost,
}

/// Membership (voters and learners), per-member progress and the votes of an election.
#[derive(Debug, Clone)]
pub(crate) struct ProgressTracker {
    pub(crate) voters: BTreeSet<u64>,
    pub(crate) learners: BTreeSet<u64>,
    pub(crate) progress: BTreeMap<u64, Progress>,
    pub(crate) votes: BTreeMap<u64, bool>,
    max_inflight: usize,
}

/// The value a majority of `values` has reached: the largest `x` such that more than half of
/// the entries are `>= x`. `None` for an empty set (no quorum can exist).
fn majority_value(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(values.len() / 2).copied()
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight: usize) -> Self {
        Self {
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        }
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        }
    }

    /// Sets membership from a persisted or snapshotted configuration; progress is rebuilt.
    pub(crate) fn restore(&mut self, cs: &ConfState, next: u64) {
        self.voters = cs.voters.iter().copied().filter(|&id| id != 0).collect();
        self.learners =
            cs.learners.iter().copied().filter(|id| *id != 0 && !self.voters.contains(id)).collect();
        self.progress.clear();
        for id in self.voters.iter().chain(self.learners.iter()) {
            self.progress.insert(*id, Progress::new(next, self.max_inflight));
        }
    }

    pub(crate) fn is_voter(&self, id: u64) -> bool {
        self.voters.contains(&id)
    }

    pub(crate) fn is_member(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Adds or promotes a voter; a new member starts probing from `next`.
    pub(crate) fn add_voter(&mut self, id: u64, next: u64) {
        self.learners.remove(&id);
        self.voters.insert(id);
        self.ensure_progress(id, next);
    }

    /// Adds a learner, or demotes a voter to learner.
    pub(crate) fn add_learner(&mut self, id: u64, next: u64) {
        self.voters.remove(&id);
        self.learners.insert(id);
        self.ensure_progress(id, next);
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.voters.remove(&id);
        self.learners.remove(&id);
        self.progress.remove(&id);
        self.votes.remove(&id);
    }

    fn ensure_progress(&mut self, id: u64, next: u64) {
        self.progress.entry(id).or_insert_with(|| {
            let mut pr = Progress::new(next, self.max_inflight);
            // A fresh member counts as active so check-quorum does not depose the leader
            // before the newcomer had a chance to answer.
            pr.recent_active = true;
            pr
        });
    }

    /// The highest index replicated on a majority of voters.
    pub(crate) fn committed_index(&self) -> Option<u64> {
        majority_value(self.voters.iter().map(|id| self.progress.get(id).map_or(0, |p| p.matched)).collect())
    }

    /// The highest heartbeat round acknowledged by a majority of voters.
    pub(crate) fn acked_round(&self) -> Option<u64> {
        majority_value(
            self.voters.iter().map(|id| self.progress.get(id).map_or(0, |p| p.acked_round)).collect(),
        )
    }

    /// Whether a majority of voters was heard from recently (`self_id` always counts).
    pub(crate) fn quorum_active(&self, self_id: u64) -> bool {
        let active = self
            .voters
            .iter()
            .filter(|id| **id == self_id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active > self.voters.len() / 2
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    pub(crate) fn record_vote(&mut self, id: u64, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally_votes(&self) -> VoteResult {
        let (mut granted, mut rejected) = (0, 0);
        for id in &self.voters {
            match self.votes.get(id) {
                Some(true) => granted += 1,
                Some(false) => rejected += 1,
                None => {}
            }
        }
        let majority = self.voters.len() / 2 + 1;
        if self.voters.is_empty() {
            VoteResult::Lost
        } else if granted >= majority {
            VoteResult::Won
        } else if rejected >= majority || self.voters.len() - rejected < majority {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(voters: &[u64], learners: &[u64]) -> ProgressTracker {
        let mut t = ProgressTracker::new(4);
        t.restore(&ConfState { voters: voters.to_vec(), learners: learners.to_vec() }, 1);
        t
    }

    #[test]
    fn committed_index_counts_voters_only() {
        let mut t = tracker(&[1, 2, 3], &[4]);
        for (id, m) in [(1, 5), (2, 3), (3, 1), (4, 9)] {
            t.progress.get_mut(&id).unwrap().matched = m;
        }
        assert_eq!(t.committed_index(), Some(3));
        assert_eq!(tracker(&[], &[4]).committed_index(), None);
        let mut t = tracker(&[1, 2, 3, 4], &[]);
        for (id, m) in [(1, 5), (2, 4), (3, 2), (4, 1)] {
            t.progress.get_mut(&id).unwrap().matched = m;
        }
        assert_eq!(t.committed_index(), Some(2), "4 voters need 3 replicas");
    }

    #[test]
    fn votes_need_a_majority_of_voters() {
        let mut t = tracker(&[1, 2, 3], &[4]);
        t.record_vote(1, true);
        t.record_vote(4, true);
        assert_eq!(t.tally_votes(), VoteResult::Pending);
        t.record_vote(2, false);
        t.record_vote(2, true); // only the first answer counts
        assert_eq!(t.tally_votes(), VoteResult::Pending);
        t.record_vote(3, false);
        assert_eq!(t.tally_votes(), VoteResult::Lost);
        t.reset_votes();
        t.record_vote(1, true);
        t.record_vote(3, true);
        assert_eq!(t.tally_votes(), VoteResult::Won);
    }

    #[test]
    fn inflights_window() {
        let mut f = Inflights::new(2);
        f.add(3);
        f.add(5);
        assert!(f.full());
        f.free_le(4);
        assert_eq!(f.count(), 1);
        f.free_first_one();
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn membership_edits() {
        let mut t = tracker(&[1, 2], &[3]);
        t.add_voter(3, 7);
        assert!(t.is_voter(3) && !t.learners.contains(&3));
        t.add_learner(2, 7);
        assert!(!t.is_voter(2) && t.is_member(2));
        t.remove(2);
        assert!(!t.is_member(2) && !t.progress.contains_key(&2));
        assert!(!t.quorum_active(1), "voters 1 and 3: 3 was never heard from");
        t.progress.get_mut(&3).unwrap().recent_active = true;
        assert!(t.quorum_active(1));
    }
}
