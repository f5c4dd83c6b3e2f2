//! Learners and single-server membership changes (effective when applied, one at a time,
//! not before the new leader's no-op is applied).

use super::harness::*;
use crate::{RaftError, Role};

#[test]
fn conf_change_takes_effect_when_applied_not_when_appended() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.add_empty(4, config(4));
    net.cut.insert((1, 2));
    net.cut.insert((1, 3));
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    net.settle();
    assert!(net.node(1).status().conf_state.learners.is_empty(), "in the log, not committed: no effect");
    net.heal();
    net.tick_all(1);
    assert_eq!(net.node(1).status().conf_state.learners, vec![4]);
}

#[test]
fn conf_learner_replicates_but_never_votes_or_counts() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.add_empty(4, config(4));
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    net.settle();
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.tick_all(2);
    assert_eq!(net.applied_data(4), vec![b"a".to_vec()], "the learner receives and applies the log");
    let cs = net.node(4).status().conf_state;
    assert_eq!((cs.voters, cs.learners), (vec![1, 2, 3], vec![4]), "rebuilt from the log from index 1");
    // A learner never campaigns.
    for _ in 0..100 {
        net.node(4).tick().unwrap();
    }
    assert_eq!(net.node(4).status().role, Role::Follower);
    // The leader plus a learner is not a quorum.
    net.isolate(2);
    net.isolate(3);
    let commit = net.node(1).status().commit;
    net.node(1).propose(b"b".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.node(4).status().last_index, commit + 1, "the learner has it");
    assert_eq!(net.node(1).status().commit, commit, "but it does not commit");
}

#[test]
fn conf_promote_learner_with_add_node() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.add_empty(4, config(4));
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    net.tick_all(1);
    net.node(1).propose_conf_change(add_node(4)).unwrap();
    net.tick_all(1);
    for id in 1..=4 {
        let cs = net.node(id).status().conf_state;
        assert_eq!((cs.voters, cs.learners), (vec![1, 2, 3, 4], vec![]), "on node {id}");
    }
    // Four voters need three: the leader with 4 alone cannot commit.
    net.isolate(2);
    net.isolate(3);
    net.cut.remove(&(1, 4));
    net.cut.remove(&(4, 1));
    let commit = net.node(1).status().commit;
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.node(1).status().commit, commit);
}

#[test]
fn conf_one_pending_change_at_a_time() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
    assert_eq!(net.node(1).propose_conf_change(add_learner(5)), Err(RaftError::ConfChangePending));
    net.settle();
    net.node(1).propose_conf_change(add_learner(5)).unwrap();
}

#[test]
fn conf_new_leader_waits_until_its_noop_is_applied() {
    let mut net = Net::new(&[1, 2, 3]);
    net.cut.insert((2, 1));
    net.cut.insert((3, 1));
    net.node(1).campaign().unwrap();
    net.settle();
    net.heal();
    // Deliver the votes by hand so the no-op is not yet committed.
    let term = net.node(1).status().term;
    net.node(1).step(vote_resp(2, 1, term, true)).unwrap();
    assert_eq!(net.node(1).status().role, Role::Leader);
    assert_eq!(net.node(1).propose_conf_change(add_learner(4)), Err(RaftError::ConfChangePending));
    net.settle();
    net.node(1).propose_conf_change(add_learner(4)).unwrap();
}

#[test]
fn conf_removed_leader_steps_down_and_never_campaigns() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).status().term;
    net.delivered.clear();
    net.node(1).propose_conf_change(remove_node(1)).unwrap();
    net.settle();
    assert_eq!(net.node(1).status().role, Role::Follower, "a leader removed from the config steps down");
    net.tick_all(60);
    let leader = net.leader().expect("the remaining voters elect a leader");
    assert_ne!(leader, 1);
    let st = net.node(1).status();
    assert!(st.role == Role::Follower && !st.conf_state.voters.contains(&1));
    assert!(net.node(leader).status().term > term);
    let votes_from_1 = net
        .delivered
        .iter()
        .filter(|m| m.from == 1 && vote_requests(std::slice::from_ref(m)).len() == 1)
        .count();
    assert_eq!(votes_from_1, 0, "a removed node never campaigns");
    net.node(leader).propose(b"after".to_vec()).unwrap();
    net.settle();
    assert!(net.applied_data(2).contains(&b"after".to_vec()));
}

