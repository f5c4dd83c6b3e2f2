//! Log compaction and chunked, resumable InstallSnapshot.

use super::harness::*;
use crate::pb::raft_message::Body;
use crate::pb::{ConfState, InstallSnapshotRequest, InstallSnapshotResponse, RaftMessage};
use crate::{Config, ProgressState, Storage};

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
    let rd = n.ready().unwrap();
    let snap = rd.snapshot.clone().expect("the whole snapshot is handed to the driver");
    assert_eq!(snap.data, DATA);
    assert_eq!(snap.metadata.as_ref().unwrap().index, 7);
    let done: Vec<_> = snapshot_responses(&rd.messages).into_iter().filter(|r| r.done).collect();
    assert_eq!(done.len(), 1, "the final answer travels in the Ready that carries the snapshot");
    n.storage().clone().apply_snapshot(snap).unwrap();
    n.advance(rd).unwrap();
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
    net.node(1).tick().unwrap();
    net.node(1).tick().unwrap();
    assert_eq!(offsets(&drain(net.node(1))), vec![0]);
}

#[test]
fn snap_install_waits_until_driver_applied_what_it_was_handed() {
    // Regression for simulator seed 1162: a snapshot completed while the driver was still
    // applying an older conf change, which then landed on top of the snapshot's membership.
    let mut n = node(1, &[1, 2, 3]);
    let cc = crate::pb::Entry {
        term: 1,
        index: 1,
        entry_type: crate::pb::EntryType::EntryConfChange as i32,
        data: prost::Message::encode_to_vec(&add_learner(4)),
    };
    n.step(append(2, 1, 1, (0, 0), vec![cc, ent(2, 1)], 2)).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.committed_entries.len(), 2, "handed out, not yet applied");
    n.storage().clone().append(&rd.entries).unwrap();
    // Meanwhile a snapshot at 10 arrives whose membership no longer has node 3.
    let snap = msg(
        2,
        1,
        Body::InstallSnapshot(InstallSnapshotRequest {
            term: 1,
            leader_id: 2,
            last_included_index: 10,
            last_included_term: 1,
            offset: 0,
            data: DATA.to_vec(),
            done: true,
            conf_state: Some(ConfState { voters: vec![1, 2], learners: vec![] }),
        }),
    );
    n.step(snap).unwrap();
    assert!(n.ready_snapshot_pending_for_test().is_none(), "not installed while entries are being applied");
    let cs = n.apply_conf_change(&add_learner(4)).unwrap();
    assert_eq!((cs.voters, cs.learners), (vec![1, 2, 3], vec![4]), "the membership as of index 1");
    n.advance(rd).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.snapshot.as_ref().and_then(|s| s.metadata.as_ref()).map(|m| m.index), Some(10));
    assert!(snapshot_responses(&rd.messages).iter().any(|r| r.done && r.last_included_index == 10));
    assert_eq!(n.status().conf_state.voters, vec![1, 2]);
    n.storage().clone().apply_snapshot(rd.snapshot.clone().unwrap()).unwrap();
    n.advance(rd).unwrap();
    assert_eq!(n.status().applied, 10);
}
