//! The Raft log, hard state and snapshot point, behind the core's [`Storage`] trait.
//!
//! They live in the member's write-ahead log (`<data-dir>/wal/`, the `wal` crate): an
//! append-only, segmented file log, where persisting a Ready is one sequential write and one
//! fdatasync, and reads are served from memory. Snapshots are built by and installed into the
//! key space through its own methods ([`KvStore`]): each store has one owner. The key space's
//! durable applied index bounds compaction.

use std::sync::{Mutex, MutexGuard, PoisonError};

use prost::Message;
use wal::{DynDisk, LogEntry, Wal};

use crate::proto::kvserverpb::SnapshotData;
use crate::proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use crate::raft::storage::{RaftState, Storage, StorageError};

use super::error::StoreError;
use super::kv::{InstalledPoint, KvStore};

/// The Raft side of a member's storage: log entries, hard state and snapshot point in the
/// WAL, and the state machine for snapshots. The driver writes through `persist`,
/// `install_snapshot` and `compact`; the core reads through [`Storage`].
#[derive(Debug)]
pub struct WalRaftStorage {
    log: Mutex<Log>,
    kv: KvStore,
    /// The last snapshot built, served again while it is recent enough.
    snapshot_cache: Mutex<Option<Snapshot>>,
}

/// The WAL and the hard state as `persist` last received it. Term and vote are always written
/// (durably) as they change; a newer commit index alone waits in `latest` for the next write,
/// because the commit index is volatile in Raft (a restarted member learns it again from the
/// leader, and never below its applied index). What was written is the WAL's hard state.
#[derive(Debug)]
struct Log {
    wal: Wal<DynDisk>,
    latest: HardState,
}

fn to_wal(hs: &HardState) -> wal::HardState {
    wal::HardState { term: hs.current_term, vote: hs.voted_for, commit: hs.commit }
}

fn from_wal(hs: wal::HardState) -> HardState {
    HardState { current_term: hs.term, voted_for: hs.vote, commit: hs.commit }
}

fn decode_entry(entry: &LogEntry) -> Result<Entry, StoreError> {
    Entry::decode(entry.data.as_slice()).map_err(|e| StoreError::decode("wal entry", e))
}

