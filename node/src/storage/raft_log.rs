//! The Raft log, hard state and snapshots, behind the core's [`Storage`] trait.
//!
//! Log and hard state live in the log database, which only this type writes. Snapshots are
//! built by and installed into the key space through its own methods ([`KvStore`]): each
//! database has one owner. The key space's durable applied index bounds compaction.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::proto::kvserverpb::SnapshotData;
use crate::proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use crate::raft::storage::{RaftState, Storage, StorageError};

use super::error::StoreError;
use super::kv::{InstalledPoint, KvStore};
use super::tables::{
    HARD_STATE, LOG_META, LOG_SNAPSHOT_INDEX, LOG_SNAPSHOT_TERM, RAFT_LOG, RAFT_STATE, get_msg, get_u64,
    put_msg,
};

/// Where the log starts and ends, kept in memory so `term`, `first_index` and `last_index` do
/// not touch the disk on the hot path. Rebuilt from the database on open, so it is right after
/// a crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LogBounds {
    /// Last index covered by compaction or a snapshot (0 for none), and its term.
    snapshot_index: u64,
    snapshot_term: u64,
    /// Last index in the log (`snapshot_index` when the log is empty), and its term.
    last_index: u64,
    last_term: u64,
}

/// The Raft side of a member's storage: log entries, hard state and snapshot point in the log
/// database, and the state machine for snapshots. The driver writes through `persist`,
/// `install_snapshot` and `compact`; the core reads through [`Storage`].
#[derive(Debug)]
pub struct RedbRaftStorage {
    /// The log database.
    db: Arc<Database>,
    kv: KvStore,
    bounds: RwLock<LogBounds>,
    /// Serializes the writers from their read of `bounds` to their update of it, and holds the
    /// hard state they write.
    writer: Mutex<HardStates>,
    /// The last snapshot built, served again while it is recent enough.
    snapshot_cache: Mutex<Option<Snapshot>>,
}

/// The hard state as `persist` last received it and as it was last written. Term and vote are
/// always written (durably) as they change; a newer commit index alone waits in `latest` for
/// the next write, because the commit index is volatile in Raft (a restarted member learns it
/// again from the leader, and never below its applied index).
#[derive(Debug, Default)]
struct HardStates {
    latest: HardState,
    written: HardState,
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    Entry::decode(bytes).map_err(|e| StoreError::decode("raft_log", e))
}

