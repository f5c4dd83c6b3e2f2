//! The Raft state machine: the paper's Figure 2 plus pre-vote, check-quorum, pipelined
//! replication, chunked snapshots, learners, single-server membership changes, leadership
//! transfer and ReadIndex.
//!
//! Shaped like etcd-raft's `raft.go`: `step` handles what every role does with a message's
//! term, then hands the message to the step function of the current role. Everything the
//! node wants to send is queued in `msgs`; the driver takes it through a `Ready`, after
//! persisting the state the messages depend on.
//!
//! What clients ask of the core has modules of its own: [`proposals`] (appended here, or
//! forwarded to the leader inside Raft), [`membership`] (validated by the leader, applied
//! everywhere) and [`reads`] (ReadIndex, asked of the leader by followers).

use std::collections::HashMap;

use crate::pb::raft_message::Body;
use crate::pb::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, EntryType, HardState, InstallSnapshotRequest,
    InstallSnapshotResponse, RaftMessage, RequestVoteRequest, RequestVoteResponse, Snapshot, TimeoutNow,
};

mod membership;
mod proposals;
mod reads;

use proposals::is_client_traffic;
pub use proposals::{Proposed, RejectedProposal};

use super::config::Config;
use super::error::RaftError;
use super::log::RaftLog;
use super::progress::{ProgressState, ProgressTracker, VoteResult};
use super::read_only::{ReadOnly, ReadState};
use super::rng::SplitMix64;
use super::snapshot_transfer::{ReceiveOutcome, SenderStep, SnapshotReceiver, SnapshotSender, receive_chunk};
use super::storage::{Storage, StorageError};
use super::unstable::snapshot_index_term;

/// The role a node plays in its current term. A learner is a follower that is not a voter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Follower,
    /// Asking whether it could win before disturbing anyone with a new term (pre-vote).
    PreCandidate,
    Candidate,
    Leader,
}

/// The volatile state the driver may want to react to (leader changes, role changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SoftState {
    /// The leader of the current term, when known.
    pub leader_id: Option<u64>,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

/// When `maybe_send_append` sends an append without entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Empty {
    Never,
    /// Only to a follower with nothing in flight: an empty append after unacknowledged ones
    /// could overtake them and be refused, throwing the follower back to probing. Those
    /// appends, and heartbeats, carry the commit index anyway.
    IfIdle,
    /// Also to find out whether appends in flight arrived, or to feed a probe.
    Always,
}

/// The term a message body carries.
fn body_term(body: &Body) -> u64 {
    match body {
        Body::AppendEntries(m) => m.term,
        Body::AppendEntriesResponse(m) => m.term,
        Body::RequestVote(m) => m.term,
        Body::RequestVoteResponse(m) => m.term,
        Body::InstallSnapshot(m) => m.term,
        Body::InstallSnapshotResponse(m) => m.term,
        Body::TimeoutNow(m) => m.term,
        Body::Propose(m) => m.term,
        Body::ProposalRejected(m) => m.term,
        Body::ReadIndex(m) => m.term,
        Body::ReadIndexResponse(m) => m.term,
    }
}

fn non_zero(id: u64) -> Option<u64> {
    (id != 0).then_some(id)
}

/// The consensus state of one node.
pub(crate) struct Raft<S: Storage> {
    pub(crate) id: u64,
    /// currentTerm.
    pub(crate) term: u64,
    /// votedFor in `term`; 0 for nobody.
    pub(crate) vote: u64,
    pub(crate) log: RaftLog<S>,
    pub(crate) role: Role,
    /// The leader of `term` as far as this node knows; 0 for unknown.
    pub(crate) leader_id: u64,
    pub(crate) tracker: ProgressTracker,
    pub(crate) msgs: Vec<RaftMessage>,
    pub(crate) read_states: Vec<ReadState>,
    read_only: ReadOnly,
    pub(crate) election_elapsed: usize,
    heartbeat_elapsed: usize,
    pub(crate) randomized_election_timeout: usize,
    election_tick: usize,
    heartbeat_tick: usize,
    check_quorum: bool,
    pre_vote: bool,
    max_size_per_msg: u64,
    snapshot_chunk_size: usize,
    rng: SplitMix64,
    pub(crate) lead_transferee: Option<u64>,
    /// No conf change may be proposed until the log is applied up to here (the previous
    /// conf change, or this leader's first entry).
    pub(crate) pending_conf_index: u64,
    /// The leader's heartbeat round; followers echo it so reads can be confirmed.
    round: u64,
    snapshot_recv: Option<SnapshotReceiver>,
    /// Set while a leader that is no longer a voter hands over.
    pub(crate) step_down: Option<StepDown>,
    /// A complete snapshot (and the leader that sent it) waiting for the driver to finish
    /// applying entries it was already handed: installing it earlier would let a conf change
    /// older than the snapshot be applied on top of the snapshot's membership.
    pending_restore: Option<(u64, Snapshot)>,
    /// Sequence number of the next batch this node forwards to a leader.
    next_forward_seq: u64,
    /// As leader: the last batch accepted from each forwarder in this term.
    forwarded_seen: HashMap<u64, u64>,
    /// Forwarded batches the leader refused, for the driver.
    pub(crate) rejected: Vec<RejectedProposal>,
    /// Refuse membership changes after which the leader would not hear from a quorum.
    strict_reconfig_check: bool,
}

