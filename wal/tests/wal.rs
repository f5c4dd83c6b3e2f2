//! The WAL's operations and replay, on a MemDisk.

mod common;

use common::{SEGMENT_BYTES, entries, entry, image, opts};
use wal::{Disk, DiskFile, HardState, MemDisk, Wal, WalError};

fn open(disk: &MemDisk) -> Wal<MemDisk> {
    Wal::open(disk.clone(), opts()).expect("open")
}

/// Reopens the log and checks that replay rebuilds exactly what was in memory.
fn reopen(wal: Wal<MemDisk>) -> Wal<MemDisk> {
    let before = image(&wal);
    let disk = wal.disk().clone();
    drop(wal);
    let wal = open(&disk);
    assert_eq!(image(&wal), before, "replay differs from the log before reopening");
    wal
}

fn segment_names(disk: &MemDisk) -> Vec<String> {
    let mut names = disk.list().unwrap();
    names.sort();
    names
}

#[test]
fn an_empty_log() {
    let disk = MemDisk::new();
    let wal = open(&disk);
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    assert_eq!(wal.snapshot_point(), (0, 0));
    assert_eq!(wal.hard_state(), HardState::default());
    assert_eq!(wal.term(0), Some(0));
    assert_eq!(wal.term(1), None);
    assert_eq!(wal.entries(1, 1, None).unwrap(), vec![]);
    assert!(matches!(wal.entries(1, 2, None), Err(WalError::Unavailable { index: 1, last_index: 0 })));
    assert!(matches!(wal.entries(0, 1, None), Err(WalError::Compacted { index: 0, first_index: 1 })));
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(segment_names(&disk), vec!["0000000000000000-0000000000000001.wal"]);
    reopen(wal);
}

#[test]
fn appends_and_hard_states_survive_reopening() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    let hs = HardState { term: 2, vote: 3, commit: 1 };
    wal.append(Some(hs), &entries(1..=3, 1, 10)).unwrap();
    wal.append(None, &entries(4..=5, 2, 0)).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 5));
    assert_eq!(wal.hard_state(), hs);
    assert_eq!(wal.term(3), Some(1));
    assert_eq!(wal.term(5), Some(2));
    assert_eq!(wal.term(6), None);
    let mut wal = reopen(wal);

    // A hard state alone is written; the same one again costs nothing.
    let hs2 = HardState { commit: 5, ..hs };
    wal.append(Some(hs2), &[]).unwrap();
    let ops = disk.mutating_ops();
    wal.append(Some(hs2), &[]).unwrap();
    wal.append(None, &[]).unwrap();
    assert_eq!(disk.mutating_ops(), ops, "nothing to write, yet the disk was touched");
    let wal = reopen(wal);
    assert_eq!(wal.hard_state(), hs2);
}

#[test]
fn an_append_overwrites_the_suffix_it_conflicts_with() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=5, 1, 8)).unwrap();
    wal.append(None, &entries(3..=4, 2, 9)).unwrap();
    assert_eq!(wal.last_index(), 4);
    let got = wal.entries(1, 5, None).unwrap();
    let mut want = entries(1..=2, 1, 8);
    want.extend(entries(3..=4, 2, 9));
    assert_eq!(got, want);
    let mut wal = reopen(wal);
    // Overwriting from the very first entry, and appending at the end again.
    wal.append(None, &entries(1..=2, 3, 1)).unwrap();
    wal.append(None, &entries(3..=3, 3, 1)).unwrap();
    assert_eq!(wal.entries(1, 4, None).unwrap(), entries(1..=3, 3, 1));
    reopen(wal);
}

#[test]
fn appends_must_be_contiguous_and_skip_the_compacted_part() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=5, 1, 4)).unwrap();
    assert!(matches!(wal.append(None, &[entry(7, 1, 0)]), Err(WalError::Gap { expected: 6, got: 7 })));
    assert!(matches!(
        wal.append(None, &[entry(6, 1, 0), entry(8, 1, 0)]),
        Err(WalError::Gap { expected: 7, got: 8 })
    ));
    assert_eq!(wal.last_index(), 5, "a refused append changed the log");
    wal.compact(3).unwrap();
    // 2 and 3 are at or below the snapshot point: skipped; 4 and 5 are replaced.
    wal.append(None, &entries(2..=6, 2, 4)).unwrap();
    assert_eq!(wal.entries(4, 7, None).unwrap(), entries(4..=6, 2, 4));
    // Only compacted entries: nothing to do.
    let ops = disk.mutating_ops();
    wal.append(None, &entries(1..=3, 9, 4)).unwrap();
    assert_eq!(disk.mutating_ops(), ops);
    reopen(wal);
}

