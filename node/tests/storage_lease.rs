//! Leases in the replicated key space, on real redb files: grants, attachments that follow
//! every put and delete, revocation deleting the attached keys in one revision, checkpoints,
//! what the lessor is told, and leases in snapshots.

mod common;

use common::*;
use kvnode::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
};
use kvnode::proto::kvserverpb::LeaseRecord;
use kvnode::proto::kvserverpb::internal_request::Request;
use kvnode::proto::mvccpb::event::EventType;
use kvnode::raft::storage::Storage;
use kvnode::storage::{KvError, LeaseChange, Outcome};

fn grant(h: &mut Harness, id: i64, ttl: i64) {
    let r = h.apply(Request::LeaseGrant(LeaseGrantRequest { id, ttl }));
    let Outcome::LeaseGrant(g) = r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!((g.id, g.ttl), (id, ttl));
}

fn put_leased(h: &mut Harness, key: &str, lease: i64) -> i64 {
    let r = h.apply(Request::Put(PutRequest { lease, ..put(key, "v") }));
    assert!(matches!(r.outcome, Outcome::Put(_)), "{:?}", r.outcome);
    r.revision
}

fn attached(h: &Harness, id: i64) -> Vec<String> {
    let found = h.store.kv().lease(id, true).unwrap().expect("lease exists");
    found.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
}

#[test]
fn grants_are_unique_and_do_not_make_revisions() {
    let mut h = Harness::new();
    let before = h.revision();
    grant(&mut h, 5, 10);
    assert_eq!(h.revision(), before, "a grant changes no key");
    assert!(matches!(
        h.rejected(Request::LeaseGrant(LeaseGrantRequest { id: 5, ttl: 3 })),
        KvError::LeaseExists
    ));
    assert_eq!(h.store.kv().leases().unwrap(), [LeaseRecord { id: 5, ttl: 10, remaining_ttl: 0 }]);
}

#[test]
fn attachments_follow_puts_and_deletes() {
    let mut h = Harness::new();
    grant(&mut h, 1, 10);
    grant(&mut h, 2, 10);
    put_leased(&mut h, "a", 1);
    put_leased(&mut h, "b", 1);
    put_leased(&mut h, "c", 2);
    assert_eq!(attached(&h, 1), ["a", "b"]);
    // A put with another lease moves the key; without one it detaches it.
    put_leased(&mut h, "a", 2);
    h.put("b", "plain");
    assert_eq!(attached(&h, 1), Vec::<String>::new());
    assert_eq!(attached(&h, 2), ["a", "c"]);
    // ignore_lease keeps the attachment.
    h.apply(Request::Put(PutRequest { ignore_lease: true, ..put("a", "again") }));
    assert_eq!(h.get("a").unwrap().lease, 2);
    // A delete detaches; so does a delete inside a transaction.
    h.delete("c", "");
    assert_eq!(attached(&h, 2), ["a"]);
    h.apply(txn(vec![], vec![op_delete("a", "")], vec![]));
    assert_eq!(attached(&h, 2), Vec::<String>::new());
}

#[test]
fn revocation_deletes_the_attached_keys_at_one_revision() {
    let mut h = Harness::new();
    grant(&mut h, 9, 10);
    put_leased(&mut h, "x/1", 9);
    put_leased(&mut h, "x/2", 9);
    h.put("x/3", "unleased");
    let before = h.revision();
    let r = h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 9 }));
    let Outcome::LeaseRevoke(resp) = r.outcome else { panic!("{:?}", r.outcome) };
    assert_eq!(resp.header.unwrap().revision, before + 1);
    let changes = h.store.kv().changes_since(before + 1, 10, true).unwrap();
    let seen: Vec<(i32, String, i64)> = changes
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (e.r#type, String::from_utf8_lossy(&kv.key).into_owned(), kv.mod_revision)
        })
        .collect();
    let del = EventType::Delete as i32;
    assert_eq!(seen, [(del, "x/1".into(), before + 1), (del, "x/2".into(), before + 1)]);
    assert!(changes.events.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == 9)));
    assert!(h.get("x/3").is_some());
    assert!(h.store.kv().lease(9, false).unwrap().is_none());
    assert!(matches!(h.rejected(Request::LeaseRevoke(LeaseRevokeRequest { id: 9 })), KvError::LeaseNotFound));

    // A lease without keys goes without a new revision.
    grant(&mut h, 10, 10);
    let before = h.revision();
    h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 10 }));
    assert_eq!(h.revision(), before);
}

