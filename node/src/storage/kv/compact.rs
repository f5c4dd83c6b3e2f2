//! History compaction: forget every version older than a revision, except the version each
//! key had at that revision (so reads at the compaction revision still work).

use redb::ReadableTable;

use crate::proto::etcdserverpb::{CompactionResponse, ResponseHeader};
use crate::proto::mvccpb::event::EventType;
use crate::storage::codec::decode_event;
use crate::storage::error::{KvError, StoreError};

use super::write::Writer;

/// History records examined per pass; bounds the memory one compaction uses.
const BATCH: usize = 1024;

impl Writer<'_> {
    /// Compacts history at `rev`: refuses a revision at or below the last compaction or
    /// beyond the current one, with etcd's errors.
    pub(crate) fn compact(&mut self, rev: i64) -> Result<CompactionResponse, KvError> {
        if rev <= self.compact_revision {
            return Err(KvError::Compacted { compact_revision: self.compact_revision });
        }
        if rev > self.revision {
            return Err(KvError::FutureRevision);
        }
        // From the previous compaction revision itself: deletions recorded there were kept.
        self.compact_history(self.compact_revision.max(0), rev)?;
        self.compact_revision = rev;
        Ok(CompactionResponse {
            header: Some(ResponseHeader { revision: self.revision, ..Default::default() }),
        })
    }

    /// Walks the history records of revisions `from..=to` in order. Each record removes the
    /// older versions of its key (which the previous compaction may have kept); a deletion
    /// below `to` removes itself too, since "absent" needs no record. What survives is, for
    /// each key that is live at `to`, its version at `to`, every deletion made at `to` itself,
    /// and everything newer than `to`: a watcher may start at the compaction revision (etcd
    /// allows it) and must then see every change of that revision, deletions included (etcd
    /// lost them: etcd-io/etcd#18089, #19179). The next compaction drops those deletions.
    fn compact_history(&mut self, from: i64, to: i64) -> Result<(), StoreError> {
        let mut start = (from, i64::MIN);
        loop {
            let mut batch: Vec<((i64, i64), Vec<u8>, bool)> = Vec::with_capacity(BATCH);
            for item in self.revs.range(start..=(to, i64::MAX))? {
                let (k, v) = item?;
                let ev = decode_event(v.value())?;
                let key = ev.kv.map(|kv| kv.key).unwrap_or_default();
                batch.push((k.value(), key, ev.r#type == EventType::Delete as i32));
                if batch.len() == BATCH {
                    break;
                }
            }
            let Some(&(last, _, _)) = batch.last() else { return Ok(()) };
            for ((rev, sub), key, is_delete) in &batch {
                let older: Vec<(i64, i64)> = self
                    .key_revs
                    .range((key.as_slice(), i64::MIN, i64::MIN)..(key.as_slice(), *rev, *sub))?
                    .map(|item| item.map(|(k, _)| (k.value().1, k.value().2)))
                    .collect::<Result<_, _>>()?;
                for at in older {
                    self.key_revs.remove((key.as_slice(), at.0, at.1))?;
                    self.revs.remove(at)?;
                }
                if *is_delete && *rev < to {
                    self.key_revs.remove((key.as_slice(), *rev, *sub))?;
                    self.revs.remove((*rev, *sub))?;
                }
            }
            if batch.len() < BATCH {
                return Ok(());
            }
            start = (last.0, last.1.saturating_add(1));
        }
    }
}
