//! The key space's database in a slot that a defragmentation refills with a compacted copy.
//!
//! Readers take the database that is current when they begin (a read transaction keeps its
//! database alive, so one that began before a swap finishes on the old copy, whose file is
//! unlinked but open). Every write transaction holds the slot's write gate from begin to
//! commit, and a defragmentation holds it for its whole copy: a write therefore never lands
//! in a database that is being replaced, and the copy misses nothing.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::storage::error::StoreError;

pub(crate) struct DbSlot {
    current: RwLock<Arc<Database>>,
    writes: Mutex<()>,
    /// Set while a defragmentation holds the write gate, so the Raft loop can leave entries
    /// queued instead of blocking on the gate (and stopping to replicate and heartbeat).
    replacing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for DbSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSlot").finish_non_exhaustive()
    }
}

impl DbSlot {
    pub(crate) fn new(db: Database) -> Self {
        Self {
            current: RwLock::new(Arc::new(db)),
            writes: Mutex::new(()),
            replacing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The current database.
    pub(crate) fn get(&self) -> Arc<Database> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A read transaction on the current database.
    pub(crate) fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.get().begin_read()?)
    }

    /// A write transaction on the current database, holding the write gate until it commits
    /// or is dropped.
    pub(crate) fn write(&self) -> Result<GatedWrite<'_>, StoreError> {
        let gate = self.gate();
        let txn = self.get().begin_write()?;
        Ok(GatedWrite { txn, _gate: gate })
    }

    /// The write gate alone: no write transaction begins while it is held.
    pub(crate) fn gate(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a defragmentation holds the write gate now.
    pub(crate) fn replacing(&self) -> bool {
        self.replacing.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks a defragmentation under way until the returned guard is dropped.
    pub(crate) fn mark_replacing(&self) -> ReplacingGuard<'_> {
        self.replacing.store(true, std::sync::atomic::Ordering::Release);
        ReplacingGuard(&self.replacing)
    }

    /// Replaces the database; the caller holds the write gate (`_gate`) and has copied
    /// everything the old one holds.
    pub(crate) fn replace(&self, _gate: &MutexGuard<'_, ()>, db: Database) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(db);
    }
}

/// A write transaction that holds the slot's write gate.
pub(crate) struct GatedWrite<'a> {
    txn: WriteTransaction,
    _gate: MutexGuard<'a, ()>,
}

impl GatedWrite<'_> {
    pub(crate) fn commit(self) -> Result<(), StoreError> {
        self.txn.commit()?;
        Ok(())
    }
}

impl Deref for GatedWrite<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.txn
    }
}

impl DerefMut for GatedWrite<'_> {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }
}

/// Clears the slot's defragmentation mark when dropped, on every path out.
pub(crate) struct ReplacingGuard<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for ReplacingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}