/// A leader removed from (or demoted in) the configuration leaves only once a majority of
/// the new voters acknowledged, in a round started after the change was applied, a log that
/// reaches the commit index of that moment. They then know the change is committed, apply
/// it, and can elect a leader among themselves; had the leader left at once, they might
/// still need its vote under the old configuration, and wait for it forever.
#[derive(Debug, Clone)]
pub(crate) struct StepDown {
    round: u64,
    commit: u64,
    informed: std::collections::BTreeSet<u64>,
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(config: &Config, storage: S) -> Result<Self, RaftError> {
        config.validate()?;
        let state = storage.initial_state()?;
        let mut log = RaftLog::new(storage)?;
        let last = log.last_index()?;
        let hs = state.hard_state;
        if hs.commit > last {
            return Err(StorageError::CommitBeyondLog { commit: hs.commit, last }.into());
        }
        log.commit_to(hs.commit);
        if config.applied > log.committed {
            return Err(RaftError::InvalidConfig(format!(
                "applied {} is beyond commit {}",
                config.applied, log.committed
            )));
        }
        log.applied_to(config.applied);
        let mut tracker = ProgressTracker::new(config.max_inflight_msgs);
        tracker.restore(&state.conf_state, last + 1);
        let mut raft = Self {
            id: config.id,
            term: hs.current_term,
            vote: hs.voted_for,
            log,
            role: Role::Follower,
            leader_id: 0,
            tracker,
            msgs: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_tick,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            max_size_per_msg: config.max_size_per_msg,
            snapshot_chunk_size: config.snapshot_chunk_size,
            rng: SplitMix64::new(config.seed ^ config.id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            lead_transferee: None,
            pending_conf_index: 0,
            round: 0,
            snapshot_recv: None,
            step_down: None,
            pending_restore: None,
            next_forward_seq: config.forward_seq_base.max(1),
            forwarded_seen: HashMap::new(),
            rejected: Vec::new(),
            strict_reconfig_check: config.strict_reconfig_check,
        };
        raft.become_follower(hs.current_term, 0)?;
        Ok(raft)
    }

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState { leader_id: non_zero(self.leader_id), role: self.role }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState { current_term: self.term, voted_for: self.vote, commit: self.log.committed }
    }

