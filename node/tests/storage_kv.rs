//! etcd key-value semantics of `KvStore`, each on a fresh redb file in a temp dir.

mod common;

use common::*;
use kvnode::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest, compare::CompareResult as R,
    compare::CompareTarget as T, compare::TargetUnion as U, range_request, response_op,
};
use kvnode::proto::kvserverpb::internal_request::Request;
use kvnode::proto::mvccpb::event::EventType;
use kvnode::storage::{KvError, Outcome};

#[test]
fn fresh_store_starts_at_revision_one() {
    let h = Harness::new();
    assert_eq!(h.revision(), 1);
    assert_eq!(h.store.kv().applied_index().unwrap(), 0);
    let r = h.range(get("a")).unwrap();
    assert_eq!(r.header.unwrap().revision, 1);
    assert_eq!(r.count, 0);
}

#[test]
fn put_tracks_create_mod_revision_and_version() {
    let mut h = Harness::new();
    assert_eq!(h.put("a", "1"), 2);
    assert_eq!(h.put("b", "1"), 3);
    assert_eq!(h.put("a", "2"), 4);
    let a = h.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version, value(&a).as_str()), (2, 4, 2, "2"));
    let b = h.get("b").unwrap();
    assert_eq!((b.create_revision, b.mod_revision, b.version), (3, 3, 1));
    // Writing the same value still makes a new revision.
    assert_eq!(h.put("b", "1"), 5);
    assert_eq!(h.get("b").unwrap().version, 2);
}

#[test]
fn put_returns_prev_kv_when_asked() {
    let mut h = Harness::new();
    h.put("a", "old");
    let r = h.apply(Request::Put(PutRequest { prev_kv: true, ..put("a", "new") }));
    let Outcome::Put(p) = r.outcome else { panic!() };
    let prev = p.prev_kv.unwrap();
    assert_eq!((value(&prev).as_str(), prev.mod_revision, prev.key.as_slice()), ("old", 2, &b"a"[..]));
    assert_eq!(p.header.unwrap().revision, 3);
    let r = h.apply(Request::Put(PutRequest { prev_kv: true, ..put("fresh", "x") }));
    let Outcome::Put(p) = r.outcome else { panic!() };
    assert!(p.prev_kv.is_none());
}

#[test]
fn put_ignore_value_and_ignore_lease() {
    let mut h = Harness::new();
    let e = h.rejected(Request::Put(PutRequest { ignore_value: true, ..put("a", "") }));
    assert_eq!(e.to_string(), "etcdserver: key not found");
    let e = h.rejected(Request::Put(PutRequest { ignore_value: true, ..put("a", "v") }));
    assert_eq!(e.to_string(), "etcdserver: value is provided");
    let e = h.rejected(Request::Put(PutRequest { ignore_lease: true, lease: 5, ..put("a", "v") }));
    assert_eq!(e.to_string(), "etcdserver: lease is provided");
    let e = h.rejected(Request::Put(PutRequest { lease: 5, ..put("a", "v") }));
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
    let e = h.rejected(Request::Put(put("", "v")));
    assert_eq!(e.to_string(), "etcdserver: key is not provided");
    // Refusals change nothing, but the entries count as applied.
    assert_eq!(h.revision(), 1);
    assert_eq!(h.store.kv().applied_index().unwrap(), 5);

    h.put("a", "keep");
    let r = h.apply(Request::Put(PutRequest { ignore_value: true, ..put("a", "") }));
    assert!(matches!(r.outcome, Outcome::Put(_)));
    let a = h.get("a").unwrap();
    assert_eq!((value(&a).as_str(), a.version, a.mod_revision), ("keep", 2, 3));
    let r = h.apply(Request::Put(PutRequest { ignore_lease: true, ..put("a", "new") }));
    assert!(matches!(r.outcome, Outcome::Put(_)));
    assert_eq!(value(&h.get("a").unwrap()), "new");
}

#[test]
fn range_end_conventions() {
    let mut h = Harness::new();
    for k in ["a", "ab", "abc", "b", "c"] {
        h.put(k, k);
    }
    assert_eq!(h.keys(get("ab")), ["ab"]);
    assert_eq!(h.keys(range("ab", "ac")), ["ab", "abc"]);
    assert_eq!(h.keys(range("ab", "\0")), ["ab", "abc", "b", "c"]);
    assert_eq!(h.keys(range("\0", "\0")), ["a", "ab", "abc", "b", "c"]);
    assert_eq!(h.keys(range("b", "a")), Vec::<String>::new());
    assert_eq!(h.keys(get("zz")), Vec::<String>::new());
    let e = h.range(get("")).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: key is not provided");
}