#[test]
fn truncate_after_drops_the_tail_durably() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=10, 1, 100)).unwrap();
    assert_eq!(wal.truncate_after(10).unwrap(), 0);
    assert_eq!(wal.truncate_after(12).unwrap(), 0);
    assert_eq!(wal.truncate_after(7).unwrap(), 3);
    assert_eq!(wal.last_index(), 7);
    let mut wal = reopen(wal);
    wal.compact(5).unwrap();
    assert!(matches!(wal.truncate_after(4), Err(WalError::Compacted { index: 4, first_index: 6 })));
    assert_eq!(wal.truncate_after(5).unwrap(), 2);
    assert_eq!(wal.last_index(), 5);
    let mut wal = reopen(wal);
    wal.append(None, &entries(6..=6, 2, 1)).unwrap();
    reopen(wal);
}

#[test]
fn install_snapshot_empties_the_log_and_raises_the_commit_index() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(Some(HardState { term: 1, vote: 1, commit: 2 }), &[]).unwrap();
    for i in (1..=40).step_by(2) {
        wal.append(None, &entries(i..=i + 1, 1, 300)).unwrap();
    }
    assert!(wal.segment_count() > 2);
    wal.install_snapshot(20, 3).unwrap();
    assert_eq!(wal.snapshot_point(), (20, 3));
    assert_eq!((wal.first_index(), wal.last_index()), (21, 20));
    assert_eq!(wal.hard_state(), HardState { term: 1, vote: 1, commit: 20 });
    assert_eq!(wal.term(20), Some(3));
    assert_eq!(wal.term(19), None);
    assert_eq!(wal.term(21), None);
    assert_eq!(wal.segment_count(), 1, "install released every segment but the active one");
    assert!(matches!(
        wal.install_snapshot(19, 3),
        Err(WalError::SnapshotOutOfDate { index: 19, snapshot_index: 20 })
    ));
    let mut wal = reopen(wal);
    wal.append(None, &entries(21..=22, 3, 5)).unwrap();
    // A snapshot ahead of the log.
    wal.install_snapshot(100, 4).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (101, 100));
    assert_eq!(wal.hard_state().commit, 100);
    let mut wal = reopen(wal);
    wal.append(None, &entries(101..=101, 4, 5)).unwrap();
    reopen(wal);
}

#[test]
fn compaction_releases_the_segments_it_no_longer_needs() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    for i in 1..=200 {
        wal.append(Some(HardState { term: 1, vote: 1, commit: i - 1 }), &[entry(i, 1, 100)]).unwrap();
    }
    let cut = wal.segment_count();
    assert!(cut > 5, "only {cut} segments");
    assert_eq!(segment_names(&disk).len(), cut);
    assert!(matches!(wal.compact(201), Err(WalError::CompactBeyondLast { index: 201, last_index: 200 })));
    wal.compact(150).unwrap();
    let left = wal.segment_count();
    assert!(left < cut && left >= 2, "{cut} segments became {left}");
    assert_eq!(segment_names(&disk).len(), left, "the files were not deleted");
    assert_eq!(wal.snapshot_point(), (150, 1));
    assert_eq!(wal.first_index(), 151);
    assert_eq!(wal.term(149), None);
    assert!(matches!(wal.entries(150, 152, None), Err(WalError::Compacted { index: 150, first_index: 151 })));
    assert_eq!(wal.entries(151, 201, None).unwrap().len(), 50);
    // At or below the point: nothing to do.
    let ops = disk.mutating_ops();
    wal.compact(150).unwrap();
    wal.compact(3).unwrap();
    assert_eq!(disk.mutating_ops(), ops);
    let mut wal = reopen(wal);
    assert_eq!(wal.segment_count(), left);
    // Everything: only the active segment stays.
    wal.compact(200).unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!((wal.first_index(), wal.last_index()), (201, 200));
    let mut wal = reopen(wal);
    wal.append(None, &entries(201..=230, 1, 100)).unwrap();
    reopen(wal);
}

