//! Log compaction and chunked, resumable InstallSnapshot.

use super::harness::*;
use crate::proto::raftpb::raft_message::Body;
use crate::proto::raftpb::{ConfState, InstallSnapshotRequest, InstallSnapshotResponse, RaftMessage};
use crate::raft::{Config, ProgressState, Storage};

const DATA: &[u8] = b"0123456789abcdefghij";

fn chunky(id: u64) -> Config {
    Config { snapshot_chunk_size: 4, ..config(id) }
}

fn chunk(from: u64, term: u64, index: u64, offset: usize, len: usize) -> RaftMessage {
    let end = (offset + len).min(DATA.len());
    msg(
        from,
        1,
        Body::InstallSnapshot(InstallSnapshotRequest {
            term,
            leader_id: from,
            last_included_index: index,
            last_included_term: 1,
            offset: offset as u64,
            data: DATA[offset..end].to_vec(),
            done: end == DATA.len(),
            conf_state: Some(ConfState { voters: vec![1, 2, 3], learners: vec![] }),
        }),
    )
}

fn snapshot_responses(msgs: &[RaftMessage]) -> Vec<InstallSnapshotResponse> {
    msgs.iter()
        .filter_map(|m| match &m.body {
            Some(Body::InstallSnapshotResponse(r)) => Some(*r),
            _ => None,
        })
        .collect()
}

#[test]
fn snap_lagging_follower_catches_up_through_chunks() {
    let mut net = Net::new_with(&[1, 2, 3], chunky);
    net.elect(1);
    net.isolate(3);
    for i in 0..5u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    // The driver compacts the leader's log up to what it applied.
    let applied = net.node(1).status().applied;
    let cs = net.node(1).status().conf_state;
    let s = net.node(1).storage().clone();
    s.create_snapshot(applied, cs, DATA.to_vec()).unwrap();
    s.compact(applied).unwrap();
    net.heal();
    net.delivered.clear();
    net.tick_all(3);
    let chunks = net
        .delivered
        .iter()
        .filter(|m| m.to == 3 && matches!(m.body, Some(Body::InstallSnapshot(_))))
        .count();
    assert_eq!(chunks, DATA.len() / 4, "one message per snapshot_chunk_size bytes");
    let s3 = net.node(3).storage().clone();
    assert_eq!(s3.snapshot(0).unwrap().data, DATA);
    assert!(net.node(3).status().commit >= applied);
    net.node(1).propose(b"after".to_vec()).unwrap();
    net.tick_all(1); // a follower still probing learns the commit index from the next heartbeat
    assert_eq!(
        net.applied_data(3).last(),
        Some(&b"after".to_vec()),
        "replication resumes after the snapshot"
    );
    assert_eq!(net.node(1).status().progress[&3].state, ProgressState::Replicate);
}

#[test]
fn snap_follower_buffers_resumes_and_answers_after_persistence() {
    let mut n = node(1, &[1, 2, 3]);
    n.step(chunk(2, 2, 7, 0, 4)).unwrap();
    n.step(chunk(2, 2, 7, 8, 4)).unwrap(); // out of order
    n.step(chunk(2, 2, 7, 0, 4)).unwrap(); // repeated
    let offs: Vec<(u64, bool)> =
        snapshot_responses(&drain(&mut n)).iter().map(|r| (r.next_offset, r.done)).collect();
    assert_eq!(offs, vec![(4, false), (4, false), (4, false)]);
    for off in [4, 8, 12] {
        n.step(chunk(2, 2, 7, off, 4)).unwrap();
    }
    assert!(n.ready_snapshot_pending_for_test().is_none());
    n.step(chunk(2, 2, 7, 16, 4)).unwrap();
    let rd = n.ready();
    let snap = rd.snapshot.clone().expect("the whole snapshot is handed to the driver");
    assert_eq!(snap.data, DATA);
    assert_eq!(snap.metadata.as_ref().unwrap().index, 7);
    let done: Vec<_> = snapshot_responses(&rd.messages).into_iter().filter(|r| r.done).collect();
    assert_eq!(done.len(), 1, "the final answer travels in the Ready that carries the snapshot");
    n.storage().clone().apply_snapshot(snap).unwrap();
    n.advance(rd);
    let st = n.status();
    assert_eq!((st.commit, st.applied, st.last_index), (7, 7, 7));
    assert_eq!(st.conf_state.voters, vec![1, 2, 3]);
}

#[test]
fn snap_new_snapshot_resets_buffer() {
    let mut n = node(1, &[1, 2, 3]);
    n.step(chunk(2, 2, 7, 0, 4)).unwrap();
    n.step(chunk(2, 2, 7, 4, 4)).unwrap();
    n.step(chunk(2, 2, 9, 4, 4)).unwrap(); // a different snapshot, mid-stream: start over
    n.step(chunk(2, 2, 9, 0, 4)).unwrap(); // ... from offset 0
    let r = snapshot_responses(&drain(&mut n));
    assert_eq!(
        r.iter().map(|r| (r.last_included_index, r.next_offset)).collect::<Vec<_>>(),
        vec![(7, 4), (7, 8), (9, 0), (9, 4)]
    );
}

#[test]
fn snap_already_covered_snapshot_is_acknowledged_without_install() {
    let mut n = node(1, &[1, 2]);
    n.step(append(2, 1, 2, (0, 0), vec![ent(1, 1), ent(2, 1), ent(3, 2)], 3)).unwrap();
    drain(&mut n);
    n.step(chunk(2, 2, 2, 0, 4)).unwrap();
    let h = handle(&mut n);
    assert!(h.snapshot.is_none());
    assert!(snapshot_responses(&h.msgs)[0].done);
    assert_eq!(n.status().last_index, 3, "the log is untouched");
}

#[test]
fn snap_leader_restarts_transfer_on_offset_mismatch() {
    let mut net = Net::new_with(&[1, 2, 3], chunky);
    net.elect(1);
    let behind = net.node(3).status().last_index;
    net.isolate(3);
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    let applied = net.node(1).status().applied;
    let s = net.node(1).storage().clone();
    s.create_snapshot(applied, net.node(1).status().conf_state, DATA.to_vec()).unwrap();
    s.compact(applied).unwrap();
    let term = net.node(1).status().term;
    // Follower 3 missed the append; it rejects the next one, saying where its log ends.
    net.node(1).step(append_reject(3, 1, term, (behind + 1, 0))).unwrap();
    let first = drain(net.node(1));
    let offsets = |msgs: &[RaftMessage]| -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match &m.body {
                Some(Body::InstallSnapshot(c)) if m.to == 3 => Some(c.offset),
                _ => None,
            })
            .collect()
    };
    assert_eq!(offsets(&first), vec![0]);
    let resp = |next_offset| {
        msg(
            3,
            1,
            Body::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                last_included_index: applied,
                next_offset,
                done: false,
            }),
        )
    };
    net.node(1).step(resp(4)).unwrap();
    net.node(1).step(resp(8)).unwrap();
    assert_eq!(offsets(&drain(net.node(1))), vec![4, 8]);
    net.node(1).step(resp(0)).unwrap(); // the follower restarted and lost its buffer
    assert_eq!(offsets(&drain(net.node(1))), vec![0], "start over from where the follower is");
    net.node(1).step(resp(1000)).unwrap();
    assert_eq!(offsets(&drain(net.node(1))), vec![0], "nonsense restarts too");
    // Silence for a heartbeat resends the chunk in flight.
    net.node(1).tick();
    net.node(1).tick();
    assert_eq!(offsets(&drain(net.node(1))), vec![0]);
}
