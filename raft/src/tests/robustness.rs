//! Hostile or stale input never panics the core nor changes what it must not change, and a
//! restart restores exactly what was persisted.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::harness::*;
use crate::pb::raft_message::Body;
use crate::pb::{
    AppendEntriesRequest, AppendEntriesResponse, ConfState, Entry, EntryType, ForwardedProposal,
    InstallSnapshotRequest, InstallSnapshotResponse, ProposalRejected, RaftMessage, ReadIndexRequest,
    ReadIndexResponse, RequestVoteRequest, RequestVoteResponse, TimeoutNow,
};
use crate::{Config, MemStorage, RaftError, RawNode, Role};

#[test]
fn hostile_malformed_envelopes_are_rejected() {
    let mut n = node(1, &[1, 2, 3]);
    let ok = append(2, 1, 1, (0, 0), vec![], 0);
    let mut to_other = ok.clone();
    to_other.to = 7;
    let mut from_zero = ok.clone();
    from_zero.from = 0;
    let mut from_self = ok.clone();
    from_self.from = 1;
    let no_body = RaftMessage { from: 2, to: 1, round: 0, body: None };
    let term_zero = append(2, 1, 0, (0, 0), vec![], 0);
    for m in [to_other, from_zero, from_self, no_body, term_zero] {
        assert!(matches!(n.step(m), Err(RaftError::InvalidMessage(_))));
    }
    assert_eq!(n.status().term, 0);
    assert!(!n.has_ready());
}

#[test]
fn hostile_responses_nobody_asked_for_are_ignored() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let before = net.node(1).status();
    let t = before.term;
    // From an unknown member, and responses to requests never sent.
    net.node(1).step(append_ok(9, 1, t, 1)).unwrap();
    net.node(1).step(vote_resp(2, 1, t, true)).unwrap();
    net.node(1)
        .step(msg(
            2,
            1,
            Body::InstallSnapshotResponse(InstallSnapshotResponse {
                term: t,
                last_included_index: 3,
                next_offset: 5,
                done: true,
            }),
        ))
        .unwrap();
    net.node(2).step(vote_resp(3, 2, t, true)).unwrap();
    net.node(2).step(append_ok(3, 2, t, 100)).unwrap();
    assert!(matches!(net.node(1).step(append_ok(2, 1, t, 10_000)), Err(RaftError::InvalidMessage(_))));
    let after = net.node(1).status();
    assert_eq!((after.role, after.term, after.commit), (Role::Leader, t, before.commit));
    assert_eq!(after.progress[&2].matched, before.progress[&2].matched);
}

#[test]
fn hostile_append_conflicting_with_committed_entries_is_refused() {
    let mut n = node(1, &[1, 2]);
    n.step(append(2, 1, 1, (0, 0), vec![data_ent(1, 1, b"a"), data_ent(2, 1, b"b")], 2)).unwrap();
    handle(&mut n);
    // Entries at or below the commit index are known to match: they are skipped, never
    // compared, so a conflicting copy cannot overwrite them.
    n.step(append(2, 1, 3, (0, 0), vec![data_ent(1, 3, b"z")], 0)).unwrap();
    n.step(append(2, 1, 3, (1, 1), vec![data_ent(2, 3, b"z"), data_ent(3, 3, b"z")], 0)).unwrap();
    let h = handle(&mut n);
    assert_eq!(terms_of(&n), vec![1, 1], "committed entries are never overwritten");
    assert!(h.entries.is_empty());
    let r = append_responses(&h.msgs);
    assert_eq!((r[0].success, r[0].match_index), (true, 2), "covered by the commit index");
    assert!(!r[1].success, "the entry at the commit index disagrees: refused");
    let r = n.step(append(2, 1, 3, (0, 0), vec![ent(5, 3)], 0));
    assert!(matches!(r, Err(RaftError::InvalidMessage(_))), "entries not following prev");
    let r = n.step(append(2, 1, 3, (0, 0), vec![ent(1, 9)], 0));
    assert!(matches!(r, Err(RaftError::InvalidMessage(_))), "entry term beyond the leader's");
}

#[test]
fn hostile_snapshot_chunks_never_install_garbage() {
    let mut n = node(1, &[1, 2, 3]);
    let chunk = |offset: u64, done: bool, index: u64| {
        msg(
            2,
            1,
            Body::InstallSnapshot(InstallSnapshotRequest {
                term: 1,
                leader_id: 2,
                last_included_index: index,
                last_included_term: 1,
                offset,
                data: vec![1, 2, 3],
                done,
                conf_state: Some(ConfState::default()),
            }),
        )
    };
    n.step(chunk(u64::MAX - 1, true, 5)).unwrap();
    n.step(chunk(1 << 40, true, 5)).unwrap();
    assert!(matches!(n.step(chunk(0, true, 0)), Err(RaftError::InvalidMessage(_))));
    let rd = n.ready().unwrap();
    assert!(rd.snapshot.is_none());
    n.advance(rd).unwrap();
    assert_eq!(n.status().last_index, 0);
}

