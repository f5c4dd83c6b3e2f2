//! The Raft log as the core sees it: the persisted part (read through [`Storage`]) followed
//! by the unstable tail, plus the commit and apply cursors.

use crate::pb::{Entry, Snapshot};

use super::error::RaftError;
use super::storage::{Storage, StorageError, limit_size};
use super::unstable::{Unstable, snapshot_index_term};

#[derive(Debug)]
pub(crate) struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    pub(crate) unstable: Unstable,
    /// Highest index known committed (commitIndex).
    pub(crate) committed: u64,
    /// Highest committed index handed to the driver for application.
    pub(crate) applying: u64,
    /// Highest index the driver reported applied (lastApplied).
    pub(crate) applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S) -> Result<Self, StorageError> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        let base = first.saturating_sub(1);
        Ok(Self {
            storage,
            unstable: Unstable::new(last + 1),
            committed: base,
            applying: base,
            applied: base,
        })
    }

    pub(crate) fn first_index(&self) -> Result<u64, StorageError> {
        match self.unstable.maybe_first_index() {
            Some(i) => Ok(i),
            None => self.storage.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> Result<u64, StorageError> {
        match self.unstable.maybe_last_index() {
            Some(i) => Ok(i),
            None => self.storage.last_index(),
        }
    }

    /// Term of the entry at `index`: `Compacted` below the snapshot, `Unavailable` past the end.
    pub(crate) fn term(&self, index: u64) -> Result<u64, StorageError> {
        let dummy = self.first_index()?.saturating_sub(1);
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index()? {
            return Err(StorageError::Unavailable);
        }
        match self.unstable.maybe_term(index) {
            Some(t) => Ok(t),
            None => self.storage.term(index),
        }
    }

    /// Term at `index`, or `None` when the entry is compacted or missing; real storage
    /// failures still propagate.
    pub(crate) fn term_opt(&self, index: u64) -> Result<Option<u64>, StorageError> {
        match self.term(index) {
            Ok(t) => Ok(Some(t)),
            Err(StorageError::Compacted | StorageError::Unavailable) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn last_term(&self) -> Result<u64, StorageError> {
        self.term(self.last_index()?)
    }

    pub(crate) fn match_term(&self, index: u64, term: u64) -> Result<bool, StorageError> {
        Ok(self.term_opt(index)? == Some(term))
    }

    /// The election restriction: is a log ending at `(last_index, term)` at least as
    /// up-to-date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: u64, term: u64) -> Result<bool, StorageError> {
        let our_term = self.last_term()?;
        Ok(term > our_term || (term == our_term && last_index >= self.last_index()?))
    }

    /// Index of the first entry in `entries` that is missing or differs in term; 0 if none.
    fn find_conflict(&self, entries: &[Entry]) -> Result<u64, StorageError> {
        for e in entries {
            if !self.match_term(e.index, e.term)? {
                return Ok(e.index);
            }
        }
        Ok(0)
    }

    /// AppendEntries receiver steps 2-5: if the log holds `(prev_index, prev_term)`, drop the
    /// conflicting suffix, append what is new and advance commit to
    /// `min(leader_commit, index of last new entry)`. Returns the index of the last new entry,
    /// or `None` when the log does not hold `prev`.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        leader_commit: u64,
        entries: &[Entry],
    ) -> Result<Option<u64>, RaftError> {
        if !self.match_term(prev_index, prev_term)? {
            return Ok(None);
        }
        for (i, e) in entries.iter().enumerate() {
            if e.index != prev_index + 1 + i as u64 {
                return Err(RaftError::InvalidMessage("entries are not consecutive after prev_log_index"));
            }
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = self.find_conflict(entries)?;
        if conflict != 0 {
            if conflict <= self.committed {
                return Err(RaftError::InvalidMessage("append conflicts with a committed entry"));
            }
            let skip = usize::try_from(conflict - prev_index - 1).unwrap_or(usize::MAX);
            self.append(entries.get(skip..).unwrap_or_default());
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Some(last_new))
    }

    /// Appends entries to the unstable tail (replacing what they overlap); returns the new
    /// last index.
    pub(crate) fn append(&mut self, entries: &[Entry]) -> u64 {
        self.unstable.truncate_and_append(entries);
        self.unstable.maybe_last_index().unwrap_or(self.unstable.offset.saturating_sub(1))
    }

    /// Advances commitIndex; it never decreases.
    pub(crate) fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            self.committed = index;
        }
    }

    /// Commits `index` if it is past commitIndex and holds an entry of `term` (a leader only
    /// commits entries of its own term by counting replicas).
    pub(crate) fn maybe_commit(&mut self, index: u64, term: u64) -> Result<bool, StorageError> {
        if index > self.committed && self.term_opt(index)? == Some(term) {
            self.commit_to(index);
            return Ok(true);
        }
        Ok(false)
    }

    pub(crate) fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            self.applied = index.min(self.committed);
        }
        self.applying = self.applying.max(self.applied);
    }

    /// Entries in `[low, high)`, at most `max_bytes` (at least one entry when non-empty).
    pub(crate) fn slice(
        &self,
        low: u64,
        high: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index()? {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let offset = self.unstable.offset;
        let mut out = Vec::new();
        if low < offset {
            out = self.storage.entries(low, high.min(offset), max_bytes)?;
            let got_all = out.last().is_some_and(|e| e.index + 1 == high.min(offset));
            if !got_all || high <= offset {
                return Ok(out);
            }
        }
        let from = low.max(offset);
        out.extend_from_slice(self.unstable.slice(from, high));
        limit_size(&mut out, max_bytes);
        Ok(out)
    }

    /// Committed entries not yet handed out for application. None while a snapshot is
    /// waiting to be persisted: the state machine must be restored from it first.
    pub(crate) fn next_committed_entries(&self, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        self.slice(self.applying + 1, self.committed + 1, max_bytes)
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        self.unstable.snapshot.is_none() && self.committed > self.applying
    }

    /// The highest index known persisted: everything before the unstable tail.
    pub(crate) fn stable_last_index(&self) -> Result<u64, StorageError> {
        if self.unstable.snapshot.is_some() {
            return Ok(0);
        }
        if self.unstable.entries.is_empty() { self.last_index() } else { Ok(self.unstable.offset - 1) }
    }

    /// Replaces the log with a snapshot (the driver persists it from the next `Ready`).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let (index, _) = snapshot_index_term(&snapshot);
        self.committed = index;
        self.unstable.restore(snapshot);
    }

    /// The latest snapshot: an unstable one, or the driver's.
    pub(crate) fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.clone()),
            None => self.storage.snapshot(request_index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem_storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    fn log_with(stable: &[Entry], unstable: &[Entry]) -> RaftLog<MemStorage> {
        let s = MemStorage::new();
        s.append(stable).unwrap();
        let mut l = RaftLog::new(s).unwrap();
        l.append(unstable);
        l
    }

    #[test]
    fn slice_spans_stable_and_unstable() {
        let l = log_with(&[ent(1, 1), ent(2, 1)], &[ent(3, 2), ent(4, 2)]);
        let got: Vec<u64> = l.slice(2, 5, None).unwrap().iter().map(|e| e.index).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(l.slice(1, 6, None), Err(StorageError::Unavailable));
        assert_eq!(l.slice(2, 5, Some(1)).unwrap().len(), 1);
        assert_eq!(l.stable_last_index().unwrap(), 2);
    }

    #[test]
    fn maybe_append_rejects_out_of_order_entries_and_committed_conflicts() {
        let mut l = log_with(&[], &[ent(1, 1), ent(2, 1)]);
        assert!(l.maybe_append(0, 0, 0, &[ent(2, 1)]).is_err());
        l.commit_to(2);
        assert!(l.maybe_append(1, 1, 2, &[ent(2, 5)]).is_err());
        assert_eq!(l.maybe_append(2, 7, 2, &[]).unwrap(), None);
        assert_eq!(l.maybe_append(2, 1, 9, &[ent(3, 1)]).unwrap(), Some(3));
        assert_eq!(l.committed, 3);
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let l = log_with(&[ent(1, 1), ent(2, 2)], &[]);
        assert!(l.is_up_to_date(1, 3).unwrap());
        assert!(l.is_up_to_date(2, 2).unwrap());
        assert!(!l.is_up_to_date(1, 2).unwrap());
        assert!(!l.is_up_to_date(5, 1).unwrap());
    }
}
