//! The wait registry (etcd's `wait.Wait`): the clients of this member waiting for their
//! proposals, answered from this member's own apply of the entry.
//!
//! A proposal can only commit in the term it was proposed in (a leader appends forwarded
//! batches of its own term only), and committed entries are applied in log order with
//! non-decreasing terms. So once this member applies an entry of a later term, every proposal
//! of an earlier term still waiting here is lost for good, and its client is told so — a
//! definite failure, not a timeout. Two things make the outcome unknowable instead: a snapshot
//! installed while the proposal waited (it may be inside), and the member stopping.

use std::collections::{BTreeMap, HashMap};

use crate::raft::{Proposed, RaftError};
use crate::storage::ApplyResult;

use super::error::DriverError;
use super::handle::Reply;

/// The proposals made on this member and not answered yet.
#[derive(Default)]
pub(crate) struct Waiters {
    /// Clients by request id.
    pending: HashMap<u64, Reply<ApplyResult>>,
    /// Request ids by the term their proposal can commit in.
    by_term: BTreeMap<u64, Vec<u64>>,
    /// Request ids of each batch forwarded to a leader, by the batch's sequence number.
    by_batch: HashMap<u64, Vec<u64>>,
    /// Forwarded batches by the term they were sent in, to forget them with the term.
    batches_by_term: BTreeMap<u64, Vec<u64>>,
}

impl Waiters {
    /// Requests waiting for an answer.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Records the clients of proposals the core accepted (appended or forwarded).
    pub(crate) fn register(&mut self, proposed: Proposed, requests: Vec<(u64, Reply<ApplyResult>)>) {
        let term = proposed.term();
        let ids: Vec<u64> = requests.iter().map(|(id, _)| *id).collect();
        for (id, reply) in requests {
            self.pending.insert(id, reply);
        }
        self.by_term.entry(term).or_default().extend(&ids);
        if let Proposed::Forwarded { seq, .. } = proposed {
            self.by_batch.insert(seq, ids);
            self.batches_by_term.entry(term).or_default().push(seq);
        }
    }

    /// Answers the client of request `id`, if it waits here.
    pub(crate) fn answer(&mut self, id: u64, result: Result<ApplyResult, DriverError>) {
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(result);
        }
    }

    /// This member applied entries up to term `term`: proposals of earlier terms that are
    /// still waiting can never be applied. Returns how many were failed.
    pub(crate) fn term_applied(&mut self, term: u64) -> usize {
        let later = self.by_term.split_off(&term);
        let over = std::mem::replace(&mut self.by_term, later);
        let later_batches = self.batches_by_term.split_off(&term);
        for seq in std::mem::replace(&mut self.batches_by_term, later_batches).into_values().flatten() {
            self.by_batch.remove(&seq);
        }
        let mut failed = 0;
        for id in over.into_values().flatten() {
            if let Some(reply) = self.pending.remove(&id) {
                let _ = reply.send(Err(DriverError::ProposalLost));
                failed += 1;
            }
        }
        failed
    }

    /// The leader refused forwarded batch `seq`: its clients fail with the leader's reason.
    pub(crate) fn batch_refused(&mut self, seq: u64, error: &RaftError) -> usize {
        let mut failed = 0;
        for id in self.by_batch.remove(&seq).unwrap_or_default() {
            if let Some(reply) = self.pending.remove(&id) {
                let _ = reply.send(Err(DriverError::from_raft(error.clone())));
                failed += 1;
            }
        }
        failed
    }

    /// Fails every waiting client with `error` (a snapshot replaced the state, or the loop
    /// stops).
    pub(crate) fn fail_all(&mut self, error: &DriverError) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        self.by_term.clear();
        self.by_batch.clear();
        self.batches_by_term.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Outcome;
    use tokio::sync::oneshot;

    fn result(index: u64) -> ApplyResult {
        ApplyResult { index, request_id: 0, revision: 1, outcome: Outcome::Applied }
    }

    fn waiter() -> (Reply<ApplyResult>, oneshot::Receiver<Result<ApplyResult, DriverError>>) {
        oneshot::channel()
    }

    #[test]
    fn an_applied_proposal_answers_its_client() {
        let mut w = Waiters::default();
        let (tx, mut rx) = waiter();
        w.register(Proposed::Appended { term: 3, first: 7, last: 7 }, vec![(11, tx)]);
        w.answer(11, Ok(result(7)));
        assert_eq!(rx.try_recv().unwrap().unwrap().index, 7);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn proposals_of_a_term_that_ended_without_them_are_lost() {
        let mut w = Waiters::default();
        let (old, mut old_rx) = waiter();
        let (current, mut current_rx) = waiter();
        w.register(Proposed::Forwarded { term: 3, to: 1, seq: 40 }, vec![(1, old)]);
        w.register(Proposed::Forwarded { term: 4, to: 2, seq: 41 }, vec![(2, current)]);
        assert_eq!(w.term_applied(3), 0, "term 3 entries may still be applied");
        assert_eq!(w.term_applied(4), 1);
        assert_eq!(old_rx.try_recv().unwrap().unwrap_err(), DriverError::ProposalLost);
        assert!(current_rx.try_recv().is_err(), "still waiting");
        assert_eq!(w.batch_refused(40, &RaftError::TransferInProgress), 0, "batch forgotten with its term");
    }

    #[test]
    fn a_refused_batch_fails_its_clients_with_the_reason() {
        let mut w = Waiters::default();
        let (a, mut a_rx) = waiter();
        let (b, mut b_rx) = waiter();
        w.register(Proposed::Forwarded { term: 5, to: 1, seq: 9 }, vec![(1, a), (2, b)]);
        assert_eq!(w.batch_refused(9, &RaftError::TransferInProgress), 2);
        for rx in [&mut a_rx, &mut b_rx] {
            assert_eq!(
                rx.try_recv().unwrap().unwrap_err(),
                DriverError::Refused(RaftError::TransferInProgress)
            );
        }
    }

    #[test]
    fn after_a_snapshot_outcomes_are_unknown() {
        let mut w = Waiters::default();
        let (a, mut a_rx) = waiter();
        w.register(Proposed::Appended { term: 2, first: 1, last: 1 }, vec![(1, a)]);
        w.fail_all(&DriverError::OutcomeUnknown);
        assert_eq!(a_rx.try_recv().unwrap().unwrap_err(), DriverError::OutcomeUnknown);
        assert_eq!(w.len(), 0);
    }
}
