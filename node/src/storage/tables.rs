//! The redb tables of a member's database and small typed accessors for the scalar ones.
//!
//! - The **log database** (`raft.redb`) of earlier versions held log entries, the hard state
//!   and the point the log was compacted to. The log now lives in the WAL; these tables are
//!   read once, to move such a log into it (`legacy_log.rs`).
//! - The **state-machine database** (`member.redb`) holds the key space, the membership and
//!   the applied index in the same transactions (so apply is exactly-once across crashes). It
//!   is made durable lazily, as etcd commits its bbolt backend in batches: the log holds
//!   everything above its durable applied index, and compaction never drops that part.

use prost::Message;
use redb::{ReadableTable, TableDefinition};

use super::error::StoreError;

// --- The log database of earlier versions (read by the migration only) -------------------------

/// Raft log: index -> prost-encoded `raftpb::Entry`.
pub(crate) const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `HARD_STATE` -> prost-encoded `raftpb::HardState`.
pub(crate) const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
/// Scalars of the log: `LOG_SNAPSHOT_INDEX`, `LOG_SNAPSHOT_TERM`.
pub(crate) const LOG_META: TableDefinition<&str, u64> = TableDefinition::new("log_meta");

pub(crate) const HARD_STATE: &str = "hard_state";
/// Index and term of the last log entry removed by compaction or covered by a snapshot.
pub(crate) const LOG_SNAPSHOT_INDEX: &str = "snapshot_index";
pub(crate) const LOG_SNAPSHOT_TERM: &str = "snapshot_term";

// --- The state-machine database ------------------------------------------------------------

/// Scalars of the state machine (`META_*` keys). Revisions are stored as their `u64` bit
/// pattern (they are never negative).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `CONF_STATE` -> prost-encoded `raftpb::ConfState`, the membership as of the applied index.
pub(crate) const MEMBERSHIP: TableDefinition<&str, &[u8]> = TableDefinition::new("membership");
/// Current value of every live key: key -> prost-encoded `mvccpb::KeyValue` with an empty
/// `key` field (the table key is the key), so a current read is one lookup.
pub(crate) const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// History by revision: (revision, sub) -> prost-encoded `mvccpb::Event` (full key). This is
/// the change log that watchers read in order.
pub(crate) const REVS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("revs");
/// History by key: (key, revision, sub) -> (). An index into `REVS` for reads at an older
/// revision and for compaction.
pub(crate) const KEY_REVS: TableDefinition<(&[u8], i64, i64), ()> = TableDefinition::new("key_revs");
/// Cluster membership: member id -> prost-encoded `kvserverpb::Member`.
pub(crate) const MEMBERS: TableDefinition<u64, &[u8]> = TableDefinition::new("members");
/// Leases by id: an encoded `LeaseRecord`.
pub(crate) const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
/// The keys attached to each lease, by (lease, key): what a revoke deletes.
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

/// Raised alarms: (member id, `etcdserverpb::AlarmType`) -> ().
pub(crate) const ALARMS: TableDefinition<(u64, i32), ()> = TableDefinition::new("alarms");

pub(crate) const CONF_STATE: &str = "conf_state";

/// Index of the last entry applied to the state machine. etcd calls the same number the
/// "consistent index"; raftkv has one number for both because every entry goes through apply.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// Index and term of the last snapshot installed from a leader. Installation writes the state
/// machine first and the log second; a crash between the two leaves this point above the log's
/// snapshot point, and opening the store finishes the log half (see `Store::open`).
pub(crate) const META_INSTALLED_SNAPSHOT_INDEX: &str = "installed_snapshot_index";
pub(crate) const META_INSTALLED_SNAPSHOT_TERM: &str = "installed_snapshot_term";
/// The key space's current revision and the revision history was compacted at.
pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACT_REVISION: &str = "compact_revision";
pub(crate) const META_CLUSTER_ID: &str = "cluster_id";
/// This member's own id, recorded once when it is bootstrapped or joins. Local to the member:
/// never part of a snapshot.
pub(crate) const META_LOCAL_MEMBER_ID: &str = "local_member_id";

/// Reads a scalar, 0 when absent (a fresh database).
pub(crate) fn get_u64(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(table.get(key)?.map(|g| g.value()).unwrap_or(0))
}

/// Reads a revision scalar.
pub(crate) fn get_rev(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<i64, StoreError> {
    Ok(get_u64(table, key)?.cast_signed())
}

/// Reads the compaction revision: -1 until the first compaction, as etcd's `compactMainRev`, so
/// that compacting at revision 0 a store never compacted succeeds once (and only once).
pub(crate) fn get_compact_rev(table: &impl ReadableTable<&'static str, u64>) -> Result<i64, StoreError> {
    Ok(table.get(META_COMPACT_REVISION)?.map_or(-1, |g| g.value().cast_signed()))
}

/// Writes a revision scalar.
pub(crate) fn set_rev(
    table: &mut redb::Table<'_, &'static str, u64>,
    key: &str,
    rev: i64,
) -> Result<(), StoreError> {
    table.insert(key, rev.cast_unsigned())?;
    Ok(())
}

/// Reads and decodes a message record, `M::default()` when absent.
pub(crate) fn get_msg<M: Message + Default>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<M, StoreError> {
    match table.get(key)? {
        Some(g) => M::decode(g.value()).map_err(|e| StoreError::decode(key, e)),
        None => Ok(M::default()),
    }
}

/// Encodes and writes a message record.
pub(crate) fn put_msg<M: Message>(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &'static str,
    msg: &M,
) -> Result<(), StoreError> {
    table.insert(key, msg.encode_to_vec().as_slice())?;
    Ok(())
}
