//! Helpers shared by the WAL's integration tests.

#![allow(dead_code)] // each test binary uses its own share

use wal::{Disk, HardState, LogEntry, Wal};

/// Segments this small make the tests cut (and release) many of them.
pub const SEGMENT_BYTES: u64 = 4096;

pub fn opts() -> wal::WalOptions {
    wal::WalOptions { segment_bytes: SEGMENT_BYTES }
}

/// An entry whose data (of `len` bytes) is derived from its index and term, so that a
/// mixed-up entry shows.
pub fn entry(index: u64, term: u64, len: usize) -> LogEntry {
    let data = (0..len).map(|i| (index as usize * 31 + term as usize * 7 + i) as u8).collect();
    LogEntry { index, term, data }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64, len: usize) -> Vec<LogEntry> {
    range.map(|i| entry(i, term, len)).collect()
}

/// Everything the log holds, as seen through its API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogImage {
    pub snapshot: (u64, u64),
    pub hard_state: HardState,
    /// The entries after the snapshot point.
    pub entries: Vec<LogEntry>,
}

impl LogImage {
    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.0, |e| e.index)
    }
}

pub fn image<D: Disk>(wal: &Wal<D>) -> LogImage {
    let entries = wal.entries(wal.first_index(), wal.last_index() + 1, None).expect("entries");
    assert_eq!(wal.first_index(), wal.snapshot_point().0 + 1);
    assert_eq!(wal.term(wal.snapshot_point().0), Some(wal.snapshot_point().1));
    for e in &entries {
        assert_eq!(wal.term(e.index), Some(e.term));
    }
    LogImage { snapshot: wal.snapshot_point(), hard_state: wal.hard_state(), entries }
}
