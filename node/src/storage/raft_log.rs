//! The Raft log, hard state and snapshots in redb, behind the core's [`Storage`] trait.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::proto::kvserverpb::SnapshotData;
use crate::proto::raftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use crate::raft::storage::{RaftState, Storage, StorageError};

use super::error::StoreError;
use super::snapshot;
use super::tables::{
    CONF_STATE, HARD_STATE, META, META_APPLIED_INDEX, META_SNAPSHOT_INDEX, META_SNAPSHOT_TERM, RAFT_LOG,
    RAFT_STATE, get_msg, get_u64, put_msg,
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

/// The Raft side of a member's database: log entries, hard state, membership and snapshot
/// point. The driver writes through `persist`, `install_snapshot` and `compact`; the core reads
/// through [`Storage`].
#[derive(Debug)]
pub struct RedbRaftStorage {
    db: Arc<Database>,
    bounds: RwLock<LogBounds>,
    /// Serializes the writers from their read of `bounds` to their update of it.
    writer: Mutex<()>,
    /// The last snapshot built, served again while it is recent enough.
    snapshot_cache: Mutex<Option<Snapshot>>,
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    Entry::decode(bytes).map_err(|e| StoreError::decode("raft_log", e))
}

/// The log bounds as a transaction sees them.
fn read_bounds(
    meta: &impl ReadableTable<&'static str, u64>,
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<LogBounds, StoreError> {
    let snapshot_index = get_u64(meta, META_SNAPSHOT_INDEX)?;
    let snapshot_term = get_u64(meta, META_SNAPSHOT_TERM)?;
    let (last_index, last_term) = match log.last()? {
        Some((k, v)) => (k.value(), decode_entry(v.value())?.term),
        None => (snapshot_index, snapshot_term),
    };
    Ok(LogBounds { snapshot_index, snapshot_term, last_index, last_term })
}

impl RedbRaftStorage {
    pub(crate) fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let bounds = {
            let txn = db.begin_read()?;
            read_bounds(&txn.open_table(META)?, &txn.open_table(RAFT_LOG)?)?
        };
        Ok(RedbRaftStorage {
            db,
            bounds: RwLock::new(bounds),
            writer: Mutex::new(()),
            snapshot_cache: Mutex::new(None),
        })
    }

    fn bounds(&self) -> LogBounds {
        *self.bounds.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_bounds(&self, b: LogBounds) {
        *self.bounds.write().unwrap_or_else(PoisonError::into_inner) = b;
    }

    /// Durably stores what a `Ready` asks for: the hard state (if changed) and new entries, in
    /// one fsynced transaction (so all entries of a Ready cost one fsync; a Ready that only
    /// moves the commit index costs none). Entries replace any
    /// stored entries from the first new index on (a leader overwriting a conflicting suffix);
    /// entries already covered by the snapshot point are skipped.
    pub fn persist(&self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), StoreError> {
        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut txn = self.db.begin_write()?;
        // Only entries, the term and the vote must be durable before anyone hears of them. A
        // change of the commit index alone (every follower's second Ready per write) is written
        // without an fsync, as etcd's WAL does: the commit index is volatile state in Raft, so
        // losing it in a crash is harmless, and the next durable commit carries it anyway.
        // Term and vote are only ever written durably, so the stored ones are the durable ones.
        let stored = get_msg::<HardState>(&txn.open_table(RAFT_STATE)?, HARD_STATE)?;
        let must_sync = !entries.is_empty()
            || hard_state
                .is_some_and(|hs| hs.current_term != stored.current_term || hs.voted_for != stored.voted_for);
        txn.set_durability(if must_sync { Durability::Immediate } else { Durability::None })?;
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
            if let Some(hs) = hard_state {
                put_msg(&mut txn.open_table(RAFT_STATE)?, HARD_STATE, hs)?;
            }
        }
        txn.commit()?;
        self.set_bounds(b);
        Ok(())
    }

    /// Installs a snapshot received from the leader, atomically: the state machine is
    /// replaced by the snapshot's, the log is emptied, the snapshot point and membership are
    /// recorded and the hard state's commit index raised to the snapshot index. Durable
    /// (fsynced) when it returns.
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
        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let applied = get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?;
            if meta.index <= applied {
                return Err(StoreError::SnapshotOutOfDate { snapshot: meta.index, applied });
            }
            snapshot::restore(&txn, &data)?;
            txn.delete_table(RAFT_LOG)?;
            txn.open_table(RAFT_LOG)?;
            let mut m = txn.open_table(META)?;
            m.insert(META_SNAPSHOT_INDEX, meta.index)?;
            m.insert(META_SNAPSHOT_TERM, meta.term)?;
            let mut rs = txn.open_table(RAFT_STATE)?;
            put_msg(&mut rs, CONF_STATE, &meta.conf_state.clone().unwrap_or_default())?;
            let mut hs: HardState = get_msg(&rs, HARD_STATE)?;
            hs.commit = hs.commit.max(meta.index);
            put_msg(&mut rs, HARD_STATE, &hs)?;
        }
        txn.commit()?;
        self.set_bounds(LogBounds {
            snapshot_index: meta.index,
            snapshot_term: meta.term,
            last_index: meta.index,
            last_term: meta.term,
        });
        *self.snapshot_cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Drops the log entries up to `index` (which must be applied), remembering the term of
    /// `index` as the new snapshot point. Compacting to an index at or below the current point
    /// does nothing.
    ///
    /// Not fsynced: losing a compaction in a crash only leaves more log behind, and the next
    /// durable commit persists it anyway.
    pub fn compact(&self, index: u64) -> Result<(), StoreError> {
        let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut b = self.bounds();
        if index <= b.snapshot_index {
            return Ok(());
        }
        if index > b.last_index {
            return Err(StoreError::CompactBeyondLast { index, last: b.last_index });
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
            let mut meta = txn.open_table(META)?;
            let applied = get_u64(&meta, META_APPLIED_INDEX)?;
            if index > applied {
                return Err(StoreError::CompactBeyondApplied { index, applied });
            }
            let mut log = txn.open_table(RAFT_LOG)?;
            let term = match log.get(index)? {
                Some(v) => decode_entry(v.value())?.term,
                None => return Err(StoreError::Corrupt(format!("log entry {index} missing"))),
            };
            log.retain_in(..=index, |_, _| false)?;
            meta.insert(META_SNAPSHOT_INDEX, index)?;
            meta.insert(META_SNAPSHOT_TERM, term)?;
            b.snapshot_index = index;
            b.snapshot_term = term;
        }
        txn.commit()?;
        self.set_bounds(b);
        Ok(())
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> Result<HardState, StoreError> {
        let txn = self.db.begin_read()?;
        get_msg(&txn.open_table(RAFT_STATE)?, HARD_STATE)
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> Result<ConfState, StoreError> {
        let txn = self.db.begin_read()?;
        get_msg(&txn.open_table(RAFT_STATE)?, CONF_STATE)
    }

    /// Records the initial membership of a new cluster (before any entry is applied), durably.
    pub fn bootstrap_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        put_msg(&mut txn.open_table(RAFT_STATE)?, CONF_STATE, conf_state)?;
        txn.commit()?;
        Ok(())
    }

    fn build_snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let data = snapshot::build(&txn)?;
        let index = data.applied_index;
        if index < request_index {
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        let meta = txn.open_table(META).map_err(StoreError::from)?;
        let term = if index == get_u64(&meta, META_SNAPSHOT_INDEX)? {
            get_u64(&meta, META_SNAPSHOT_TERM)?
        } else {
            let log = txn.open_table(RAFT_LOG).map_err(StoreError::from)?;
            let found = log.get(index).map_err(StoreError::from)?;
            match found {
                Some(v) => decode_entry(v.value())?.term,
                None => return Err(StoreError::Corrupt(format!("applied entry {index} not in log")).into()),
            }
        };
        let conf_state: ConfState =
            get_msg(&txn.open_table(RAFT_STATE).map_err(StoreError::from)?, CONF_STATE)?;
        Ok(Snapshot {
            metadata: Some(SnapshotMetadata { index, term, conf_state: Some(conf_state) }),
            data: data.encode_to_vec(),
        })
    }
}

impl Storage for RedbRaftStorage {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let rs = txn.open_table(RAFT_STATE).map_err(StoreError::from)?;
        Ok(RaftState { hard_state: get_msg(&rs, HARD_STATE)?, conf_state: get_msg(&rs, CONF_STATE)? })
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
