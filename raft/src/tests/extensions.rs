//! Beyond Figure 2: randomized timeouts, pre-vote, check-quorum, the no-op, fast
//! backtracking and pipelined replication with its in-flight window.

use super::harness::*;
use crate::pb::EntryType;
use crate::{Config, MemStorage, ProgressState, RawNode, Role};

#[test]
fn ext_randomized_election_timeout_in_range_and_seeded() {
    let timeouts = |id: u64, seed: u64| -> Vec<usize> {
        let mut n =
            RawNode::new(&Config { seed, ..config(id) }, store(&[1, 2, 3], &[], &[], hs(0, 0, 0))).unwrap();
        (0..50)
            .map(|_| {
                n.raft_mut().become_follower_for_test();
                n.raft().randomized_election_timeout
            })
            .collect()
    };
    let a = timeouts(1, 5);
    assert!(a.iter().all(|t| (10..20).contains(t)), "{a:?}");
    assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 5, "timeouts vary: {a:?}");
    assert_eq!(a, timeouts(1, 5), "same seed, same timeouts");
    assert_ne!(a, timeouts(2, 5), "peers sharing a seed still differ");
}

fn pre_vote_config(id: u64) -> Config {
    Config { pre_vote: true, check_quorum: true, ..config(id) }
}

#[test]
fn ext_prevote_partitioned_node_does_not_disrupt() {
    let mut net = Net::new_with(&[1, 2, 3], pre_vote_config);
    net.elect(1);
    let term = net.node(1).status().term;
    net.isolate(3);
    net.tick_all(100);
    assert_eq!(net.node(3).status().term, term, "pre-votes never bump the term");
    assert_ne!(net.node(3).status().role, Role::Leader);
    net.heal();
    net.tick_all(5);
    assert_eq!(net.leader(), Some(1), "the healthy leader keeps its job after the heal");
    assert_eq!(net.node(1).status().term, term);
}

#[test]
fn ext_prevote_then_vote_elects_with_one_term_bump() {
    let mut net = Net::new_with(&[1, 2, 3], pre_vote_config);
    net.node(2).campaign().unwrap();
    assert_eq!(net.node(2).status().role, Role::PreCandidate);
    assert_eq!(net.node(2).status().term, 1, "a pre-candidate keeps its term");
    net.settle();
    assert_eq!(net.leader(), Some(2));
    assert_eq!(net.node(2).status().term, 2);
}

#[test]
fn ext_prevote_rejected_when_log_behind() {
    let mut n = RawNode::new(&pre_vote_config(1), store(&[1, 2, 3], &[], &[1, 2], hs(2, 0, 0))).unwrap();
    n.step(pre_vote_req(2, 1, 3, (1, 1))).unwrap();
    n.step(pre_vote_req(3, 1, 3, (2, 2))).unwrap();
    let r = vote_responses(&drain(&mut n));
    assert_eq!(
        r.iter().map(|r| (r.vote_granted, r.pre_vote)).collect::<Vec<_>>(),
        vec![(false, true), (true, true)]
    );
    assert_eq!(r[1].term, 3, "a granted pre-vote carries the term asked about");
    assert_eq!((n.status().term, n.status().vote), (2, 0), "pre-votes change neither term nor vote");
}

#[test]
fn ext_check_quorum_leader_steps_down_without_quorum() {
    let mut net = Net::new_with(&[1, 2, 3], pre_vote_config);
    net.elect(1);
    net.isolate(1);
    for _ in 0..10 {
        net.node(1).tick().unwrap();
    }
    assert_eq!(net.node(1).status().role, Role::Leader, "one election timeout may pass");
    for _ in 0..10 {
        net.node(1).tick().unwrap();
    }
    assert_eq!(net.node(1).status().role, Role::Follower, "no quorum heard for a whole timeout");
}

#[test]
fn ext_check_quorum_voters_ignore_votes_within_lease() {
    let mut n = RawNode::new(&pre_vote_config(1), store(&[1, 2, 3], &[], &[], hs(1, 0, 0))).unwrap();
    n.step(append(2, 1, 1, (0, 0), vec![], 0)).unwrap();
    drain(&mut n);
    n.step(vote_req(3, 1, 5, (9, 9))).unwrap();
    n.step(pre_vote_req(3, 1, 5, (9, 9))).unwrap();
    assert!(drain(&mut n).is_empty(), "a live leader's lease: no answer at all");
    assert_eq!(n.status().term, 1);
    // A leadership transfer overrides the lease.
    let mut m = vote_req(3, 1, 5, (9, 9));
    if let Some(crate::pb::raft_message::Body::RequestVote(rv)) = m.body.as_mut() {
        rv.leadership_transfer = true;
    }
    n.step(m).unwrap();
    assert!(vote_responses(&drain(&mut n))[0].vote_granted);
    // Once the lease ran out (an election timeout without the leader), votes are heard.
    let mut n = RawNode::new(&pre_vote_config(1), store(&[1, 2, 3], &[], &[], hs(1, 0, 0))).unwrap();
    n.step(append(2, 1, 1, (0, 0), vec![], 0)).unwrap();
    for _ in 0..10 {
        n.tick().unwrap();
    }
    drain(&mut n);
    n.step(pre_vote_req(3, 1, 5, (9, 9))).unwrap();
    assert!(vote_responses(&drain(&mut n)).iter().any(|r| r.vote_granted));
}

