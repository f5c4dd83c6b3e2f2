//! The log as it stands: snapshot point, hard state and the entries after the point, in
//! memory. Replay rebuilds it record by record, and the WAL applies each write to it once the
//! write is durable, through the same operations, so both agree on what a record means.

use std::collections::VecDeque;

use crate::{HardState, LogEntry};

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct LogState {
    /// The snapshot point (index, term): everything up to it is compacted.
    pub snapshot: (u64, u64),
    pub hard_state: HardState,
    /// The index just before `entries[0]`. Equal to the snapshot index, except while
    /// replaying a log whose oldest segments were released: the entries between the snapshot
    /// point of the oldest remaining segment's header and its first index were in released
    /// segments, and a later snapshot-point record must cover them by the end of the replay.
    base: u64,
    entries: VecDeque<LogEntry>,
}

impl LogState {
    /// The state a segment header describes: its entries before `first_index` unknown.
    pub fn from_header(snapshot: (u64, u64), hard_state: HardState, first_index: u64) -> Self {
        LogState { snapshot, hard_state, base: first_index.saturating_sub(1), entries: VecDeque::new() }
    }

    pub fn last_index(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// The index before the first entry known (above the snapshot index only mid-replay).
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The entry at `index`, if it is held.
    pub fn entry(&self, index: u64) -> Option<&LogEntry> {
        let offset = index.checked_sub(self.base)?.checked_sub(1)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// The term of `index`: the snapshot point's or a held entry's.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.0 {
            return Some(self.snapshot.1);
        }
        self.entry(index).map(|e| e.term)
    }

    /// Stores `entry`, replacing any held at or after its index. The caller has checked that
    /// `snapshot index < entry.index <= last_index + 1`.
    pub fn put_entry(&mut self, entry: LogEntry) {
        if entry.index <= self.base {
            // Overwriting entries of released segments (replay only): none of the held ones
            // come before it.
            self.entries.clear();
            self.base = entry.index - 1;
        } else {
            self.entries.truncate(to_usize(entry.index - self.base - 1));
        }
        self.entries.push_back(entry);
    }

    /// Drops the entries after `index` (at or above the snapshot index).
    pub fn truncate_after(&mut self, index: u64) {
        if index < self.base {
            self.entries.clear();
            self.base = index;
        } else {
            self.entries.truncate(to_usize(index - self.base));
        }
    }

    /// Moves the snapshot point to `(index, term)`, dropping the entries up to it. The caller
    /// has checked that `index` is at most the last index.
    pub fn compact(&mut self, index: u64, term: u64) {
        if index > self.base {
            let drop = to_usize(index - self.base).min(self.entries.len());
            self.entries.drain(..drop);
            self.base = index;
        }
        self.snapshot = (index, term);
    }

    /// Empties the log at the snapshot point `(index, term)`; entries up to `index` are
    /// committed, so the commit index rises to it.
    pub fn install(&mut self, index: u64, term: u64) {
        self.entries.clear();
        self.base = index;
        self.snapshot = (index, term);
        self.hard_state.commit = self.hard_state.commit.max(index);
    }
}

/// A count of entries as a `usize`, saturating (`truncate` and `drain` then keep or drop all).
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
