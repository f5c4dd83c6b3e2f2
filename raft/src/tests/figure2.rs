//! One test per rule of Figure 2 of the Raft paper ("In Search of an Understandable Consensus
//! Algorithm", extended version), named after the rule.

use super::harness::*;
use crate::{ProgressState, RawNode, Role};

// ----- State -----------------------------------------------------------------------------

#[test]
fn fig2_initial_state_term_zero_empty_log_first_index_one() {
    let n = node(1, &[1, 2, 3]);
    let st = n.status();
    assert_eq!((st.term, st.vote, st.commit, st.applied, st.last_index), (0, 0, 0, 0, 0));
    assert_eq!(st.role, Role::Follower);
    assert_eq!(n.raft().log.first_index().unwrap(), 1, "log[] first index is 1");
}

#[test]
fn fig2_persistent_state_written_before_responding() {
    let mut n = node(1, &[1, 2, 3]);
    n.step(vote_req(2, 1, 5, (0, 0))).unwrap();
    let rd = n.ready().unwrap();
    // The vote response is released in the same Ready as the hard state that records it, so a
    // driver following the contract persists currentTerm and votedFor before answering.
    assert_eq!(rd.hard_state.map(|h| (h.current_term, h.voted_for)), Some((5, 2)));
    assert!(vote_responses(&rd.messages).iter().any(|r| r.vote_granted && r.term == 5));
    let store = n.storage().clone();
    store.set_hard_state(rd.hard_state.unwrap());
    n.advance(rd).unwrap();

    // A restart from storage alone remembers term and vote: no second vote in term 5.
    let mut restarted = RawNode::new(&config(1), store).unwrap();
    assert_eq!((restarted.status().term, restarted.status().vote), (5, 2));
    restarted.step(vote_req(3, 1, 5, (9, 9))).unwrap();
    let msgs = drain(&mut restarted);
    assert!(vote_responses(&msgs).iter().all(|r| !r.vote_granted));
}

#[test]
fn fig2_leader_next_and_match_initialized_on_election() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 1], 1);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 2, true)).unwrap();
    let st = n.status();
    assert_eq!(st.role, Role::Leader);
    let p2 = &st.progress[&2];
    // nextIndex = leader's last log index + 1 (the no-op at 3 is what gets sent first),
    // matchIndex = 0.
    assert_eq!((p2.next, p2.matched), (3, 0));
}

// ----- Rules for all servers ---------------------------------------------------------------

#[test]
fn fig2_apply_committed_in_order() {
    let mut n = node(1, &[1, 2]);
    n.step(append(
        2,
        1,
        1,
        (0, 0),
        vec![data_ent(1, 1, b"a"), data_ent(2, 1, b"b"), data_ent(3, 1, b"c")],
        2,
    ))
    .unwrap();
    let h = handle(&mut n);
    assert_eq!(h.committed.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(n.status().applied, 2);
    n.step(append(2, 1, 1, (3, 1), vec![], 3)).unwrap();
    let h = handle(&mut n);
    assert_eq!(h.committed.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3]);
    assert!(!n.has_ready(), "each committed entry is handed out exactly once");
    assert_eq!(n.status().applied, 3);
}

#[test]
fn fig2_all_servers_step_down_on_higher_term() {
    // A leader seeing a response with a higher term.
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).status().term;
    net.node(1).step(append_ok(2, 1, term + 3, 0)).unwrap();
    let st = net.node(1).status();
    assert_eq!((st.role, st.term, st.vote), (Role::Follower, term + 3, 0));

    // A candidate seeing a request with a higher term.
    let mut c = node(1, &[1, 2, 3]);
    c.campaign().unwrap();
    assert_eq!(c.status().role, Role::Candidate);
    c.step(append(3, 1, 4, (0, 0), vec![], 0)).unwrap();
    let st = c.status();
    assert_eq!((st.role, st.term, st.leader_id), (Role::Follower, 4, Some(3)));
}

// ----- Rules for followers -----------------------------------------------------------------

#[test]
fn fig2_follower_responds_to_candidates_and_leaders() {
    let mut n = node(1, &[1, 2, 3]);
    n.step(vote_req(2, 1, 1, (0, 0))).unwrap();
    n.step(append(2, 1, 1, (0, 0), vec![ent(1, 1)], 0)).unwrap();
    let msgs = drain(&mut n);
    assert!(msgs.iter().all(|m| m.to == 2 && m.from == 1));
    assert_eq!(vote_responses(&msgs).len(), 1, "the candidate gets an answer");
    assert_eq!(append_responses(&msgs).len(), 1, "and so does the leader");
    assert_eq!(n.status().role, Role::Follower);
}