/// The log bounds as a transaction sees them.
fn read_bounds(
    meta: &impl ReadableTable<&'static str, u64>,
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<LogBounds, StoreError> {
    let snapshot_index = get_u64(meta, LOG_SNAPSHOT_INDEX)?;
    let snapshot_term = get_u64(meta, LOG_SNAPSHOT_TERM)?;
    let (last_index, last_term) = match log.last()? {
        Some((k, v)) => (k.value(), decode_entry(v.value())?.term),
        None => (snapshot_index, snapshot_term),
    };
    Ok(LogBounds { snapshot_index, snapshot_term, last_index, last_term })
}

impl RedbRaftStorage {
    /// Opens the log over `db` next to the state machine `kv`, first finishing a snapshot
    /// installation a crash interrupted, then checking that the two databases fit together.
    pub(crate) fn open(db: Arc<Database>, kv: KvStore) -> Result<Self, StoreError> {
        let InstalledPoint { index: installed_index, term: installed_term, applied } =
            kv.installed_snapshot_point()?;
        let mut bounds = {
            let txn = db.begin_read()?;
            read_bounds(&txn.open_table(LOG_META)?, &txn.open_table(RAFT_LOG)?)?
        };
        if installed_index > bounds.snapshot_index {
            bounds =
                replace_log_with_snapshot_point(&db, installed_index, installed_term, &HardState::default())?
                    .0;
        }
        // Compaction never passes the durable applied index, and entries are applied only
        // once they are in the log: anything else means a database was lost or swapped.
        if applied < bounds.snapshot_index || applied > bounds.last_index {
            return Err(StoreError::Corrupt(format!(
                "the state machine has applied through index {applied} but the Raft log covers {}..={}; \
                 the two database files of this member do not belong together",
                bounds.snapshot_index, bounds.last_index
            )));
        }
        let written: HardState = {
            let txn = db.begin_read()?;
            get_msg(&txn.open_table(RAFT_STATE)?, HARD_STATE)?
        };
        // The key space may be durable past the stored commit index (which waits for the next
        // durable write); applied entries are committed, so the commit index catches up in
        // memory, which lets the core start from the applied index.
        let latest = HardState { commit: written.commit.max(applied), ..written };
        Ok(RedbRaftStorage {
            db,
            kv,
            bounds: RwLock::new(bounds),
            writer: Mutex::new(HardStates { latest, written }),
            snapshot_cache: Mutex::new(None),
        })
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, HardStates> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bounds(&self) -> LogBounds {
        *self.bounds.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_bounds(&self, b: LogBounds) {
        *self.bounds.write().unwrap_or_else(PoisonError::into_inner) = b;
    }

    /// Durably stores what a `Ready` asks for: new entries and a changed term or vote, in one
    /// fsynced transaction (so all entries of a Ready cost one fsync). A Ready that only moves
    /// the commit index costs no write at all, as in etcd's WAL (MustSync): the commit index is
    /// volatile state in Raft, so it is written with the next durable write. Entries replace
    /// any stored entries from the first new index on (a leader overwriting a conflicting
    /// suffix); entries already covered by the snapshot point are skipped.
    pub fn persist(&self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StoreError> {
        let mut hs = self.lock_writer();
        let mut b = self.bounds();
        let entries = {
            let skip = entries.iter().take_while(|e| e.index <= b.snapshot_index).count();
            entries.get(skip..).unwrap_or_default()
        };
        if let Some(first) = entries.first() {
            if first.index > b.last_index + 1 {
                return Err(StoreError::LogGap { last: b.last_index, got: first.index });
            }
            for pair in entries.windows(2) {
                if let [a, c] = pair
                    && c.index != a.index + 1
                {
                    return Err(StoreError::LogGap { last: a.index, got: c.index });
                }
            }
        }
        let next = hard_state.copied().unwrap_or(hs.latest);
        // Term and vote are only ever written durably, so the written ones are the durable ones.
        let term_or_vote_changed =
            next.current_term != hs.written.current_term || next.voted_for != hs.written.voted_for;
        if entries.is_empty() && !term_or_vote_changed {
            hs.latest = next;
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut log = txn.open_table(RAFT_LOG)?;
            if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                if first.index <= b.last_index {
                    log.retain_in(first.index.., |_, _| false)?;
                }
                let mut buf = Vec::new();
                for e in entries {
                    buf.clear();
                    e.encode(&mut buf).map_err(|e| StoreError::Engine(e.to_string()))?;
                    log.insert(e.index, buf.as_slice())?;
                }
                b.last_index = last.index;
                b.last_term = last.term;
            }
            if next != hs.written {
                put_msg(&mut txn.open_table(RAFT_STATE)?, HARD_STATE, &next)?;
            }
        }
        txn.commit()?;
        self.set_bounds(b);
        hs.written = next;
        hs.latest = next;
        Ok(())
    }

    /// Installs a snapshot received from the leader: the state machine is replaced by the
    /// snapshot's, the log is emptied, the snapshot point recorded and the hard state's commit
    /// index raised to the snapshot index. Durable (fsynced) when it returns.
    ///
    /// Two databases, two transactions: the state machine first, recording the snapshot point
    /// with it, then the log. A crash between them leaves a state machine ahead of its log,
    /// and [`RedbRaftStorage::open`] finishes the second step from the recorded point, so the
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
        let mut hs = self.lock_writer();
        self.kv.install_snapshot(&meta, &data)?;
        // The commit index that waited for a write goes with this one.
        let (bounds, written) = replace_log_with_snapshot_point(&self.db, meta.index, meta.term, &hs.latest)?;
        self.set_bounds(bounds);
        hs.latest = written;
        hs.written = written;
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
    ///
    /// The compaction itself is not fsynced: losing it in a crash only leaves more log behind,
    /// and the next durable commit persists it anyway.
    pub fn compact(&self, index: u64) -> Result<(), StoreError> {
        let _w = self.lock_writer();
        let mut b = self.bounds();
        if index <= b.snapshot_index {
            return Ok(());
        }
        if index > b.last_index {
            return Err(StoreError::CompactBeyondLast { index, last: b.last_index });
        }
        let mut durable = self.kv.durable_applied_index();
        if index > durable {
            durable = self.kv.sync()?;
        }
        if index > durable {
            return Err(StoreError::CompactBeyondApplied { index, applied: durable });
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut meta = txn.open_table(LOG_META)?;
            let mut log = txn.open_table(RAFT_LOG)?;
            let term = match log.get(index)? {
                Some(v) => decode_entry(v.value())?.term,
                None => return Err(StoreError::Corrupt(format!("log entry {index} missing"))),
            };
            log.retain_in(..=index, |_, _| false)?;
            meta.insert(LOG_SNAPSHOT_INDEX, index)?;
            meta.insert(LOG_SNAPSHOT_TERM, term)?;
            b.snapshot_index = index;
            b.snapshot_term = term;
        }
        txn.commit()?;
        self.set_bounds(b);
        Ok(())
    }

    /// Removes every entry after the commit index, durably; returns how many (for
    /// `--force-new-cluster`: what was not known committed may never have been, and a
    /// one-member cluster must not commit it on its own authority).
    pub fn discard_uncommitted(&self) -> Result<u64, StoreError> {
        let hs = self.lock_writer();
        let mut b = self.bounds();
        let commit = hs.latest.commit.max(b.snapshot_index);
        if b.last_index <= commit {
            return Ok(0);
        }
        let discarded = b.last_index - commit;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let last_term = {
            let mut log = txn.open_table(RAFT_LOG)?;
            log.retain_in(commit + 1.., |_, _| false)?;
            match log.get(commit)? {
                Some(v) => decode_entry(v.value())?.term,
                None => b.snapshot_term,
            }
        };
        txn.commit()?;
        b.last_index = commit;
        b.last_term = last_term;
        self.set_bounds(b);
        Ok(discarded)
    }

    /// Makes the log database durable with the latest hard state: the commit index waiting
    /// for a write, and compactions, which are written without an fsync. Called on a clean
    /// stop, so a restart starts from the commit index it stopped at.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut hs = self.lock_writer();
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        if hs.latest != hs.written {
            put_msg(&mut txn.open_table(RAFT_STATE)?, HARD_STATE, &hs.latest)?;
        }
        txn.commit()?;
        hs.written = hs.latest;
        Ok(())
    }

    /// The latest hard state (its commit index possibly not written yet; after a restart, the
    /// stored one).
    pub fn hard_state(&self) -> Result<HardState, StoreError> {
        Ok(self.lock_writer().latest)
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> Result<ConfState, StoreError> {
        self.kv.conf_state()
    }

    /// Records the initial membership of a new cluster (before any entry is applied), durably.
    pub fn bootstrap_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        self.kv.bootstrap_conf_state(conf_state)
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

/// Empties the log and sets its snapshot point to (`index`, `term`), raising the commit index
/// to `index`, durably: the log half of a snapshot installation. Idempotent, so opening a store
/// can redo it after a crash. `latest` is the hard state in memory, which may hold a commit
/// index newer than the stored one; returns the bounds and the hard state now stored.
fn replace_log_with_snapshot_point(
    db: &Database,
    index: u64,
    term: u64,
    latest: &HardState,
) -> Result<(LogBounds, HardState), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.delete_table(RAFT_LOG)?;
    txn.open_table(RAFT_LOG)?;
    let hs = {
        let mut m = txn.open_table(LOG_META)?;
        m.insert(LOG_SNAPSHOT_INDEX, index)?;
        m.insert(LOG_SNAPSHOT_TERM, term)?;
        let mut rs = txn.open_table(RAFT_STATE)?;
        let stored: HardState = get_msg(&rs, HARD_STATE)?;
        let hs = HardState { commit: stored.commit.max(latest.commit).max(index), ..stored };
        put_msg(&mut rs, HARD_STATE, &hs)?;
        hs
    };
    txn.commit()?;
    Ok((LogBounds { snapshot_index: index, snapshot_term: term, last_index: index, last_term: term }, hs))
}

impl Storage for RedbRaftStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        Ok(RaftState { hard_state: self.hard_state()?, conf_state: self.kv.conf_state()? })
    }

    fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        let b = self.bounds();
        if low <= b.snapshot_index {
            return Err(StorageError::Compacted);
        }
        if high > b.last_index + 1 {
            return Err(StorageError::Unavailable);
        }
        if low >= high {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let log = txn.open_table(RAFT_LOG).map_err(StoreError::from)?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in log.range(low..high).map_err(StoreError::from)? {
            let (_, v) = item.map_err(StoreError::from)?;
            let bytes = v.value();
            size += bytes.len() as u64;
            if !out.is_empty() && max_bytes.is_some_and(|max| size > max) {
                break;
            }
            out.push(decode_entry(bytes)?);
        }
        // A compaction between the bounds check and the read would show as missing entries.
        if out.first().is_none_or(|e| e.index != low) {
            return Err(StorageError::Compacted);
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let b = self.bounds();
        if index == b.snapshot_index {
            return Ok(b.snapshot_term);
        }
        if index < b.snapshot_index {
            return Err(StorageError::Compacted);
        }
        if index > b.last_index {
            return Err(StorageError::Unavailable);
        }
        if index == b.last_index {
            return Ok(b.last_term);
        }
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let log = txn.open_table(RAFT_LOG).map_err(StoreError::from)?;
        let found = log.get(index).map_err(StoreError::from)?;
        match found {
            Some(v) => Ok(decode_entry(v.value())?.term),
            None => Err(StorageError::Compacted),
        }
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.bounds().snapshot_index + 1)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.bounds().last_index)
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
