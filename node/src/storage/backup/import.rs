//! Reading a backup: checking it whole (`status`), and restoring it into an empty key space.

use std::io::BufReader;
use std::path::Path;

use prost::Message;
use redb::{Durability, ReadableTableMetadata};

use crate::proto::kvserverpb::backup_frame::Frame;
use crate::proto::kvserverpb::{BackupEnd, BackupHeader};
use crate::storage::StoreError;
use crate::storage::kv::KvStore;
use crate::storage::snapshot::HistoryRestorer;
use crate::storage::tables::{KV, LEASES, META, META_COMPACT_REVISION, META_REVISION, REVS, set_rev};

use super::BackupSummary;
use super::format::{BackupError, FrameReader, verify_file};

/// History entries restored per write transaction: large enough to amortise a commit, small
/// enough that redb's dirty pages stay bounded.
const COMMIT_EVERY: usize = 50_000;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub summary: BackupSummary,
}

/// Which part of the work a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Checking the digest.
    Verifying,
    /// Reading (and, when restoring, writing) the frames.
    Reading,
}

/// Reads a backup whole and checks it: digest, frames, counts and the history's HashKV.
pub fn inspect(path: &Path, mut progress: impl FnMut(Phase, u64, u64)) -> Result<BackupSummary, BackupError> {
    let size = verify_file(path, |done| progress(Phase::Verifying, done, 0))?;
    let mut reader = FrameReader::new(BufReader::new(std::fs::File::open(path)?))?;
    let mut crc = crc32c::crc32c(b"revs");
    let mut count = 0u64;
    let mut header = None;
    let mut end = None;
    while let Some(frame) = reader.next_frame()? {
        match frame.frame {
            Some(Frame::Header(h)) => header = Some(h),
            Some(Frame::History(h)) => {
                for e in &h.entries {
                    crc = hash_entry(crc, e)?;
                    count += 1;
                }
            }
            Some(Frame::End(e)) => end = Some(e),
            Some(Frame::Members(_) | Frame::Leases(_)) | None => {}
        }
        progress(Phase::Reading, reader.position, size);
    }
    // The digest after the last frame was read when verifying: the whole file is read.
    progress(Phase::Reading, size, size);
    summarize(header, end, count, crc, size)
}

/// The HashKV contribution of one history entry, as the member computed it from its stored
/// bytes (the stored bytes are the entry's event, encoded).
fn hash_entry(crc: u32, e: &crate::proto::kvserverpb::HistoryEntry) -> Result<u32, BackupError> {
    let event =
        e.event.as_ref().ok_or_else(|| BackupError::Corrupt("a history entry without event".into()))?;
    let crc = crc32c::crc32c_append(crc, &e.revision.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &e.sub.to_be_bytes());
    Ok(crc32c::crc32c_append(crc, &event.encode_to_vec()))
}

fn summarize(
    header: Option<BackupHeader>,
    end: Option<BackupEnd>,
    count: u64,
    crc: u32,
    size: u64,
) -> Result<BackupSummary, BackupError> {
    let header = header.ok_or_else(|| BackupError::Corrupt("no header frame".into()))?;
    let end = end.ok_or_else(|| BackupError::Corrupt("no end frame".into()))?;
    if header.format != 1 {
        return Err(BackupError::Corrupt(format!("unknown format version {}", header.format)));
    }
    if end.history_entries != count || header.history_entries != count {
        return Err(BackupError::Corrupt(format!(
            "{count} history entries, where the header says {} and the end {}",
            header.history_entries, end.history_entries
        )));
    }
    if end.hash_kv != crc {
        return Err(BackupError::Corrupt(format!(
            "the history hashes to {crc:08x}, the member that made it computed {:08x}",
            end.hash_kv
        )));
    }
    Ok(BackupSummary {
        revision: header.revision,
        compact_revision: header.compact_revision,
        applied_index: header.applied_index,
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        server_version: header.server_version,
        created_unix: header.created_unix,
        keys: header.keys,
        history_entries: count,
        leases: header.leases,
        hash_kv: crc,
        size,
    })
}

impl KvStore {
    /// Restores a backup into this key space, which must be empty: the history (and the
    /// current values rebuilt from it), the revision and compaction revision, the leases. Not
    /// the membership, the cluster id or the applied index: the restored cluster is a new one,
    /// bootstrapped by the caller. The result is checked against the backup's HashKV.
    pub fn restore_backup(
        &self,
        path: &Path,
        mut progress: impl FnMut(Phase, u64, u64),
    ) -> Result<Restored, BackupError> {
        let size = verify_file(path, |done| progress(Phase::Verifying, done, 0))?;
        let db = self.slot();
        {
            let txn = db.read()?;
            let keys = txn.open_table(KV).map_err(StoreError::from)?.len().map_err(StoreError::from)?;
            let history = txn.open_table(REVS).map_err(StoreError::from)?.len().map_err(StoreError::from)?;
            if keys + history > 0 {
                return Err(BackupError::Corrupt("the key space to restore into is not empty".into()));
            }
        }
        let mut reader = FrameReader::new(BufReader::new(std::fs::File::open(path)?))?;
        let (mut header, mut end, mut count, mut crc) = (None, None, 0u64, crc32c::crc32c(b"revs"));
        let mut txn = db.write()?;
        txn.set_durability(Durability::None).map_err(StoreError::from)?;
        let mut pending = 0usize;
        while let Some(frame) = reader.next_frame()? {
            match frame.frame {
                Some(Frame::Header(h)) => {
                    let mut meta = txn.open_table(META).map_err(StoreError::from)?;
                    set_rev(&mut meta, META_REVISION, h.revision)?;
                    if h.compact_revision >= 0 {
                        set_rev(&mut meta, META_COMPACT_REVISION, h.compact_revision)?;
                    }
                    header = Some(h);
                }
                Some(Frame::Leases(l)) => {
                    let mut leases = txn.open_table(LEASES).map_err(StoreError::from)?;
                    for lease in l.leases {
                        leases
                            .insert(lease.id, lease.encode_to_vec().as_slice())
                            .map_err(StoreError::from)?;
                    }
                }
                Some(Frame::History(h)) => {
                    {
                        let mut restorer = HistoryRestorer::open(&txn)?;
                        for e in &h.entries {
                            crc = hash_entry(crc, e)?;
                            restorer.restore(e)?;
                        }
                    }
                    count += h.entries.len() as u64;
                    pending += h.entries.len();
                    if pending >= COMMIT_EVERY {
                        txn.commit()?;
                        txn = db.write()?;
                        txn.set_durability(Durability::None).map_err(StoreError::from)?;
                        pending = 0;
                    }
                }
                Some(Frame::End(e)) => end = Some(e),
                // The membership is the restored cluster's own.
                Some(Frame::Members(_)) | None => {}
            }
            progress(Phase::Reading, reader.position, size);
        }
        progress(Phase::Reading, size, size);
        txn.set_durability(Durability::Immediate).map_err(StoreError::from)?;
        txn.commit()?;
        let summary = summarize(header, end, count, crc, size)?;
        // What was written must hash as what was read.
        let written = self.hash_kv(0).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        if written.hash != summary.hash_kv || written.hash_revision != summary.revision {
            return Err(BackupError::Corrupt(format!(
                "the restored key space hashes to {:08x} at revision {}, the backup to {:08x} at {}",
                written.hash, written.hash_revision, summary.hash_kv, summary.revision
            )));
        }
        Ok(Restored { summary })
    }
}
