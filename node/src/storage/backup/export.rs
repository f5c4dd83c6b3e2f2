//! Writing a backup from one read transaction, a batch of rows at a time.

use std::io::Write;

use prost::Message;
use redb::{ReadableTable, ReadableTableMetadata};

use crate::proto::kvserverpb::backup_frame::Frame;
use crate::proto::kvserverpb::{
    BackupEnd, BackupFrame, BackupHeader, BackupHistory, BackupLeases, BackupMembers, HistoryEntry,
    LeaseRecord, Member,
};
use crate::storage::StoreError;
use crate::storage::codec::decode_event;
use crate::storage::kv::KvStore;
use crate::storage::tables::{
    KV, LEASES, MEMBERS, META, META_APPLIED_INDEX, META_CLUSTER_ID, META_REVISION, REVS, get_compact_rev,
    get_rev, get_u64,
};

use super::BackupSummary;
use super::format::{BackupError, FrameWriter};

/// History entries per frame: frames stay far below a megabyte for typical values, and a
/// batch is all the memory a backup holds.
const HISTORY_BATCH: usize = 512;
/// Leases per frame.
const LEASE_BATCH: usize = 4096;

impl KvStore {
    /// Writes a backup of the replicated state as of now to `out`. Writes go on meanwhile: the
    /// backup reads one redb read transaction, which sees one committed state throughout.
    pub fn export_backup<W: Write>(
        &self,
        member_id: u64,
        server_version: &str,
        out: W,
    ) -> Result<(W, BackupSummary), BackupError> {
        let txn = self.slot().read()?;
        let meta = txn.open_table(META).map_err(StoreError::from)?;
        let revs = txn.open_table(REVS).map_err(StoreError::from)?;
        let leases = txn.open_table(LEASES).map_err(StoreError::from)?;
        let header = BackupHeader {
            format: 1,
            applied_index: get_u64(&meta, META_APPLIED_INDEX)?,
            revision: get_rev(&meta, META_REVISION)?,
            compact_revision: get_compact_rev(&meta)?,
            cluster_id: get_u64(&meta, META_CLUSTER_ID)?,
            member_id,
            server_version: server_version.to_string(),
            history_entries: revs.len().map_err(StoreError::from)?,
            keys: txn.open_table(KV).map_err(StoreError::from)?.len().map_err(StoreError::from)?,
            leases: leases.len().map_err(StoreError::from)?,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        let mut w = FrameWriter::new(out)?;
        w.frame(&BackupFrame { frame: Some(Frame::Header(header.clone())) })?;

        let mut members = Vec::new();
        for item in txn.open_table(MEMBERS).map_err(StoreError::from)?.iter().map_err(StoreError::from)? {
            let (_, v) = item.map_err(StoreError::from)?;
            members.push(Member::decode(v.value()).map_err(|e| StoreError::decode("members", e))?);
        }
        w.frame(&BackupFrame { frame: Some(Frame::Members(BackupMembers { members })) })?;

        let mut batch: Vec<LeaseRecord> = Vec::new();
        for item in leases.iter().map_err(StoreError::from)? {
            let (_, v) = item.map_err(StoreError::from)?;
            batch.push(LeaseRecord::decode(v.value()).map_err(|e| StoreError::decode("leases", e))?);
            if batch.len() == LEASE_BATCH {
                let leases = std::mem::take(&mut batch);
                w.frame(&BackupFrame { frame: Some(Frame::Leases(BackupLeases { leases })) })?;
            }
        }
        if !batch.is_empty() {
            w.frame(&BackupFrame { frame: Some(Frame::Leases(BackupLeases { leases: batch })) })?;
        }

        // The HashKV of the history, computed as `kv::hash` does, over the same rows.
        let mut crc = crc32c::crc32c(b"revs");
        let mut entries: Vec<HistoryEntry> = Vec::with_capacity(HISTORY_BATCH);
        let mut count = 0u64;
        for item in revs.iter().map_err(StoreError::from)? {
            let (k, v) = item.map_err(StoreError::from)?;
            let (revision, sub) = k.value();
            crc = crc32c::crc32c_append(crc, &revision.to_be_bytes());
            crc = crc32c::crc32c_append(crc, &sub.to_be_bytes());
            crc = crc32c::crc32c_append(crc, v.value());
            entries.push(HistoryEntry { revision, sub, event: Some(decode_event(v.value())?) });
            count += 1;
            if entries.len() == HISTORY_BATCH {
                let batch = std::mem::replace(&mut entries, Vec::with_capacity(HISTORY_BATCH));
                w.frame(&BackupFrame { frame: Some(Frame::History(BackupHistory { entries: batch })) })?;
            }
        }
        if !entries.is_empty() {
            w.frame(&BackupFrame { frame: Some(Frame::History(BackupHistory { entries })) })?;
        }
        w.frame(&BackupFrame {
            frame: Some(Frame::End(BackupEnd { history_entries: count, hash_kv: crc })),
        })?;
        let (out, size) = w.finish()?;
        Ok((
            out,
            BackupSummary {
                revision: header.revision,
                compact_revision: header.compact_revision,
                applied_index: header.applied_index,
                cluster_id: header.cluster_id,
                member_id,
                server_version: header.server_version,
                created_unix: header.created_unix,
                keys: header.keys,
                history_entries: count,
                leases: header.leases,
                hash_kv: crc,
                size,
            },
        ))
    }
}
