//! An in-memory [`Storage`] for tests and the simulator.
//!
//! It plays the role of the disk: whatever the driver has written here survives a simulated
//! crash, everything else is lost. Clones share one store, so the core and the test driver
//! can hold it at the same time.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::pb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};

use super::storage::{RaftState, Storage, StorageError, limit_size};

#[derive(Debug, Default)]
struct Inner {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (may cover less than the compaction point allows).
    snapshot: Snapshot,
    /// Index and term of the entry just before `entries` (the compaction point).
    dummy_index: u64,
    dummy_term: u64,
    entries: Vec<Entry>,
}

impl Inner {
    fn last_index(&self) -> u64 {
        self.dummy_index + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index < self.dummy_index {
            return Err(StorageError::Compacted);
        }
        if index == self.dummy_index {
            return Ok(self.dummy_term);
        }
        let offset = usize::try_from(index - self.dummy_index - 1).map_err(|_| StorageError::Unavailable)?;
        self.entries.get(offset).map(|e| e.term).ok_or(StorageError::Unavailable)
    }
}

/// Shared in-memory Raft storage. Cloning is cheap and every clone sees the same data.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    inner: Arc<RwLock<Inner>>,
}

impl MemStorage {
    /// An empty log: term 0, no vote, no members (a node that joins an existing cluster).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with the given membership and nothing else.
    pub fn new_with_conf_state(conf_state: ConfState) -> Self {
        let s = Self::new();
        s.set_conf_state(conf_state);
        s
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Persists the hard state.
    pub fn set_hard_state(&self, hs: HardState) {
        self.write().hard_state = hs;
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state
    }

    /// Persists the membership (the driver does this when it applies a conf change).
    pub fn set_conf_state(&self, cs: ConfState) {
        self.write().conf_state = cs;
    }

    /// Appends entries, first dropping any stored suffix they replace (a new leader
    /// overwriting conflicting entries). Entries at or below the compaction point are skipped.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let mut inner = self.write();
        let first_kept = inner.dummy_index + 1;
        let last_new = first.index + entries.len() as u64 - 1;
        if last_new < first_kept {
            return Ok(());
        }
        let skip = usize::try_from(first_kept.saturating_sub(first.index)).unwrap_or(usize::MAX);
        let entries = entries.get(skip..).unwrap_or_default();
        let Some(start) = entries.first().map(|e| e.index) else { return Ok(()) };
        if start > inner.last_index() + 1 {
            return Err(StorageError::LogGap { last: inner.last_index(), got: start });
        }
        let keep = usize::try_from(start - first_kept).unwrap_or(usize::MAX);
        inner.entries.truncate(keep);
        inner.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<(), StorageError> {
        let mut inner = self.write();
        let meta = snapshot.metadata.clone().unwrap_or_default();
        let current = inner.snapshot.metadata.as_ref().map_or(0, |m| m.index);
        if meta.index <= current || meta.index <= inner.dummy_index {
            return Err(StorageError::SnapshotOutOfDate {
                index: meta.index,
                current: current.max(inner.dummy_index),
            });
        }
        inner.dummy_index = meta.index;
        inner.dummy_term = meta.term;
        inner.entries.clear();
        inner.conf_state = meta.conf_state.clone().unwrap_or_default();
        inner.snapshot = snapshot;
        Ok(())
    }

    /// Discards entries up to and including `index`, remembering its term so that the entry
    /// after it can still be matched.
    pub fn compact(&self, index: u64) -> Result<(), StorageError> {
        let mut inner = self.write();
        if index <= inner.dummy_index {
            return Err(StorageError::Compacted);
        }
        let term = inner.term(index)?;
        let drop = usize::try_from(index - inner.dummy_index).map_err(|_| StorageError::Unavailable)?;
        inner.entries.drain(..drop);
        inner.dummy_index = index;
        inner.dummy_term = term;
        Ok(())
    }

    /// Records a snapshot of the state machine as of `index` (which must still be in the log).
    pub fn create_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> Result<Snapshot, StorageError> {
        let mut inner = self.write();
        let current = inner.snapshot.metadata.as_ref().map_or(0, |m| m.index);
        if index <= current {
            return Err(StorageError::SnapshotOutOfDate { index, current });
        }
        let term = inner.term(index)?;
        let snapshot =
            Snapshot { metadata: Some(SnapshotMetadata { index, term, conf_state: Some(conf_state) }), data };
        inner.snapshot = snapshot.clone();
        Ok(snapshot)
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let inner = self.read();
        Ok(RaftState { hard_state: inner.hard_state, conf_state: inner.conf_state.clone() })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let inner = self.read();
        if low <= inner.dummy_index {
            return Err(StorageError::Compacted);
        }
        if high > inner.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let lo = usize::try_from(low - inner.dummy_index - 1).map_err(|_| StorageError::Unavailable)?;
        let hi = usize::try_from(high - inner.dummy_index - 1).map_err(|_| StorageError::Unavailable)?;
        let mut out = inner.entries.get(lo..hi).ok_or(StorageError::Unavailable)?.to_vec();
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        self.read().term(index)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.read().dummy_index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.read().last_index())
    }

    fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        let inner = self.read();
        let index = inner.snapshot.metadata.as_ref().map_or(0, |m| m.index);
        if index < request_index {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(inner.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    fn terms(s: &MemStorage) -> Vec<u64> {
        let (f, l) = (s.first_index().unwrap(), s.last_index().unwrap());
        s.entries(f, l + 1, None).unwrap().iter().map(|e| e.term).collect()
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]).unwrap();
        s.append(&[ent(2, 3)]).unwrap();
        assert_eq!(terms(&s), vec![1, 3]);
        assert!(s.append(&[ent(5, 3)]).is_err(), "gaps are refused");
        assert_eq!(s.term(0).unwrap(), 0);
        assert_eq!(s.term(3), Err(StorageError::Unavailable));
    }

    #[test]
    fn compact_keeps_term_of_compacted_index() {
        let s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 2), ent(3, 3)]).unwrap();
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 2);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 4, None), Err(StorageError::Compacted));
        assert_eq!(s.compact(2), Err(StorageError::Compacted));
        assert_eq!(s.compact(9), Err(StorageError::Unavailable));
        // Appending entries that overlap the compaction point keeps only the new part.
        s.append(&[ent(2, 2), ent(3, 3), ent(4, 3)]).unwrap();
        assert_eq!(terms(&s), vec![3, 3]);
    }

    #[test]
    fn entries_respects_max_bytes_but_returns_one() {
        let s = MemStorage::new();
        let big = Entry { index: 1, term: 1, data: vec![0; 100], ..Default::default() };
        s.append(&[big, ent(2, 1), ent(3, 1)]).unwrap();
        assert_eq!(s.entries(1, 4, Some(1)).unwrap().len(), 1);
        assert_eq!(s.entries(2, 4, Some(1000)).unwrap().len(), 2);
    }

    #[test]
    fn snapshots_create_and_apply() {
        let s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]).unwrap();
        let cs = ConfState { voters: vec![1, 2], learners: vec![] };
        let snap = s.create_snapshot(2, cs.clone(), b"state".to_vec()).unwrap();
        assert_eq!(snap.metadata.as_ref().unwrap().term, 1);
        assert!(s.create_snapshot(1, cs.clone(), vec![]).is_err());
        assert_eq!(s.snapshot(3), Err(StorageError::SnapshotTemporarilyUnavailable));
        assert_eq!(s.snapshot(2).unwrap(), snap);

        let t = MemStorage::new();
        t.append(&[ent(1, 1)]).unwrap();
        t.apply_snapshot(snap.clone()).unwrap();
        assert_eq!(t.first_index().unwrap(), 3);
        assert_eq!(t.last_index().unwrap(), 2);
        assert_eq!(t.initial_state().unwrap().conf_state, cs);
        assert!(t.apply_snapshot(snap).is_err(), "an older or equal snapshot is refused");
    }

    #[test]
    fn clones_share_state() {
        let s = MemStorage::new();
        let c = s.clone();
        c.set_hard_state(HardState { current_term: 3, voted_for: 2, commit: 0 });
        assert_eq!(s.initial_state().unwrap().hard_state.current_term, 3);
        let arc = Arc::new(s);
        assert_eq!(Storage::last_index(&arc).unwrap(), 0);
    }
}
