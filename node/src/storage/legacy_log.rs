//! Moves the Raft log of a data directory written by an earlier raftkv — a redb database,
//! `raft.redb` — into the WAL, once, on the first start of this version.
//!
//! Why a migration and not a refusal: an upgrade is a rolling restart (the operator's, or a
//! Helm upgrade), and a member that refused its data directory would have to be removed and
//! re-added from a snapshot. The old log holds at most what the compaction policy kept, so
//! copying it is quick.
//!
//! Crash safety: the WAL is written in `wal.migrating/` and renamed to `wal/` once it is
//! durable; `raft.redb` is removed only after that rename is durable. So a crash leaves
//! either the old log alone (a leftover `wal.migrating/` is discarded and the copy redone) or
//! the new one, possibly with the old file beside it, which is then removed. Never both as
//! candidates, never neither.

use std::path::Path;

use prost::Message;
use redb::{Database, ReadableDatabase};
use tracing::info;
use wal::{LogEntry, Wal, WalOptions};

use super::error::StoreError;
use super::sync_dir;
use super::tables::{
    HARD_STATE, LOG_META, LOG_SNAPSHOT_INDEX, LOG_SNAPSHOT_TERM, RAFT_LOG, RAFT_STATE, get_msg, get_u64,
};
use crate::proto::raftpb::{Entry, HardState};

/// File name of the log database of earlier versions.
pub const LEGACY_LOG_FILE: &str = "raft.redb";
/// Directory of the WAL inside the data directory.
pub const WAL_DIR: &str = "wal";
const MIGRATING_DIR: &str = "wal.migrating";

/// What the old log held, as the WAL is given it.
struct LegacyLog {
    hard_state: HardState,
    snapshot: (u64, u64),
    entries: Vec<LogEntry>,
}

/// Moves `<dir>/raft.redb` into `<dir>/wal/` if this data directory still has one. Returns
/// whether a log was migrated.
pub(crate) fn migrate(dir: &Path, options: WalOptions) -> Result<bool, StoreError> {
    let legacy = dir.join(LEGACY_LOG_FILE);
    if !legacy.exists() {
        return Ok(false);
    }
    let wal_dir = dir.join(WAL_DIR);
    if wal_dir.exists() {
        // The copy was complete and durable; only the old file's removal was cut short.
        remove_durably(dir, &legacy)?;
        return Ok(false);
    }
    let staging = dir.join(MIGRATING_DIR);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(StoreError::from_io)?;
    }
    let old = read_legacy(&legacy)?;
    let mut wal = Wal::open_dir(&staging, options)?;
    let (snapshot_index, snapshot_term) = old.snapshot;
    if snapshot_index > 0 {
        wal.install_snapshot(snapshot_index, snapshot_term)?;
    }
    let hard_state = wal::HardState {
        term: old.hard_state.current_term,
        vote: old.hard_state.voted_for,
        commit: old.hard_state.commit.max(snapshot_index),
    };
    wal.append(Some(hard_state), &old.entries)?;
    wal.sync()?;
    drop(wal);
    std::fs::rename(&staging, &wal_dir).map_err(StoreError::from_io)?;
    sync_dir(dir)?;
    remove_durably(dir, &legacy)?;
    info!(
        entries = old.entries.len(),
        snapshot_index,
        commit = hard_state.commit,
        "moved the Raft log from {LEGACY_LOG_FILE} into the WAL"
    );
    Ok(true)
}

fn read_legacy(path: &Path) -> Result<LegacyLog, StoreError> {
    let db = Database::open(path)
        .map_err(|e| StoreError::Open { path: path.to_path_buf(), source: Box::new(e.into()) })?;
    let txn = db.begin_read()?;
    let hard_state: HardState = get_msg(&txn.open_table(RAFT_STATE)?, HARD_STATE)?;
    let meta = txn.open_table(LOG_META)?;
    let snapshot = (get_u64(&meta, LOG_SNAPSHOT_INDEX)?, get_u64(&meta, LOG_SNAPSHOT_TERM)?);
    let mut entries = Vec::new();
    for item in txn.open_table(RAFT_LOG)?.range((snapshot.0 + 1)..)? {
        let (_, bytes) = item?;
        let entry = Entry::decode(bytes.value()).map_err(|e| StoreError::decode("raft_log", e))?;
        entries.push(LogEntry { index: entry.index, term: entry.term, data: bytes.value().to_vec() });
    }
    Ok(LegacyLog { hard_state, snapshot, entries })
}

fn remove_durably(dir: &Path, file: &Path) -> Result<(), StoreError> {
    std::fs::remove_file(file).map_err(StoreError::from_io)?;
    sync_dir(dir)
}