#[test]
fn a_key_put_under_a_revoked_lease_is_refused() {
    let mut h = Harness::new();
    grant(&mut h, 3, 10);
    h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 3 }));
    let e = h.rejected(Request::Put(PutRequest { lease: 3, ..put("k", "v") }));
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
}

#[test]
fn checkpoints_record_the_time_left_and_skip_gone_leases() {
    let mut h = Harness::new();
    grant(&mut h, 4, 100);
    let cps =
        vec![LeaseCheckpoint { id: 4, remaining_ttl: 42 }, LeaseCheckpoint { id: 99, remaining_ttl: 1 }];
    h.apply(Request::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints: cps }));
    assert_eq!(h.store.kv().leases().unwrap(), [LeaseRecord { id: 4, ttl: 100, remaining_ttl: 42 }]);
}

#[test]
fn the_lessor_is_told_every_change_after_it_is_committed() {
    let mut h = Harness::new();
    let mut feed = h.store.kv().watch_leases();
    grant(&mut h, 1, 10);
    h.apply(Request::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id: 1, remaining_ttl: 7 }],
    }));
    h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 1 }));
    // A refused grant tells nothing.
    grant(&mut h, 2, 10);
    h.rejected(Request::LeaseGrant(LeaseGrantRequest { id: 2, ttl: 10 }));
    let mut told = Vec::new();
    while let Ok(c) = feed.try_recv() {
        told.push(c);
    }
    assert_eq!(
        told,
        [
            LeaseChange::Granted { id: 1, ttl: 10 },
            LeaseChange::Checkpointed { id: 1, remaining_ttl: 7 },
            LeaseChange::Revoked { id: 1 },
            LeaseChange::Granted { id: 2, ttl: 10 },
        ]
    );
}

#[test]
fn leases_and_attachments_survive_a_reopen_and_travel_in_snapshots() {
    let mut h = Harness::new();
    grant(&mut h, 1, 10);
    grant(&mut h, 2, 600);
    put_leased(&mut h, "a", 1);
    put_leased(&mut h, "b", 2);
    put_leased(&mut h, "c", 2);
    h.apply(Request::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![LeaseCheckpoint { id: 2, remaining_ttl: 500 }],
    }));
    let index = h.next_index - 1;
    let log: Vec<_> = (1..=index).map(raft_entry).collect();
    h.store.raft().persist(None, &log).unwrap();
    let snap = h.store.raft().snapshot(index).unwrap();

    let target = Harness::new();
    let mut feed = target.store.kv().watch_leases();
    target.store.raft().install_snapshot(&snap).unwrap();
    assert_eq!(feed.try_recv().ok(), Some(LeaseChange::Reset), "the lessor rereads after an install");
    assert_eq!(target.store.kv().leases().unwrap(), h.store.kv().leases().unwrap());
    assert_eq!(attached(&target, 1), ["a"]);
    assert_eq!(attached(&target, 2), ["b", "c"]);
    // Revoking on the installed copy deletes the same keys.
    let mut target = target;
    target.next_index = index + 1;
    target.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 2 }));
    assert!(target.get("b").is_none() && target.get("c").is_none() && target.get("a").is_some());

    // Reopening the files finds them too.
    let dir = h.dir;
    drop(h.store);
    let reopened = kvnode::storage::Store::open(dir.path()).unwrap();
    assert_eq!(reopened.kv().leases().unwrap().len(), 2);
}

fn raft_entry(index: u64) -> kvnode::proto::raftpb::Entry {
    kvnode::proto::raftpb::Entry {
        index,
        term: 1,
        entry_type: kvnode::proto::raftpb::EntryType::EntryNormal as i32,
        data: Vec::new(),
    }
}
