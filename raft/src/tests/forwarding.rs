//! Proposals and read index requests made on followers travel to the leader inside Raft, and
//! the leader's strict check of membership changes.

use super::harness::*;
use crate::pb::raft_message::Body;
use crate::pb::{ForwardedProposal, RaftMessage, ReadIndexRequest};
use crate::{Config, Proposed, RaftError};

fn forwarded(msgs: &[RaftMessage]) -> Vec<(u64, ForwardedProposal)> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            Some(Body::Propose(p)) => Some((m.to, p.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn follower_proposals_reach_the_leader_and_apply_everywhere() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).status().term;
    let p = net.node(2).propose_batch(vec![b"a".to_vec(), b"b".to_vec()]).unwrap();
    assert!(matches!(p, Proposed::Forwarded { term: t, to: 1, .. } if t == term));
    assert_eq!(p.term(), term);
    net.settle();
    for id in [1, 2, 3] {
        let data = net.applied_data(id);
        assert_eq!(data, vec![b"a".to_vec(), b"b".to_vec()], "node {id}");
    }
    let leader_log = net.node(1).status().last_index;
    assert_eq!(net.node(2).status().last_index, leader_log);
}

#[test]
fn a_proposal_without_a_known_leader_is_dropped_with_nothing_sent() {
    let mut lonely = node(2, &[1, 2, 3]);
    assert_eq!(lonely.propose(b"x".to_vec()), Err(RaftError::NotLeader { leader_hint: None }));
    assert!(forwarded(&drain(&mut lonely)).is_empty());
}

#[test]
fn a_duplicated_or_reordered_batch_is_appended_once() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(2).propose(b"first".to_vec()).unwrap();
    net.node(2).propose(b"second".to_vec()).unwrap();
    let msgs = drain(net.node(2));
    let batches: Vec<RaftMessage> =
        msgs.into_iter().filter(|m| matches!(m.body, Some(Body::Propose(_)))).collect();
    assert_eq!(batches.len(), 2);
    // The second arrives first, then both again: only the second is appended, once.
    for m in [&batches[1], &batches[0], &batches[1], &batches[0]] {
        net.node(1).step(m.clone()).unwrap();
    }
    net.settle();
    assert_eq!(net.applied_data(1), vec![b"second".to_vec()]);
}

#[test]
fn a_batch_of_another_term_is_dropped_without_moving_the_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).status().term;
    for stale_or_future in [term - 1, term + 1] {
        let m = msg(
            2,
            1,
            Body::Propose(ForwardedProposal {
                term: stale_or_future,
                seq: 100 + stale_or_future,
                entries: vec![data_ent(0, 0, b"late")],
            }),
        );
        net.node(1).step(m).unwrap();
    }
    net.settle();
    assert_eq!(net.node(1).status().term, term);
    assert!(net.applied_data(1).is_empty());
    assert!(net.rejected.values().all(Vec::is_empty), "dropped, not refused: nobody of that term asked");
}

#[test]
fn a_leader_that_cannot_append_tells_the_forwarder_why() {
    let mut net = Net::new_with(&[1, 2, 3], |id| Config { pre_vote: true, check_quorum: true, ..config(id) });
    net.elect(1);
    net.cut.insert((1, 3));
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    net.node(1).transfer_leader(3).unwrap();
    let p = net.node(2).propose(b"during transfer".to_vec()).unwrap();
    let Proposed::Forwarded { seq, .. } = p else { panic!("forwarded: {p:?}") };
    net.settle();
    let rejected = net.rejected.get(&2).cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].seq, seq);
    assert_eq!(rejected[0].error, RaftError::TransferInProgress);
    assert!(!net.applied_data(1).contains(&b"during transfer".to_vec()));
}

#[test]
fn a_forwarded_membership_change_is_validated_by_the_leader() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(2).propose_conf_change(add_learner(4)).unwrap();
    let second = net.node(2).propose_conf_change(add_learner(5)).unwrap();
    net.settle();
    let rejected = net.rejected.get(&2).cloned().unwrap_or_default();
    let Proposed::Forwarded { seq, .. } = second else { panic!("forwarded: {second:?}") };
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!((rejected[0].seq, &rejected[0].error), (seq, &RaftError::ConfChangePending));
    assert_eq!(net.node(3).status().conf_state.learners, vec![4]);
    // An invalid change from a follower is refused too (already a voter).
    net.node(2).propose_conf_change(add_node(3)).unwrap();
    net.settle();
    let rejected = net.rejected.get(&2).cloned().unwrap_or_default();
    assert!(matches!(rejected.last().map(|r| &r.error), Some(RaftError::InvalidConfChange(_))));
}