#[test]
fn restart_restores_hard_state_membership_and_commit() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.add_empty(4, config(4));
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.tick_all(2);
    let before = net.node(2).status();
    let store = net.node(2).storage().clone();
    let cfg = Config { applied: before.applied, ..config(2) };
    let again = RawNode::new(&cfg, store).unwrap();
    let after = again.status();
    assert_eq!(
        (after.term, after.vote, after.commit, after.applied),
        (before.term, before.vote, before.commit, before.applied)
    );
    assert_eq!(after.conf_state, before.conf_state);
    assert_eq!(after.role, Role::Follower);
    // A node may not claim to have applied more than it committed.
    let store = net.node(2).storage().clone();
    let bad = Config { applied: before.commit + 1, ..config(2) };
    assert!(matches!(RawNode::new(&bad, store), Err(RaftError::InvalidConfig(_))));
}

fn random_entries(rng: &mut ChaCha8Rng, prev: u64) -> Vec<Entry> {
    let n = rng.random_range(0..3u64);
    (1..=n).map(|i| data_ent(prev + i, rng.random_range(0..6), b"e")).collect()
}

fn random_message(rng: &mut ChaCha8Rng, to: u64) -> RaftMessage {
    let from = [2, 3, 4, 99, 0][rng.random_range(0..5)];
    let term = rng.random_range(0..6);
    let index = [0, 1, 2, 5, u64::MAX / 2][rng.random_range(0..5)];
    let body = match rng.random_range(0..11) {
        0 => {
            let prev = rng.random_range(0..6);
            Body::AppendEntries(AppendEntriesRequest {
                term,
                leader_id: from,
                prev_log_index: prev,
                prev_log_term: rng.random_range(0..6),
                entries: random_entries(rng, prev),
                leader_commit: index,
            })
        }
        1 => Body::AppendEntriesResponse(AppendEntriesResponse {
            term,
            success: rng.random(),
            match_index: index,
            conflict_index: index,
            conflict_term: rng.random_range(0..6),
        }),
        2 => Body::RequestVote(RequestVoteRequest {
            term,
            candidate_id: from,
            last_log_index: index,
            last_log_term: rng.random_range(0..6),
            pre_vote: rng.random(),
            leadership_transfer: rng.random(),
        }),
        3 => Body::RequestVoteResponse(RequestVoteResponse {
            term,
            vote_granted: rng.random(),
            pre_vote: rng.random(),
            ..Default::default()
        }),
        4 => Body::InstallSnapshot(InstallSnapshotRequest {
            term,
            leader_id: from,
            last_included_index: index,
            last_included_term: rng.random_range(0..6),
            offset: [0, 3, u64::MAX][rng.random_range(0..3)],
            data: vec![7; rng.random_range(0..5)],
            done: rng.random(),
            conf_state: Some(ConfState { voters: vec![1, 2, 3], learners: vec![] }),
        }),
        5 => Body::InstallSnapshotResponse(InstallSnapshotResponse {
            term,
            last_included_index: index,
            next_offset: index,
            done: rng.random(),
        }),
        6 => Body::TimeoutNow(TimeoutNow { term, leader_id: from }),
        7 => Body::Propose(ForwardedProposal {
            term,
            seq: index,
            entries: random_entries(rng, 0)
                .into_iter()
                .map(|mut e| {
                    // Sometimes a membership change, sometimes garbage claiming to be one.
                    if rng.random_ratio(1, 3) {
                        e.entry_type = EntryType::EntryConfChange as i32;
                    }
                    e
                })
                .collect(),
        }),
        8 => Body::ProposalRejected(ProposalRejected { term, seq: index, reason: rng.random_range(0..12) }),
        9 => Body::ReadIndex(ReadIndexRequest { term, context: vec![1; rng.random_range(0..3)] }),
        _ => Body::ReadIndexResponse(ReadIndexResponse { term, context: vec![2], index }),
    };
    RaftMessage { from, to: if rng.random_ratio(1, 10) { 5 } else { to }, round: index, body: Some(body) }
}

/// Random garbage of every kind, against every role, with storage kept consistent: the core
/// must neither panic nor let its term, commit or applied index go backwards.
#[test]
fn fuzz_random_messages_never_panic_or_regress() {
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cfg = Config { pre_vote: rng.random(), check_quorum: rng.random(), ..config(1) };
        let mut n = RawNode::new(&cfg, store(&[1, 2, 3], &[4], &[], hs(0, 0, 0))).unwrap();
        let (mut term, mut commit, mut applied) = (0, 0, 0);
        for _ in 0..300 {
            match rng.random_range(0..10) {
                0 => n.tick().unwrap(),
                1 => {
                    let _ = n.campaign();
                }
                2 => {
                    let _ = n.propose(b"p".to_vec());
                    let _ = n.read_index(b"r".to_vec());
                }
                _ => {
                    let _ = n.step(random_message(&mut rng, 1));
                }
            }
            if rng.random_ratio(1, 2) {
                handle(&mut n);
            }
            let st = n.status();
            assert!(st.term >= term && st.commit >= commit && st.applied >= applied, "seed {seed}: {st:?}");
            assert!(st.commit <= st.last_index, "seed {seed}: commit beyond log {st:?}");
            (term, commit, applied) = (st.term, st.commit, st.applied);
        }
    }
}

#[test]
fn storage_helpers_are_shareable() {
    let s = MemStorage::new();
    let n = RawNode::new(&config(1), std::sync::Arc::new(s.clone())).unwrap();
    assert_eq!(n.status().last_index, 0);
    let r = RawNode::new(&config(1), &s).unwrap();
    assert_eq!(r.status().term, 0);
}
