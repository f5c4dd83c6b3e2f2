//! When the log is compacted: after `--snapshot-count` applied entries, keeping a tail so that
//! followers slightly behind catch up from the log rather than a snapshot; or earlier, once the
//! applied entries above the compaction point hold more than [`MAX_LOG_BYTES`] (counting
//! entries alone lets large entries, a txn of 100 puts say, keep hundreds of MiB of log).
//! Never beyond what the key space has made durable: a crash takes the key space back to its
//! last durable commit, and the log must still hold every entry above it.

use std::collections::VecDeque;

use tracing::debug;

use crate::storage::{StoreError, WalRaftStorage};

/// Applied entries above this many bytes trigger a compaction before `snapshot_count`.
pub(crate) const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// The compaction policy and what it remembers of the log.
pub(crate) struct Compactor {
    snapshot_count: u64,
    /// Entries kept behind a compaction so slightly-behind followers catch up from the log.
    catch_up_entries: u64,
    last_compacted: u64,
    log_bytes: AppliedLogBytes,
}

impl Compactor {
    pub(crate) fn new(snapshot_count: u64, catch_up_entries: u64, last_compacted: u64) -> Self {
        Self { snapshot_count, catch_up_entries, last_compacted, log_bytes: AppliedLogBytes::default() }
    }

    /// Notes an applied entry's size.
    pub(crate) fn applied(&mut self, index: u64, bytes: u64) {
        self.log_bytes.record(index, bytes);
    }

    /// A snapshot replaced the log up to `index`.
    pub(crate) fn restored_to(&mut self, index: u64) {
        self.last_compacted = index;
        self.log_bytes.forget_through(index);
    }

    /// Compacts the log if the policy says so. Returns the index compacted to, if any.
    pub(crate) fn maybe_compact(
        &mut self,
        storage: &WalRaftStorage,
        applied: u64,
        durable_applied: u64,
    ) -> Result<Option<u64>, StoreError> {
        let to = if applied >= self.last_compacted + self.snapshot_count + self.catch_up_entries {
            applied - self.catch_up_entries
        } else if self.log_bytes.total > MAX_LOG_BYTES {
            self.log_bytes.compaction_point(self.catch_up_entries, MAX_LOG_BYTES / 4)
        } else {
            return Ok(None);
        };
        let to = to.min(durable_applied);
        if to <= self.last_compacted {
            return Ok(None);
        }
        storage.compact(to)?;
        debug!(to, "compacted log");
        self.last_compacted = to;
        self.log_bytes.forget_through(to);
        Ok(Some(to))
    }
}

/// The sizes of applied entries not yet compacted away, oldest first.
#[derive(Debug, Default)]
struct AppliedLogBytes {
    entries: VecDeque<(u64, u64)>,
    total: u64,
}

impl AppliedLogBytes {
    fn record(&mut self, index: u64, bytes: u64) {
        self.entries.push_back((index, bytes));
        self.total += bytes;
    }

    fn forget_through(&mut self, index: u64) {
        while let Some(&(i, bytes)) = self.entries.front() {
            if i > index {
                break;
            }
            self.entries.pop_front();
            self.total -= bytes;
        }
    }

    /// The index to compact through so that at most `keep_entries` newest entries and about
    /// `keep_bytes` stay in the log.
    fn compaction_point(&self, keep_entries: u64, keep_bytes: u64) -> u64 {
        let mut kept_bytes = 0;
        let mut kept = 0;
        for &(index, bytes) in self.entries.iter().rev() {
            kept_bytes += bytes;
            kept += 1;
            if kept > keep_entries || kept_bytes > keep_bytes {
                return index;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::AppliedLogBytes;

    #[test]
    fn byte_bounded_compaction_keeps_the_newest_entries_within_both_limits() {
        let mut log = AppliedLogBytes::default();
        for index in 1..=10 {
            log.record(index, 100);
        }
        assert_eq!(log.total, 1000);
        // Keep at most 3 entries: compact through 7.
        assert_eq!(log.compaction_point(3, 10_000), 7);
        // Keep at most 250 bytes: entries 9 and 10 stay.
        assert_eq!(log.compaction_point(100, 250), 8);
        // Everything fits: nothing to compact.
        assert_eq!(log.compaction_point(100, 10_000), 0);
        log.forget_through(8);
        assert_eq!(log.total, 200);
        assert_eq!(log.entries.len(), 2);
    }
}