#[test]
fn compaction_releases_a_segment_exactly_when_all_its_entries_are_compacted() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    for i in 1..=30 {
        wal.append(None, &[entry(i, 1, 300)]).unwrap();
    }
    let first_index = |name: &String| u64::from_str_radix(&name[17..33], 16).unwrap();
    let names = segment_names(&disk);
    let (second, third) = (first_index(&names[1]), first_index(&names[2]));
    // The first segment holds entry second - 1: not released before it is compacted.
    wal.compact(second - 2).unwrap();
    assert_eq!(segment_names(&disk), names);
    let mut wal = reopen(wal);
    wal.compact(second - 1).unwrap();
    assert_eq!(segment_names(&disk), names[1..]);
    let mut wal = reopen(wal);
    wal.compact(third - 2).unwrap();
    assert_eq!(segment_names(&disk), names[1..]);
    let mut wal = reopen(wal);
    wal.compact(third - 1).unwrap();
    assert_eq!(segment_names(&disk), names[2..]);
    reopen(wal);
}

#[test]
fn compaction_after_a_truncation_keeps_what_replay_needs() {
    // Segment first indexes go back after a truncation; releasing must still leave a log
    // that replays to the same state.
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=60, 1, 200)).unwrap();
    for i in 61..=80 {
        wal.append(None, &[entry(i, 1, 200)]).unwrap();
    }
    wal.truncate_after(30).unwrap();
    for i in 31..=70 {
        wal.append(None, &[entry(i, 2, 200)]).unwrap();
    }
    for point in [20, 35, 50, 69] {
        wal.compact(point).unwrap();
        wal = reopen(wal);
    }
}

#[test]
fn entries_respects_bounds_and_max_bytes() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=10, 1, 100)).unwrap(); // 100 bytes of data each
    wal.compact(2).unwrap();
    assert!(matches!(wal.entries(2, 5, None), Err(WalError::Compacted { .. })));
    assert!(matches!(wal.entries(3, 12, None), Err(WalError::Unavailable { index: 11, last_index: 10 })));
    assert!(matches!(wal.entries(5, 4, None), Err(WalError::InvalidRange { low: 5, high: 4 })));
    assert_eq!(wal.entries(5, 5, None).unwrap(), vec![]);
    assert_eq!(wal.entries(3, 11, None).unwrap().len(), 8);
    assert_eq!(wal.entries(3, 11, Some(0)).unwrap(), entries(3..=3, 1, 100), "at least one");
    assert_eq!(wal.entries(3, 11, Some(299)).unwrap().len(), 2);
    assert_eq!(wal.entries(3, 11, Some(300)).unwrap().len(), 3);
    assert_eq!(wal.entries(3, 5, Some(10_000)).unwrap().len(), 2);
}

#[test]
fn a_record_larger_than_a_segment_goes_alone_into_a_growing_segment() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=2, 1, 10)).unwrap();
    let big = entry(3, 1, 3 * SEGMENT_BYTES as usize);
    wal.append(None, std::slice::from_ref(&big)).unwrap();
    wal.append(None, &entries(4..=5, 1, 10)).unwrap();
    assert_eq!(wal.segment_count(), 3);
    let names = segment_names(&disk);
    let len = |name: &str| disk.open(name).unwrap().len().unwrap();
    assert!(len(&names[1]) > 3 * SEGMENT_BYTES);
    assert_eq!(len(&names[2]), SEGMENT_BYTES);
    let wal = reopen(wal);
    assert_eq!(wal.entries(3, 4, None).unwrap(), vec![big]);
}

#[test]
fn a_failed_write_poisons_the_log_until_it_is_reopened() {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    wal.append(None, &entries(1..=3, 1, 10)).unwrap();
    disk.fail_after(1); // the write succeeds, its fdatasync fails
    let err = wal.append(None, &entries(4..=4, 1, 10)).unwrap_err();
    assert!(matches!(err, WalError::Io { op: "fdatasync", .. }), "{err}");
    assert!(err.to_string().contains(".wal"), "no file name in: {err}");
    assert!(matches!(wal.append(None, &entries(4..=4, 1, 10)), Err(WalError::Poisoned)));
    assert!(matches!(wal.compact(1), Err(WalError::Poisoned)));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned)));
    // Reads answer from memory, as before the failed write.
    assert_eq!(wal.last_index(), 3);
    assert_eq!(wal.entries(1, 4, None).unwrap(), entries(1..=3, 1, 10));
}

/// Writes `bytes` over a file of `disk`.
fn scribble(disk: &MemDisk, name: &str, offset: u64, bytes: &[u8]) {
    disk.open(name).unwrap().write_at(offset, bytes).unwrap();
}

