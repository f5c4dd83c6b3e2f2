//! The two kinds of failure of the storage layer, kept apart on purpose:
//!
//! - [`StoreError`]: the disk or the database failed, or the caller broke an invariant (applying
//!   out of order). The node cannot go on safely with this store; the server stops or restarts.
//! - [`KvError`]: a client request is refused with etcd's reason. Its `Display` text is etcd's
//!   message word for word, because etcd clients match on those strings; the server maps each
//!   variant to its gRPC code.

use std::io;
use std::path::PathBuf;

/// A failure of the store itself (I/O, corruption, broken invariant). Never caused by a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or database file cannot be created or opened.
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    /// Another process (or another `Store` in this process) holds the database open.
    #[error("database is already open in another process or handle")]
    AlreadyOpen,
    /// The database file is damaged or is not a redb database.
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    /// The disk is full. Reported apart so the server can raise etcd's NOSPACE alarm.
    #[error("disk full: {0}")]
    DiskFull(io::Error),
    /// Any other I/O error.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// An error of the storage engine that is neither I/O nor corruption.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A record read back from the database does not decode.
    #[error("undecodable record in {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// Log entries handed to `persist` leave a hole after the current last index.
    #[error("log gap: entry {got} cannot follow last index {last}")]
    LogGap { last: u64, got: u64 },
    /// Entries must be applied one by one, in log order.
    #[error("apply out of order: expected index {expected}, got {got}")]
    ApplyOutOfOrder { expected: u64, got: u64 },
    /// `compact` asked to drop log entries that are not applied yet.
    #[error("cannot compact the log to {index}: only {applied} is applied")]
    CompactBeyondApplied { index: u64, applied: u64 },
    /// `compact` asked for an index beyond the last log entry.
    #[error("cannot compact the log to {index}: last index is {last}")]
    CompactBeyondLast { index: u64, last: u64 },
    /// A snapshot older than the state already applied.
    #[error("snapshot at index {snapshot} is older than the applied index {applied}")]
    SnapshotOutOfDate { snapshot: u64, applied: u64 },
    /// A snapshot whose metadata and data disagree.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// The write-ahead log refused or failed an operation (other than I/O and corruption,
    /// which get the variants above).
    #[error("write-ahead log: {0}")]
    Wal(wal::WalError),
}

impl From<wal::WalError> for StoreError {
    /// A full disk and corruption keep their own variants, so the NOSPACE alarm and the
    /// corruption handling see the WAL's failures as they see the database's.
    fn from(e: wal::WalError) -> Self {
        match e {
            wal::WalError::Io { ref source, .. }
                if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) =>
            {
                StoreError::DiskFull(io::Error::new(source.kind(), e.to_string()))
            }
            wal::WalError::Io { ref source, .. } => {
                StoreError::Io(io::Error::new(source.kind(), e.to_string()))
            }
            wal::WalError::Corrupt { .. } => StoreError::Corrupt(e.to_string()),
            wal::WalError::Gap { expected, got } => {
                StoreError::LogGap { last: expected.saturating_sub(1), got }
            }
            other => StoreError::Wal(other),
        }
    }
}

impl StoreError {
    /// Classifies a redb error: corruption, a full disk and a held lock each get their variant
    /// so the operator and the server can react to them specifically.
    fn from_redb(err: redb::Error) -> Self {
        match err {
            redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
            redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen,
            redb::Error::Io(e) => StoreError::from_io(e),
            other => StoreError::Engine(other.to_string()),
        }
    }

    /// Classifies an I/O error; `InvalidData` is how redb reports "not a redb database".
    pub(crate) fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::DiskFull(e),
            io::ErrorKind::InvalidData => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Io(e),
        }
    }

    /// A decode failure of a stored record.
    pub(crate) fn decode(what: &'static str, source: prost::DecodeError) -> Self {
        StoreError::Decode { what, source }
    }

    /// Whether the disk is full (the server raises the NOSPACE alarm rather than crash-looping).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull(_) => true,
            StoreError::Open { source, .. } => source.is_disk_full(),
            _ => false,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from_redb(e.into())
            }
        })*
    };
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError,
);

impl From<StoreError> for crate::raft::storage::StorageError {
    fn from(e: StoreError) -> Self {
        crate::raft::storage::StorageError::backend(e)
    }
}

/// Why a key-value request is refused. `Display` is etcd's message, which clients match on.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The request has an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` was set together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` was set together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// The request names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease with the id asked for already exists.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A transaction writes one key twice (or puts a key it also deletes) in one branch.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A transaction has more compares or operations per branch than the server allows.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// An unknown sort order or sort target.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// The revision asked for is older than the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compaction revision, which watchers are told about.
        compact_revision: i64,
    },
    /// The revision asked for does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A NOSPACE alarm is raised: writes that add data are refused until it is disarmed.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: the cluster serves nothing it might have wrong.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// The store failed while serving the request.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KvError {
    /// Whether this is a refusal of the request (`false` for a store failure).
    pub fn is_request_error(&self) -> bool {
        !matches!(self, KvError::Store(_))
    }
}

impl From<redb::StorageError> for KvError {
    fn from(e: redb::StorageError) -> Self {
        KvError::Store(e.into())
    }
}

impl From<redb::TableError> for KvError {
    fn from(e: redb::TableError) -> Self {
        KvError::Store(e.into())
    }
}

impl From<redb::TransactionError> for KvError {
    fn from(e: redb::TransactionError) -> Self {
        KvError::Store(e.into())
    }
}