impl WalRaftStorage {
    /// Opens the log over `wal` next to the state machine `kv`, first finishing a snapshot
    /// installation a crash interrupted, then checking that the two fit together.
    pub(crate) fn open(mut wal: Wal<DynDisk>, kv: KvStore) -> Result<Self, StoreError> {
        let InstalledPoint { index: installed_index, term: installed_term, applied } =
            kv.installed_snapshot_point()?;
        if installed_index > wal.snapshot_point().0 {
            wal.install_snapshot(installed_index, installed_term)?;
        }
        // Compaction never passes the durable applied index, and entries are applied only
        // once they are in the log: anything else means the WAL or the database was lost or
        // swapped.
        let (snapshot_index, last_index) = (wal.snapshot_point().0, wal.last_index());
        if applied < snapshot_index || applied > last_index {
            return Err(StoreError::Corrupt(format!(
                "the state machine has applied through index {applied} but the Raft log covers \
                 {snapshot_index}..={last_index}; the WAL and the database of this member do not belong together"
            )));
        }
        // The key space may be durable past the stored commit index (which waits for the next
        // durable write); applied entries are committed, so the commit index catches up in
        // memory, which lets the core start from the applied index.
        let written = from_wal(wal.hard_state());
        let latest = HardState { commit: written.commit.max(applied), ..written };
        Ok(WalRaftStorage { log: Mutex::new(Log { wal, latest }), kv, snapshot_cache: Mutex::new(None) })
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Durably stores what a `Ready` asks for: new entries and a changed term or vote, in one
    /// WAL write (so all entries of a Ready cost one fdatasync). A Ready that only moves the
    /// commit index costs no write at all, as in etcd's WAL (MustSync): the commit index is
    /// volatile state in Raft, so it is written with the next durable write. Entries replace
    /// any stored entries from the first new index on (a leader overwriting a conflicting
    /// suffix); entries already covered by the snapshot point are skipped.
    pub fn persist(&self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StoreError> {
        let mut log = self.lock();
        let next = hard_state.copied().unwrap_or(log.latest);
        let written = from_wal(log.wal.hard_state());
        // Term and vote are only ever written durably, so the written ones are the durable ones.
        let term_or_vote_changed =
            next.current_term != written.current_term || next.voted_for != written.voted_for;
        let snapshot_index = log.wal.snapshot_point().0;
        let entries = {
            let skip = entries.iter().take_while(|e| e.index <= snapshot_index).count();
            entries.get(skip..).unwrap_or_default()
        };
        if entries.is_empty() && !term_or_vote_changed {
            log.latest = next;
            return Ok(());
        }
        let records: Vec<LogEntry> = entries
            .iter()
            .map(|e| LogEntry { index: e.index, term: e.term, data: e.encode_to_vec() })
            .collect();
        log.wal.append(Some(to_wal(&next)), &records)?;
        log.latest = next;
        Ok(())
    }

    /// Installs a snapshot received from the leader: the state machine is replaced by the
    /// snapshot's, the log is emptied, the snapshot point recorded and the commit index raised
    /// to the snapshot index. Durable when it returns.
    ///
    /// Two stores, two writes: the state machine first, recording the snapshot point with it,
    /// then the log. A crash between them leaves a state machine ahead of its log, and
    /// [`WalRaftStorage::open`] finishes the second step from the recorded point, so the
    /// installation is all-or-nothing as seen after a restart.
    pub fn install_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let meta = snap.metadata.clone().unwrap_or_default();
        let data =
            SnapshotData::decode(snap.data.as_slice()).map_err(|e| StoreError::decode("snapshot", e))?;
        if data.applied_index != meta.index {
            return Err(StoreError::InvalidSnapshot(format!(
                "metadata index {} but data applied index {}",
                meta.index, data.applied_index
            )));
        }
        let mut log = self.lock();
        self.kv.install_snapshot(&meta, &data)?;
        log.wal.install_snapshot(meta.index, meta.term)?;
        log.latest.commit = log.latest.commit.max(meta.index);
        *self.snapshot_cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Drops the log entries up to `index` (which must be applied), remembering the term of
    /// `index` as the new snapshot point. Compacting to an index at or below the current point
    /// does nothing.
    ///
    /// A crash takes the state machine back to its last durable commit and replays the log
    /// from there, so the entries above that point must stay: when `index` is beyond it, the
    /// state machine is made durable first (one fsync of it per compaction).
    pub fn compact(&self, index: u64) -> Result<(), StoreError> {
        let mut log = self.lock();
        let (snapshot_index, last_index) = (log.wal.snapshot_point().0, log.wal.last_index());
        if index <= snapshot_index {
            return Ok(());
        }
        if index > last_index {
            return Err(StoreError::CompactBeyondLast { index, last: last_index });
        }
        let mut durable = self.kv.durable_applied_index();
        if index > durable {
            durable = self.kv.sync()?;
        }
        if index > durable {
            return Err(StoreError::CompactBeyondApplied { index, applied: durable });
        }
        log.wal.compact(index)?;
        Ok(())
    }

    /// Removes every entry after the commit index, durably; returns how many (for
    /// `--force-new-cluster`: what was not known committed may never have been, and a
    /// one-member cluster must not commit it on its own authority).
    pub fn discard_uncommitted(&self) -> Result<u64, StoreError> {
        let mut log = self.lock();
        let commit = log.latest.commit.max(log.wal.snapshot_point().0);
        Ok(log.wal.truncate_after(commit)?)
    }

    /// Makes the log durable with the latest hard state (the commit index waiting for a
    /// write). Called on a clean stop, so a restart starts from the commit index it stopped at.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut log = self.lock();
        let latest = to_wal(&log.latest);
        log.wal.append(Some(latest), &[])?;
        log.wal.sync()?;
        Ok(())
    }

    /// The latest hard state (its commit index possibly not written yet; after a restart, the
    /// stored one).
    pub fn hard_state(&self) -> Result<HardState, StoreError> {
        Ok(self.lock().latest)
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> Result<ConfState, StoreError> {
        self.kv.conf_state()
    }

    /// Records the initial membership of a new cluster (before any entry is applied), durably.
    pub fn bootstrap_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        self.kv.bootstrap_conf_state(conf_state)
    }

    /// How many segment files the WAL has (for tests and the operator's eyes).
    pub fn wal_segments(&self) -> usize {
        self.lock().wal.segment_count()
    }

    fn build_snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        let (data, conf_state) = self.kv.snapshot_data()?;
        let index = data.applied_index;
        if index < request_index {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        // The applied index is never below the log's snapshot point (compaction stops at the
        // durable applied index), so its term is in the log or is the snapshot point's.
        let term = match self.term(index) {
            Ok(term) => term,
            Err(StorageError::Compacted) => return Err(StorageError::SnapshotTemporarilyUnavailable),
            Err(e) => return Err(e),
        };
        Ok(Snapshot {
            metadata: Some(SnapshotMetadata { index, term, conf_state: Some(conf_state) }),
            data: data.encode_to_vec(),
        })
    }
}

impl Storage for WalRaftStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState { hard_state: self.hard_state()?, conf_state: self.kv.conf_state()? })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let log = self.lock();
        if low <= log.wal.snapshot_point().0 {
            return Err(StorageError::Compacted);
        }
        if high > log.wal.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let stored = log.wal.entries(low, high, max_bytes).map_err(StoreError::from)?;
        drop(log);
        Ok(stored.iter().map(decode_entry).collect::<Result<_, _>>()?)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let log = self.lock();
        let (snapshot_index, snapshot_term) = log.wal.snapshot_point();
        if index == snapshot_index {
            return Ok(snapshot_term);
        }
        if index < snapshot_index {
            return Err(StorageError::Compacted);
        }
        log.wal.term(index).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.lock().wal.first_index())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.lock().wal.last_index())
    }

    fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        let mut cache = self.snapshot_cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = cache.as_ref()
            && s.metadata.as_ref().is_some_and(|m| m.index >= request_index)
        {
            return Ok(s.clone());
        }
        let snap = self.build_snapshot(request_index)?;
        *cache = Some(snap.clone());
        Ok(snap)
    }
}
