//! ReadIndex: linearizable reads without writing to the log.
//!
//! The leader records its commit index when a read arrives, then proves it is still the
//! leader by a heartbeat round that a quorum acknowledges. Rounds only grow, so every request
//! registered at round `r` is confirmed once a quorum acknowledged any round `>= r`.

use std::collections::VecDeque;

/// A read the driver may serve once its state machine has applied `index`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadState {
    /// The commit index at the time the read was accepted.
    pub index: u64,
    /// The caller's context, returned unchanged so it can match the answer to the request.
    pub request_ctx: Vec<u8>,
}

#[derive(Debug, Clone)]
struct PendingRead {
    index: u64,
    ctx: Vec<u8>,
    round: u64,
}

/// Reads waiting for leadership confirmation, and reads waiting for this leader's first
/// commit (before it, the leader's commit index may be behind the cluster's).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOnly {
    pending: VecDeque<PendingRead>,
    awaiting_commit: Vec<Vec<u8>>,
}

impl ReadOnly {
    pub(crate) fn add_request(&mut self, index: u64, ctx: Vec<u8>, round: u64) {
        self.pending.push_back(PendingRead { index, ctx, round });
    }

    pub(crate) fn defer_until_commit(&mut self, ctx: Vec<u8>) {
        self.awaiting_commit.push(ctx);
    }

    pub(crate) fn take_deferred(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.awaiting_commit)
    }

    /// Releases every read whose round a quorum has acknowledged.
    pub(crate) fn confirm(&mut self, quorum_round: u64) -> Vec<ReadState> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|r| r.round <= quorum_round) {
            if let Some(r) = self.pending.pop_front() {
                out.push(ReadState { index: r.index, request_ctx: r.ctx });
            }
        }
        out
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
        self.awaiting_commit.clear();
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len() + self.awaiting_commit.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_releases_in_order_up_to_quorum_round() {
        let mut r = ReadOnly::default();
        r.add_request(5, b"a".to_vec(), 1);
        r.add_request(6, b"b".to_vec(), 2);
        r.add_request(6, b"c".to_vec(), 3);
        assert!(r.confirm(0).is_empty());
        let got = r.confirm(2);
        assert_eq!(
            got.iter().map(|s| s.request_ctx.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(got[1].index, 6);
        assert_eq!(r.pending_count(), 1);
        r.defer_until_commit(b"d".to_vec());
        assert_eq!(r.take_deferred(), vec![b"d".to_vec()]);
        r.clear();
        assert_eq!(r.pending_count(), 0);
    }
}
