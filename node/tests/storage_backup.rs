//! Backups on real redb files: a backup written while the source is being written to restores
//! into an empty key space with the same keys, history, revisions, leases and HashKV; damaged
//! or truncated backups are refused; HashKV is the same for equal histories.

mod common;

use common::*;
use kvnode::proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use kvnode::proto::kvserverpb::internal_request::Request;
use kvnode::storage::KvError;
use kvnode::storage::backup::{self, BackupError};

/// A key space with history, deletions, a compaction and leased keys.
fn populated() -> Harness {
    let mut h = Harness::new();
    for i in 0..300 {
        h.put(&format!("k/{:03}", i % 120), &format!("v{i}"));
    }
    h.delete("k/010", "k/020");
    h.compact(200);
    h.apply(Request::LeaseGrant(LeaseGrantRequest { id: 42, ttl: 60 }));
    h.apply(Request::Put(PutRequest { lease: 42, ..put("leased/a", "x") }));
    h.put("k/005", "after-compaction");
    h
}

fn every_key() -> RangeRequest {
    range("\0", "\0")
}

#[test]
fn a_backup_restores_to_the_same_key_space_and_hash() {
    let h = populated();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let (_, made) = h.store.kv().export_backup(7, "test", std::fs::File::create(&file).unwrap()).unwrap();
    assert_eq!(made.size % 512, 32, "etcd's size rule");
    assert_eq!(made.size, std::fs::metadata(&file).unwrap().len());
    let source_hash = h.store.kv().hash_kv(0).unwrap();
    assert_eq!((made.hash_kv, made.revision), (source_hash.hash, source_hash.hash_revision));
    assert_eq!(made.keys, h.range(every_key()).unwrap().count as u64);

    let inspected = backup::inspect(&file, |_, _, _| {}).unwrap();
    assert_eq!(inspected, made);

    let target = Harness::new();
    let restored = target.store.kv().restore_backup(&file, |_, _, _| {}).unwrap();
    assert_eq!(restored.summary, made);
    let kv = target.store.kv();
    assert_eq!(kv.hash_kv(0).unwrap(), source_hash);
    assert_eq!(kv.applied_index().unwrap(), 0, "a restored key space is bootstrapped anew");
    assert_eq!(target.range(every_key()).unwrap().kvs, h.range(every_key()).unwrap().kvs);
    // History survives: reads at an older revision, and the compaction point.
    let old = RangeRequest { revision: 250, ..every_key() };
    assert_eq!(target.range(old.clone()).unwrap().kvs, h.range(old).unwrap().kvs);
    let compacted = target.range(RangeRequest { revision: 100, ..every_key() }).unwrap_err();
    assert!(matches!(compacted, KvError::Compacted { compact_revision: 200 }), "{compacted:?}");
    assert_eq!(
        kv.changes_since(200, 10_000, true).unwrap(),
        h.store.kv().changes_since(200, 10_000, true).unwrap()
    );
    // Leases and their attachments.
    assert_eq!(kv.leases().unwrap(), h.store.kv().leases().unwrap());
    let attached = kv.lease(42, true).unwrap().expect("lease 42");
    assert_eq!(attached.keys, [b"leased/a".to_vec()]);
}

#[test]
fn damaged_backups_and_occupied_targets_are_refused() {
    let h = populated();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    h.store.kv().export_backup(7, "test", std::fs::File::create(&file).unwrap()).unwrap();
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    assert!(matches!(backup::inspect(&file, |_, _, _| {}), Err(BackupError::DigestMismatch)));
    let target = Harness::new();
    let refused = target.store.kv().restore_backup(&file, |_, _, _| {}).unwrap_err();
    assert!(matches!(refused, BackupError::DigestMismatch), "{refused}");
    assert_eq!(target.revision(), 1, "nothing was written");

    std::fs::write(&file, &good[..good.len() - 600]).unwrap();
    assert!(matches!(backup::inspect(&file, |_, _, _| {}), Err(BackupError::Truncated { .. })));

    std::fs::write(&file, &good).unwrap();
    let occupied = populated();
    let refused = occupied.store.kv().restore_backup(&file, |_, _, _| {}).unwrap_err();
    assert!(refused.to_string().contains("not empty"), "{refused}");
}

#[test]
fn hash_kv_is_equal_for_equal_histories_and_refuses_as_etcd() {
    let (a, b) = (populated(), populated());
    assert_eq!(a.store.kv().hash_kv(0).unwrap(), b.store.kv().hash_kv(0).unwrap());
    assert_eq!(a.store.kv().hash_kv(250).unwrap(), b.store.kv().hash_kv(250).unwrap());
    assert_ne!(a.store.kv().hash_kv(250).unwrap().hash, a.store.kv().hash_kv(0).unwrap().hash);
    assert_eq!(a.store.kv().hash_all().unwrap(), b.store.kv().hash_all().unwrap());
    let mut c = populated();
    c.put("k/000", "different");
    assert_ne!(c.store.kv().hash_kv(0).unwrap().hash, a.store.kv().hash_kv(0).unwrap().hash);
    // History below the compaction is gone; the future is refused.
    assert!(matches!(a.store.kv().hash_kv(100), Err(KvError::Compacted { compact_revision: 200 })));
    assert!(matches!(a.store.kv().hash_kv(10_000), Err(KvError::FutureRevision)));
}
