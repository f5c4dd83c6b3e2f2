//! The WAL on real files, in a temporary directory.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{SEGMENT_BYTES, entries, entry, image, opts};
use wal::{HardState, Wal, WalError};

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// A log of several segments in `dir`, closed.
fn write_log(dir: &Path) -> common::LogImage {
    let mut wal = Wal::open_dir(dir, opts()).unwrap();
    for i in 1..=40 {
        wal.append(Some(HardState { term: 1, vote: 2, commit: i - 1 }), &[entry(i, 1, 300)]).unwrap();
    }
    assert!(wal.segment_count() >= 3);
    image(&wal)
}

/// Where the log ends in a segment file: after its last non-zero byte.
fn data_end(path: &Path) -> u64 {
    let data = fs::read(path).unwrap();
    data.iter().rposition(|&b| b != 0).unwrap() as u64 + 1
}

fn garble(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

#[test]
fn a_log_on_real_files_survives_reopening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("not/yet/there");
    let before = write_log(&dir);
    let files = segment_files(&dir);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(name.len() == 37 && name.ends_with(".wal"), "{name}");
        assert_eq!(fs::metadata(f).unwrap().len(), SEGMENT_BYTES, "{name} is not preallocated");
    }
    let mut wal = Wal::open_dir(&dir, opts()).unwrap();
    assert_eq!(image(&wal), before);
    wal.compact(30).unwrap();
    wal.append(None, &entries(35..=45, 2, 50)).unwrap();
    let after = image(&wal);
    assert!(segment_files(&dir).len() < files.len(), "compaction released no file");
    drop(wal);
    assert_eq!(image(&Wal::open_dir(&dir, opts()).unwrap()), after);
}

#[test]
fn a_truncated_last_segment_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let before = write_log(tmp.path());
    let last = segment_files(tmp.path()).pop().unwrap();
    let end = data_end(&last);
    // Chop the last record in the middle, as a crash before the preallocation would.
    OpenOptions::new().write(true).open(&last).unwrap().set_len(end - 100).unwrap();
    let mut wal = Wal::open_dir(tmp.path(), opts()).unwrap();
    let got = image(&wal);
    assert_eq!(got.entries[..], before.entries[..39]);
    assert_eq!(fs::metadata(&last).unwrap().len(), SEGMENT_BYTES, "preallocation not restored");
    wal.append(None, &entries(40..=41, 2, 10)).unwrap();
    let after = image(&wal);
    drop(wal);
    assert_eq!(image(&Wal::open_dir(tmp.path(), opts()).unwrap()), after);
}

#[test]
fn a_garbled_tail_of_the_last_segment_is_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let before = write_log(tmp.path());
    let last = segment_files(tmp.path()).pop().unwrap();
    let end = data_end(&last);
    garble(&last, end - 3, b"\xff\xff\xff");
    let wal = Wal::open_dir(tmp.path(), opts()).unwrap();
    assert_eq!(image(&wal).entries[..], before.entries[..39]);
    drop(wal);
    // The garbled bytes are gone from the file, with the whole batch they were in: a hard
    // state and an entry record, each with its 9-byte frame.
    assert_eq!(data_end(&last), end - (9 + 24) - (9 + 16 + 300));
}

#[test]
fn a_garbled_record_in_an_earlier_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    write_log(tmp.path());
    let first = segment_files(tmp.path()).remove(0);
    garble(&first, 500, b"\x00\x01");
    let err = Wal::open_dir(tmp.path(), opts()).unwrap_err();
    match &err {
        WalError::Corrupt { segment, offset, .. } => {
            assert_eq!(segment.as_str(), first.file_name().unwrap().to_str().unwrap());
            assert!(*offset <= 500);
        }
        _ => panic!("expected corruption, got {err}"),
    }
    // Nothing was "repaired" away.
    assert!(data_end(&first) > 500);
}

#[test]
fn a_leftover_temporary_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let before = write_log(tmp.path());
    let files = segment_files(tmp.path());
    let temp = tmp.path().join("00000000000000ff-0000000000000029.wal.tmp");
    fs::write(&temp, b"half a header").unwrap();
    let wal = Wal::open_dir(tmp.path(), opts()).unwrap();
    assert_eq!(image(&wal), before);
    assert!(!temp.exists());
    assert_eq!(segment_files(tmp.path()), files);
}

#[test]
fn io_errors_name_the_operation_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("file");
    fs::write(&not_a_dir, b"").unwrap();
    let err = Wal::open_dir(&not_a_dir, opts()).unwrap_err();
    assert!(matches!(err, WalError::Io { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
}
