//! The Raft side of the member database: log persistence, bounds, compaction, snapshots,
//! membership, and how opening fails.

mod common;

use common::*;
use kvnode::proto::kvserverpb::{InternalRequest, Member, SnapshotData, internal_request::Request};
use kvnode::proto::raftpb::{ConfState, Entry, EntryType, HardState};
use kvnode::raft::storage::{Storage, StorageError};
use kvnode::storage::{MemberChange, Store, StoreError, StoreOptions};
use prost::Message;

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, entry_type: EntryType::EntryNormal as i32, data: format!("e{index}").into_bytes() }
}

fn entries(from: u64, to: u64, term: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term)).collect()
}

#[test]
fn persist_and_read_back_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState { current_term: 3, voted_for: 2, commit: 4 };
    {
        let store = Store::open(dir.path()).unwrap();
        let raft = store.raft();
        assert_eq!((raft.first_index().unwrap(), raft.last_index().unwrap()), (1, 0));
        raft.persist(Some(&hs), &entries(1, 5, 2)).unwrap();
        assert_eq!(raft.last_index().unwrap(), 5);
    }
    let store = Store::open(dir.path()).unwrap();
    let raft = store.raft();
    let state = raft.initial_state().unwrap();
    assert_eq!(state.hard_state, hs);
    assert_eq!((raft.first_index().unwrap(), raft.last_index().unwrap()), (1, 5));
    assert_eq!(raft.entries(2, 4, None).unwrap(), entries(2, 3, 2));
    assert_eq!(raft.term(0).unwrap(), 0);
    assert_eq!(raft.term(3).unwrap(), 2);
    assert_eq!(raft.term(5).unwrap(), 2);
    assert_eq!(raft.term(6), Err(StorageError::Unavailable));
    assert_eq!(raft.entries(1, 7, None), Err(StorageError::Unavailable));
    assert_eq!(raft.entries(3, 3, None).unwrap(), Vec::<Entry>::new());
}

#[test]
fn persist_truncates_a_conflicting_suffix() {
    let store = Store::in_memory().unwrap();
    let raft = store.raft();
    raft.persist(None, &entries(1, 6, 1)).unwrap();
    raft.persist(None, &entries(4, 4, 2)).unwrap();
    assert_eq!(raft.last_index().unwrap(), 4);
    assert_eq!(raft.term(4).unwrap(), 2);
    assert_eq!(raft.term(3).unwrap(), 1);
    assert_eq!(raft.entries(5, 6, None), Err(StorageError::Unavailable));
    let err = raft.persist(None, &entries(7, 7, 2)).unwrap_err();
    assert!(matches!(err, StoreError::LogGap { last: 4, got: 7 }), "{err}");
    let mut holey = entries(5, 5, 2);
    holey.push(entry(7, 2));
    assert!(matches!(raft.persist(None, &holey), Err(StoreError::LogGap { .. })));
    assert_eq!(raft.last_index().unwrap(), 4);
}

#[test]
fn entries_respect_max_bytes_but_return_at_least_one() {
    let store = Store::in_memory().unwrap();
    let raft = store.raft();
    raft.persist(None, &entries(1, 10, 1)).unwrap();
    let one = entry(1, 1).encoded_len() as u64;
    assert_eq!(raft.entries(1, 11, Some(0)).unwrap().len(), 1);
    assert_eq!(raft.entries(1, 11, Some(one * 3)).unwrap().len(), 3);
    assert_eq!(raft.entries(1, 11, Some(one * 3 + 1)).unwrap().len(), 3);
    assert_eq!(raft.entries(1, 11, None).unwrap().len(), 10);
}

/// Persists `n` entries that each put `k<i>`, and applies them.
fn fill(store: &Store, n: u64) {
    let reqs: Vec<Entry> = (1..=n)
        .map(|i| {
            let req = InternalRequest {
                id: i,
                request: Some(Request::Put(put(&format!("k{i}"), &i.to_string()))),
                ..Default::default()
            };
            Entry { index: i, term: 1, entry_type: EntryType::EntryNormal as i32, data: req.encode_to_vec() }
        })
        .collect();
    store.raft().persist(Some(&HardState { current_term: 1, voted_for: 1, commit: n }), &reqs).unwrap();
    for e in &reqs {
        store.kv().apply(e.index, &InternalRequest::decode(e.data.as_slice()).unwrap()).unwrap();
    }
}

