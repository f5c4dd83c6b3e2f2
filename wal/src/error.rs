//! The WAL's errors.

use std::io;

/// What can go wrong with the WAL: the disk, what is on it, or a caller's request.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O operation failed. After a failed write the log refuses further writes
    /// ([`WalError::Poisoned`]): what reached the disk is unknown until it is opened again.
    #[error("{op} {file}: {source}")]
    Io {
        /// What the WAL was doing ("write", "fdatasync", "rename", ...).
        op: &'static str,
        /// The file (or directory) it was doing it to.
        file: String,
        #[source]
        source: io::Error,
    },
    /// The log on disk is damaged in a way a crash cannot explain: a bad record in a segment
    /// that is not the last one, a missing segment, a gap in the entry indexes. The WAL never
    /// drops such data silently.
    #[error("corrupt WAL segment {segment} at offset {offset}: {reason}")]
    Corrupt { segment: String, offset: u64, reason: String },
    /// Entries asked for start at or below the snapshot point.
    #[error("log entry {index} is compacted (the log starts at {first_index})")]
    Compacted { index: u64, first_index: u64 },
    /// Entries asked for go beyond the last index.
    #[error("log entry {index} is unavailable (the log ends at {last_index})")]
    Unavailable { index: u64, last_index: u64 },
    /// `entries(low, high)` with `low > high`.
    #[error("invalid entry range {low}..{high}")]
    InvalidRange { low: u64, high: u64 },
    /// Appended entries do not follow the log or each other: entry `got` came where
    /// `expected` was due (or, for the first entry, anything up to it).
    #[error("log gap: entry {got} where {expected} was due")]
    Gap { expected: u64, got: u64 },
    /// `compact` to an index beyond the last one.
    #[error("cannot compact to index {index}: the log ends at {last_index}")]
    CompactBeyondLast { index: u64, last_index: u64 },
    /// `install_snapshot` older than the current snapshot point.
    #[error("snapshot at index {index} is older than the snapshot point {snapshot_index}")]
    SnapshotOutOfDate { index: u64, snapshot_index: u64 },
    /// A record does not fit the frame's 32-bit length.
    #[error("a record of {bytes} bytes is too large for the WAL")]
    RecordTooLarge { bytes: u64 },
    /// An earlier write failed; the log must be opened again to learn what is durable.
    #[error("an earlier write to the WAL failed; reopen it")]
    Poisoned,
}

impl WalError {
    /// Wraps an I/O error with the operation and file it came from.
    pub(crate) fn io<'a>(op: &'static str, file: &'a str) -> impl FnOnce(io::Error) -> WalError + 'a {
        move |source| WalError::Io { op, file: file.to_owned(), source }
    }

    pub(crate) fn corrupt(segment: &str, offset: u64, reason: impl Into<String>) -> WalError {
        WalError::Corrupt { segment: segment.to_owned(), offset, reason: reason.into() }
    }
}