#[test]
fn range_limit_more_and_count() {
    let mut h = Harness::new();
    for i in 0..10 {
        h.put(&format!("k{i}"), "v");
    }
    let r = h.range(RangeRequest { limit: 3, ..range("k", "l") }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (3, true, 10));
    assert_eq!(r.kvs[0].key, b"k0");
    let r = h.range(RangeRequest { limit: 10, ..range("k", "l") }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (10, false, 10));
    let r = h.range(RangeRequest { count_only: true, ..range("k", "l") }).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 10));
    let r = h.range(RangeRequest { keys_only: true, ..range("k0", "k2") }).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1));
    assert_eq!(r.header.unwrap().revision, 11);
}

#[test]
fn range_sorts_like_etcd() {
    use range_request::{SortOrder as O, SortTarget as S};
    let mut h = Harness::new();
    h.put("c", "1");
    h.put("a", "3");
    h.put("b", "2");
    h.put("c", "4"); // c: version 2, mod 5
    let sorted = |order: O, target: S| {
        h.keys(RangeRequest { sort_order: order as i32, sort_target: target as i32, ..range("a", "z") })
    };
    assert_eq!(sorted(O::None, S::Key), ["a", "b", "c"]);
    assert_eq!(sorted(O::Descend, S::Key), ["c", "b", "a"]);
    assert_eq!(sorted(O::Ascend, S::Create), ["c", "a", "b"]);
    assert_eq!(sorted(O::Descend, S::Mod), ["c", "b", "a"]);
    assert_eq!(sorted(O::Ascend, S::Value), ["b", "a", "c"]);
    assert_eq!(sorted(O::Descend, S::Version), ["c", "a", "b"]);
    // A non-key target with no order sorts ascending.
    assert_eq!(sorted(O::None, S::Mod), ["a", "b", "c"]);
    // Sort applies before limit.
    let r = h
        .range(RangeRequest {
            sort_order: O::Descend as i32,
            sort_target: S::Mod as i32,
            limit: 1,
            ..range("a", "z")
        })
        .unwrap();
    assert_eq!((r.kvs[0].key.as_slice(), r.more, r.count), (&b"c"[..], true, 3));
    let e = h.range(RangeRequest { sort_target: 42, ..range("a", "z") }).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: invalid sort option");
}

#[test]
fn range_revision_filters() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("c", "1"); // 4
    h.put("a", "2"); // 5
    let f = |req: RangeRequest| h.keys(RangeRequest { ..req });
    assert_eq!(f(RangeRequest { min_mod_revision: 4, ..range("a", "z") }), ["a", "c"]);
    assert_eq!(f(RangeRequest { max_mod_revision: 3, ..range("a", "z") }), ["b"]);
    assert_eq!(f(RangeRequest { min_create_revision: 3, ..range("a", "z") }), ["b", "c"]);
    assert_eq!(f(RangeRequest { max_create_revision: 2, ..range("a", "z") }), ["a"]);
    // count is before filters, as in etcd.
    assert_eq!(h.range(RangeRequest { max_create_revision: 2, ..range("a", "z") }).unwrap().count, 3);
    // limit applies after the filters.
    let r = h.range(RangeRequest { min_mod_revision: 3, limit: 1, ..range("a", "z") }).unwrap();
    assert_eq!((r.kvs[0].key.as_slice(), r.more), (&b"a"[..], true));
}

#[test]
fn range_at_older_revisions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("b", "1"); // 3
    h.put("a", "2"); // 4
    h.delete("b", ""); // 5
    h.put("c", "1"); // 6
    assert_eq!(value(&h.get_at("a", 2).unwrap().unwrap()), "1");
    assert_eq!(value(&h.get_at("a", 3).unwrap().unwrap()), "1");
    assert_eq!(value(&h.get_at("a", 4).unwrap().unwrap()), "2");
    assert!(h.get_at("b", 2).unwrap().is_none());
    assert_eq!(h.get_at("b", 4).unwrap().unwrap().mod_revision, 3);
    assert!(h.get_at("b", 5).unwrap().is_none());
    assert!(h.get_at("c", 5).unwrap().is_none());
    assert_eq!(h.keys(RangeRequest { revision: 4, ..range("a", "\0") }), ["a", "b"]);
    assert_eq!(h.keys(RangeRequest { revision: 5, ..range("\0", "\0") }), ["a"]);
    let r = h.range(RangeRequest { revision: 3, limit: 1, ..range("a", "z") }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count, r.header.unwrap().revision), (1, true, 2, 6));
    let e = h.get_at("a", 7).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision is a future revision");
}