#[test]
fn fig2_follower_becomes_candidate_on_timeout() {
    let mut n = node(1, &[1, 2, 3]);
    let ticks = tick_until_campaign(&mut n);
    assert!((10..20).contains(&ticks), "timed out after {ticks} ticks");
    let st = n.status();
    assert_eq!((st.role, st.term), (Role::Candidate, 1));
}

#[test]
fn fig2_follower_timer_reset_by_leader_and_granted_vote() {
    let mut n = node(1, &[1, 2, 3]);
    for _ in 0..9 {
        n.tick().unwrap();
    }
    n.step(append(2, 1, 1, (0, 0), vec![], 0)).unwrap();
    assert_eq!(n.raft().election_elapsed, 0, "AppendEntries from the leader resets the timer");
    for _ in 0..9 {
        n.tick().unwrap();
    }
    n.step(vote_req(3, 1, 2, (0, 0))).unwrap();
    assert_eq!(n.raft().election_elapsed, 0, "granting a vote resets the timer");
    for _ in 0..9 {
        n.tick().unwrap();
    }
    assert_eq!(n.status().role, Role::Follower);
    n.step(vote_req(2, 1, 2, (0, 0))).unwrap(); // refused: already voted for 3
    assert_eq!(n.raft().election_elapsed, 9, "a refused vote does not reset the timer");
}

// ----- Rules for candidates ----------------------------------------------------------------

#[test]
fn fig2_candidate_increments_term_votes_self_resets_timer() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 2], 2);
    for _ in 0..5 {
        n.tick().unwrap();
    }
    n.campaign().unwrap();
    let st = n.status();
    assert_eq!((st.role, st.term, st.vote), (Role::Candidate, 3, 1));
    assert_eq!(n.raft().election_elapsed, 0);
    let h = handle(&mut n);
    assert_eq!(h.hard_state.map(|h| (h.current_term, h.voted_for)), Some((3, 1)));
    let reqs = vote_requests(&h.msgs);
    let mut to: Vec<u64> = reqs.iter().map(|(t, _)| *t).collect();
    to.sort_unstable();
    assert_eq!(to, vec![2, 3], "RequestVote goes to all other servers");
    assert!(reqs.iter().all(|(_, r)| (r.term, r.last_log_index, r.last_log_term) == (3, 2, 2)));
}

#[test]
fn fig2_candidate_wins_with_majority() {
    let mut n = node(1, &[1, 2, 3, 4, 5]);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    n.step(vote_resp(3, 1, 1, false)).unwrap();
    assert_eq!(n.status().role, Role::Candidate, "2 of 5 is not a majority");
    n.step(vote_resp(4, 1, 1, true)).unwrap();
    assert_eq!(n.status().role, Role::Leader, "3 of 5 is");
}

#[test]
fn fig2_candidate_steps_down_on_append_from_leader() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    n.step(append(2, 1, 1, (0, 0), vec![], 0)).unwrap();
    let st = n.status();
    assert_eq!((st.role, st.term, st.leader_id), (Role::Follower, 1, Some(2)));
    assert!(append_responses(&drain(&mut n)).iter().all(|r| r.success && r.term == 1));
}

#[test]
fn fig2_candidate_restarts_election_on_timeout() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    drain(&mut n);
    tick_until_term(&mut n, 2);
    assert_eq!(n.status().role, Role::Candidate);
    assert_eq!(vote_requests(&drain(&mut n)).len(), 2, "a new round of RequestVote");
}

fn tick_until_term(n: &mut RawNode<crate::MemStorage>, term: u64) {
    for _ in 0..100 {
        n.tick().unwrap();
        if n.status().term == term {
            return;
        }
    }
    panic!("term {term} never reached");
}

// ----- Rules for leaders -------------------------------------------------------------------

#[test]
fn fig2_leader_sends_heartbeats() {
    let mut n = node(1, &[1, 2, 3]);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 1, true)).unwrap();
    let first = drain(&mut n);
    assert_eq!(appends_to(&first, 2).len(), 1, "upon election: an initial AppendEntries");
    assert_eq!(appends_to(&first, 3).len(), 1);
    n.tick().unwrap(); // heartbeat_tick = 1
    let beats = drain(&mut n);
    for to in [2, 3] {
        let a = appends_to(&beats, to);
        assert_eq!(a.len(), 1, "idle heartbeat to {to}");
        assert!(a[0].entries.is_empty());
    }
}