#[test]
fn conf_remove_and_readd_a_follower() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose_conf_change(remove_node(3)).unwrap();
    net.settle();
    assert_eq!(net.node(1).status().conf_state.voters, vec![1, 2]);
    assert!(!net.node(1).status().progress.contains_key(&3));
    net.node(1).propose(b"while-out".to_vec()).unwrap();
    net.tick_all(1);
    assert!(!net.applied_data(3).contains(&b"while-out".to_vec()), "no longer replicated to");
    net.node(1).propose_conf_change(add_learner(3)).unwrap();
    net.tick_all(2);
    net.node(1).propose_conf_change(add_node(3)).unwrap();
    net.tick_all(2);
    assert_eq!(net.node(3).status().conf_state.voters, vec![1, 2, 3]);
    assert!(net.applied_data(3).contains(&b"while-out".to_vec()), "caught up after re-joining");
}

#[test]
fn conf_rejects_invalid_changes() {
    let mut net = Net::new(&[1]);
    net.elect(1);
    let err = |r: Result<crate::Proposed, RaftError>| matches!(r, Err(RaftError::InvalidConfChange(_)));
    assert!(err(net.node(1).propose_conf_change(remove_node(1))), "the last voter");
    assert!(err(net.node(1).propose_conf_change(add_learner(1))), "demoting the last voter");
    assert!(err(net.node(1).propose_conf_change(add_node(1))), "already a voter");
    assert!(err(net.node(1).propose_conf_change(remove_node(9))), "not a member");
    assert!(err(net.node(1).propose_conf_change(add_node(0))), "id 0");
    let mut bad = add_node(2);
    bad.change_type = 77;
    assert!(err(net.node(1).propose_conf_change(bad)));
    assert_eq!(net.node(2 - 1).status().last_index, 2, "nothing was appended");
}

#[test]
fn conf_no_campaign_with_committed_unapplied_conf_change() {
    let mut n = node(1, &[1, 2, 3]);
    let cc = prost::Message::encode_to_vec(&remove_node(1));
    let e = crate::pb::Entry {
        term: 1,
        index: 1,
        entry_type: crate::pb::EntryType::EntryConfChange as i32,
        data: cc,
    };
    n.step(append(2, 1, 1, (0, 0), vec![e], 1)).unwrap();
    // Not handled yet: the removal is committed but not applied.
    n.campaign().unwrap();
    assert_eq!(n.status().role, Role::Follower, "the configuration is about to change");
    handle(&mut n);
    n.campaign().unwrap();
    assert_eq!(n.status().role, Role::Follower, "and now this node is not a voter");
}

/// Two voters {1, 2}; leader 1 removes itself. Node 2 stores the removal and acknowledges
/// it, then is cut off before learning that it committed, while 1 appends one more entry.
fn removal_committed_behind_voters_back() -> Net {
    let mut net = Net::new(&[1, 2]);
    net.elect(1);
    net.node(1).propose_conf_change(remove_node(1)).unwrap();
    assert!(net.round(), "the removal goes out to 2");
    net.cut.insert((1, 2));
    net.node(1).propose(b"tail".to_vec()).unwrap();
    net.settle();
    let removal_index = net.node(2).status().last_index;
    assert_eq!(net.node(1).status().commit, removal_index, "committed, and applied by the leader");
    assert!(net.node(2).status().commit < removal_index, "but node 2 does not know");
    assert_eq!(net.node(2).status().conf_state.voters, vec![1, 2]);
    net
}

#[test]
fn conf_removed_leader_informs_new_voters_before_stepping_down() {
    let mut net = removal_committed_behind_voters_back();
    let st = net.node(1).status();
    assert_eq!(st.role, Role::Leader, "the removed leader stays until the new voters know");
    assert!(!st.conf_state.voters.contains(&1));
    assert!(matches!(net.node(1).propose(b"x".to_vec()), Err(RaftError::ProposalDropped(_))));
    net.heal();
    net.tick_all(1);
    assert_eq!(net.node(1).status().role, Role::Follower, "stepped down once 2 knew");
    assert_eq!(net.node(2).status().conf_state.voters, vec![2]);
    net.tick_all(30);
    assert_eq!(net.leader(), Some(2));
}