#[test]
fn delete_range_semantics() {
    let mut h = Harness::new();
    for k in ["a", "b", "c"] {
        h.put(k, k);
    }
    // Deleting nothing makes no revision.
    assert_eq!(h.delete("zz", ""), 0);
    assert_eq!(h.revision(), 4);
    let r = h.apply(Request::DeleteRange(DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: b"c".to_vec(),
        prev_kv: true,
    }));
    let Outcome::DeleteRange(d) = r.outcome else { panic!() };
    assert_eq!(d.deleted, 2);
    assert_eq!(
        d.prev_kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(r.revision, 5);
    assert_eq!(h.keys(range("\0", "\0")), ["c"]);
    // A re-created key starts a new life: new create revision, version 1.
    h.put("a", "again");
    let a = h.get("a").unwrap();
    assert_eq!((a.create_revision, a.version), (6, 1));
    assert_eq!(h.delete("\0", "\0"), 2);
    assert_eq!(h.range(range("\0", "\0")).unwrap().count, 0);
}

#[test]
fn txn_compare_targets_and_results() {
    let mut h = Harness::new();
    h.put("k", "m"); // rev 2, version 1
    h.put("k", "m"); // rev 3, version 2; create 2
    let cases: Vec<(T, U, R, bool)> = vec![
        (T::Value, U::Value(b"m".to_vec()), R::Equal, true),
        (T::Value, U::Value(b"a".to_vec()), R::Greater, true),
        (T::Value, U::Value(b"z".to_vec()), R::Less, true),
        (T::Value, U::Value(b"m".to_vec()), R::NotEqual, false),
        (T::Version, U::Version(2), R::Equal, true),
        (T::Version, U::Version(1), R::Greater, true),
        (T::Version, U::Version(2), R::Less, false),
        (T::Create, U::CreateRevision(2), R::Equal, true),
        (T::Create, U::CreateRevision(3), R::Less, true),
        (T::Mod, U::ModRevision(3), R::Equal, true),
        (T::Mod, U::ModRevision(3), R::NotEqual, false),
        (T::Mod, U::ModRevision(2), R::Greater, true),
        (T::Lease, U::Lease(0), R::Equal, true),
        (T::Lease, U::Lease(1), R::Less, true),
    ];
    for (target, operand, result, want) in cases {
        let r = h.apply(txn(vec![cmp("k", target, result, operand.clone())], vec![], vec![]));
        let Outcome::Txn(t) = r.outcome else { panic!() };
        assert_eq!(t.succeeded, want, "{target:?} {result:?} {operand:?}");
    }
    // Read-only transactions make no revision.
    assert_eq!(h.revision(), 3);
}

#[test]
fn txn_compare_on_missing_keys_and_ranges() {
    let mut h = Harness::new();
    let ok = |h: &mut Harness, c| {
        let Outcome::Txn(t) = h.apply(txn(vec![c], vec![], vec![])).outcome else { panic!() };
        t.succeeded
    };
    // A missing key: VALUE compares fail, the others compare against zero.
    assert!(!ok(&mut h, cmp("x", T::Value, R::Equal, U::Value(vec![]))));
    assert!(!ok(&mut h, cmp("x", T::Value, R::NotEqual, U::Value(b"q".to_vec()))));
    assert!(ok(&mut h, cmp("x", T::Version, R::Equal, U::Version(0))));
    assert!(ok(&mut h, cmp("x", T::Create, R::Equal, U::CreateRevision(0))));
    // Over a range every key must satisfy the compare.
    h.put("r1", "5");
    h.put("r2", "7");
    let mut c = cmp("r", T::Value, R::Greater, U::Value(b"4".to_vec()));
    c.range_end = b"s".to_vec();
    assert!(ok(&mut h, c.clone()));
    c.target_union = Some(U::Value(b"6".to_vec()));
    assert!(!ok(&mut h, c));
}