#[test]
fn fig2_leader_appends_client_command() {
    let mut net = Net::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"cmd".to_vec()).unwrap();
    let last = net.node(1).status().last_index;
    let entry = net.node(1).raft().log.slice(last, last + 1, None).unwrap().remove(0);
    assert_eq!(entry.data, b"cmd");
    assert_eq!(entry.term, net.node(1).status().term, "stored with the leader's term");
    net.settle();
    for id in [1, 2, 3] {
        assert_eq!(net.applied_data(id), vec![b"cmd".to_vec()], "applied on {id}");
    }
}

#[test]
fn fig2_leader_sends_entries_from_next_index() {
    let mut n = node_with_log(1, &[1, 2], &[1, 1, 1], 1);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 2, true)).unwrap();
    let msgs = drain(&mut n);
    let a = appends_to(&msgs, 2);
    assert_eq!((a[0].prev_log_index, a[0].prev_log_term), (3, 1));
    assert_eq!(a[0].entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![4]);
}

#[test]
fn fig2_leader_retries_with_lower_next_index() {
    let mut n = node_with_log(1, &[1, 2], &[1, 1, 1], 1);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 2, true)).unwrap();
    drain(&mut n);
    // The follower only has index 1: it rejects prev=(3,1) and says its log ends at 1.
    n.step(append_reject(2, 1, 2, (2, 0))).unwrap();
    let a = appends_to(&drain(&mut n), 2);
    assert_eq!(a.len(), 1, "retry immediately");
    assert_eq!((a[0].prev_log_index, a[0].prev_log_term), (1, 1));
    assert_eq!(a[0].entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3, 4]);
    // Without a hint the leader still backs up by one.
    n.step(append_reject(2, 1, 2, (1, 7))).unwrap();
    let a = appends_to(&drain(&mut n), 2);
    assert_eq!(a[0].prev_log_index, 0);
}

#[test]
fn fig2_leader_updates_match_and_next_on_success() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 1, 1], 1);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 2, true)).unwrap();
    drain(&mut n);
    n.step(append_ok(2, 1, 2, 4)).unwrap();
    let p = &n.status().progress[&2];
    assert_eq!((p.matched, p.next, p.state), (4, 5, ProgressState::Replicate));
    // A stale success never moves matchIndex back.
    n.step(append_ok(2, 1, 2, 2)).unwrap();
    assert_eq!(n.status().progress[&2].matched, 4);
}

#[test]
fn fig2_leader_commits_only_current_term_by_majority() {
    // The leader of term 3 holds an entry of term 2 at index 2 (Figure 8's situation).
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 2], 2);
    n.campaign().unwrap();
    n.step(vote_resp(2, 1, 3, true)).unwrap();
    assert_eq!(n.status().role, Role::Leader);
    handle(&mut n); // persist the no-op at index 3
    n.step(append_ok(2, 1, 3, 2)).unwrap();
    assert_eq!(n.status().commit, 0, "a majority stores index 2, but it is of term 2");
    n.step(append_ok(3, 1, 3, 3)).unwrap();
    assert_eq!(n.status().commit, 3, "a majority stores this term's no-op: 1..=3 commit");
}

#[test]
fn fig2_leader_counts_itself_only_once_persisted() {
    let mut n = node(1, &[1]);
    n.campaign().unwrap();
    assert_eq!(n.status().role, Role::Leader);
    assert_eq!(n.status().commit, 0, "the no-op is not yet on the leader's disk");
    handle(&mut n);
    assert_eq!(n.status().commit, 1);
}

// ----- AppendEntries receiver --------------------------------------------------------------

#[test]
fn fig2_append_entries_rejects_stale_term() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1], 3);
    n.step(append(2, 1, 2, (1, 1), vec![ent(2, 2)], 1)).unwrap();
    let r = append_responses(&drain(&mut n));
    assert_eq!(r.len(), 1);
    assert!(!r[0].success);
    assert_eq!(r[0].term, 3, "the reply carries the newer term");
    assert_eq!(n.status().last_index, 1, "nothing appended");
}

#[test]
fn fig2_append_entries_rejects_missing_prev() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 1], 2);
    n.step(append(2, 1, 2, (3, 2), vec![ent(4, 2)], 0)).unwrap();
    let r = append_responses(&drain(&mut n));
    assert!(!r[0].success);
    assert_eq!((r[0].conflict_index, r[0].conflict_term), (3, 0), "log too short: hint = last + 1");
    n.step(append(2, 1, 2, (2, 2), vec![ent(3, 2)], 0)).unwrap();
    let r = append_responses(&drain(&mut n));
    assert!(!r[0].success);
    assert_eq!((r[0].conflict_index, r[0].conflict_term), (1, 1), "term mismatch: first index of our term");
    assert_eq!(terms_of(&n), vec![1, 1]);
}

