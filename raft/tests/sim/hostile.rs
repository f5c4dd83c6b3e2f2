//! Hostile and stale traffic for the simulation's fault mix. Everything generated here is
//! something a non-Byzantine world can produce (stale terms, unknown senders, indexes out of
//! range, misaddressed or nonsense snapshot chunks): the core must survive it without
//! breaking any safety property. Forged messages that a correct Raft cannot defend against
//! (a fake leader with plausible entries) are deliberately not generated.

use raft::pb::raft_message::Body;
use raft::pb::{
    AppendEntriesRequest, AppendEntriesResponse, ConfState, Entry, ForwardedProposal, InstallSnapshotRequest,
    InstallSnapshotResponse, ProposalRejected, RaftMessage, ReadIndexRequest, ReadIndexResponse,
    RequestVoteRequest, RequestVoteResponse, TimeoutNow,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What the generator knows about the node it targets.
pub struct Target {
    pub id: u64,
    pub term: u64,
    pub last_index: u64,
    /// The leader of the target's current term, if the simulation knows one.
    pub leader: Option<u64>,
    pub members: Vec<u64>,
}

fn garbage_body(rng: &mut ChaCha8Rng, from: u64, term: u64) -> Body {
    let idx = [0, 1, 7, 1 << 20, u64::MAX / 4][rng.random_range(0..5)];
    match rng.random_range(0..11) {
        0 => Body::AppendEntries(AppendEntriesRequest {
            term,
            leader_id: from,
            prev_log_index: idx,
            prev_log_term: rng.random_range(0..=term),
            entries: (1..=rng.random_range(0..3u64))
                .map(|i| Entry { term, index: idx.saturating_add(i), entry_type: 0, data: b"evil".to_vec() })
                .collect(),
            leader_commit: idx,
        }),
        1 => Body::AppendEntriesResponse(AppendEntriesResponse {
            term,
            success: rng.random(),
            match_index: idx,
            conflict_index: idx,
            conflict_term: rng.random_range(0..=term),
        }),
        2 => Body::RequestVote(RequestVoteRequest {
            term,
            candidate_id: from,
            last_log_index: idx,
            last_log_term: rng.random_range(0..=term),
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
            last_included_index: idx,
            last_included_term: rng.random_range(0..=term),
            offset: rng.random_range(0..3),
            data: vec![0xEE; rng.random_range(0..20)],
            done: rng.random(),
            conf_state: Some(ConfState { voters: vec![from], learners: vec![] }),
        }),
        5 => Body::InstallSnapshotResponse(InstallSnapshotResponse {
            term,
            last_included_index: idx,
            next_offset: idx,
            done: rng.random(),
        }),
        6 => Body::TimeoutNow(TimeoutNow { term, leader_id: from }),
        // Client traffic: only ever generated in a term that is over (or misaddressed), where
        // it must be dropped; a current-term answer from the leader would be a Byzantine forgery.
        7 => Body::Propose(ForwardedProposal {
            term,
            seq: idx,
            entries: vec![Entry { term: 0, index: 0, entry_type: 0, data: b"evil".to_vec() }],
        }),
        8 => Body::ProposalRejected(ProposalRejected { term, seq: idx, reason: rng.random_range(0..8) }),
        9 => Body::ReadIndex(ReadIndexRequest { term, context: b"evil".to_vec() }),
        _ => Body::ReadIndexResponse(ReadIndexResponse { term, context: b"evil".to_vec(), index: idx }),
    }
}

/// One hostile message for `t`, or `None` when no safe kind applies.
pub fn hostile_message(rng: &mut ChaCha8Rng, t: &Target) -> Option<RaftMessage> {
    let member =
        t.members.iter().copied().filter(|m| *m != t.id).nth(rng.random_range(0..t.members.len().max(1)));
    // Round 0: a forged round number would be a forged ReadIndex acknowledgement.
    let msg = |from: u64, body: Body| RaftMessage { from, to: t.id, round: 0, body: Some(body) };
    match rng.random_range(0..6) {
        // Anything, from a member, in a term that is over.
        0 if t.term > 1 => {
            let from = member?;
            let term = rng.random_range(1..t.term);
            Some(msg(from, garbage_body(rng, from, term)))
        }
        // Responses and stale-log vote requests from a stranger, any plausible term.
        1 => {
            let from = 100 + rng.random_range(0..5);
            let term = t.term.saturating_sub(1).max(1) + rng.random_range(0..3);
            let body = match garbage_body(rng, from, term) {
                Body::RequestVote(mut rv) => {
                    rv.last_log_index = 0;
                    rv.last_log_term = 0;
                    Body::RequestVote(rv)
                }
                b @ (Body::AppendEntriesResponse(_)
                | Body::RequestVoteResponse(_)
                | Body::InstallSnapshotResponse(_)) => b,
                _ => Body::RequestVoteResponse(RequestVoteResponse {
                    term,
                    vote_granted: true,
                    pre_vote: false,
                    ..Default::default()
                }),
            };
            Some(msg(from, body))
        }
        // Current-term answers from a member with indexes beyond anything sent.
        2 => {
            let from = member?;
            let far = t.last_index + 1000 + rng.random_range(0..1000);
            let body = match rng.random_range(0..3) {
                0 => Body::AppendEntriesResponse(AppendEntriesResponse {
                    term: t.term,
                    success: true,
                    match_index: far,
                    ..Default::default()
                }),
                1 => Body::AppendEntriesResponse(AppendEntriesResponse {
                    term: t.term,
                    success: false,
                    conflict_index: far,
                    conflict_term: rng.random_range(0..=t.term),
                    ..Default::default()
                }),
                _ => Body::InstallSnapshotResponse(InstallSnapshotResponse {
                    term: t.term,
                    last_included_index: rng.random_range(0..far),
                    next_offset: 1 << 40,
                    done: false,
                }),
            };
            Some(msg(from, body))
        }
        // From the current leader: appends after a prev far beyond the log (always refused)
        // and snapshot chunks at impossible offsets (never accepted).
        3 => {
            let from = t.leader.filter(|l| *l != t.id)?;
            let far = t.last_index + 1000;
            let body = if rng.random() {
                Body::AppendEntries(AppendEntriesRequest {
                    term: t.term,
                    leader_id: from,
                    prev_log_index: far,
                    prev_log_term: t.term,
                    entries: vec![],
                    leader_commit: far,
                })
            } else {
                Body::InstallSnapshot(InstallSnapshotRequest {
                    term: t.term,
                    leader_id: from,
                    last_included_index: far,
                    last_included_term: t.term,
                    offset: (1 << 40) + rng.random_range(0..100),
                    data: vec![0xAB; 8],
                    done: rng.random(),
                    conf_state: Some(ConfState { voters: vec![from], learners: vec![] }),
                })
            };
            Some(msg(from, body))
        }
        // Addressed to somebody else.
        4 => {
            let from = member?;
            let mut m = msg(from, garbage_body(rng, from, t.term + 1));
            m.to = t.id + 50;
            Some(m)
        }
        // Empty or self-addressed envelopes.
        _ => {
            if rng.random() {
                Some(RaftMessage { from: member?, to: t.id, round: 0, body: None })
            } else {
                Some(msg(t.id, garbage_body(rng, t.id, t.term + 1)))
            }
        }
    }
}