#[test]
fn compaction_moves_the_first_index_and_keeps_the_term() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        fill(&store, 6);
        let raft = store.raft();
        assert!(matches!(raft.compact(7), Err(StoreError::CompactBeyondLast { .. })));
        raft.persist(None, &entries(7, 8, 2)).unwrap();
        let err = raft.compact(7).unwrap_err();
        assert!(matches!(err, StoreError::CompactBeyondApplied { index: 7, applied: 6 }), "{err}");
        raft.compact(4).unwrap();
        raft.compact(2).unwrap(); // Below the point: nothing to do.
        assert_eq!(raft.first_index().unwrap(), 5);
        assert_eq!(raft.term(4).unwrap(), 1);
        assert_eq!(raft.term(3), Err(StorageError::Compacted));
        assert_eq!(raft.entries(4, 6, None), Err(StorageError::Compacted));
        assert_eq!(raft.entries(5, 9, None).unwrap().len(), 4);
    }
    let store = Store::open(dir.path()).unwrap();
    let raft = store.raft();
    assert_eq!((raft.first_index().unwrap(), raft.last_index().unwrap()), (5, 8));
    assert_eq!(raft.term(4).unwrap(), 1);
    assert_eq!(raft.term(8).unwrap(), 2);
}

#[test]
fn snapshot_describes_the_applied_state() {
    let store = Store::in_memory().unwrap();
    let cs = ConfState { voters: vec![1, 2, 3], learners: vec![] };
    store.raft().bootstrap_conf_state(&cs).unwrap();
    fill(&store, 5);
    store.raft().persist(None, &entries(6, 7, 2)).unwrap();
    let raft = store.raft();
    assert_eq!(raft.snapshot(6), Err(StorageError::SnapshotTemporarilyUnavailable));
    let snap = raft.snapshot(3).unwrap();
    let meta = snap.metadata.clone().unwrap();
    assert_eq!((meta.index, meta.term), (5, 1));
    assert_eq!(meta.conf_state.unwrap(), cs);
    let data = SnapshotData::decode(snap.data.as_slice()).unwrap();
    assert_eq!((data.applied_index, data.revision, data.history.len()), (5, 6, 5));
    // After compacting past the applied index's entry, the term comes from the snapshot point.
    raft.compact(5).unwrap();
    let again = raft.snapshot(5).unwrap();
    assert_eq!(again, snap);
}