#[test]
fn fig2_append_entries_truncates_conflicts() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 1, 1, 1], 1);
    n.step(append(2, 1, 2, (1, 1), vec![ent(2, 2)], 0)).unwrap();
    let h = handle(&mut n);
    assert_eq!(terms_of(&n), vec![1, 2], "index 2 conflicted: it and all that follow are gone");
    assert_eq!(append_responses(&h.msgs)[0].match_index, 2);
    assert_eq!(crate::Storage::last_index(n.storage()).unwrap(), 2, "and storage dropped them too");
}

#[test]
fn fig2_append_entries_keeps_matching_entries() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 1, 1], 1);
    // A delayed, shorter append that matches must not truncate what follows.
    n.step(append(2, 1, 1, (0, 0), vec![ent(1, 1)], 0)).unwrap();
    let h = handle(&mut n);
    assert_eq!(terms_of(&n), vec![1, 1, 1]);
    assert!(h.entries.is_empty(), "nothing new to persist");
    let r = append_responses(&h.msgs);
    assert!(r[0].success);
    assert_eq!(r[0].match_index, 1, "match covers only what the request proved");
}

#[test]
fn fig2_append_entries_appends_new_entries() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1], 1);
    n.step(append(2, 1, 1, (1, 1), vec![ent(2, 1), ent(3, 1)], 0)).unwrap();
    let h = handle(&mut n);
    assert_eq!(h.entries.iter().map(|e| e.index).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(terms_of(&n), vec![1, 1, 1]);
}

#[test]
fn fig2_append_entries_advances_commit_to_min_leader_commit_last_new() {
    let mut n = node(1, &[1, 2]);
    n.step(append(2, 1, 1, (0, 0), vec![ent(1, 1), ent(2, 1)], 5)).unwrap();
    assert_eq!(n.status().commit, 2, "min(leaderCommit=5, last new=2)");
    n.step(append(2, 1, 1, (2, 1), vec![ent(3, 1), ent(4, 1)], 3)).unwrap();
    assert_eq!(n.status().commit, 3, "min(leaderCommit=3, last new=4)");
    n.step(append(2, 1, 1, (1, 1), vec![], 9)).unwrap();
    assert_eq!(n.status().commit, 3, "commitIndex never decreases");
}

// ----- RequestVote receiver ----------------------------------------------------------------

#[test]
fn fig2_request_vote_rejects_stale_term() {
    let mut n = node_with_log(1, &[1, 2, 3], &[], 3);
    n.step(vote_req(2, 1, 2, (5, 2))).unwrap();
    let r = vote_responses(&drain(&mut n));
    assert_eq!(r.len(), 1);
    assert!(!r[0].vote_granted);
    assert_eq!(r[0].term, 3);
    assert_eq!(n.status().vote, 0);
}

#[test]
fn fig2_request_vote_grants_once_per_term() {
    let mut n = node(1, &[1, 2, 3]);
    n.step(vote_req(2, 1, 1, (0, 0))).unwrap();
    n.step(vote_req(3, 1, 1, (0, 0))).unwrap();
    n.step(vote_req(2, 1, 1, (0, 0))).unwrap();
    let granted: Vec<bool> = vote_responses(&drain(&mut n)).iter().map(|r| r.vote_granted).collect();
    assert_eq!(granted, vec![true, false, true], "votedFor is null or candidateId");
    n.step(vote_req(3, 1, 2, (0, 0))).unwrap();
    assert!(vote_responses(&drain(&mut n))[0].vote_granted, "a new term, a new vote");
}

#[test]
fn fig2_request_vote_requires_up_to_date_log() {
    let mut n = node_with_log(1, &[1, 2, 3], &[1, 2], 2);
    n.step(vote_req(2, 1, 3, (5, 1))).unwrap(); // longer log, older last term
    n.step(vote_req(3, 1, 4, (1, 2))).unwrap(); // same last term, shorter
    n.step(vote_req(2, 1, 5, (2, 2))).unwrap(); // as up to date
    let granted: Vec<bool> = vote_responses(&drain(&mut n)).iter().map(|r| r.vote_granted).collect();
    assert_eq!(granted, vec![false, false, true]);
}
