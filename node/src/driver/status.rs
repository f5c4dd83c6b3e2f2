//! What the Raft loop shows the rest of the member: the [`RaftStatus`] handlers read without
//! asking the loop, and the gauges and counters of Raft's state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use crate::metrics::Metrics;
use crate::proto::raftpb::{RaftMessage, raft_message};
use crate::raft::{Role, Status};

use super::handle::{PeerProgress, RaftStatus};

/// Publishes the loop's state after every turn.
pub(crate) struct StatusPublisher {
    tx: watch::Sender<RaftStatus>,
    metrics: Arc<Metrics>,
    last_leader: Option<u64>,
    /// Send time of each heartbeat/append round, for the peer round-trip histogram.
    round_sent: BTreeMap<u64, Instant>,
    /// The latest round whose round trip was measured, per peer.
    rounds_measured: HashMap<u64, u64>,
}

impl StatusPublisher {
    pub(crate) fn new(id: u64, metrics: Arc<Metrics>) -> (Self, watch::Receiver<RaftStatus>) {
        let (tx, rx) = watch::channel(RaftStatus { id, ..Default::default() });
        let publisher = Self {
            tx,
            metrics,
            last_leader: None,
            round_sent: BTreeMap::new(),
            rounds_measured: HashMap::new(),
        };
        (publisher, rx)
    }

    /// Notes a role or leader change; returns whether the leader changed.
    pub(crate) fn soft_state(&mut self, leader: Option<u64>, role: Role) -> bool {
        let leader = leader.filter(|l| *l != 0);
        self.metrics.has_leader.set(i64::from(leader.is_some()));
        self.metrics.is_leader.set(i64::from(role == Role::Leader));
        if leader == self.last_leader {
            return false;
        }
        if leader.is_some() {
            self.metrics.leader_changes.inc();
        }
        info!(leader = ?leader.map(|l| format!("{l:x}")), ?role, "leader changed");
        self.last_leader = leader;
        true
    }

    /// Publishes the status after a turn; `applied` is the key space's applied index.
    pub(crate) fn publish(&self, st: &Status, applied: u64) {
        let conf = &st.conf_state;
        let status = RaftStatus {
            id: st.id,
            term: st.term,
            leader_id: st.leader_id.filter(|l| *l != 0),
            is_leader: st.role == Role::Leader,
            commit: st.commit,
            applied,
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            heartbeat: Some(Instant::now()),
        };
        self.metrics.term.set(st.term as i64);
        self.metrics.applied_index.set(applied as i64);
        self.metrics.committed_index.set(st.commit as i64);
        self.tx.send_if_modified(|old| {
            let changed = old.term != status.term
                || old.leader_id != status.leader_id
                || old.applied != status.applied
                || old.commit != status.commit
                || old.voters != status.voters
                || old.learners != status.learners
                || old.heartbeat.is_none_or(|h| h.elapsed() > Duration::from_millis(200));
            *old = status;
            changed
        });
    }

    /// Remembers when a leader round's first append left, to time its round trip.
    pub(crate) fn sent(&mut self, msg: &RaftMessage, now: Instant) {
        if msg.round != 0 && matches!(msg.body, Some(raft_message::Body::AppendEntries(_))) {
            self.round_sent.entry(msg.round).or_insert(now);
        }
        while self.round_sent.len() > 1024 {
            self.round_sent.pop_first();
        }
    }

    /// Times a peer's first answer to each leader round. The core starts a round when it
    /// confirms leadership (ReadIndex) and broadcasts a heartbeat for it; later appends reuse
    /// the round, so only the first answer per peer and round measures a round trip.
    pub(crate) fn received(&mut self, msg: &RaftMessage, now: Instant) {
        if msg.round == 0 || self.rounds_measured.get(&msg.from).is_some_and(|r| *r >= msg.round) {
            return;
        }
        if let Some(raft_message::Body::AppendEntriesResponse(_)) = &msg.body
            && let Some(sent) = self.round_sent.get(&msg.round)
        {
            self.rounds_measured.insert(msg.from, msg.round);
            self.metrics
                .peer_round_trip
                .with_label_values(&[&format!("{:x}", msg.from)])
                .observe(now.duration_since(*sent).as_secs_f64());
        }
    }
}

/// The leader's view of every member's replication, from the core's status.
pub(crate) fn progress(st: &Status) -> Vec<PeerProgress> {
    st.progress
        .iter()
        .map(|(id, p)| PeerProgress {
            id: *id,
            matched: p.matched,
            recent_active: *id == st.id || p.recent_active,
        })
        .collect()
}