#[test]
fn snapshot_bytes_are_deterministic_and_install_reproduces_the_state() {
    let (a, b) = (Store::in_memory().unwrap(), Store::in_memory().unwrap());
    for s in [&a, &b] {
        fill(s, 8);
    }
    let (sa, sb) = (a.raft().snapshot(8).unwrap(), b.raft().snapshot(8).unwrap());
    assert_eq!(sa.data, sb.data);

    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    h.delete("b", ""); // 5
    h.put("c", "1"); // 6
    h.compact(5);
    let member =
        Member { id: 7, name: "m7".into(), peer_urls: vec!["http://p".into()], ..Default::default() };
    let cs = ConfState { voters: vec![7], learners: vec![] };
    let idx = h.next_index;
    h.store.kv().apply_conf_change(idx, &cs, &MemberChange::Upsert(member.clone())).unwrap();
    h.store.raft().persist(None, &entries(1, idx, 3)).unwrap();
    let snap = h.store.raft().snapshot(idx).unwrap();
    // Compaction at 5 physically dropped a@2 and b@4; it keeps b's deletion at 5, the
    // compaction revision itself (a watcher may start there and must see it), so history is
    // a@3, b deleted@5, c@6.
    let data = SnapshotData::decode(snap.data.as_slice()).unwrap();
    let hist: Vec<(i64, i64)> = data.history.iter().map(|e| (e.revision, e.sub)).collect();
    assert_eq!(hist, [(3, 0), (5, 0), (6, 0)]);

    let target = Harness::new();
    target.store.raft().persist(None, &entries(1, 3, 1)).unwrap();
    target.store.raft().install_snapshot(&snap).unwrap();
    let (kv, raft) = (target.store.kv(), target.store.raft());
    assert_eq!(kv.applied_index().unwrap(), idx);
    assert_eq!((kv.current_revision().unwrap(), kv.compact_revision().unwrap()), (6, 5));
    assert_eq!(kv.members().unwrap(), [member]);
    assert_eq!(raft.initial_state().unwrap().conf_state, cs);
    assert_eq!(raft.initial_state().unwrap().hard_state.commit, idx);
    assert_eq!((raft.first_index().unwrap(), raft.last_index().unwrap()), (idx + 1, idx));
    assert_eq!(raft.term(idx).unwrap(), 3);
    for probe in
        [range("\0", "\0"), kvnode::proto::etcdserverpb::RangeRequest { revision: 5, ..range("\0", "\0") }]
    {
        assert_eq!(target.range(probe.clone()).unwrap(), h.range(probe).unwrap());
    }
    assert_eq!(
        target.store.kv().changes_since(5, 10, true).unwrap(),
        h.store.kv().changes_since(5, 10, true).unwrap()
    );
    // The installed state snapshots to the same bytes.
    assert_eq!(target.store.raft().snapshot(idx).unwrap().data, snap.data);
    // An older snapshot is refused.
    let err = target.store.raft().install_snapshot(&snap).unwrap_err();
    assert!(matches!(err, StoreError::SnapshotOutOfDate { .. }), "{err}");
    // A snapshot whose data contradicts its metadata is refused.
    let mut bad = snap.clone();
    bad.metadata.as_mut().unwrap().index += 10;
    assert!(matches!(target.store.raft().install_snapshot(&bad), Err(StoreError::InvalidSnapshot(_))));
}

#[test]
fn membership_changes_are_applied_with_the_conf_state() {
    let mut h = Harness::new();
    let kv = h.store.kv().clone();
    let m = |id: u64, learner: bool| Member {
        id,
        name: format!("n{id}"),
        is_learner: learner,
        ..Default::default()
    };
    let cs1 = ConfState { voters: vec![1], learners: vec![2] };
    kv.apply_conf_change(1, &cs1, &MemberChange::Upsert(m(1, false))).unwrap();
    kv.apply_conf_change(2, &cs1, &MemberChange::Upsert(m(2, true))).unwrap();
    let cs2 = ConfState { voters: vec![1, 2], learners: vec![] };
    kv.apply_conf_change(3, &cs2, &MemberChange::Upsert(m(2, false))).unwrap();
    assert_eq!(kv.members().unwrap(), [m(1, false), m(2, false)]);
    assert_eq!(h.store.raft().conf_state().unwrap(), cs2);
    let cs3 = ConfState { voters: vec![2], learners: vec![] };
    kv.apply_conf_change(4, &cs3, &MemberChange::Remove(1)).unwrap();
    assert_eq!(kv.members().unwrap(), [m(2, false)]);
    assert_eq!(kv.applied_index().unwrap(), 4);
    // Replaying an applied change does nothing.
    kv.apply_conf_change(2, &cs1, &MemberChange::Upsert(m(9, true))).unwrap();
    assert_eq!(kv.members().unwrap(), [m(2, false)]);
    assert_eq!(h.store.raft().conf_state().unwrap(), cs3);
    h.next_index = 5;
    h.put("x", "1");
    kv.set_cluster_id(42).unwrap();
    assert_eq!(kv.cluster_id().unwrap(), 42);
}

#[test]
fn creation_is_atomic_and_ignores_leftovers_of_a_crashed_creation() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(kvnode::storage::DB_FILE);
    // A crash during creation leaves at most a half-written temporary file, or an empty file.
    std::fs::write(db.with_extension("redb.tmp"), b"half a header").unwrap();
    std::fs::write(&db, b"").unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.kv().current_revision().unwrap(), 1);
        fill(&store, 2);
        assert!(store.file_size().unwrap() > 0);
    }
    assert!(!db.with_extension("redb.tmp").exists());
    let store = Store::open(&dir.path().join("nested/new")).unwrap();
    assert_eq!(store.kv().applied_index().unwrap(), 0);
    assert_eq!(Store::open(dir.path()).unwrap().kv().applied_index().unwrap(), 2);
}

