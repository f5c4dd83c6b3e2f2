//! The simulated network: every message gets a random delay (so messages reorder), may be
//! lost or duplicated, and is dropped when a partition blocks its link at delivery time.

use std::collections::BTreeSet;

use raft::pb::RaftMessage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Per-mille chance to lose a message.
    pub loss: u32,
    /// Per-mille chance to deliver a message twice.
    pub dup: u32,
    /// Largest delay, in steps.
    pub max_delay: u64,
    /// Deliver messages due together in random order. Off, every link is FIFO, like the
    /// server's gRPC streams.
    pub reorder: bool,
}

pub struct Network {
    in_flight: Vec<(u64, RaftMessage)>,
    pub blocked: BTreeSet<(u64, u64)>,
    pub faults: Faults,
}

impl Network {
    pub fn new(faults: Faults) -> Self {
        Self { in_flight: Vec::new(), blocked: BTreeSet::new(), faults }
    }

    pub fn send(&mut self, now: u64, msg: RaftMessage, rng: &mut ChaCha8Rng) {
        if rng.random_ratio(self.faults.loss, 1000) {
            return;
        }
        if rng.random_ratio(self.faults.dup, 1000) {
            let at = now + rng.random_range(0..=self.faults.max_delay);
            self.in_flight.push((at, msg.clone()));
        }
        // Without reordering, every message takes the same time, so links stay FIFO.
        let at =
            if self.faults.reorder { now + rng.random_range(0..=self.faults.max_delay) } else { now + 1 };
        self.in_flight.push((at, msg));
    }

    /// Messages due at `now`, in random order, minus those a partition blocks.
    pub fn due(&mut self, now: u64, rng: &mut ChaCha8Rng) -> Vec<RaftMessage> {
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.in_flight).into_iter().partition(|m| m.0 <= now);
        self.in_flight = later;
        let mut due: Vec<RaftMessage> = due.into_iter().map(|m| m.1).collect();
        if self.faults.reorder {
            // Fisher-Yates with the simulation's RNG keeps the order reproducible.
            for i in (1..due.len()).rev() {
                let j = rng.random_range(0..=i);
                due.swap(i, j);
            }
        }
        due.retain(|m| !self.blocked.contains(&(m.from, m.to)));
        due
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// What is in flight, by (from, to, kind): to explain a storm.
    pub fn census(&self) -> Vec<((u64, u64, &'static str), usize)> {
        let mut m = std::collections::BTreeMap::new();
        for (_, msg) in &self.in_flight {
            let kind = match &msg.body {
                Some(raft::pb::raft_message::Body::AppendEntries(a)) if a.entries.is_empty() => "heartbeat",
                Some(raft::pb::raft_message::Body::AppendEntries(_)) => "append",
                Some(raft::pb::raft_message::Body::AppendEntriesResponse(_)) => "append-resp",
                Some(raft::pb::raft_message::Body::InstallSnapshot(_)) => "snapshot",
                Some(raft::pb::raft_message::Body::InstallSnapshotResponse(_)) => "snapshot-resp",
                Some(raft::pb::raft_message::Body::RequestVote(_)) => "vote",
                Some(raft::pb::raft_message::Body::RequestVoteResponse(_)) => "vote-resp",
                Some(raft::pb::raft_message::Body::TimeoutNow(_)) => "timeout-now",
                Some(raft::pb::raft_message::Body::Propose(_)) => "propose",
                Some(raft::pb::raft_message::Body::ProposalRejected(_)) => "propose-rejected",
                Some(raft::pb::raft_message::Body::ReadIndex(_)) => "read-index",
                Some(raft::pb::raft_message::Body::ReadIndexResponse(_)) => "read-index-resp",
                None => "empty",
            };
            *m.entry((msg.from, msg.to, kind)).or_insert(0) += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(8);
        v
    }

    pub fn partition(&mut self, a: &[u64], b: &[u64], symmetric: bool) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                if symmetric {
                    self.blocked.insert((y, x));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
