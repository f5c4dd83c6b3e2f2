//! Backups of the replicated state: what `Maintenance.Snapshot` streams, and what
//! `kvnode snapshot status|restore` read.
//!
//! The file layout is in `proto/kvserver.proto` (`BackupFrame`): a magic, length-delimited
//! frames, zero padding to a multiple of 512 bytes and a trailing SHA-256, etcd's framing
//! rule (etcdctl's `snapshot save` accepts a stream whose size is a multiple of 512 plus 32).
//! A backup is written from one read transaction a batch at a time, so it is a consistent point
//! in time while writes continue, in memory bounded by a batch; restore verifies the digest
//! before reading anything and checks the history's HashKV against the one the source member
//! computed.

mod export;
mod format;
mod import;

pub use format::{BackupError, DIGEST_LEN, MAGIC};
pub use import::{Phase, Restored, inspect};

/// What a backup holds, from its header and end frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub revision: i64,
    pub compact_revision: i64,
    pub applied_index: u64,
    pub cluster_id: u64,
    pub member_id: u64,
    pub server_version: String,
    pub created_unix: i64,
    /// Live keys at the backup's revision.
    pub keys: u64,
    pub history_entries: u64,
    pub leases: u64,
    /// HashKV at the backup's revision (what `etcdctl endpoint hashkv` shows on the members).
    pub hash_kv: u32,
    /// Size of the backup in bytes, padding and digest included.
    pub size: u64,
}