#[test]
fn opening_fails_with_typed_errors() {
    // A file that is not a database.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(kvnode::storage::DB_FILE), vec![0xA5; 64 * 1024]).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let StoreError::Open { source, .. } = &err else { panic!("{err}") };
    assert!(matches!(**source, StoreError::Corrupt(_)), "{err}");

    // A database already open elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let StoreError::Open { source, .. } = &err else { panic!("{err}") };
    assert!(matches!(**source, StoreError::AlreadyOpen), "{err}");

    // The state machine without its log (the WAL lost or from another member): the
    // entries above its durable point are gone, so opening must refuse, not serve stale data.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        fill(&store, 3);
        store.sync().unwrap();
    }
    std::fs::remove_dir_all(dir.path().join(kvnode::storage::WAL_DIR)).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    let StoreError::Open { source, .. } = &err else { panic!("{err}") };
    assert!(matches!(**source, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("do not belong together"), "{err}");

    // A data directory that is a file.
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = Store::open(file.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(!err.is_disk_full());
}

#[test]
fn a_damaged_database_file_is_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        fill(&store, 20);
        store.sync().unwrap();
    }
    for file in [kvnode::storage::DB_FILE] {
        let path = dir.path().join(file);
        let pristine = std::fs::read(&path).unwrap();
        let page = 4096;
        // Garbage over everything after the header page, then over one page at a time.
        let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
        let mut all = pristine.clone();
        all[page..].fill(0x5A);
        damaged.push((format!("{file}: all pages"), all));
        for p in 1..pristine.len() / page {
            let mut one = pristine.clone();
            for (i, b) in one[p * page..(p + 1) * page].iter_mut().enumerate() {
                *b ^= 0x5A ^ (i as u8);
            }
            damaged.push((format!("{file}: page {p}"), one));
        }
        let mut refused = 0;
        // Members verify only after an unclean shutdown (redb's repair does) unless told to
        // on every start (`--verify-db-on-open`); this is that option.
        let verifying = StoreOptions { verify_on_open: true, ..StoreOptions::default() };
        for (what, bytes) in &damaged {
            std::fs::write(&path, bytes).unwrap();
            match Store::open_with(dir.path(), verifying) {
                Err(err) => {
                    let StoreError::Open { source, .. } = &err else { panic!("{what}: {err}") };
                    assert!(matches!(**source, StoreError::Corrupt(_)), "{what}: {err}");
                    refused += 1;
                }
                // A page that held nothing live: the data must read back whole.
                Ok(store) => {
                    let r = store.kv().range(&range("\0", "\0")).unwrap();
                    assert_eq!(r.count, 20, "{what}");
                    assert_eq!(store.raft().entries(1, 21, None).unwrap().len(), 20, "{what}");
                }
            }
        }
        std::fs::write(&path, &pristine).unwrap();
        assert!(refused >= 1, "{file}: no damage was detected at all");
    }
}

/// The one WAL segment of a store in `dir`.
fn only_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let wal = dir.join(kvnode::storage::WAL_DIR);
    let segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().unwrap()
}

/// Damage to the WAL is refused with a corruption error, never served: a garbled segment
/// header, and a garbled record whose loss would leave the key space ahead of its log.
#[test]
fn a_damaged_wal_is_reported_not_served() {
    for (what, offset) in [("segment header", 0usize), ("first entry", 200)] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            fill(&store, 20);
            store.sync().unwrap();
        }
        let segment = only_segment(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        for b in &mut bytes[offset..offset + 64] {
            *b ^= 0x5A;
        }
        std::fs::write(&segment, &bytes).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let StoreError::Open { source, .. } = &err else { panic!("{what}: {err}") };
        assert!(matches!(**source, StoreError::Corrupt(_)), "{what}: {err}");
    }
}

/// The log tables of the redb log database earlier versions kept (`raft.redb`).
mod legacy {
    use redb::TableDefinition;
    pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
    pub const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
    pub const LOG_META: TableDefinition<&str, u64> = TableDefinition::new("log_meta");
}