#[test]
fn ext_leader_appends_noop_on_election() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(2);
    let st = net.node(2).status();
    let e = net.node(2).raft().log.slice(st.last_index, st.last_index + 1, None).unwrap().remove(0);
    assert_eq!((e.term, e.entry_type, e.data.len()), (st.term, EntryType::EntryNormal as i32, 0));
    assert_eq!(st.commit, st.last_index, "the no-op commits, and with it everything before");
}

#[test]
fn ext_fast_backtracking_skips_a_term_per_round_trip() {
    let leader = node_with_log(1, &[1, 2], &[1, 1, 1, 4, 4, 4, 4], 4);
    let follower = node_with_log(2, &[1, 2], &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 3);
    let mut net = Net::from_nodes(vec![leader, follower]);
    net.node(1).campaign().unwrap();
    net.node(1).step(vote_resp(2, 1, 5, true)).unwrap();
    net.settle();
    let rejections = net
        .delivered
        .iter()
        .filter(|m| append_responses(std::slice::from_ref(m)).iter().any(|r| !r.success))
        .count();
    assert!(rejections <= 2, "one rejection per conflicting term, not per entry: {rejections}");
    assert_eq!(terms_of(net.node(2)), vec![1, 1, 1, 4, 4, 4, 4, 5]);
    assert_eq!(net.node(2).status().commit, 8);
}

fn window_config(id: u64) -> Config {
    // Every entry is its own message.
    Config { max_inflight_msgs: 2, max_size_per_msg: 1, ..config(id) }
}

fn leader_replicating_to_2() -> RawNode<MemStorage> {
    let mut n = RawNode::new(&window_config(1), store(&[1, 2], &[], &[], hs(0, 0, 0))).unwrap();
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    drain(&mut n);
    n.step(append_ok(2, 1, 1, 1)).unwrap();
    drain(&mut n);
    assert_eq!(n.status().progress[&2].state, ProgressState::Replicate);
    n
}

#[test]
fn ext_pipeline_respects_inflight_window() {
    let mut n = leader_replicating_to_2();
    for i in 0..5u8 {
        n.propose(vec![i]).unwrap();
    }
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(sent.len(), 2, "pipelined, but at most max_inflight_msgs outstanding");
    assert_eq!(sent.iter().map(|a| a.prev_log_index).collect::<Vec<_>>(), vec![1, 2], "without waiting");
    n.step(append_ok(2, 1, 1, 2)).unwrap();
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(
        sent.iter().map(|a| a.prev_log_index).collect::<Vec<_>>(),
        vec![3],
        "one slot freed, one sent"
    );
}

#[test]
fn ext_probe_sends_one_append_at_a_time() {
    let mut n = RawNode::new(&window_config(1), store(&[1, 2], &[], &[], hs(0, 0, 0))).unwrap();
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    assert_eq!(appends_to(&drain(&mut n), 2).len(), 1);
    n.propose(b"x".to_vec()).unwrap();
    n.propose(b"y".to_vec()).unwrap();
    assert!(appends_to(&drain(&mut n), 2).is_empty(), "probing: wait for the answer");
    n.tick().unwrap(); // heartbeat: the probe may be repeated
    n.step(append_ok(2, 1, 1, 0)).unwrap();
    assert_eq!(appends_to(&drain(&mut n), 2).iter().filter(|a| !a.entries.is_empty()).count(), 1);
}

#[test]
fn ext_full_window_of_lost_appends_does_not_stall() {
    let mut n = leader_replicating_to_2();
    for i in 0..4u8 {
        n.propose(vec![i]).unwrap();
    }
    assert_eq!(appends_to(&drain(&mut n), 2).len(), 2);
    // Both appends are lost; the follower answers a heartbeat with what it has.
    n.tick().unwrap();
    drain(&mut n);
    n.step(append_ok(2, 1, 1, 1)).unwrap();
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(sent.len(), 1, "a slot is freed so replication resumes");
    n.step(append_reject(2, 1, 1, (2, 0))).unwrap();
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(sent[0].prev_log_index, 1, "the gap sends the leader back to probing from match + 1");
    assert_eq!(n.status().progress[&2].state, ProgressState::Probe);
}

#[test]
fn ext_heartbeat_commits_only_up_to_follower_match() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let commit = net.node(1).status().commit;
    let msgs = {
        net.node(1).tick().unwrap();
        drain(net.node(1))
    };
    for a in appends_to(&msgs, 2) {
        assert!(a.entries.is_empty());
        assert_eq!(a.prev_log_index, commit, "prev is the follower's known match");
        assert_eq!(a.leader_commit, commit);
    }
}

#[test]
fn ext_commit_reaches_followers_without_empty_appends_overtaking_entries() {
    let mut n = leader_replicating_to_2();
    n.propose(b"a".to_vec()).unwrap();
    n.propose(b"b".to_vec()).unwrap();
    assert_eq!(appends_to(&drain(&mut n), 2).len(), 2, "two appends in flight");
    n.step(append_ok(2, 1, 1, 2)).unwrap(); // the first arrives: 2 commits (2 of 2 voters)
    let sent = appends_to(&drain(&mut n), 2);
    assert!(
        sent.iter().all(|a| !a.entries.is_empty() || a.prev_log_index <= 2),
        "no empty append that could overtake the one in flight: {sent:?}"
    );
    n.step(append_ok(2, 1, 1, 3)).unwrap(); // caught up, but never told commit 3
    let sent = appends_to(&drain(&mut n), 2);
    assert_eq!(sent.len(), 1, "one empty append brings the commit index");
    assert_eq!((sent[0].prev_log_index, sent[0].leader_commit), (3, 3));
    n.step(append_ok(2, 1, 1, 3)).unwrap();
    assert!(appends_to(&drain(&mut n), 2).is_empty(), "and only once");
}
