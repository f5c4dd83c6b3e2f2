//! The not-yet-persisted tail of the log (and a snapshot received but not yet persisted).
//!
//! Entries live here from the moment the core appends them until the driver reports them
//! persisted through `advance`. The "in progress" marks record what was already handed out
//! in a `Ready`, so the same entries are not handed out twice.

use crate::pb::{Entry, Snapshot};

#[derive(Debug, Clone, Default)]
pub(crate) struct Unstable {
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) snapshot_in_progress: bool,
    pub(crate) entries: Vec<Entry>,
    /// Index of `entries[0]` (or where the next entry goes when empty).
    pub(crate) offset: u64,
    /// Entries below this index were handed to the driver and await persistence.
    pub(crate) offset_in_progress: u64,
}

pub(crate) fn snapshot_index_term(s: &Snapshot) -> (u64, u64) {
    s.metadata.as_ref().map_or((0, 0), |m| (m.index, m.term))
}

impl Unstable {
    pub(crate) fn new(offset: u64) -> Self {
        Self { offset, offset_in_progress: offset, ..Self::default() }
    }

    pub(crate) fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| snapshot_index_term(s).0 + 1)
    }

    pub(crate) fn maybe_last_index(&self) -> Option<u64> {
        if !self.entries.is_empty() {
            return Some(self.offset + self.entries.len() as u64 - 1);
        }
        self.snapshot.as_ref().map(|s| snapshot_index_term(s).0)
    }

    pub(crate) fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            let (si, st) = self.snapshot.as_ref().map(snapshot_index_term)?;
            return (si == index).then_some(st);
        }
        let i = usize::try_from(index - self.offset).ok()?;
        self.entries.get(i).map(|e| e.term)
    }

    /// Entries not yet handed to the driver.
    pub(crate) fn next_entries(&self) -> &[Entry] {
        let start =
            usize::try_from(self.offset_in_progress.saturating_sub(self.offset)).unwrap_or(usize::MAX);
        self.entries.get(start..).unwrap_or_default()
    }

    /// The snapshot, if not yet handed to the driver.
    pub(crate) fn next_snapshot(&self) -> Option<&Snapshot> {
        if self.snapshot_in_progress { None } else { self.snapshot.as_ref() }
    }

    /// Marks everything currently held as handed to the driver.
    pub(crate) fn accept_in_progress(&mut self) {
        if let Some(last) = self.entries.last() {
            self.offset_in_progress = last.index + 1;
        }
        if self.snapshot.is_some() {
            self.snapshot_in_progress = true;
        }
    }

    /// The driver persisted entries up to `(index, term)`: drop them, unless the log changed
    /// underneath (a newer leader overwrote them), in which case they stay to be persisted anew.
    pub(crate) fn stable_to(&mut self, index: u64, term: u64) {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let n = usize::try_from(index + 1 - self.offset).unwrap_or(usize::MAX).min(self.entries.len());
        self.entries.drain(..n);
        self.offset = index + 1;
        self.offset_in_progress = self.offset_in_progress.max(self.offset);
    }

    pub(crate) fn stable_snap_to(&mut self, index: u64) {
        if self.snapshot.as_ref().is_some_and(|s| snapshot_index_term(s).0 == index) {
            self.snapshot = None;
            self.snapshot_in_progress = false;
        }
    }

    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot_index_term(&snapshot).0 + 1;
        self.offset_in_progress = self.offset;
        self.entries.clear();
        self.snapshot = Some(snapshot);
        self.snapshot_in_progress = false;
    }

    /// Appends `entries` (consecutive, non-empty), replacing whatever they overlap.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(from) = entries.first().map(|e| e.index) else { return };
        let end = self.offset + self.entries.len() as u64;
        if from == end {
            self.entries.extend_from_slice(entries);
        } else if from <= self.offset {
            self.offset = from;
            self.offset_in_progress = from;
            self.entries = entries.to_vec();
        } else {
            let keep = usize::try_from(from - self.offset).unwrap_or(usize::MAX);
            self.entries.truncate(keep);
            self.entries.extend_from_slice(entries);
            self.offset_in_progress = self.offset_in_progress.min(from);
        }
    }

    /// Entries in `[low, high)`; the caller guarantees `offset <= low <= high <= end`.
    pub(crate) fn slice(&self, low: u64, high: u64) -> &[Entry] {
        let lo = usize::try_from(low.saturating_sub(self.offset)).unwrap_or(usize::MAX);
        let hi = usize::try_from(high.saturating_sub(self.offset)).unwrap_or(usize::MAX);
        self.entries.get(lo..hi).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::SnapshotMetadata;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    #[test]
    fn truncate_and_append_cases() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(&[ent(5, 1), ent(6, 1)]);
        u.accept_in_progress();
        assert!(u.next_entries().is_empty());
        u.truncate_and_append(&[ent(7, 1)]);
        assert_eq!(u.next_entries().len(), 1);
        // Overwrite the middle: in-progress mark falls back to the truncation point.
        u.truncate_and_append(&[ent(6, 2)]);
        assert_eq!(u.offset_in_progress, 6);
        assert_eq!(u.maybe_last_index(), Some(6));
        // Replace everything, including before offset.
        u.truncate_and_append(&[ent(4, 3)]);
        assert_eq!((u.offset, u.entries.len()), (4, 1));
    }

    #[test]
    fn stable_to_ignores_overwritten_entries() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&[ent(1, 1), ent(2, 1)]);
        u.accept_in_progress();
        u.truncate_and_append(&[ent(2, 2)]);
        u.stable_to(2, 1);
        assert_eq!(u.entries.len(), 2, "term mismatch: nothing becomes stable");
        u.stable_to(1, 1);
        assert_eq!((u.offset, u.entries.len()), (2, 1));
        u.stable_to(9, 1);
        assert_eq!(u.entries.len(), 1);
    }

    #[test]
    fn snapshot_restore_and_stable() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(&[ent(1, 1)]);
        let snap = Snapshot {
            metadata: Some(SnapshotMetadata { index: 10, term: 3, conf_state: None }),
            data: vec![],
        };
        u.restore(snap);
        assert_eq!(u.maybe_first_index(), Some(11));
        assert_eq!(u.maybe_last_index(), Some(10));
        assert_eq!(u.maybe_term(10), Some(3));
        assert_eq!(u.maybe_term(9), None);
        assert!(u.next_snapshot().is_some());
        u.accept_in_progress();
        assert!(u.next_snapshot().is_none());
        u.stable_snap_to(10);
        assert!(u.snapshot.is_none());
    }
}