/// Turns a data directory of this version back into one of the earlier layout: the WAL's
/// contents written to `raft.redb` as those versions did, the WAL removed.
fn to_legacy_layout(dir: &std::path::Path, hard_state: HardState, snapshot: (u64, u64), log: &[Entry]) {
    std::fs::remove_dir_all(dir.join(kvnode::storage::WAL_DIR)).unwrap();
    let db = redb::Database::create(dir.join(kvnode::storage::LEGACY_LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(legacy::RAFT_LOG).unwrap();
        for e in log {
            t.insert(e.index, e.encode_to_vec().as_slice()).unwrap();
        }
        let mut t = txn.open_table(legacy::RAFT_STATE).unwrap();
        t.insert("hard_state", hard_state.encode_to_vec().as_slice()).unwrap();
        let mut t = txn.open_table(legacy::LOG_META).unwrap();
        t.insert("snapshot_index", snapshot.0).unwrap();
        t.insert("snapshot_term", snapshot.1).unwrap();
    }
    txn.commit().unwrap();
}

/// A data directory of an earlier version (the log in `raft.redb`) is migrated into the WAL
/// on first open, entries, hard state and snapshot point intact; and the migration is
/// redone or finished whatever step a crash cut it at.
#[test]
fn a_legacy_redb_log_is_moved_into_the_wal_on_first_open() {
    let hs = HardState { current_term: 4, voted_for: 2, commit: 8 };
    // Entries 7..=12 of which 1..=8 are applied; the log was compacted to 6 (term 1).
    let build = |dir: &std::path::Path| {
        {
            let store = Store::open(dir).unwrap();
            fill(&store, 8);
            store.sync().unwrap();
        }
        let mut log: Vec<Entry> = (7..=8).map(|i| entry(i, 1)).collect();
        log.extend(entries(9, 12, 4));
        to_legacy_layout(dir, hs, (6, 1), &log);
        log
    };
    let check = |dir: &std::path::Path, log: &[Entry], what: &str| {
        let store = Store::open(dir).unwrap_or_else(|e| panic!("{what}: {e}"));
        let raft = store.raft();
        assert_eq!(raft.hard_state().unwrap(), hs, "{what}");
        assert_eq!((raft.first_index().unwrap(), raft.last_index().unwrap()), (7, 12), "{what}");
        assert_eq!(raft.term(6).unwrap(), 1, "{what}");
        assert_eq!(raft.entries(7, 13, None).unwrap(), log, "{what}");
        assert!(!dir.join(kvnode::storage::LEGACY_LOG_FILE).exists(), "{what}: raft.redb is gone");
        assert!(!dir.join("wal.migrating").exists(), "{what}");
        drop(store);
        // And the migrated log is the one a second open finds.
        let store = Store::open(dir).unwrap();
        assert_eq!(store.raft().entries(7, 13, None).unwrap(), log, "{what}: reopened");
    };

    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    check(dir.path(), &log, "plain migration");

    // A crash while the copy was written: a partial `wal.migrating/` is discarded, redone.
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    let partial = dir.path().join("wal.migrating");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("0000000000000000-0000000000000001.wal"), b"half a segment").unwrap();
    check(dir.path(), &log, "after a crash during the copy");

    // A crash after the copy was renamed into place, before `raft.redb` was removed: the WAL
    // is the log, the old file is only removed (a different old log proves it is not read).
    let dir = tempfile::tempdir().unwrap();
    let log = build(dir.path());
    {
        let store = Store::open(dir.path()).unwrap();
        drop(store);
    }
    to_legacy_layout_beside_the_wal(dir.path());
    check(dir.path(), &log, "after a crash before the old file was removed");
}

/// Leaves a stale `raft.redb` (holding nothing the WAL holds) next to a migrated WAL.
fn to_legacy_layout_beside_the_wal(dir: &std::path::Path) {
    let db = redb::Database::create(dir.join(kvnode::storage::LEGACY_LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(legacy::RAFT_LOG).unwrap().insert(1, b"not an entry".as_slice()).unwrap();
    txn.commit().unwrap();
}
