//! Client proposals, on the leader and forwarded to it: a follower hands the leader a batch
//! inside Raft (etcd-raft's MsgProp), the leader appends it in the term it was sent in, drops
//! duplicates, and tells the forwarder why it refused one.

use prost::Message as _;

use crate::pb::raft_message::Body;
use crate::pb::{ConfChange, Entry, EntryType, ForwardedProposal, ProposalRejected, RejectReason};

use super::super::error::RaftError;
use super::super::read_only::ReadState;
use super::super::storage::Storage;
use super::{Raft, Role};

/// Messages that carry a client's request or its answer between a follower and its leader.
/// They are valid only within the term they were sent in and never move anyone's term: they
/// carry no authority, only the work a leader of that term may do.
pub(super) fn is_client_traffic(body: &Body) -> bool {
    matches!(
        body,
        Body::Propose(_) | Body::ProposalRejected(_) | Body::ReadIndex(_) | Body::ReadIndexResponse(_)
    )
}

/// Where a proposal went: into this leader's log, or to the leader as a forwarded batch. Either
/// way it can only ever commit in `term` (a leader appends forwarded batches of its own term
/// only), which is how a driver knows a proposal is lost for good: once it applies an entry of
/// a later term without having seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposed {
    /// Appended to this leader's log at `first..=last`.
    Appended { term: u64, first: u64, last: u64 },
    /// Sent to leader `to` as batch `seq`; a [`RejectedProposal`] with that `seq` may follow.
    Forwarded { term: u64, to: u64, seq: u64 },
}

impl Proposed {
    /// The only term the proposal can commit in.
    pub fn term(&self) -> u64 {
        match *self {
            Proposed::Appended { term, .. } | Proposed::Forwarded { term, .. } => term,
        }
    }
}

/// A forwarded batch the leader refused, handed to the driver in a `Ready` so it can fail the
/// clients of batch `seq` now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedProposal {
    pub seq: u64,
    pub error: RaftError,
}

impl RaftError {
    /// The reason sent back for a forwarded batch refused with this error.
    fn reject_reason(&self) -> RejectReason {
        match self {
            RaftError::NotLeader { .. } => RejectReason::NotLeader,
            RaftError::TransferInProgress => RejectReason::TransferInProgress,
            RaftError::ProposalDropped(_) => RejectReason::LeaderSteppingDown,
            RaftError::ConfChangePending => RejectReason::ConfChangePending,
            RaftError::NotEnoughActiveVoters => RejectReason::NotEnoughActiveVoters,
            RaftError::LearnerNotReady => RejectReason::LearnerNotReady,
            _ => RejectReason::InvalidConfChange,
        }
    }

    /// The error a forwarder reports for a batch its leader refused with `reason`.
    fn from_reject_reason(reason: RejectReason) -> RaftError {
        match reason {
            RejectReason::NotLeader | RejectReason::Unspecified => RaftError::NotLeader { leader_hint: None },
            RejectReason::TransferInProgress => RaftError::TransferInProgress,
            RejectReason::LeaderSteppingDown => {
                RaftError::ProposalDropped("the leader was removed and is handing over")
            }
            RejectReason::ConfChangePending => RaftError::ConfChangePending,
            RejectReason::InvalidConfChange => {
                RaftError::InvalidConfChange("refused by the leader".to_string())
            }
            RejectReason::NotEnoughActiveVoters => RaftError::NotEnoughActiveVoters,
            RejectReason::LearnerNotReady => RaftError::LearnerNotReady,
        }
    }
}

