//! ReadIndex: linearizable reads without writing to the log.
//!
//! The leader records its commit index when a read arrives (its own, or one a follower
//! forwarded), then proves it is still the leader by a heartbeat round that a quorum
//! acknowledges. Rounds only grow, so every request registered at round `r` is confirmed once
//! a quorum acknowledged any round `>= r`. A confirmed read goes back to whoever asked: into
//! the leader's own `Ready`, or to the follower as a message.

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
    /// The node that asked (the leader itself, or a follower).
    from: u64,
    index: u64,
    ctx: Vec<u8>,
    round: u64,
}

/// A read the leader confirmed, and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfirmedRead {
    pub(crate) from: u64,
    pub(crate) state: ReadState,
}

/// Reads waiting for leadership confirmation, and reads waiting for this leader's first
/// commit (before it, the leader's commit index may be behind the cluster's).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOnly {
    pending: VecDeque<PendingRead>,
    /// (who asked, context) of reads waiting for the leader's first commit.
    awaiting_commit: Vec<(u64, Vec<u8>)>,
}

impl ReadOnly {
    pub(crate) fn add_request(&mut self, from: u64, index: u64, ctx: Vec<u8>, round: u64) {
        self.pending.push_back(PendingRead { from, index, ctx, round });
    }

    pub(crate) fn defer_until_commit(&mut self, from: u64, ctx: Vec<u8>) {
        self.awaiting_commit.push((from, ctx));
    }

    pub(crate) fn take_deferred(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.awaiting_commit)
    }

    /// Releases every read whose round a quorum has acknowledged.
    pub(crate) fn confirm(&mut self, quorum_round: u64) -> Vec<ConfirmedRead> {
        let mut out = Vec::new();
        while self.pending.front().is_some_and(|r| r.round <= quorum_round) {
            if let Some(r) = self.pending.pop_front() {
                out.push(ConfirmedRead {
                    from: r.from,
                    state: ReadState { index: r.index, request_ctx: r.ctx },
                });
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
        r.add_request(1, 5, b"a".to_vec(), 1);
        r.add_request(2, 6, b"b".to_vec(), 2);
        r.add_request(1, 6, b"c".to_vec(), 3);
        assert!(r.confirm(0).is_empty());
        let got = r.confirm(2);
        assert_eq!(
            got.iter().map(|c| (c.from, c.state.request_ctx.clone())).collect::<Vec<_>>(),
            vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
        );
        assert_eq!(got[1].state.index, 6);
        assert_eq!(r.pending_count(), 1);
        r.defer_until_commit(3, b"d".to_vec());
        assert_eq!(r.take_deferred(), vec![(3, b"d".to_vec())]);
        r.clear();
        assert_eq!(r.pending_count(), 0);
    }
}
