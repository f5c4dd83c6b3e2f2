//! Defragmentation: the key space's database rewritten into a compacted copy (etcd's
//! Defragment), online.
//!
//! redb reuses freed pages but never shrinks its file; after a compaction has dropped most of
//! the history the file stays as large as it ever was. Defragmenting copies every table, in
//! key order, into a new file (which is then dense), makes it durable, renames it over the old
//! one and swaps it in. Applies on this member wait for the copy (they hold the database's
//! write gate), reads go on from the old copy, and the rest of the cluster goes on committing:
//! the Raft log is in its own database, so this member keeps persisting and acknowledging
//! entries and applies them once the copy is done.
//!
//! Crash safety: the copy is written as `member.redb.defrag` and renamed over `member.redb`
//! only once durable, so a crash leaves either the old file (and a stray copy, removed on the
//! next open) or the complete new one.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
};
use tracing::info;

use super::error::StoreError;
use super::tables::{ALARMS, KEY_REVS, KV, LEASE_KEYS, LEASES, MEMBERS, MEMBERSHIP, META, REVS};
use super::{Store, builder, sync_dir};

/// Rows copied per write transaction of the new file.
const ROWS_PER_COMMIT: usize = 100_000;

/// What a defragmentation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defragmented {
    pub size_before: u64,
    pub size_after: u64,
    /// How long this member's applies waited.
    pub took: Duration,
}

/// The name of the copy being written next to `path`.
pub(crate) fn copy_path(path: &Path) -> std::path::PathBuf {
    path.with_extension("redb.defrag")
}

impl Store {
    /// Rewrites the key space's database into a compacted copy. A store without a file (in
    /// memory) has nothing to give back.
    pub fn defragment(&self) -> Result<Defragmented, StoreError> {
        let started = Instant::now();
        let Some(path) = self.path() else {
            return Ok(Defragmented { size_before: 0, size_after: 0, took: started.elapsed() });
        };
        let slot = self.kv().slot();
        let _marked = slot.mark_replacing();
        let gate = slot.gate();
        let size_before = self.file_size()?;
        let copy = copy_path(path);
        remove_if_present(&copy)?;
        let fresh = builder(self.options).create(&copy)?;
        let source = slot.get().begin_read()?;
        copy_everything(&source, &fresh)?;
        drop(source);
        std::fs::rename(&copy, path).map_err(StoreError::from_io)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        slot.replace(&gate, fresh);
        drop(gate);
        let done = Defragmented { size_before, size_after: self.file_size()?, took: started.elapsed() };
        info!(
            size_before = done.size_before,
            size_after = done.size_after,
            took_ms = done.took.as_millis() as u64,
            "defragmented the key space"
        );
        Ok(done)
    }
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::from_io(e)),
    }
}

/// Copies every table of the state-machine database, committing every [`ROWS_PER_COMMIT`]
/// rows without an fsync and the last with one.
fn copy_everything(source: &ReadTransaction, target: &Database) -> Result<(), StoreError> {
    let mut copier = Copier { target, txn: None, rows: 0 };
    copier.table(source, META)?;
    copier.table(source, MEMBERSHIP)?;
    copier.table(source, MEMBERS)?;
    copier.table(source, ALARMS)?;
    copier.table(source, LEASES)?;
    copier.table(source, LEASE_KEYS)?;
    copier.table(source, KV)?;
    copier.table(source, REVS)?;
    copier.table(source, KEY_REVS)?;
    copier.finish()
}

struct Copier<'a> {
    target: &'a Database,
    txn: Option<redb::WriteTransaction>,
    rows: usize,
}

impl Copier<'_> {
    fn txn(&mut self) -> Result<&redb::WriteTransaction, StoreError> {
        if self.txn.is_none() {
            let mut txn = self.target.begin_write()?;
            txn.set_durability(Durability::None)?;
            self.txn = Some(txn);
        }
        self.txn.as_ref().ok_or_else(|| StoreError::Engine("no write transaction".into()))
    }

    fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        source: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let from = source.open_table(def)?;
        let mut rows = from.iter()?;
        loop {
            let budget = ROWS_PER_COMMIT - self.rows;
            let txn = self.txn()?;
            let mut to = txn.open_table(def)?;
            let mut copied = 0;
            for item in rows.by_ref() {
                let (k, v) = item?;
                to.insert(k.value(), v.value())?;
                copied += 1;
                if copied >= budget {
                    break;
                }
            }
            drop(to);
            self.rows += copied;
            if self.rows < ROWS_PER_COMMIT {
                return Ok(());
            }
            if let Some(txn) = self.txn.take() {
                txn.commit()?;
            }
            self.rows = 0;
        }
    }

    fn finish(mut self) -> Result<(), StoreError> {
        let mut txn = match self.txn.take() {
            Some(txn) => txn,
            None => self.target.begin_write()?,
        };
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

impl Store {
    /// Bytes of the key space's database file in use (allocated pages), what Status reports
    /// as `dbSizeInUse`: the file's size minus what a defragmentation would give back. It
    /// walks every page of the database inside a write transaction (redb counts allocated
    /// pages only there, and its only public way, `stats`, also walks every tree), so applies
    /// wait for it: callers measure seldom and cache.
    ///
    /// Applies commit without an fsync, and redb hands the pages such a commit frees back to
    /// the allocator only at a later durable commit: a measure right after a compaction counts
    /// the history it dropped until the Raft loop's next sync (see
    /// [`KvStore::durable_up_to`](crate::storage::KvStore::durable_up_to)). It does not sync
    /// itself: only the loop may make the key space durable, since only it knows how far the
    /// log is durable (the key space must never be durable ahead of the log).
    pub fn measure_size_in_use(&self) -> Result<u64, StoreError> {
        let txn = self.kv().slot().write()?;
        let stats = txn.stats()?;
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }
}