impl<S: Storage> Raft<S> {
    pub(super) fn check_can_propose(&self) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader { leader_hint: self.leader_hint() });
        }
        if self.lead_transferee.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        if self.step_down.is_some() {
            return Err(RaftError::ProposalDropped("this leader was removed and is handing over"));
        }
        Ok(())
    }

    /// Proposes commands: appended here on a leader, forwarded as one batch to the leader this
    /// node knows otherwise. Without a known leader the proposal is dropped
    /// ([`RaftError::NotLeader`] without a hint), as etcd-raft drops it: nothing was sent, so
    /// the caller may safely try again once a leader is known.
    pub(crate) fn propose(&mut self, data: Vec<Vec<u8>>) -> Result<Proposed, RaftError> {
        let entries = data
            .into_iter()
            .map(|data| Entry { entry_type: EntryType::EntryNormal as i32, data, ..Default::default() })
            .collect();
        self.propose_entries(entries)
    }

    /// Proposes a single-server membership change, validated by the leader that appends it.
    pub(crate) fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<Proposed, RaftError> {
        let entry = Entry {
            entry_type: EntryType::EntryConfChange as i32,
            data: cc.encode_to_vec(),
            ..Default::default()
        };
        self.propose_entries(vec![entry])
    }

    fn propose_entries(&mut self, entries: Vec<Entry>) -> Result<Proposed, RaftError> {
        if entries.is_empty() {
            return Err(RaftError::ProposalDropped("no entries"));
        }
        if self.role == Role::Leader {
            let (first, last) = self.append_proposals(entries)?;
            return Ok(Proposed::Appended { term: self.term, first, last });
        }
        let Some(to) = self.leader_hint() else { return Err(RaftError::NotLeader { leader_hint: None }) };
        let seq = self.next_forward_seq;
        self.next_forward_seq += 1;
        self.send(to, Body::Propose(ForwardedProposal { term: self.term, seq, entries }));
        Ok(Proposed::Forwarded { term: self.term, to, seq })
    }

    /// The leader appends proposals (its own or a follower's) after checking it may: a
    /// membership change is validated and goes alone, so at most one is ever pending.
    fn append_proposals(&mut self, entries: Vec<Entry>) -> Result<(u64, u64), RaftError> {
        self.check_can_propose()?;
        let conf_changes =
            entries.iter().filter(|e| e.entry_type == EntryType::EntryConfChange as i32).count();
        if conf_changes > 0 {
            let [entry] = entries.as_slice() else {
                return Err(RaftError::InvalidConfChange(
                    "a membership change must be proposed alone".into(),
                ));
            };
            let cc = ConfChange::decode(entry.data.as_slice())
                .map_err(|_| RaftError::InvalidConfChange("undecodable membership change".into()))?;
            if self.pending_conf_index > self.log.applied {
                return Err(RaftError::ConfChangePending);
            }
            self.validate_conf_change(&cc)?;
        }
        let mut first = 0;
        let mut last = 0;
        for e in entries {
            let entry_type = EntryType::try_from(e.entry_type).unwrap_or(EntryType::EntryNormal);
            last = self.append_entry(entry_type, e.data)?;
            if first == 0 {
                first = last;
            }
            if entry_type == EntryType::EntryConfChange {
                self.pending_conf_index = last;
            }
        }
        self.bcast_append()?;
        Ok((first, last))
    }

    /// Client traffic between a follower and its leader, in the current term.
    pub(super) fn step_client_traffic(&mut self, from: u64, body: Body) -> Result<(), RaftError> {
        match body {
            Body::Propose(p) => self.handle_forwarded_proposal(from, p),
            Body::ProposalRejected(r) => {
                if self.role != Role::Leader && from == self.leader_id {
                    let reason = RejectReason::try_from(r.reason).unwrap_or(RejectReason::Unspecified);
                    self.rejected
                        .push(RejectedProposal { seq: r.seq, error: RaftError::from_reject_reason(reason) });
                }
                Ok(())
            }
            Body::ReadIndex(r) => {
                if self.role == Role::Leader {
                    self.leader_read_index(from, r.context)
                } else {
                    // Not the leader of this term (any more): the asker retries.
                    Ok(())
                }
            }
            Body::ReadIndexResponse(r) => {
                if self.role != Role::Leader && from == self.leader_id {
                    self.read_states.push(ReadState { index: r.index, request_ctx: r.context });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn handle_forwarded_proposal(&mut self, from: u64, p: ForwardedProposal) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            // Not refused: a node that stepped down, or restarted, within the term cannot tell
            // whether this is a late copy of a batch it appended as leader, which may commit.
            // The forwarder learns the outcome from the log, as for any batch lost on the way.
            tracing::debug!(id = self.id, from, seq = p.seq, "dropping a forwarded batch: not the leader");
            return Ok(());
        }
        if self.forwarded_seen.get(&from).is_some_and(|&last| p.seq <= last) {
            tracing::debug!(id = self.id, from, seq = p.seq, "dropping a duplicate or late forwarded batch");
            return Ok(());
        }
        self.forwarded_seen.insert(from, p.seq);
        match self.append_proposals(p.entries) {
            Ok(_) => Ok(()),
            Err(RaftError::Storage(e)) => Err(RaftError::Storage(e)),
            Err(e) => {
                tracing::debug!(id = self.id, from, seq = p.seq, error = %e, "refusing a forwarded batch");
                let reason = e.reject_reason() as i32;
                self.send(
                    from,
                    Body::ProposalRejected(ProposalRejected { term: self.term, seq: p.seq, reason }),
                );
                Ok(())
            }
        }
    }
}