#[test]
fn txn_runs_one_branch_at_one_revision() {
    let mut h = Harness::new();
    h.put("guard", "1"); // 2
    let r = h.apply(txn(
        vec![cmp("guard", T::Value, R::Equal, U::Value(b"1".to_vec()))],
        vec![op_put("a", "1"), op_get("a"), op_put("b", "1"), op_delete("guard", "")],
        vec![op_put("failed", "1")],
    ));
    assert_eq!(r.revision, 3);
    let Outcome::Txn(t) = r.outcome else { panic!() };
    assert!(t.succeeded);
    assert_eq!(t.header.unwrap().revision, 3);
    assert_eq!(t.responses.len(), 4);
    // The read inside the txn sees the put before it.
    let Some(response_op::Response::ResponseRange(rr)) = &t.responses[1].response else { panic!() };
    assert_eq!(value(&rr.kvs[0]), "1");
    let Some(response_op::Response::ResponseDeleteRange(dr)) = &t.responses[3].response else { panic!() };
    assert_eq!(dr.deleted, 1);
    let (a, b) = (h.get("a").unwrap(), h.get("b").unwrap());
    assert_eq!((a.mod_revision, b.mod_revision), (3, 3));
    assert!(h.get("guard").is_none() && h.get("failed").is_none());
    // The failure branch.
    let r = h.apply(txn(
        vec![cmp("guard", T::Value, R::Equal, U::Value(b"1".to_vec()))],
        vec![op_put("x", "1")],
        vec![op_put("failed", "1")],
    ));
    let Outcome::Txn(t) = r.outcome else { panic!() };
    assert!(!t.succeeded);
    assert!(h.get("failed").is_some() && h.get("x").is_none());
    assert_eq!(r.revision, 4);
}

#[test]
fn nested_txn_compares_against_the_state_before_the_txn() {
    let mut h = Harness::new();
    let inner = TxnRequest {
        // Evaluated before the outer put runs, so "a" is still absent.
        compare: vec![cmp("a", T::Version, R::Equal, U::Version(0))],
        success: vec![op_put("inner-then", "1")],
        failure: vec![op_put("inner-else", "1")],
        ..Default::default()
    };
    let r = h.apply(txn(vec![], vec![op_put("a", "1"), op_txn(inner)], vec![]));
    let Outcome::Txn(t) = r.outcome else { panic!() };
    let Some(response_op::Response::ResponseTxn(nested)) = &t.responses[1].response else { panic!() };
    assert!(nested.succeeded);
    assert!(h.get("inner-then").is_some() && h.get("inner-else").is_none());
    assert_eq!(h.get("inner-then").unwrap().mod_revision, h.get("a").unwrap().mod_revision);
}

#[test]
fn refused_txn_leaves_no_trace() {
    let mut h = Harness::new();
    let e = h.rejected(txn(vec![], vec![op_put("a", "1"), op_put("a", "2")], vec![]));
    assert_eq!(e.to_string(), "etcdserver: duplicate key given in txn request");
    let ignore_missing = kvnode::proto::etcdserverpb::RequestOp {
        request: Some(kvnode::proto::etcdserverpb::request_op::Request::RequestPut(PutRequest {
            ignore_value: true,
            ..put("missing", "")
        })),
    };
    let e = h.rejected(txn(vec![], vec![op_put("a", "1"), ignore_missing], vec![]));
    assert_eq!(e.to_string(), "etcdserver: key not found");
    let future = kvnode::proto::etcdserverpb::RequestOp {
        request: Some(kvnode::proto::etcdserverpb::request_op::Request::RequestRange(RangeRequest {
            revision: 99,
            ..get("a")
        })),
    };
    let e = h.rejected(txn(vec![], vec![op_put("a", "1"), future], vec![]));
    assert!(matches!(e, KvError::FutureRevision));
    assert!(h.get("a").is_none());
    assert_eq!(h.revision(), 1);
    assert_eq!(h.store.kv().applied_index().unwrap(), 3);
}

#[test]
fn compacting_a_never_compacted_store_at_revision_0_succeeds_once_as_in_etcd() {
    let mut h = Harness::new();
    assert_eq!(h.store.kv().compact_revision().unwrap(), -1, "never compacted");
    assert!(matches!(h.compact(0), Outcome::Compaction(_)));
    assert_eq!(h.store.kv().compact_revision().unwrap(), 0);
    let Outcome::Rejected(e) = h.compact(0) else { panic!("a second compaction at 0 is refused") };
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision has been compacted");
    let Outcome::Rejected(e) = h.compact(-3) else { panic!("a negative revision is refused") };
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision has been compacted");
}