    /// A voter of the current configuration: only voters campaign.
    pub(crate) fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
    }

    pub(crate) fn leader_hint(&self) -> Option<u64> {
        non_zero(self.leader_id)
    }

    fn send(&mut self, to: u64, body: Body) {
        self.send_with_round(to, 0, body);
    }

    fn send_with_round(&mut self, to: u64, round: u64, body: Body) {
        self.msgs.push(RaftMessage { from: self.id, to, round, body: Some(body) });
    }

    fn peers(&self) -> Vec<u64> {
        self.tracker.progress.keys().copied().filter(|id| *id != self.id).collect()
    }

    // ----- role transitions -------------------------------------------------------------

    fn reset(&mut self, term: u64) -> Result<(), RaftError> {
        if self.term != term {
            self.term = term;
            self.vote = 0;
            // Kept for the whole term, across a step-down: a late copy of a batch this node
            // appended as leader must be dropped, not refused (it may well commit).
            self.forwarded_seen.clear();
        }
        self.leader_id = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout = self.rng.range(self.election_tick, 2 * self.election_tick);
        self.lead_transferee = None;
        self.tracker.reset_votes();
        let last = self.log.last_index()?;
        let cs = self.tracker.conf_state();
        self.tracker.restore(&cs, last + 1);
        self.pending_conf_index = 0;
        self.read_only.clear();
        self.step_down = None;
        Ok(())
    }

    fn become_follower(&mut self, term: u64, leader_id: u64) -> Result<(), RaftError> {
        self.reset(term)?;
        self.role = Role::Follower;
        self.leader_id = leader_id;
        tracing::debug!(id = self.id, term, leader_id, "became follower");
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn become_follower_for_test(&mut self) {
        let term = self.term;
        let _ = self.become_follower(term, 0);
    }

    #[cfg(test)]
    pub(crate) fn become_candidate_for_test(&mut self) {
        let _ = self.become_candidate();
    }

    fn become_pre_candidate(&mut self) {
        // Neither the term nor the vote change: a pre-vote disturbs nobody.
        self.role = Role::PreCandidate;
        self.tracker.reset_votes();
        self.leader_id = 0;
        tracing::debug!(id = self.id, term = self.term, "became pre-candidate");
    }

    fn become_candidate(&mut self) -> Result<(), RaftError> {
        self.reset(self.term + 1)?;
        self.vote = self.id;
        self.role = Role::Candidate;
        tracing::debug!(id = self.id, term = self.term, "became candidate");
        Ok(())
    }

    fn become_leader(&mut self) -> Result<(), RaftError> {
        self.reset(self.term)?;
        self.role = Role::Leader;
        self.leader_id = self.id;
        let stable = self.log.stable_last_index()?;
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.matched = stable;
            pr.recent_active = true;
            pr.become_replicate();
        }
        // The no-op: entries of earlier terms commit once an entry of this term does, and a
        // conf change waits until it is applied.
        let index = self.append_entry(EntryType::EntryNormal, Vec::new())?;
        self.pending_conf_index = index;
        tracing::debug!(id = self.id, term = self.term, "became leader");
        self.bcast_append()
    }

    // ----- elections --------------------------------------------------------------------

    /// Starts an election if this node may: it is a voter, not already leader, and has no
    /// snapshot or committed conf change waiting to be applied (its configuration may be
    /// about to change).
    pub(crate) fn hup(&mut self, transfer: bool) -> Result<(), RaftError> {
        if self.role == Role::Leader
            || !self.promotable()
            || self.log.unstable.snapshot.is_some()
            || self.pending_restore.is_some()
        {
            return Ok(());
        }
        if self.has_unapplied_conf_change()? {
            tracing::debug!(id = self.id, "not campaigning: a committed conf change is not applied yet");
            return Ok(());
        }
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind)
    }

    fn has_unapplied_conf_change(&self) -> Result<bool, RaftError> {
        if self.log.committed <= self.log.applied {
            return Ok(false);
        }
        let mut next = self.log.applied + 1;
        while next <= self.log.committed {
            let ents = match self.log.slice(next, self.log.committed + 1, Some(self.max_size_per_msg)) {
                Ok(e) => e,
                Err(StorageError::Compacted) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let Some(last) = ents.last().map(|e| e.index) else { break };
            if ents.iter().any(|e| e.entry_type == EntryType::EntryConfChange as i32) {
                return Ok(true);
            }
            next = last + 1;
        }
        Ok(false)
    }

    fn campaign(&mut self, kind: CampaignKind) -> Result<(), RaftError> {
        let pre_vote = kind == CampaignKind::PreElection;
        let term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate()?;
            self.term
        };
        self.tracker.record_vote(self.id, true);
        if self.tracker.tally_votes() == VoteResult::Won {
            return if pre_vote { self.campaign(CampaignKind::Election) } else { self.become_leader() };
        }
        let last_log_index = self.log.last_index()?;
        let last_log_term = self.log.last_term()?;
        let voters: Vec<u64> = self.tracker.voters.iter().copied().filter(|id| *id != self.id).collect();
        for to in voters {
            self.send(
                to,
                Body::RequestVote(RequestVoteRequest {
                    term,
                    candidate_id: self.id,
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    leadership_transfer: kind == CampaignKind::Transfer,
                }),
            );
        }
        Ok(())
    }

    // ----- ticks ------------------------------------------------------------------------

    pub(crate) fn tick(&mut self) -> Result<(), RaftError> {
        if self.role == Role::Leader { self.tick_heartbeat() } else { self.tick_election() }
    }

    fn tick_election(&mut self) -> Result<(), RaftError> {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false)?;
        }
        Ok(())
    }

    fn tick_heartbeat(&mut self) -> Result<(), RaftError> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_tick {
            self.election_elapsed = 0;
            if self.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    tracing::info!(id = self.id, term = self.term, "stepping down: lost contact with quorum");
                    return self.become_follower(self.term, 0);
                }
                let id = self.id;
                for (pid, pr) in self.tracker.progress.iter_mut() {
                    pr.was_active = pr.recent_active;
                    pr.recent_active = *pid == id;
                }
            }
            if self.lead_transferee.take().is_some() {
                tracing::info!(id = self.id, "leadership transfer timed out");
            }
        }
        if self.heartbeat_elapsed >= self.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat()?;
        }
        Ok(())
    }

    // ----- the step function ------------------------------------------------------------

    pub(crate) fn step(&mut self, m: RaftMessage) -> Result<(), RaftError> {
        let Some(body) = m.body else { return Err(RaftError::InvalidMessage("message without body")) };
        if m.to != self.id {
            return Err(RaftError::InvalidMessage("message addressed to another node"));
        }
        if m.from == 0 || m.from == self.id {
            return Err(RaftError::InvalidMessage("message from an invalid sender"));
        }
        let term = body_term(&body);
        if term == 0 {
            return Err(RaftError::InvalidMessage("message without a term"));
        }
        if is_client_traffic(&body) {
            if term != self.term {
                tracing::trace!(id = self.id, from = m.from, term, "dropping client traffic of another term");
                return Ok(());
            }
            return self.step_client_traffic(m.from, body);
        }
        if term > self.term {
            if let Body::RequestVote(rv) = &body {
                let in_lease =
                    self.check_quorum && self.leader_id != 0 && self.election_elapsed < self.election_tick;
                if in_lease && !rv.leadership_transfer {
                    // A live leader exists: a disruptive candidate must not depose it.
                    tracing::debug!(id = self.id, from = m.from, "ignoring vote request within leader lease");
                    return Ok(());
                }
            }
            let keep_term = match &body {
                Body::RequestVote(rv) => rv.pre_vote,
                Body::RequestVoteResponse(r) => r.pre_vote && r.vote_granted,
                _ => false,
            };
            if !keep_term {
                let lead = match &body {
                    Body::AppendEntries(_) | Body::InstallSnapshot(_) | Body::TimeoutNow(_) => m.from,
                    _ => 0,
                };
                self.become_follower(term, lead)?;
            }
        } else if term < self.term {
            // Figure 2: "reply false if term < currentTerm". The reply carries our term, so a
            // stale leader or candidate (say, one that was partitioned away) learns it.
            match &body {
                Body::AppendEntries(_) => self.send(
                    m.from,
                    Body::AppendEntriesResponse(AppendEntriesResponse {
                        term: self.term,
                        ..Default::default()
                    }),
                ),
                Body::InstallSnapshot(s) => self.send(
                    m.from,
                    Body::InstallSnapshotResponse(InstallSnapshotResponse {
                        term: self.term,
                        last_included_index: s.last_included_index,
                        ..Default::default()
                    }),
                ),
                Body::RequestVote(rv) => {
                    let resp = self.vote_response(self.term, false, rv.pre_vote)?;
                    self.send(m.from, Body::RequestVoteResponse(resp));
                }
                // What a voter knows is committed stays true in any term (a removed voter, which
                // never campaigns, may well be terms behind the candidate asking it).
                Body::RequestVoteResponse(r) => self.learn_commit(r)?,
                _ => tracing::trace!(id = self.id, from = m.from, term, "ignoring message with stale term"),
            }
            return Ok(());
        }

        match &body {
            Body::RequestVote(rv) => return self.handle_request_vote(m.from, rv),
            Body::RequestVoteResponse(r) => self.learn_commit(r)?,
            _ => {}
        }
        match self.role {
            Role::Leader => self.step_leader(m.from, m.round, body),
            Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.round, body),
            Role::Follower => self.step_follower(m.from, m.round, body),
        }
    }

    fn handle_request_vote(&mut self, from: u64, rv: &RequestVoteRequest) -> Result<(), RaftError> {
        if rv.candidate_id != from {
            return Err(RaftError::InvalidMessage("candidate_id differs from sender"));
        }
        let can_vote = self.vote == from
            || (self.vote == 0 && self.leader_id == 0)
            || (rv.pre_vote && rv.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(rv.last_log_index, rv.last_log_term)?;
        // A grant carries the term asked about (a pre-vote is for a term not reached yet).
        let term = if granted { rv.term } else { self.term };
        if granted && !rv.pre_vote {
            self.election_elapsed = 0;
            self.vote = from;
        }
        tracing::debug!(id = self.id, from, term = rv.term, pre_vote = rv.pre_vote, granted, "vote request");
        let resp = self.vote_response(term, granted, rv.pre_vote)?;
        self.send(from, Body::RequestVoteResponse(resp));
        Ok(())
    }

    /// A vote answer, carrying what this node knows is committed.
    fn vote_response(
        &self,
        term: u64,
        granted: bool,
        pre_vote: bool,
    ) -> Result<RequestVoteResponse, RaftError> {
        let commit_index = self.log.committed;
        let commit_term = self.log.term_opt(commit_index)?.unwrap_or(0);
        Ok(RequestVoteResponse { term, vote_granted: granted, pre_vote, commit_index, commit_term })
    }

    /// Learns from a voter's answer that entries up to its commit index are committed, when
    /// our log holds the same entry there (and so, by Log Matching, the same prefix).
    fn learn_commit(&mut self, r: &RequestVoteResponse) -> Result<(), RaftError> {
        if self.role == Role::Leader || r.commit_term == 0 || r.commit_index <= self.log.committed {
            return Ok(());
        }
        if self.log.term_opt(r.commit_index)? == Some(r.commit_term) {
            tracing::debug!(id = self.id, commit = r.commit_index, "learned commit index from a voter");
            self.log.commit_to(r.commit_index);
        }
        Ok(())
    }

    fn step_leader(&mut self, from: u64, round: u64, body: Body) -> Result<(), RaftError> {
        match body {
            Body::AppendEntriesResponse(r) => self.handle_append_response(from, round, &r),
            Body::InstallSnapshotResponse(r) => self.handle_snapshot_response(from, &r),
            Body::AppendEntries(_) | Body::InstallSnapshot(_) => {
                Err(RaftError::InvalidMessage("a second leader in the same term"))
            }
            Body::RequestVote(_) | Body::RequestVoteResponse(_) | Body::TimeoutNow(_) => Ok(()),
            Body::Propose(_)
            | Body::ProposalRejected(_)
            | Body::ReadIndex(_)
            | Body::ReadIndexResponse(_) => Ok(()),
        }
    }

    fn step_candidate(&mut self, from: u64, round: u64, body: Body) -> Result<(), RaftError> {
        match body {
            Body::AppendEntries(_) | Body::InstallSnapshot(_) => {
                // Someone won this term.
                self.become_follower(self.term, from)?;
                self.step_follower(from, round, body)
            }
            Body::RequestVoteResponse(r) => {
                if r.pre_vote != (self.role == Role::PreCandidate) {
                    return Ok(());
                }
                self.tracker.record_vote(from, r.vote_granted);
                match self.tracker.tally_votes() {
                    // A node removed while campaigning may still collect the new voters' votes.
                    VoteResult::Won if !self.promotable() => self.become_follower(self.term, 0),
                    VoteResult::Won if self.role == Role::PreCandidate => {
                        self.campaign(CampaignKind::Election)
                    }
                    VoteResult::Won => self.become_leader(),
                    VoteResult::Lost => self.become_follower(self.term, 0),
                    VoteResult::Pending => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, from: u64, round: u64, body: Body) -> Result<(), RaftError> {
        match body {
            Body::AppendEntries(ae) => {
                if ae.leader_id != from {
                    return Err(RaftError::InvalidMessage("leader_id differs from sender"));
                }
                self.election_elapsed = 0;
                self.leader_id = from;
                self.handle_append_entries(from, round, &ae)
            }
            Body::InstallSnapshot(req) => {
                if req.leader_id != from {
                    return Err(RaftError::InvalidMessage("leader_id differs from sender"));
                }
                self.election_elapsed = 0;
                self.leader_id = from;
                self.handle_install_snapshot(from, req)
            }
            Body::TimeoutNow(t) => {
                if t.leader_id != from || from != self.leader_id {
                    return Err(RaftError::InvalidMessage("TimeoutNow not from the leader"));
                }
                tracing::info!(id = self.id, term = self.term, "leadership handed over: campaigning now");
                self.hup(true)
            }
            _ => Ok(()),
        }
    }

    // ----- follower side of AppendEntries and InstallSnapshot ----------------------------

    fn handle_append_entries(
        &mut self,
        from: u64,
        round: u64,
        ae: &AppendEntriesRequest,
    ) -> Result<(), RaftError> {
        let mut prev_term_ok = ae.prev_log_term <= ae.term;
        for (i, e) in ae.entries.iter().enumerate() {
            let expected_term_floor = if i == 0 { ae.prev_log_term } else { ae.entries[i - 1].term };
            prev_term_ok &= e.index == ae.prev_log_index + 1 + i as u64
                && e.term <= ae.term
                && e.term >= expected_term_floor;
        }
        if !prev_term_ok {
            return Err(RaftError::InvalidMessage("malformed entries"));
        }
        let committed = self.log.committed;
        let (mut prev, mut prev_term, mut entries) =
            (ae.prev_log_index, ae.prev_log_term, ae.entries.as_slice());
        if prev < committed {
            // Everything up to our commit index is already known to match the leader's log.
            let skip = usize::try_from(committed - prev).unwrap_or(usize::MAX);
            match entries.get(skip.saturating_sub(1)..) {
                Some([at_commit, rest @ ..]) if !rest.is_empty() => {
                    prev = at_commit.index;
                    prev_term = at_commit.term;
                    entries = rest;
                }
                _ => {
                    self.reply_append(from, round, true, committed, 0, 0);
                    return Ok(());
                }
            }
        }
        if let Some(last_new) = self.log.maybe_append(prev, prev_term, ae.leader_commit, entries)? {
            self.reply_append(from, round, true, last_new, 0, 0);
            return Ok(());
        }
        let (conflict_index, conflict_term) = self.conflict_hint(prev)?;
        tracing::debug!(
            id = self.id,
            from,
            prev,
            prev_term,
            conflict_index,
            conflict_term,
            "rejecting append"
        );
        self.reply_append(from, round, false, 0, conflict_index, conflict_term);
        Ok(())
    }

    /// Where the leader should back up to: the first index of our term at `prev`, or past
    /// our last entry when the log is too short.
    fn conflict_hint(&self, prev: u64) -> Result<(u64, u64), RaftError> {
        let last = self.log.last_index()?;
        if prev > last {
            return Ok((last + 1, 0));
        }
        let Some(term) = self.log.term_opt(prev)? else { return Ok((self.log.committed + 1, 0)) };
        let mut index = prev;
        while index > self.log.committed + 1 && self.log.term_opt(index - 1)? == Some(term) {
            index -= 1;
        }
        Ok((index, term))
    }

    fn reply_append(&mut self, to: u64, round: u64, success: bool, match_index: u64, ci: u64, ct: u64) {
        let resp = AppendEntriesResponse {
            term: self.term,
            success,
            match_index,
            conflict_index: ci,
            conflict_term: ct,
        };
        self.send_with_round(to, round, Body::AppendEntriesResponse(resp));
    }

    fn handle_install_snapshot(&mut self, from: u64, req: InstallSnapshotRequest) -> Result<(), RaftError> {
        if req.last_included_index == 0 || req.last_included_term > req.term {
            return Err(RaftError::InvalidMessage("malformed snapshot chunk"));
        }
        let index = req.last_included_index;
        let reply = |raft: &mut Self, next_offset: u64, done: bool| {
            let resp =
                InstallSnapshotResponse { term: raft.term, last_included_index: index, next_offset, done };
            raft.send(from, Body::InstallSnapshotResponse(resp));
        };
        if index <= self.log.committed {
            // We already have everything it covers.
            reply(self, req.offset.saturating_add(req.data.len() as u64), true);
            return Ok(());
        }
        if self.pending_restore.as_ref().is_some_and(|(_, s)| snapshot_index_term(s).0 == index) {
            return Ok(()); // complete already; answered once installed
        }
        match receive_chunk(&mut self.snapshot_recv, from, &req) {
            ReceiveOutcome::NextOffset(n) => reply(self, n, false),
            ReceiveOutcome::Complete(snapshot) if self.log.applying > self.log.applied => {
                self.pending_restore = Some((from, snapshot));
            }
            ReceiveOutcome::Complete(snapshot) => self.install_snapshot(from, snapshot)?,
        }
        Ok(())
    }

    /// Installs a complete snapshot and tells the leader; the answer leaves with the Ready
    /// that carries the snapshot, so only after the driver persisted it.
    fn install_snapshot(&mut self, from: u64, snapshot: Snapshot) -> Result<(), RaftError> {
        let (index, _) = snapshot_index_term(&snapshot);
        let len = snapshot.data.len() as u64;
        self.restore(snapshot)?;
        let resp = InstallSnapshotResponse {
            term: self.term,
            last_included_index: index,
            next_offset: len,
            done: true,
        };
        self.send(from, Body::InstallSnapshotResponse(resp));
        Ok(())
    }

    /// Installs a complete snapshot from the leader. Returns whether the log was replaced
    /// (otherwise the snapshot was old news and at most fast-forwarded the commit index).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) -> Result<bool, RaftError> {
        let (index, term) = snapshot_index_term(&snapshot);
        if index <= self.log.committed {
            return Ok(false);
        }
        if self.log.match_term(index, term)? {
            self.log.commit_to(index);
            return Ok(false);
        }
        let cs = snapshot.metadata.as_ref().and_then(|m| m.conf_state.clone()).unwrap_or_default();
        tracing::info!(id = self.id, index, term, "restoring from snapshot");
        self.log.restore(snapshot);
        self.tracker.restore(&cs, index + 1);
        Ok(true)
    }

    // ----- leader side ------------------------------------------------------------------

    fn append_entry(&mut self, entry_type: EntryType, data: Vec<u8>) -> Result<u64, RaftError> {
        let index = self.log.last_index()? + 1;
        self.log.append(&[Entry { term: self.term, index, entry_type: entry_type as i32, data }]);
        Ok(index)
    }

    /// Sends every follower what it is missing, or an empty append carrying the commit index
    /// to those with nothing in flight.
    pub(crate) fn bcast_append(&mut self) -> Result<(), RaftError> {
        for to in self.peers() {
            self.maybe_send_append(to, Empty::IfIdle)?;
        }
        Ok(())
    }

    /// Sends `to` its next batch of entries unless its flow control says wait. Falls back to a
    /// snapshot when the entries it needs are compacted.
    fn maybe_send_append(&mut self, to: u64, empty: Empty) -> Result<bool, RaftError> {
        let last = self.log.last_index()?;
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return Ok(false) };
        if pr.is_paused() {
            return Ok(false);
        }
        pr.next = pr.next.clamp(1, last + 1);
        let next = pr.next;
        let prev_term = self.log.term_opt(next - 1)?;
        let entries = match self.log.slice(next, last + 1, Some(self.max_size_per_msg)) {
            Ok(e) => Some(e),
            Err(StorageError::Compacted) => None,
            Err(e) => return Err(e.into()),
        };
        let (Some(prev_term), Some(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return Ok(false) };
        let in_flight = pr.state == ProgressState::Replicate && pr.next - 1 > pr.matched;
        let send_empty = match empty {
            Empty::Never => false,
            Empty::IfIdle => !in_flight,
            Empty::Always => true,
        };
        if entries.is_empty() && !send_empty {
            return Ok(false);
        }
        match pr.state {
            ProgressState::Replicate => {
                if let Some(last_sent) = entries.last().map(|e| e.index) {
                    pr.next = last_sent + 1;
                    pr.inflights.add(last_sent);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot => {}
        }
        let last_sent = entries.last().map_or(next - 1, |e| e.index);
        pr.sent_commit = pr.sent_commit.max(self.log.committed.min(last_sent));
        self.send_append(to, (next - 1, prev_term), entries);
        Ok(true)
    }

    /// Sends `to` the entries after `prev` (index, term) with this leader's commit index.
    fn send_append(&mut self, to: u64, prev: (u64, u64), entries: Vec<Entry>) {
        let req = AppendEntriesRequest {
            term: self.term,
            leader_id: self.id,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit: self.log.committed,
        };
        self.send_with_round(to, self.round, Body::AppendEntries(req));
    }

    /// A member being removed gets one last append with the entries up to the commit index
    /// and the commit index itself, whatever its flow control says: the leader stops
    /// replicating to it right after, and a member that had not acknowledged the entry removing
    /// it would otherwise never apply its own removal (nor answer a client that asked it to
    /// remove itself). Best effort: a member too far behind learns nothing from it.
    fn send_farewell(&mut self, to: u64) -> Result<(), RaftError> {
        let Some(pr) = self.tracker.progress.get(&to) else { return Ok(()) };
        let next = pr.matched + 1;
        let Some(prev_term) = self.log.term_opt(next - 1)? else { return Ok(()) };
        let entries = match self.log.slice(next, self.log.committed + 1, Some(self.max_size_per_msg)) {
            Ok(e) => e,
            Err(StorageError::Compacted) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.send_append(to, (next - 1, prev_term), entries);
        Ok(())
    }

    fn send_snapshot(&mut self, to: u64) -> Result<bool, RaftError> {
        let Some(pr) = self.tracker.progress.get(&to) else { return Ok(false) };
        if !pr.recent_active {
            return Ok(false);
        }
        let first = self.log.first_index()?;
        let snapshot = match self.log.snapshot(first - 1) {
            Ok(s) => s,
            Err(StorageError::SnapshotTemporarilyUnavailable) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let (index, _) = snapshot_index_term(&snapshot);
        if index == 0 {
            tracing::warn!(id = self.id, to, "log is compacted but storage has no snapshot");
            return Ok(false);
        }
        tracing::debug!(id = self.id, to, index, "sending snapshot");
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(index, SnapshotSender::new(snapshot));
        }
        self.send_snapshot_chunk(to);
        Ok(true)
    }

    fn send_snapshot_chunk(&mut self, to: u64) {
        let chunk = self
            .tracker
            .progress
            .get(&to)
            .and_then(|pr| pr.snapshot_send.as_ref())
            .map(|tx| tx.chunk(self.term, self.id, self.snapshot_chunk_size));
        if let Some(chunk) = chunk {
            self.send(to, Body::InstallSnapshot(chunk));
        }
    }

    fn bcast_heartbeat(&mut self) -> Result<(), RaftError> {
        for to in self.peers() {
            self.send_heartbeat(to)?;
        }
        Ok(())
    }

    /// A heartbeat is an AppendEntries without entries whose prev is the follower's known
    /// match, so it is accepted regardless of what is in flight, and commits up to the match.
    fn send_heartbeat(&mut self, to: u64) -> Result<(), RaftError> {
        let Some(pr) = self.tracker.progress.get_mut(&to) else { return Ok(()) };
        let matched = pr.matched;
        pr.heartbeat_pending = true;
        let resend_chunk = pr.state == ProgressState::Snapshot
            && pr.snapshot_send.as_mut().is_some_and(SnapshotSender::should_resend);
        let (prev, prev_term) = match self.log.term_opt(matched)? {
            Some(t) => (matched, t),
            None => (0, 0),
        };
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_commit = pr.sent_commit.max(self.log.committed.min(prev));
        }
        let req = AppendEntriesRequest {
            term: self.term,
            leader_id: self.id,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.committed,
        };
        self.send_with_round(to, self.round, Body::AppendEntries(req));
        if resend_chunk {
            self.send_snapshot_chunk(to);
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: u64,
        round: u64,
        r: &AppendEntriesResponse,
    ) -> Result<(), RaftError> {
        let last = self.log.last_index()?;
        let current_round = self.round;
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            tracing::debug!(id = self.id, from, "append response from a non-member");
            return Ok(());
        };
        pr.recent_active = true;
        if round <= current_round && round > pr.acked_round {
            pr.acked_round = round;
            self.confirm_reads();
        }
        if !r.success {
            if let Some(next) = self.next_from_rejection(from, r)? {
                if let Some(pr) = self.tracker.progress.get_mut(&from) {
                    if pr.state == ProgressState::Replicate {
                        pr.become_probe();
                    }
                    pr.next = next;
                    pr.probe_sent = false;
                }
                self.maybe_send_append(from, Empty::Always)?;
            }
            return Ok(());
        }
        if r.match_index > last {
            return Err(RaftError::InvalidMessage("match_index beyond the leader's log"));
        }
        if let Some(sd) = self.step_down.as_mut()
            && round >= sd.round
            && r.match_index >= sd.commit
            && self.tracker.voters.contains(&from)
        {
            sd.informed.insert(from);
            if sd.informed.len() > self.tracker.voters.len() / 2 {
                tracing::info!(id = self.id, "new voters know of the change: stepping down");
                return self.become_follower(self.term, 0);
            }
        }
        let Some(pr) = self.tracker.progress.get_mut(&from) else { return Ok(()) };
        if pr.maybe_update(r.match_index) {
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot => {
                    if pr.matched + 1 >= self.log.first_index()? {
                        pr.become_replicate();
                    }
                }
                ProgressState::Replicate => pr.inflights.free_le(r.match_index),
            }
            if self.maybe_commit()? {
                self.bcast_append()?;
            }
            while self.maybe_send_append(from, Empty::Never)? {}
            // Caught up, but perhaps not told the commit index yet.
            if self.tracker.progress.get(&from).is_some_and(|p| p.sent_commit < self.log.committed) {
                self.maybe_send_append(from, Empty::IfIdle)?;
            }
            let caught_up = self.tracker.progress.get(&from).is_some_and(|p| p.matched == last);
            if self.lead_transferee == Some(from) && caught_up {
                self.send_timeout_now(from);
            }
        } else if std::mem::take(&mut pr.heartbeat_pending) {
            // No news, in answer to a heartbeat (or taken for it). Make sure lost appends
            // cannot stall a probe or a full window, and keep a lagging follower fed: if
            // everything was sent already, an empty append at nextIndex finds out whether it
            // arrived (a gap is rejected and sends the leader back to probing).
            match pr.state {
                ProgressState::Replicate if pr.inflights.full() => pr.inflights.free_first_one(),
                ProgressState::Probe => pr.probe_sent = false,
                _ => {}
            }
            if pr.matched < last {
                self.maybe_send_append(from, Empty::Always)?;
            }
        }
        Ok(())
    }

    /// The nextIndex a rejection suggests, or `None` when the rejection is stale. Uses the
    /// follower's conflict hint to skip a whole term per round trip, never going below
    /// matchIndex + 1.
    fn next_from_rejection(&self, from: u64, r: &AppendEntriesResponse) -> Result<Option<u64>, RaftError> {
        let Some(pr) = self.tracker.progress.get(&from) else { return Ok(None) };
        if pr.state == ProgressState::Snapshot {
            return Ok(None);
        }
        let floor = pr.matched + 1;
        let mut hint = r.conflict_index;
        if r.conflict_term != 0 {
            // Back up to just past our last entry of the follower's conflicting term, if we
            // have that term; otherwise to where the follower's run of that term starts.
            let mut i = (pr.next - 1).min(self.log.last_index()?);
            while i >= floor {
                match self.log.term_opt(i)? {
                    Some(t) if t > r.conflict_term => i -= 1,
                    Some(t) if t == r.conflict_term => {
                        hint = i + 1;
                        break;
                    }
                    _ => break,
                }
            }
        }
        let hint = hint.max(floor);
        Ok((hint < pr.next).then_some(hint))
    }

    fn handle_snapshot_response(&mut self, from: u64, r: &InstallSnapshotResponse) -> Result<(), RaftError> {
        let Some(pr) = self.tracker.progress.get_mut(&from) else { return Ok(()) };
        pr.recent_active = true;
        if pr.state != ProgressState::Snapshot {
            return Ok(());
        }
        let Some(tx) = pr.snapshot_send.as_mut() else { return Ok(()) };
        let (index, _) = tx.index_term();
        if index != r.last_included_index {
            return Ok(());
        }
        match tx.on_response(r.next_offset, r.done) {
            SenderStep::SendChunk => self.send_snapshot_chunk(from),
            SenderStep::Wait => {}
            SenderStep::Finished => {
                tracing::debug!(id = self.id, from, index, "snapshot delivered");
                // Probe right after it; the answer moves matchIndex and starts streaming.
                pr.become_probe();
                self.maybe_send_append(from, Empty::Always)?;
            }
        }
        Ok(())
    }

    /// Commits the highest index a majority of voters stores, if it is of this term.
    fn maybe_commit(&mut self) -> Result<bool, RaftError> {
        let Some(index) = self.tracker.committed_index() else { return Ok(false) };
        let committed = self.log.maybe_commit(index, self.term)?;
        if committed {
            let deferred = self.read_only.take_deferred();
            if !deferred.is_empty() {
                self.register_reads(deferred)?;
            }
        }
        Ok(committed)
    }

    /// The driver persisted entries: the leader's own copy now counts toward commitment.
    pub(crate) fn on_persisted(&mut self) -> Result<(), RaftError> {
        if self.log.applying == self.log.applied
            && self.role == Role::Follower
            && let Some((from, snapshot)) = self.pending_restore.take()
        {
            self.install_snapshot(from, snapshot)?;
        }
        if self.role != Role::Leader {
            return Ok(());
        }
        let stable = self.log.stable_last_index()?;
        let updated = self.tracker.progress.get_mut(&self.id).is_some_and(|pr| pr.maybe_update(stable));
        if updated && self.maybe_commit()? {
            self.bcast_append()?;
        }
        Ok(())
    }

    fn send_timeout_now(&mut self, to: u64) {
        tracing::info!(id = self.id, to, "transfer target caught up: sending TimeoutNow");
        self.send(to, Body::TimeoutNow(TimeoutNow { term: self.term, leader_id: self.id }));
    }

    // ----- leadership transfer ----------------------------------------------------------

    pub(crate) fn transfer_leader(&mut self, to: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader_hint: self.leader_hint() });
        }
        if to == self.id {
            self.lead_transferee = None;
            return Ok(());
        }
        if !self.tracker.is_voter(to) {
            return Err(RaftError::ProposalDropped("transfer target is not a voter"));
        }
        if self.lead_transferee == Some(to) {
            return Ok(());
        }
        self.lead_transferee = Some(to);
        // The transfer is abandoned after an election timeout.
        self.election_elapsed = 0;
        let last = self.log.last_index()?;
        if self.tracker.progress.get(&to).is_some_and(|p| p.matched == last) {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, Empty::Always)?;
        }
        Ok(())
    }
}
