//! Alarms in the replicated state, on real redb files: what NOSPACE and CORRUPT refuse, that
//! raising and clearing answer as etcd's apply does, and that alarms survive a reopen and
//! travel in snapshots.

mod common;

use common::*;
use kvnode::proto::etcdserverpb::alarm_request::AlarmAction;
use kvnode::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmType, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest,
};
use kvnode::proto::kvserverpb::internal_request::Request;
use kvnode::raft::storage::Storage;
use kvnode::storage::{KvError, Outcome, Store};

fn alarm(h: &mut Harness, action: AlarmAction, member_id: u64, kind: AlarmType) -> Vec<AlarmMember> {
    let r = h.apply(Request::Alarm(AlarmRequest { action: action as i32, member_id, alarm: kind as i32 }));
    match r.outcome {
        Outcome::Alarm(resp) => resp.alarms,
        other => panic!("{other:?}"),
    }
}

fn nospace(member_id: u64) -> AlarmMember {
    AlarmMember { member_id, alarm: AlarmType::Nospace as i32 }
}

#[test]
fn nospace_refuses_what_adds_data_until_disarmed() {
    let mut h = Harness::new();
    h.put("a", "1");
    assert_eq!(alarm(&mut h, AlarmAction::Activate, 7, AlarmType::Nospace), [nospace(7)]);
    assert_eq!(alarm(&mut h, AlarmAction::Activate, 7, AlarmType::Nospace), [], "already raised");
    assert!(h.store.kv().active_alarms().nospace());
    assert!(matches!(h.rejected(Request::Put(put("b", "2"))), KvError::NoSpace));
    assert!(matches!(h.rejected(txn(vec![], vec![op_get("a")], vec![op_put("b", "2")])), KvError::NoSpace));
    assert!(matches!(
        h.rejected(Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 10 })),
        KvError::NoSpace
    ));
    // What frees space or only reads still works.
    assert!(matches!(h.apply(txn(vec![], vec![op_get("a")], vec![])).outcome, Outcome::Txn(_)));
    assert_eq!(h.delete("a", ""), 1);
    assert!(matches!(
        h.apply(Request::Compaction(CompactionRequest { revision: 2, physical: true })).outcome,
        Outcome::Compaction(_)
    ));
    assert_eq!(h.store.kv().alarms().unwrap(), [nospace(7)]);
    assert_eq!(alarm(&mut h, AlarmAction::Deactivate, 7, AlarmType::Nospace), [nospace(7)]);
    assert_eq!(alarm(&mut h, AlarmAction::Deactivate, 7, AlarmType::Nospace), [], "already cleared");
    assert!(!h.store.kv().active_alarms().nospace());
    h.put("b", "2");
}

#[test]
fn corrupt_refuses_every_key_space_and_lease_request() {
    let mut h = Harness::new();
    h.apply(Request::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 10 }));
    alarm(&mut h, AlarmAction::Activate, 3, AlarmType::Corrupt);
    assert!(h.store.kv().active_alarms().corrupt());
    let refused = [
        Request::Put(put("a", "1")),
        Request::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), ..Default::default() }),
        txn(vec![], vec![op_get("a")], vec![]),
        Request::Compaction(CompactionRequest { revision: 1, physical: true }),
        Request::LeaseGrant(LeaseGrantRequest { id: 2, ttl: 10 }),
        Request::LeaseRevoke(LeaseRevokeRequest { id: 1 }),
    ];
    for request in refused {
        let e = h.rejected(request);
        assert!(matches!(e, KvError::Corrupt), "{e}");
        assert_eq!(e.to_string(), "etcdserver: corrupt cluster");
    }
    alarm(&mut h, AlarmAction::Deactivate, 3, AlarmType::Corrupt);
    h.put("a", "1");
}

#[test]
fn alarms_survive_a_reopen_and_travel_in_snapshots() {
    let mut h = Harness::new();
    alarm(&mut h, AlarmAction::Activate, 9, AlarmType::Nospace);
    let index = h.next_index - 1;
    let log: Vec<_> = (1..=index)
        .map(|i| kvnode::proto::raftpb::Entry {
            index: i,
            term: 1,
            entry_type: kvnode::proto::raftpb::EntryType::EntryNormal as i32,
            data: Vec::new(),
        })
        .collect();
    h.store.raft().persist(None, &log).unwrap();
    let snap = h.store.raft().snapshot(index).unwrap();
    let target = Harness::new();
    target.store.raft().install_snapshot(&snap).unwrap();
    assert_eq!(target.store.kv().alarms().unwrap(), [nospace(9)]);
    assert!(target.store.kv().active_alarms().nospace());

    let dir = h.dir;
    drop(h.store);
    let reopened = Store::open(dir.path()).unwrap();
    assert!(reopened.kv().active_alarms().nospace(), "the raised alarms are read on open");
}