#[test]
fn compaction_keeps_the_versions_at_the_compaction_revision() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    h.delete("b", ""); // 5
    h.put("c", "1"); // 6
    h.put("a", "3"); // 7
    assert!(matches!(h.compact(5), Outcome::Compaction(_)));
    assert_eq!(h.store.kv().compact_revision().unwrap(), 5);
    // Reads below the compaction revision fail, at it they work.
    let e = h.get_at("a", 4).unwrap_err();
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision has been compacted");
    assert!(matches!(e, KvError::Compacted { compact_revision: 5 }));
    assert_eq!(value(&h.get_at("a", 5).unwrap().unwrap()), "2");
    assert!(h.get_at("b", 5).unwrap().is_none());
    assert!(h.get_at("c", 5).unwrap().is_none());
    assert_eq!(value(&h.get_at("a", 6).unwrap().unwrap()), "2");
    assert_eq!(value(&h.get("a").unwrap()), "3");
    // The change log from the compaction revision on is complete, the deletion made at the
    // compaction revision included (a watch may start there).
    let ch = h.store.kv().changes_since(5, 100, false).unwrap();
    let revs: Vec<i64> = ch.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(revs, [5, 6, 7]);
    assert_eq!(ch.events[0].r#type, EventType::Delete as i32);
    assert_eq!(ch.events[0].kv.as_ref().unwrap().key, b"b");
    // Compacting again at or below the point, or into the future, is refused.
    let Outcome::Rejected(e) = h.compact(5) else { panic!() };
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision has been compacted");
    let Outcome::Rejected(e) = h.compact(100) else { panic!() };
    assert_eq!(e.to_string(), "etcdserver: mvcc: required revision is a future revision");
    // A second compaction drops the version the first one kept.
    assert!(matches!(h.compact(7), Outcome::Compaction(_)));
    let ch = h.store.kv().changes_since(7, 100, false).unwrap();
    let revs: Vec<i64> = ch.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(revs, [7]);
    assert_eq!(h.get_at("c", 7).unwrap().unwrap().mod_revision, 6);
    assert_eq!(h.keys(range("\0", "\0")), ["a", "c"]);
    assert!(matches!(
        h.store.kv().changes_since(6, 10, false),
        Err(KvError::Compacted { compact_revision: 7 })
    ));
}

#[test]
fn changes_since_reports_events_with_prev_kv_in_whole_revisions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.apply(txn(vec![], vec![op_put("a", "2"), op_put("b", "1")], vec![])); // 3
    h.delete("a", ""); // 4
    h.put("c", "1"); // 5
    let ch = h.store.kv().changes_since(3, 100, true).unwrap();
    assert_eq!(ch.revision, 5);
    assert!(!ch.truncated);
    let summary: Vec<(i32, String, i64, Option<String>)> = ch
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            (
                e.r#type,
                String::from_utf8(kv.key.clone()).unwrap(),
                kv.mod_revision,
                e.prev_kv.as_ref().map(value),
            )
        })
        .collect();
    let (put, del) = (EventType::Put as i32, EventType::Delete as i32);
    assert_eq!(
        summary,
        [
            (put, "a".into(), 3, Some("1".into())),
            (put, "b".into(), 3, None),
            (del, "a".into(), 4, Some("2".into())),
            (put, "c".into(), 5, None),
        ]
    );
    // A limit never splits a revision.
    let ch = h.store.kv().changes_since(2, 2, false).unwrap();
    assert_eq!(ch.events.len(), 3);
    assert!(ch.truncated);
    let ch = h.store.kv().changes_since(6, 10, false).unwrap();
    assert!(ch.events.is_empty() && !ch.truncated);
}

#[test]
fn apply_is_idempotent_and_ordered() {
    let mut h = Harness::new();
    h.put("a", "1");
    let kv = h.store.kv().clone();
    let req = kvnode::proto::kvserverpb::InternalRequest {
        id: 1,
        request: Some(Request::Put(put("a", "again"))),
        ..Default::default()
    };
    let r = kv.apply(1, &req).unwrap();
    assert!(matches!(r.outcome, Outcome::AlreadyApplied));
    assert_eq!(value(&h.get("a").unwrap()), "1");
    let e = kv.apply(3, &req).unwrap_err();
    assert!(matches!(e, kvnode::storage::StoreError::ApplyOutOfOrder { expected: 2, got: 3 }), "{e}");
    assert!(matches!(kv.apply_noop(2).unwrap().outcome, Outcome::Applied));
    assert_eq!(kv.applied_index().unwrap(), 2);
    assert_eq!(h.revision(), 2);
}

#[test]
fn reads_run_concurrently_with_applies_and_see_whole_transactions() {
    let mut h = Harness::new();
    let kv = h.store.kv().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (kv, stop) = (kv.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last_rev = 0;
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = kv.range(&range("\0", "\0")).unwrap();
                let rev = r.header.unwrap().revision;
                assert!(rev >= last_rev, "revision went back from {last_rev} to {rev}");
                last_rev = rev;
                // Both keys are written by one txn: a reader never sees them differ.
                let values: Vec<&[u8]> = r.kvs.iter().map(|kv| kv.value.as_slice()).collect();
                if values.len() == 2 {
                    assert_eq!(values[0], values[1]);
                }
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        let v = i.to_string();
        h.apply(txn(vec![], vec![op_put("x", &v), op_put("y", &v)], vec![]));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(h.revision(), 201);
}
