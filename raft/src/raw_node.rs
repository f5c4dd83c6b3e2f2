//! The driver-facing interface: inputs (`tick`, `step`, `propose`, ...) and the `Ready` /
//! `advance` handshake that hands out what must be persisted, sent and applied. The crate
//! documentation states the driver's contract in full, including what may happen before the
//! fsync.
//!
//! Every method that can touch storage returns its error: a storage failure means this node
//! cannot go on safely, and the driver must stop rather than carry on with a core that
//! silently skipped work (raft-rs refuses to continue in the same way).

use std::collections::BTreeMap;

use crate::pb::{ConfChange, ConfState, Entry, HardState, RaftMessage, Snapshot};

use super::config::Config;
use super::core::{Proposed, Raft, RejectedProposal, Role, SoftState};
use super::error::RaftError;
use super::progress::ProgressState;
use super::read_only::ReadState;
use super::storage::Storage;
use super::unstable::snapshot_index_term;

/// What the core hands the driver in one round.
#[derive(Debug, Default)]
pub struct Ready {
    /// Leader or role changed (not persisted).
    pub soft_state: Option<SoftState>,
    /// currentTerm / votedFor / commit changed: persist before sending `messages`.
    pub hard_state: Option<HardState>,
    /// New log entries to append to stable storage (replacing any conflicting suffix).
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader: persist it (replacing the log) and restore the
    /// state machine from it before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Entries known committed, in index order, to apply to the state machine.
    pub committed_entries: Vec<Entry>,
    /// Messages to send once the above is persisted.
    pub messages: Vec<RaftMessage>,
    /// Confirmed ReadIndex requests (this node's own, confirmed by itself as leader or by
    /// the leader it asked).
    pub read_states: Vec<ReadState>,
    /// Batches this follower forwarded that the leader refused: their clients can be failed
    /// now. A batch neither refused nor applied may still be lost (a message dropped, a leader
    /// gone); a driver learns that when it applies an entry of a later term.
    pub rejected_proposals: Vec<RejectedProposal>,
    /// What `advance` marks done. Kept apart from the public fields so the driver may move
    /// those out of the `Ready` without confusing `advance`.
    marks: Marks,
}

#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    last_entry: Option<(u64, u64)>,
    snapshot_index: Option<u64>,
    last_committed: Option<u64>,
}

impl Ready {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.committed_entries.is_empty()
            && self.messages.is_empty()
            && self.read_states.is_empty()
            && self.rejected_proposals.is_empty()
    }
}

/// The leader's view of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressStatus {
    /// matchIndex: highest index known replicated on the member.
    pub matched: u64,
    /// nextIndex: the next entry the leader will send.
    pub next: u64,
    /// Flow-control state (probing, streaming, or receiving a snapshot).
    pub state: ProgressState,
    /// Heard from during the current check-quorum period.
    pub recent_active: bool,
    /// AppendEntries messages sent and not yet acknowledged.
    pub inflight: usize,
    /// A non-voting member.
    pub is_learner: bool,
}

/// A snapshot of the node's state for observability and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    /// currentTerm.
    pub term: u64,
    /// votedFor in `term` (0: nobody).
    pub vote: u64,
    /// commitIndex.
    pub commit: u64,
    /// lastApplied: the last index the driver reported applied through `advance`.
    pub applied: u64,
    /// Index of the last entry in the log (persisted or not).
    pub last_index: u64,
    pub role: Role,
    /// The leader this node knows of in `term`.
    pub leader_id: Option<u64>,
    /// The membership in effect (as of the last applied conf change).
    pub conf_state: ConfState,
    /// Per-member progress; filled on the leader only.
    pub progress: BTreeMap<u64, ProgressStatus>,
    /// The target of a leadership transfer in progress.
    pub lead_transferee: Option<u64>,
    /// ReadIndex requests accepted but not yet confirmed.
    pub pending_reads: usize,
}

/// One Raft node, driven from outside: no I/O, no clock, no threads.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
}

impl<S: Storage> RawNode<S> {
    /// Restarts (or starts) a node from what `storage` holds: hard state, membership,
    /// commit index. `config.applied` says how far the state machine already got.
    pub fn new(config: &Config, storage: S) -> Result<Self, RaftError> {
        let prev_hard = storage.initial_state()?.hard_state;
        let raft = Raft::new(config, storage)?;
        let prev_soft = raft.soft_state();
        Ok(Self { raft, prev_soft, prev_hard })
    }

    /// Advances logical time by one tick (elections, heartbeats, check-quorum). Fails only
    /// when storage does, and then the node must stop.
    pub fn tick(&mut self) -> Result<(), RaftError> {
        self.raft.tick()
    }

    /// Feeds a message from a peer. Stale or hostile messages are ignored (`Ok`) or
    /// reported as [`RaftError::InvalidMessage`]; they never corrupt state.
    pub fn step(&mut self, msg: RaftMessage) -> Result<(), RaftError> {
        self.raft.step(msg)
    }