/// A log of several segments, closed; returns its disk and segment names.
fn several_segments() -> (MemDisk, Vec<String>) {
    let disk = MemDisk::new();
    let mut wal = open(&disk);
    for i in 1..=40 {
        wal.append(None, &[entry(i, 1, 300)]).unwrap();
    }
    assert!(wal.segment_count() >= 3);
    drop(wal);
    let names = segment_names(&disk);
    (disk, names)
}

#[test]
fn a_torn_tail_of_the_last_segment_is_repaired() {
    let (disk, names) = several_segments();
    let last = names.last().unwrap();
    let before = image(&open(&disk));
    let file = disk.open(last).unwrap();
    let mut data = vec![0; file.len().unwrap() as usize];
    file.read_at(0, &mut data).unwrap();
    let end = data.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    // Garble the last record, and leave garbage after the end too.
    scribble(&disk, last, end - 5, b"xxxxx");
    scribble(&disk, last, end + 700, b"garbage");
    let mut wal = open(&disk);
    let got = image(&wal);
    assert_eq!(
        got.entries[..],
        before.entries[..before.entries.len() - 1],
        "not exactly the last entry lost"
    );
    // The repair is durable: another open changes nothing.
    let ops = disk.mutating_ops();
    drop(open(&disk));
    assert_eq!(disk.mutating_ops(), ops);
    wal.append(None, &entries(40..=45, 2, 300)).unwrap();
    reopen(wal);
}

#[test]
fn a_bad_record_in_an_earlier_segment_is_corruption() {
    let (disk, names) = several_segments();
    scribble(&disk, &names[1], 200, b"x");
    match Wal::open(disk.clone(), opts()) {
        Err(WalError::Corrupt { segment, offset, reason }) => {
            assert_eq!(segment, names[1]);
            assert!(offset <= 200, "offset {offset}");
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|w| image(&w))),
    }
}

#[test]
fn data_after_the_end_of_an_earlier_segment_is_corruption() {
    let (disk, names) = several_segments();
    scribble(&disk, &names[0], SEGMENT_BYTES - 10, b"late");
    assert!(matches!(Wal::open(disk, opts()), Err(WalError::Corrupt { .. })));
}

#[test]
fn a_missing_segment_is_corruption() {
    let (disk, names) = several_segments();
    disk.remove(&names[1]).unwrap();
    let err = Wal::open(disk.clone(), opts()).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { reason, .. } if reason.contains("gap")), "{err}");
    // The oldest one, without a compaction that would cover its entries.
    let (disk, names) = several_segments();
    disk.remove(&names[0]).unwrap();
    let err = Wal::open(disk.clone(), opts()).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { reason, .. } if reason.contains("missing")), "{err}");
}

#[test]
fn a_lost_tail_of_an_earlier_segment_is_corruption() {
    let (disk, names) = several_segments();
    // Zero the last record of the first segment: the next header no longer fits.
    let file = disk.open(&names[0]).unwrap();
    let mut data = vec![0; file.len().unwrap() as usize];
    file.read_at(0, &mut data).unwrap();
    let end = data.iter().rposition(|&b| b != 0).unwrap() + 1;
    scribble(&disk, &names[0], end as u64 - 320, &[0; 320]);
    let err = Wal::open(disk, opts()).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { .. }), "{err}");
}

#[test]
fn half_created_segments_are_removed() {
    let (disk, names) = several_segments();
    let before = image(&open(&disk));
    disk.create("0000000000000099-0000000000000001.wal.tmp").unwrap().write_at(0, b"junk").unwrap();
    let next = format!("{:016x}-{:016x}.wal", names.len(), 41);
    disk.create(&next).unwrap().set_len(SEGMENT_BYTES).unwrap();
    let mut wal = open(&disk);
    assert_eq!(image(&wal), before);
    assert_eq!(segment_names(&disk), names);
    wal.append(None, &entries(41..=50, 1, 300)).unwrap();
    reopen(wal);
}

#[test]
fn a_headerless_segment_with_records_is_corruption_not_a_crash() {
    let (disk, names) = several_segments();
    let last = names.last().unwrap();
    scribble(&disk, last, 3, b"x");
    let err = Wal::open(disk, opts()).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { segment, .. } if segment == last), "{err}");
}

#[test]
fn the_log_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Wal<MemDisk>>();
    send_sync::<Wal<wal::OsDisk>>();
}
