//! How the core reads the stable part of its log.
//!
//! The core never writes: the driver persists what a `Ready` hands it (entries, hard state,
//! snapshot) into its storage, then calls `advance`. The core reads back persisted entries
//! through this trait, so the same core runs over redb in the server and over memory in the
//! simulator.

use std::sync::Arc;

use crate::pb::{ConfState, Entry, HardState, Snapshot};

/// The failure of a storage implementation, kept whole (with its chain of sources) but
/// opaque to the core, which only needs to know that it must stop.
pub type BackendError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The requested index is at or below the compaction point; use the snapshot instead.
    #[error("log index compacted")]
    Compacted,
    /// The requested index is beyond the last stored entry.
    #[error("log index unavailable")]
    Unavailable,
    /// A snapshot is being prepared; the caller retries later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The backing store failed (I/O error, corruption). The node cannot continue safely.
    #[error("storage failure")]
    Backend(#[source] BackendError),
    /// Entries handed to the storage would leave a hole in the log.
    #[error("log gap: entry {got} cannot follow last index {last}")]
    LogGap { last: u64, got: u64 },
    /// A snapshot at or below the one the storage already holds.
    #[error("snapshot at {index} is out of date (storage has {current})")]
    SnapshotOutOfDate { index: u64, current: u64 },
    /// The persisted state contradicts itself (a commit index beyond the log).
    #[error("persisted commit index {commit} is beyond the last log index {last}")]
    CommitBeyondLog { commit: u64, last: u64 },
}

impl StorageError {
    /// Wraps a storage implementation's own error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Backend(Arc::new(e))
    }
}

/// Equal when of the same kind with the same details; two backend failures compare by what
/// they say (the core only ever needs to tell kinds apart, tests compare whole errors).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        use StorageError::*;
        match (self, other) {
            (Compacted, Compacted) | (Unavailable, Unavailable) => true,
            (SnapshotTemporarilyUnavailable, SnapshotTemporarilyUnavailable) => true,
            (Backend(a), Backend(b)) => a.to_string() == b.to_string(),
            (LogGap { last: a, got: b }, LogGap { last: c, got: d }) => (a, b) == (c, d),
            (SnapshotOutOfDate { index: a, current: b }, SnapshotOutOfDate { index: c, current: d }) => {
                (a, b) == (c, d)
            }
            (CommitBeyondLog { commit: a, last: b }, CommitBeyondLog { commit: c, last: d }) => {
                (a, b) == (c, d)
            }
            _ => false,
        }
    }
}

impl Eq for StorageError {}

/// What a node restarts from: its persisted hard state and membership.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RaftState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
}

/// Read access to persisted Raft state. Indexes are 1-based; entry `first_index() - 1` is the
/// one covered by the latest snapshot (its term is still answerable by `term`).
pub trait Storage {
    /// Hard state and membership to start from.
    fn initial_state(&self) -> Result<RaftState, StorageError>;
    /// Entries in `[low, high)`, stopping early (but returning at least one entry) once their
    /// encoded size exceeds `max_bytes`.
    fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index`; valid for `first_index() - 1 ..= last_index()`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Index of the first entry still in the log (snapshot index + 1).
    fn first_index(&self) -> Result<u64, StorageError>;
    /// Index of the last entry in the log (the snapshot index when the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
    /// The latest snapshot; its index must be at least `request_index` or the call fails with
    /// `SnapshotTemporarilyUnavailable`.
    fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError>;
}

/// Forwards every `Storage` method through a pointer type.
macro_rules! forward_storage {
    ($($ptr:ty),+) => {$(
        impl<T: Storage + ?Sized> Storage for $ptr {
            fn initial_state(&self) -> Result<RaftState, StorageError> {
                (**self).initial_state()
            }
            fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<Entry>, StorageError> {
                (**self).entries(low, high, max_bytes)
            }
            fn term(&self, index: u64) -> Result<u64, StorageError> {
                (**self).term(index)
            }
            fn first_index(&self) -> Result<u64, StorageError> {
                (**self).first_index()
            }
            fn last_index(&self) -> Result<u64, StorageError> {
                (**self).last_index()
            }
            fn snapshot(&self, request_index: u64) -> Result<Snapshot, StorageError> {
                (**self).snapshot(request_index)
            }
        }
    )+};
}

// The driver keeps a handle on the storage it writes to while the core reads from it
// (`Arc<RedbStorage>` in the server, `&MemStorage` in tests).
forward_storage!(&T, std::sync::Arc<T>);

/// Truncates `entries` so that their total encoded size stays within `max_bytes`, keeping at
/// least one entry: the rule [`Storage::entries`] implementations share, so a single huge
/// entry still makes progress.
pub fn limit_size(entries: &mut Vec<Entry>, max_bytes: Option<u64>) {
    let Some(max) = max_bytes else { return };
    let mut total: u64 = 0;
    let keep = entries
        .iter()
        .position(|e| {
            total = total.saturating_add(prost::Message::encoded_len(e) as u64);
            total > max
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
}
