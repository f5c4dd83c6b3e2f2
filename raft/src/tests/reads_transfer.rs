//! ReadIndex and leadership transfer.

use super::harness::*;
use crate::{Config, RaftError, Role};

#[test]
fn read_index_without_a_known_leader_sends_nothing() {
    let mut lonely = node(1, &[1, 2, 3]);
    assert_eq!(lonely.read_index(vec![]), Err(RaftError::NotLeader { leader_hint: None }));
    assert!(!lonely.has_ready(), "nothing to send");
}

#[test]
fn read_index_single_voter_answers_immediately() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    net.node(1).read_index(b"ctx".to_vec()).unwrap();
    let h = handle(net.node(1));
    assert_eq!(h.read_states.len(), 1);
    assert_eq!(h.read_states[0].request_ctx, b"ctx");
    assert_eq!(h.read_states[0].index, net.node(1).status().commit);
}

#[test]
fn read_index_requires_quorum_acknowledged_round() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let commit = net.node(1).status().commit;
    net.isolate(2);
    net.isolate(3);
    net.node(1).read_index(b"r1".to_vec()).unwrap();
    net.settle();
    assert!(net.reads.get(&1).is_none_or(|r| r.is_empty()), "no quorum confirmed leadership yet");
    assert_eq!(net.node(1).status().pending_reads, 1);
    net.heal();
    net.tick_all(1);
    let reads = net.reads[&1].clone();
    assert_eq!(reads.len(), 1);
    assert_eq!((reads[0].index, reads[0].request_ctx.as_slice()), (commit, &b"r1"[..]));
}

#[test]
fn read_index_ignores_acknowledgements_of_older_rounds() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    drain(&mut n);
    n.step(append_ok(2, 1, 1, 1)).unwrap(); // commits the no-op
    drain(&mut n);
    n.read_index(b"r".to_vec()).unwrap();
    let round = drain(&mut n).iter().find(|m| m.to == 2).map(|m| m.round).unwrap();
    assert!(round > 0);
    let mut old = append_ok(2, 1, 1, 1);
    old.round = round - 1;
    n.step(old).unwrap();
    assert!(handle(&mut n).read_states.is_empty(), "an answer to an earlier round proves nothing");
    let mut bogus = append_ok(3, 1, 1, 1);
    bogus.round = round + 100;
    n.step(bogus).unwrap();
    assert!(handle(&mut n).read_states.is_empty(), "a round never sent is ignored");
    let mut fresh = append_ok(2, 1, 1, 1);
    fresh.round = round;
    n.step(fresh).unwrap();
    assert_eq!(handle(&mut n).read_states.len(), 1);
}

#[test]
fn read_index_waits_for_a_commit_in_the_leaders_term() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    drain(&mut n);
    n.read_index(b"early".to_vec()).unwrap();
    assert_eq!(n.status().pending_reads, 1);
    assert!(drain(&mut n).iter().all(|m| m.round == 0), "no heartbeat round before the first commit");
    n.step(append_ok(2, 1, 1, 1)).unwrap();
    let round = drain(&mut n).iter().map(|m| m.round).max().unwrap();
    assert!(round > 0, "the queued read starts its round once the no-op commits");
    let mut ack = append_ok(2, 1, 1, 1);
    ack.round = round;
    n.step(ack).unwrap();
    let rs = handle(&mut n).read_states;
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, 1, "the commit index includes the leader's no-op");
}

#[test]
fn transfer_leader_catches_up_target_then_sends_timeout_now() {
    let mut net = Net::new_with(&[1, 2, 3], |id| Config { pre_vote: true, check_quorum: true, ..config(id) });
    net.elect(1);
    let term = net.node(1).status().term;
    net.cut.insert((1, 3));
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    net.node(1).transfer_leader(3).unwrap();
    assert_eq!(net.node(1).status().lead_transferee, Some(3));
    assert_eq!(net.node(1).propose(b"y".to_vec()), Err(RaftError::TransferInProgress));
    net.heal();
    net.tick_all(1);
    assert_eq!(net.leader(), Some(3), "the target caught up and won at once, despite leases");
    assert_eq!(net.node(3).status().term, term + 1);
    assert!(net.applied_data(3).contains(&b"x".to_vec()));
    net.node(3).propose(b"z".to_vec()).unwrap();
    net.settle();
    assert!(net.applied_data(1).contains(&b"z".to_vec()));
}

#[test]
fn transfer_leader_aborts_after_an_election_timeout() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.node(1).transfer_leader(3).unwrap();
    for _ in 0..9 {
        net.node(1).tick().unwrap();
    }
    assert_eq!(net.node(1).status().lead_transferee, Some(3));
    net.node(1).tick().unwrap();
    assert_eq!(net.node(1).status().lead_transferee, None);
    assert_eq!(net.node(1).status().role, Role::Leader);
    net.node(1).propose(b"ok".to_vec()).unwrap();
}

#[test]
fn transfer_leader_validates_target() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    assert!(matches!(net.node(1).transfer_leader(9), Err(RaftError::ProposalDropped(_))));
    assert_eq!(net.node(1).transfer_leader(1), Ok(()));
    assert_eq!(net.node(2).transfer_leader(3), Err(RaftError::NotLeader { leader_hint: Some(1) }));
}