#[test]
fn follower_read_index_is_answered_by_the_leader_with_its_commit_index() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"w".to_vec()).unwrap();
    net.settle();
    let commit = net.node(1).status().commit;
    net.node(3).read_index(b"batch-7".to_vec()).unwrap();
    net.settle();
    let reads = net.reads.get(&3).cloned().unwrap_or_default();
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].request_ctx, b"batch-7");
    assert_eq!(reads[0].index, commit);
    assert!(net.reads.get(&1).is_none_or(Vec::is_empty), "the leader keeps nothing for itself");
}

#[test]
fn a_forwarded_read_waits_for_the_new_leaders_first_commit() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"w".to_vec()).unwrap();
    net.settle();
    // Node 2 wins a new term but its no-op is not committed yet when a read arrives.
    net.isolate(2);
    net.node(2).campaign().unwrap();
    net.heal();
    let msgs = drain(net.node(2));
    for m in msgs.into_iter().filter(|m| m.to == 3) {
        net.node(3).step(m).unwrap();
    }
    for m in drain(net.node(3)).into_iter().filter(|m| m.to == 2) {
        net.node(2).step(m).unwrap();
    }
    assert_eq!(net.node(2).status().role, crate::Role::Leader);
    let term = net.node(2).status().term;
    let read = msg(3, 2, Body::ReadIndex(ReadIndexRequest { term, context: b"r".to_vec() }));
    net.node(2).step(read).unwrap();
    assert_eq!(net.node(2).status().pending_reads, 1, "deferred until the no-op commits");
    net.settle();
    let reads = net.reads.get(&3).cloned().unwrap_or_default();
    assert_eq!(reads.len(), 1);
    assert!(reads[0].index >= net.node(2).status().commit - 1);
    assert_eq!(net.node(2).status().pending_reads, 0);
}

#[test]
fn strict_check_refuses_removing_a_voter_while_another_is_down() {
    let strict = |id| Config { strict_reconfig_check: true, check_quorum: true, ..config(id) };
    let mut net = Net::new_with(&[1, 2, 3], strict);
    net.elect(1);
    net.tick_all(1);
    // Node 3 goes silent for two check-quorum rounds: the leader no longer counts it.
    net.isolate(3);
    net.tick_all(25);
    net.heal();
    net.cut.insert((3, 1));
    assert_eq!(net.node(1).propose_conf_change(remove_node(2)), Err(RaftError::NotEnoughActiveVoters));
    // Removing the silent one leaves two active voters out of two.
    net.node(1).propose_conf_change(remove_node(3)).unwrap();
}

#[test]
fn strict_check_promotes_a_learner_only_once_it_caught_up() {
    let strict = |id| Config { strict_reconfig_check: true, check_quorum: true, ..config(id) };
    let mut net = Net::new_with(&[1, 2, 3], strict);
    net.elect(1);
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    net.settle();
    net.add_empty(4, strict(4));
    net.cut.insert((1, 4));
    for i in 0..20u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    assert_eq!(net.node(1).propose_conf_change(add_node(4)), Err(RaftError::LearnerNotReady));
    net.heal();
    net.tick_all(2);
    net.node(1).propose_conf_change(add_node(4)).unwrap();
    net.settle();
    assert_eq!(net.node(1).status().conf_state.voters, vec![1, 2, 3, 4]);
}

#[test]
fn a_late_copy_of_an_appended_batch_is_dropped_even_after_a_step_down() {
    let mut net = Net::new_with(&[1, 2, 3], |id| Config { check_quorum: true, ..config(id) });
    net.elect(1);
    net.node(2).propose(b"once".to_vec()).unwrap();
    let copy: Vec<RaftMessage> =
        drain(net.node(2)).into_iter().filter(|m| matches!(m.body, Some(Body::Propose(_)))).collect();
    net.node(1).step(copy[0].clone()).unwrap();
    // The leader loses its quorum and steps down within the same term.
    let term = net.node(1).status().term;
    net.isolate(1);
    for _ in 0..30 {
        net.node(1).tick().unwrap();
        drain(net.node(1));
    }
    assert_eq!(net.node(1).status().role, crate::Role::Follower);
    assert_eq!(net.node(1).status().term, term);
    net.node(1).step(copy[0].clone()).unwrap();
    let msgs = drain(net.node(1));
    assert!(
        !msgs.iter().any(|m| matches!(m.body, Some(Body::ProposalRejected(_)))),
        "the first copy may still commit: refusing the second would lie to the client"
    );
}

#[test]
fn a_leader_restarted_within_its_term_drops_rather_than_refuses() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(2).propose(b"once".to_vec()).unwrap();
    let copy: Vec<RaftMessage> =
        drain(net.node(2)).into_iter().filter(|m| matches!(m.body, Some(Body::Propose(_)))).collect();
    net.node(1).step(copy[0].clone()).unwrap();
    drain(net.node(1));
    net.restart(1);
    net.node(1).step(copy[0].clone()).unwrap();
    assert!(!drain(net.node(1)).iter().any(|m| matches!(m.body, Some(Body::ProposalRejected(_)))));
}