    /// Proposes a command: appended on a leader, forwarded to the known leader on any other
    /// node. Fails with [`RaftError::NotLeader`] (no hint) when no leader is known: nothing was
    /// sent, so trying again later cannot apply it twice.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Proposed, RaftError> {
        self.raft.propose(vec![data])
    }

    /// Proposes several commands as one batch (one message when forwarded).
    pub fn propose_batch(&mut self, data: Vec<Vec<u8>>) -> Result<Proposed, RaftError> {
        self.raft.propose(data)
    }

    /// Proposes a single-server membership change; the leader that receives it validates it
    /// (one pending at a time, and with strict checking, a quorum reachable afterwards).
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Proposed, RaftError> {
        self.raft.propose_conf_change(&cc)
    }

    /// Applies a committed conf-change entry; call it when applying that entry. Returns the
    /// new membership, which the driver persists together with its applied index.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState, RaftError> {
        self.raft.apply_conf_change(cc)
    }

    /// Asks for a linearizable read point, answered through `Ready::read_states` with `ctx`:
    /// by this node as leader, or by the leader a follower forwards the request to. Fails with
    /// [`RaftError::NotLeader`] when no leader is known (nothing was sent).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RaftError> {
        self.raft.read_index(ctx)
    }

    /// Hands leadership to `to` once it has caught up (leader only).
    pub fn transfer_leader(&mut self, to: u64) -> Result<(), RaftError> {
        self.raft.transfer_leader(to)
    }

    /// Starts an election now (pre-vote first when enabled).
    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raft.hup(false)
    }

    /// Whether `ready` has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.soft_state() != self.prev_soft
            || r.hard_state() != self.prev_hard
            || !r.log.unstable.next_entries().is_empty()
            || r.log.unstable.next_snapshot().is_some()
            || !r.msgs.is_empty()
            || r.log.has_next_committed_entries()
            || !r.read_states.is_empty()
            || !r.rejected.is_empty()
    }

    /// Takes everything that is ready. See the crate docs for what the driver must do with
    /// it. Fails when the committed entries cannot be read back from storage; the node must
    /// then stop (handing out none would silently stop applying).
    pub fn ready(&mut self) -> Result<Ready, RaftError> {
        let r = &mut self.raft;
        let soft = r.soft_state();
        let hard = r.hard_state();
        let committed_entries = r.log.next_committed_entries(Some(MAX_APPLY_BYTES_PER_READY))?;
        let entries = r.log.unstable.next_entries().to_vec();
        let snapshot = r.log.unstable.next_snapshot().cloned();
        let marks = Marks {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| snapshot_index_term(s).0),
            last_committed: committed_entries.last().map(|e| e.index),
        };
        if let Some(i) = marks.last_committed {
            r.log.applying = i;
        }
        r.log.unstable.accept_in_progress();
        let ready = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard).then_some(hard),
            entries,
            snapshot,
            committed_entries,
            messages: std::mem::take(&mut r.msgs),
            read_states: std::mem::take(&mut r.read_states),
            rejected_proposals: std::mem::take(&mut r.rejected),
            marks,
        };
        self.prev_soft = soft;
        self.prev_hard = hard;
        Ok(ready)
    }

    /// The driver persisted, sent and applied `ready`. Fails only when storage does.
    pub fn advance(&mut self, ready: Ready) -> Result<(), RaftError> {
        let r = &mut self.raft;
        if let Some(index) = ready.marks.snapshot_index {
            r.log.unstable.stable_snap_to(index);
            r.log.applied_to(index);
        }
        if let Some((index, term)) = ready.marks.last_entry {
            r.log.unstable.stable_to(index, term);
        }
        if let Some(index) = ready.marks.last_committed {
            r.log.applied_to(index);
        }
        r.on_persisted()
    }

    /// Leader and role, cheaply (no allocation): what a driver checks on every request.
    pub fn soft_state(&self) -> SoftState {
        self.raft.soft_state()
    }

    /// Term, vote and commit index as they are now (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        self.raft.hard_state()
    }

    /// The node's current state.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == Role::Leader {
            r.tracker
                .progress
                .iter()
                .map(|(id, p)| {
                    let st = ProgressStatus {
                        matched: p.matched,
                        next: p.next,
                        state: p.state,
                        recent_active: p.recent_active,
                        inflight: p.inflights.count(),
                        is_learner: r.tracker.learners.contains(id),
                    };
                    (*id, st)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: r.id,
            term: r.term,
            vote: r.vote,
            commit: r.log.committed,
            applied: r.log.applied,
            last_index: r.log.last_index().unwrap_or_default(),
            role: r.role,
            leader_id: r.leader_hint(),
            conf_state: r.tracker.conf_state(),
            progress,
            lead_transferee: r.lead_transferee,
            pending_reads: r.pending_read_count(),
        }
    }

    /// The storage the core reads from.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    #[cfg(test)]
    pub(crate) fn ready_snapshot_pending_for_test(&self) -> Option<&Snapshot> {
        self.raft.log.unstable.snapshot.as_ref()
    }

    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft<S> {
        &self.raft
    }

    #[cfg(test)]
    pub(crate) fn raft_mut(&mut self) -> &mut Raft<S> {
        &mut self.raft
    }
}

/// Upper bound on the encoded size of committed entries handed out in one `Ready`, so a
/// node restarting with a long unapplied log applies it in bounded batches.
const MAX_APPLY_BYTES_PER_READY: u64 = 64 * 1024 * 1024;
