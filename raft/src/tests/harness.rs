//! Small helpers to drive nodes by hand and a lossless in-memory network.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;

use crate::pb::raft_message::Body;
use crate::pb::{
    AppendEntriesRequest, AppendEntriesResponse, ConfChange, ConfChangeType, ConfState, Entry, EntryType,
    HardState, RaftMessage, RequestVoteRequest, RequestVoteResponse, Snapshot,
};
use crate::{Config, MemStorage, RawNode, ReadState, RejectedProposal, Role, bootstrap};

pub(super) fn config(id: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        pre_vote: false,
        check_quorum: false,
        max_size_per_msg: u64::MAX,
        max_inflight_msgs: 256,
        snapshot_chunk_size: 1024,
        applied: 0,
        seed: 7,
        forward_seq_base: 1,
        // The strict check is tested on its own (`tests::forwarding`); elsewhere a change is
        // judged only by the membership rules.
        strict_reconfig_check: false,
    }
}

pub(super) fn ent(index: u64, term: u64) -> Entry {
    Entry { index, term, ..Default::default() }
}

pub(super) fn data_ent(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry { index, term, data: data.to_vec(), ..Default::default() }
}

/// A store holding a log with the given terms (index 1..), a hard state and a membership.
pub(super) fn store(voters: &[u64], learners: &[u64], terms: &[u64], hs: HardState) -> MemStorage {
    let s =
        MemStorage::new_with_conf_state(ConfState { voters: voters.to_vec(), learners: learners.to_vec() });
    let ents: Vec<Entry> = terms.iter().zip(1u64..).map(|(&t, i)| ent(i, t)).collect();
    s.append(&ents).unwrap();
    s.set_hard_state(hs);
    s
}

pub(super) fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { current_term: term, voted_for: vote, commit }
}

/// A node with an empty log at term 0 in a cluster of `voters`.
pub(super) fn node(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
    RawNode::new(&config(id), store(voters, &[], &[], HardState::default())).unwrap()
}

/// A node whose log has the given terms, at `term`.
pub(super) fn node_with_log(id: u64, voters: &[u64], terms: &[u64], term: u64) -> RawNode<MemStorage> {
    RawNode::new(&config(id), store(voters, &[], terms, hs(term, 0, 0))).unwrap()
}

/// What a `Ready` held, after it was persisted and advanced.
#[derive(Debug, Default)]
pub(super) struct Handled {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub committed: Vec<Entry>,
    pub msgs: Vec<RaftMessage>,
    pub read_states: Vec<ReadState>,
    pub rejected: Vec<RejectedProposal>,
}

/// Plays the driver once: persist, apply conf changes, advance.
pub(super) fn handle(n: &mut RawNode<MemStorage>) -> Handled {
    let mut rd = n.ready().unwrap();
    let s = n.storage().clone();
    if let Some(snap) = &rd.snapshot {
        s.apply_snapshot(snap.clone()).unwrap();
    }
    s.append(&rd.entries).unwrap();
    if let Some(h) = rd.hard_state {
        s.set_hard_state(h);
    }
    for e in &rd.committed_entries {
        if e.entry_type == EntryType::EntryConfChange as i32 {
            let cc = ConfChange::decode(e.data.as_slice()).unwrap();
            let cs = n.apply_conf_change(&cc).unwrap();
            s.set_conf_state(cs);
        }
    }
    let out = Handled {
        hard_state: rd.hard_state,
        entries: std::mem::take(&mut rd.entries),
        snapshot: rd.snapshot.take(),
        committed: std::mem::take(&mut rd.committed_entries),
        msgs: std::mem::take(&mut rd.messages),
        read_states: std::mem::take(&mut rd.read_states),
        rejected: std::mem::take(&mut rd.rejected_proposals),
    };
    n.advance(rd).unwrap();
    out
}

/// Handles readies until there is nothing more; returns all messages produced.
pub(super) fn drain(n: &mut RawNode<MemStorage>) -> Vec<RaftMessage> {
    let mut msgs = Vec::new();
    while n.has_ready() {
        msgs.extend(handle(n).msgs);
    }
    msgs
}

