//! Hashes of the replicated state, to tell whether members hold the same data (etcd's `Hash`
//! and `HashKV`, its corruption check, and a restored backup's verification).
//!
//! Both are CRC-32C (Castagnoli, as etcd) over table rows in key order. The values are not
//! comparable with etcd's (the storage layouts differ); they are equal on every raftkv member
//! that applied the same entries, which is what they are for.

use redb::{ReadTransaction, ReadableTable};

use crate::storage::error::{KvError, StoreError};
use crate::storage::tables::{
    KEY_REVS, KV, LEASE_KEYS, LEASES, MEMBERS, META, META_APPLIED_INDEX, META_CLUSTER_ID, META_REVISION,
    REVS, get_compact_rev, get_rev, get_u64,
};

use super::KvStore;

/// The answer to HashKV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32C of the history through `hash_revision`.
    pub hash: u32,
    /// The compaction revision the history starts from (hashes are comparable only between
    /// members at the same one).
    pub compact_revision: i64,
    /// The revision the hash covers history up to.
    pub hash_revision: i64,
}

impl KvStore {
    /// The hash of the key space's history up to `revision` (0: the current revision), as
    /// etcd's HashKV: every change kept by compaction, with its revision, in revision order.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, KvError> {
        let txn = self.db.read()?;
        hash_history(&txn, revision)
    }

    /// The hash of the whole replicated state as of the applied index (etcd's Hash): the key
    /// space with its history and indexes, leases, membership and the applied index, but not
    /// what is local to a member (its own id, where it installed a snapshot from).
    pub fn hash_all(&self) -> Result<u32, StoreError> {
        let txn = self.db.read()?;
        let meta = txn.open_table(META)?;
        let mut crc = 0;
        for key in [META_APPLIED_INDEX, META_CLUSTER_ID, META_REVISION] {
            crc = crc32c::crc32c_append(crc, key.as_bytes());
            crc = crc32c::crc32c_append(crc, &get_u64(&meta, key)?.to_be_bytes());
        }
        crc = crc32c::crc32c_append(crc, &get_compact_rev(&meta)?.to_be_bytes());
        for item in txn.open_table(KV)?.iter()? {
            let (k, v) = item?;
            crc = crc32c::crc32c_append(crc, k.value());
            crc = crc32c::crc32c_append(crc, v.value());
        }
        for item in txn.open_table(REVS)?.iter()? {
            let (k, v) = item?;
            crc = append_revision(crc, k.value());
            crc = crc32c::crc32c_append(crc, v.value());
        }
        for item in txn.open_table(KEY_REVS)?.iter()? {
            let (k, _) = item?;
            let (key, rev, sub) = k.value();
            crc = crc32c::crc32c_append(crc, key);
            crc = append_revision(crc, (rev, sub));
        }
        for item in txn.open_table(MEMBERS)?.iter()? {
            let (k, v) = item?;
            crc = crc32c::crc32c_append(crc, &k.value().to_be_bytes());
            crc = crc32c::crc32c_append(crc, v.value());
        }
        for item in txn.open_table(LEASES)?.iter()? {
            let (k, v) = item?;
            crc = crc32c::crc32c_append(crc, &k.value().to_be_bytes());
            crc = crc32c::crc32c_append(crc, v.value());
        }
        for item in txn.open_table(LEASE_KEYS)?.iter()? {
            let (k, _) = item?;
            let (lease, key) = k.value();
            crc = crc32c::crc32c_append(crc, &lease.to_be_bytes());
            crc = crc32c::crc32c_append(crc, key);
        }
        Ok(crc)
    }
}

/// HashKV over the history table of `txn`, with etcd's refusals: a revision above the current
/// one is in the future, one below the compaction revision is gone.
pub(crate) fn hash_history(txn: &ReadTransaction, revision: i64) -> Result<KvHash, KvError> {
    let meta = txn.open_table(META)?;
    let current = get_rev(&meta, META_REVISION)?;
    let compact_revision = get_compact_rev(&meta)?;
    if revision > current {
        return Err(KvError::FutureRevision);
    }
    if revision > 0 && revision < compact_revision {
        return Err(KvError::Compacted { compact_revision });
    }
    let hash_revision = if revision <= 0 { current } else { revision };
    let mut crc = crc32c::crc32c(b"revs");
    for item in txn.open_table(REVS)?.range(..=(hash_revision, i64::MAX))? {
        let (k, v) = item?;
        crc = append_revision(crc, k.value());
        crc = crc32c::crc32c_append(crc, v.value());
    }
    Ok(KvHash { hash: crc, compact_revision, hash_revision })
}

fn append_revision(crc: u32, (rev, sub): (i64, i64)) -> u32 {
    let crc = crc32c::crc32c_append(crc, &rev.to_be_bytes());
    crc32c::crc32c_append(crc, &sub.to_be_bytes())
}
