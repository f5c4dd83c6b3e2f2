//! ReadIndex: a leader confirms its commit index with a quorum round before a read is served;
//! a follower asks the leader for it inside Raft (etcd-raft's MsgReadIndex).

use crate::pb::raft_message::Body;
use crate::pb::{ReadIndexRequest, ReadIndexResponse};

use super::super::error::RaftError;
use super::super::read_only::ConfirmedRead;
use super::super::storage::Storage;
use super::{Raft, Role};

impl<S: Storage> Raft<S> {
    pub(super) fn committed_in_current_term(&self) -> Result<bool, RaftError> {
        Ok(self.log.term_opt(self.log.committed)? == Some(self.term))
    }

    /// Asks for a linearizable read point: answered through `Ready::read_states`, by this
    /// leader, or through the leader this follower knows (one message, however many reads the
    /// context stands for). Without a known leader nothing is sent: the caller asks again.
    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            return self.leader_read_index(self.id, ctx);
        }
        let Some(to) = self.leader_hint() else { return Err(RaftError::NotLeader { leader_hint: None }) };
        self.send(to, Body::ReadIndex(ReadIndexRequest { term: self.term, context: ctx }));
        Ok(())
    }

    pub(super) fn leader_read_index(&mut self, from: u64, ctx: Vec<u8>) -> Result<(), RaftError> {
        if !self.committed_in_current_term()? {
            // Until this leader commits its no-op its commit index may lag the cluster's.
            self.read_only.defer_until_commit(from, ctx);
            return Ok(());
        }
        self.register_reads(vec![(from, ctx)])
    }

    /// Records reads at the current commit index under a new round and asks for a quorum's
    /// acknowledgement of it.
    pub(super) fn register_reads(&mut self, reads: Vec<(u64, Vec<u8>)>) -> Result<(), RaftError> {
        self.round += 1;
        let round = self.round;
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.acked_round = round;
        }
        for (from, ctx) in reads {
            self.read_only.add_request(from, self.log.committed, ctx, round);
        }
        self.confirm_reads();
        self.bcast_heartbeat()
    }

    pub(super) fn confirm_reads(&mut self) {
        let Some(q) = self.tracker.acked_round() else { return };
        for ConfirmedRead { from, state } in self.read_only.confirm(q) {
            if from == self.id {
                self.read_states.push(state);
            } else {
                let resp =
                    ReadIndexResponse { term: self.term, context: state.request_ctx, index: state.index };
                self.send(from, Body::ReadIndexResponse(resp));
            }
        }
    }

    pub(crate) fn pending_read_count(&self) -> usize {
        self.read_only.pending_count()
    }
}