pub(super) fn msg(from: u64, to: u64, body: Body) -> RaftMessage {
    RaftMessage { from, to, round: 0, body: Some(body) }
}

pub(super) fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    leader_commit: u64,
) -> RaftMessage {
    msg(
        from,
        to,
        Body::AppendEntries(AppendEntriesRequest {
            term,
            leader_id: from,
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries,
            leader_commit,
        }),
    )
}

pub(super) fn vote_req(from: u64, to: u64, term: u64, last: (u64, u64)) -> RaftMessage {
    msg(
        from,
        to,
        Body::RequestVote(RequestVoteRequest {
            term,
            candidate_id: from,
            last_log_index: last.0,
            last_log_term: last.1,
            ..Default::default()
        }),
    )
}

pub(super) fn pre_vote_req(from: u64, to: u64, term: u64, last: (u64, u64)) -> RaftMessage {
    let mut m = vote_req(from, to, term, last);
    if let Some(Body::RequestVote(rv)) = m.body.as_mut() {
        rv.pre_vote = true;
    }
    m
}

pub(super) fn vote_resp(from: u64, to: u64, term: u64, granted: bool) -> RaftMessage {
    msg(
        from,
        to,
        Body::RequestVoteResponse(RequestVoteResponse {
            term,
            vote_granted: granted,
            pre_vote: false,
            ..Default::default()
        }),
    )
}

pub(super) fn append_ok(from: u64, to: u64, term: u64, match_index: u64) -> RaftMessage {
    msg(
        from,
        to,
        Body::AppendEntriesResponse(AppendEntriesResponse {
            term,
            success: true,
            match_index,
            ..Default::default()
        }),
    )
}

pub(super) fn append_reject(from: u64, to: u64, term: u64, conflict: (u64, u64)) -> RaftMessage {
    msg(
        from,
        to,
        Body::AppendEntriesResponse(AppendEntriesResponse {
            term,
            success: false,
            conflict_index: conflict.0,
            conflict_term: conflict.1,
            ..Default::default()
        }),
    )
}

pub(super) fn appends_to(msgs: &[RaftMessage], to: u64) -> Vec<AppendEntriesRequest> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            Some(Body::AppendEntries(a)) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn append_responses(msgs: &[RaftMessage]) -> Vec<AppendEntriesResponse> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            Some(Body::AppendEntriesResponse(a)) => Some(*a),
            _ => None,
        })
        .collect()
}

pub(super) fn vote_requests(msgs: &[RaftMessage]) -> Vec<(u64, RequestVoteRequest)> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            Some(Body::RequestVote(r)) => Some((m.to, *r)),
            _ => None,
        })
        .collect()
}

pub(super) fn vote_responses(msgs: &[RaftMessage]) -> Vec<RequestVoteResponse> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            Some(Body::RequestVoteResponse(r)) => Some(*r),
            _ => None,
        })
        .collect()
}

pub(super) fn terms_of(n: &RawNode<MemStorage>) -> Vec<u64> {
    let r = n.raft();
    let last = r.log.last_index().unwrap();
    let first = r.log.first_index().unwrap();
    r.log.slice(first, last + 1, None).unwrap().iter().map(|e| e.term).collect()
}

/// Ticks until the node has left the follower role (or gives up after many ticks).
pub(super) fn tick_until_campaign(n: &mut RawNode<MemStorage>) -> usize {
    for i in 1..=100 {
        n.tick().unwrap();
        if n.status().role != Role::Follower {
            return i;
        }
    }
    panic!("node never campaigned");
}

pub(super) fn add_node(id: u64) -> ConfChange {
    ConfChange {
        change_type: ConfChangeType::ConfChangeAddNode as i32,
        node_id: id,
        context: vec![],
        ..Default::default()
    }
}

pub(super) fn add_learner(id: u64) -> ConfChange {
    ConfChange {
        change_type: ConfChangeType::ConfChangeAddLearnerNode as i32,
        node_id: id,
        context: vec![],
        ..Default::default()
    }
}