#[test]
fn conf_vote_response_commit_hint_unblocks_a_voter_left_behind() {
    // Regression for simulator seed 378: the removed leader left without telling node 2,
    // whose log is shorter, so under the old configuration node 2 needed a vote it could
    // never get.
    let mut net = removal_committed_behind_voters_back();
    net.restart(1); // gone without handing over; back as a non-voter
    net.delivered.clear();
    assert_eq!(net.node(1).status().role, Role::Follower);
    net.heal();
    net.tick_all(60);
    assert_eq!(net.leader(), Some(2), "node 2 learned the commit from 1's refusal and won alone");
    assert_eq!(net.node(2).status().conf_state.voters, vec![2]);
    let votes_from_1 = net
        .delivered
        .iter()
        .filter(|m| m.from == 1 && !vote_requests(std::slice::from_ref(m)).is_empty())
        .count();
    assert_eq!(votes_from_1, 0, "the removed node never campaigned");
}

#[test]
fn conf_node_removed_while_campaigning_never_takes_office() {
    // Regression for simulator seed 19012: a candidate applied its own removal, then the new
    // voters' votes arrived and made it a leader outside the configuration.
    let removal = crate::pb::Entry {
        term: 1,
        index: 1,
        entry_type: crate::pb::EntryType::EntryConfChange as i32,
        data: prost::Message::encode_to_vec(&remove_node(3)),
    };
    let mut n = node(3, &[1, 2, 3, 4, 5]);
    n.step(append(1, 3, 1, (0, 0), vec![removal], 0)).unwrap();
    handle(&mut n);
    n.campaign().unwrap(); // the removal is not known to be committed: it may campaign
    assert_eq!(n.status().role, Role::Candidate);
    let term = n.status().term;
    // The first answer tells it the removal is committed; it applies it mid-campaign.
    let mut grant = vote_resp(1, 3, term, true);
    if let Some(crate::pb::raft_message::Body::RequestVoteResponse(r)) = grant.body.as_mut() {
        r.commit_index = 1;
        r.commit_term = 1;
    }
    n.step(grant).unwrap();
    assert_eq!(n.status().role, Role::Candidate, "2 of 5 so far");
    handle(&mut n); // applies the removal
    assert_eq!(n.status().role, Role::Follower, "a removed candidate gives up");
    assert_eq!(n.status().conf_state.voters, vec![1, 2, 4, 5]);
    // Even as a candidate, late votes forming a majority of the new voters elect nobody.
    n.raft_mut().become_candidate_for_test();
    for from in [1, 2, 4] {
        n.step(vote_resp(from, 3, n.status().term, true)).unwrap();
    }
    assert_ne!(n.status().role, Role::Leader, "a non-voter never takes office");
}

#[test]
fn conf_commit_hint_counts_even_from_a_voter_terms_behind() {
    // Regression for simulator seed 9859: the removed node, which never campaigns, was terms
    // behind the last voter, so its refusal (and the hint in it) was dropped as stale.
    let removal = crate::pb::Entry {
        term: 1,
        index: 2,
        entry_type: crate::pb::EntryType::EntryConfChange as i32,
        data: prost::Message::encode_to_vec(&remove_node(2)),
    };
    let s = store(&[2, 3], &[], &[1], hs(4, 0, 1));
    s.append(&[removal]).unwrap();
    let mut n = crate::RawNode::new(&config(3), s).unwrap();
    n.campaign().unwrap();
    assert_eq!(n.status().term, 5);
    let mut refusal = vote_resp(2, 3, 3, false);
    if let Some(crate::pb::raft_message::Body::RequestVoteResponse(r)) = refusal.body.as_mut() {
        r.commit_index = 2;
        r.commit_term = 1;
    }
    n.step(refusal).unwrap();
    assert_eq!(n.status().commit, 2, "learned from a stale answer");
    handle(&mut n);
    assert_eq!(n.status().conf_state.voters, vec![3]);
    n.campaign().unwrap();
    assert_eq!(n.status().role, Role::Leader, "and wins alone");
}

#[test]
fn conf_a_removed_member_learns_of_its_removal_even_if_the_quorum_acked_without_it() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    // Node 3 hears the removal entry but its acknowledgement is lost: the quorum is 1 and 2.
    net.cut.insert((3, 1));
    net.node(1).propose_conf_change(remove_node(3)).unwrap();
    net.settle();
    assert_eq!(net.node(1).status().conf_state.voters, vec![1, 2]);
    assert_eq!(
        net.node(3).status().conf_state.voters,
        vec![1, 2],
        "the leader's farewell append told node 3 the commit index of its removal"
    );
}
