//! Defragmentation on real redb files: the file shrinks after history is compacted away, the
//! content is the same to the byte (Hash), writes go on in the new file and survive a reopen,
//! a read that began before the swap finishes on the old copy, and a copy left by a crash is
//! removed on open.

mod common;

use common::*;
use kvnode::proto::etcdserverpb::RangeRequest;
use kvnode::storage::Store;

#[test]
fn defragmenting_gives_space_back_and_keeps_everything() {
    let mut h = Harness::new();
    let big = "x".repeat(4096);
    for i in 0..2000 {
        h.put(&format!("k/{}", i % 50), &big);
    }
    let last = h.revision();
    h.compact(last);
    let before_hash = h.store.kv().hash_all().unwrap();
    let before_keys = h.range(range("\0", "\0")).unwrap().kvs;
    // A read that began before the swap.
    let early = h.store.kv().range(&RangeRequest { key: b"k/1".to_vec(), ..Default::default() }).unwrap();

    let done = h.store.defragment().unwrap();
    assert!(done.size_after * 4 < done.size_before, "{done:?}");
    assert_eq!(done.size_after, h.store.file_size().unwrap());
    assert!(h.store.measure_size_in_use().unwrap() <= done.size_after);
    assert_eq!(h.store.kv().hash_all().unwrap(), before_hash, "the same state, byte for byte");
    assert_eq!(h.range(range("\0", "\0")).unwrap().kvs, before_keys);
    assert_eq!(early.kvs.len(), 1);

    // Writes go on, into the new file, and are there after a reopen.
    h.put("after", "defrag");
    let applied = h.store.kv().applied_index().unwrap();
    // The harness applies without a log; a reopen checks the two files belong together.
    let log: Vec<_> = (1..=applied)
        .map(|index| kvnode::proto::raftpb::Entry {
            index,
            term: 1,
            entry_type: kvnode::proto::raftpb::EntryType::EntryNormal as i32,
            data: Vec::new(),
        })
        .collect();
    h.store.raft().persist(None, &log).unwrap();
    h.store.sync().unwrap();
    let dir = h.dir;
    drop(h.store);
    let reopened = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.kv().applied_index().unwrap(), applied);
    let got = reopened.kv().range(&get("after")).unwrap();
    assert_eq!(got.kvs.len(), 1);
}

#[test]
fn a_copy_left_by_a_crash_is_removed_on_open() {
    let h = Harness::new();
    let dir = h.dir;
    drop(h.store);
    let stray = dir.path().join("member.redb.defrag");
    std::fs::write(&stray, b"half a copy").unwrap();
    let reopened = Store::open(dir.path()).unwrap();
    assert!(!stray.exists());
    assert_eq!(reopened.kv().current_revision().unwrap(), 1);
}