pub(super) fn remove_node(id: u64) -> ConfChange {
    ConfChange {
        change_type: ConfChangeType::ConfChangeRemoveNode as i32,
        node_id: id,
        context: vec![],
        ..Default::default()
    }
}

/// A lossless, ordered network of nodes, with optional cut links.
pub(super) struct Net {
    pub nodes: BTreeMap<u64, RawNode<MemStorage>>,
    pub applied: BTreeMap<u64, Vec<Entry>>,
    pub reads: BTreeMap<u64, Vec<ReadState>>,
    pub rejected: BTreeMap<u64, Vec<RejectedProposal>>,
    pub cut: BTreeSet<(u64, u64)>,
    pub delivered: Vec<RaftMessage>,
}

impl Net {
    /// A freshly bootstrapped cluster of `ids`, built with `cfg`.
    pub fn new_with(ids: &[u64], cfg: impl Fn(u64) -> Config) -> Self {
        let boot = bootstrap(ids).unwrap();
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let s = MemStorage::new();
            s.append(&boot.entries).unwrap();
            s.set_hard_state(boot.hard_state);
            nodes.insert(id, RawNode::new(&cfg(id), s).unwrap());
        }
        let mut net = Self::from_nodes(nodes.into_values().collect());
        net.settle();
        net
    }

    pub fn new(ids: &[u64]) -> Self {
        Self::new_with(ids, config)
    }

    /// A network of hand-built nodes.
    pub fn from_nodes(nodes: Vec<RawNode<MemStorage>>) -> Self {
        let nodes = nodes.into_iter().map(|n| (n.status().id, n)).collect();
        Self {
            nodes,
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            rejected: BTreeMap::new(),
            cut: BTreeSet::new(),
            delivered: vec![],
        }
    }

    /// Adds a node with empty storage (a member joining an existing cluster).
    pub fn add_empty(&mut self, id: u64, cfg: Config) {
        self.nodes.insert(id, RawNode::new(&cfg, MemStorage::new()).unwrap());
    }

    /// The current leader, if exactly one node believes it leads in the highest term.
    pub fn leader(&self) -> Option<u64> {
        let top = self.nodes.values().map(|n| n.status().term).max()?;
        self.nodes
            .values()
            .map(|n| n.status())
            .find(|s| s.role == Role::Leader && s.term == top)
            .map(|s| s.id)
    }

    pub fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for other in ids {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// One round: every node hands out its readies, then their messages are delivered.
    /// Returns whether any message was sent.
    pub fn round(&mut self) -> bool {
        let mut msgs = Vec::new();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let n = self.nodes.get_mut(&id).unwrap();
            while n.has_ready() {
                let h = handle(n);
                self.applied.entry(id).or_default().extend(h.committed);
                self.reads.entry(id).or_default().extend(h.read_states);
                self.rejected.entry(id).or_default().extend(h.rejected);
                msgs.extend(h.msgs);
            }
        }
        let sent = !msgs.is_empty();
        for m in msgs {
            if self.cut.contains(&(m.from, m.to)) {
                continue;
            }
            self.delivered.push(m.clone());
            if let Some(n) = self.nodes.get_mut(&m.to) {
                let _ = n.step(m);
            }
        }
        sent
    }

    /// Delivers messages until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.round() {
                return;
            }
        }
        panic!("network never settled");
    }

    /// Replaces node `id` by a restart from its storage (everything unpersisted is lost).
    pub fn restart(&mut self, id: u64) {
        let applied = self.node(id).status().applied;
        let store = self.node(id).storage().clone();
        let n = RawNode::new(&Config { applied, ..config(id) }, store).unwrap();
        self.nodes.insert(id, n);
    }

    pub fn tick_all(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for n in self.nodes.values_mut() {
                n.tick().unwrap();
            }
            self.settle();
        }
    }

    pub fn elect(&mut self, id: u64) {
        self.node(id).campaign().unwrap();
        self.settle();
        assert_eq!(self.node(id).status().role, Role::Leader, "node {id} should have won");
    }

    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|e| e.entry_type == EntryType::EntryNormal as i32 && !e.data.is_empty())
                    .map(|e| e.data.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
