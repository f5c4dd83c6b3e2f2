//! A member's durable state in one redb database (`<data-dir>/member.redb`): the Raft log and
//! hard state ([`RedbRaftStorage`]) and the replicated key-value state machine ([`KvStore`]).
//!
//! Both halves share one `redb::Database`, so one transaction can span them: a snapshot is
//! installed atomically (state machine and log together), a snapshot is built from one
//! consistent read, and a durable log write also makes every earlier apply durable.

mod codec;
mod error;
pub mod kv;
mod raft_log;
mod snapshot;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, StorageBackend};

pub use error::{KvError, StoreError};
pub use kv::{ApplyResult, Changes, Command, KvStore, MemberChange, Outcome};
pub use raft_log::RedbRaftStorage;

use tables::{KEY_REVS, KV, MEMBERS, META, META_REVISION, RAFT_LOG, RAFT_STATE, REVS};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "member.redb";

/// Tuning of the database.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Bytes of page cache redb may use. redb's default (1 GiB) is too much when several
    /// members share a machine in tests; 64 MiB holds the hot part of a typical key space.
    pub cache_size: usize,
    /// Verify every page's checksum when opening. redb trusts a cleanly closed file and may
    /// panic on one damaged outside it (bad disk, stray write); with the check, damage is
    /// reported as [`StoreError::Corrupt`] instead. It costs one full read of the file at
    /// startup, which is cheap next to replaying a damaged member's state from its peers.
    pub verify_on_open: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_size: 64 * 1024 * 1024, verify_on_open: true }
    }
}

fn builder(options: StoreOptions) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(options.cache_size).set_check_integrity_on_open(options.verify_on_open);
    b
}

/// Creates and initializes a database at `<path>.tmp`, then renames it to `path` and syncs
/// the directory. A leftover temporary file from an earlier crash is discarded.
fn create_atomically(dir: &Path, path: &Path, options: StoreOptions) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::from_io(e)),
    }
    let db = builder(options).create(&tmp)?;
    init_tables(&db)?;
    db.close()?;
    std::fs::rename(&tmp, path).map_err(StoreError::from_io)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::from_io)?;
    Ok(())
}

/// Creates the tables of a fresh database (the key space starts at revision 1, as etcd's
/// does). Idempotent.
fn init_tables(db: &Database) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut meta = txn.open_table(META)?;
        if meta.get(META_REVISION)?.is_none() {
            meta.insert(META_REVISION, 1)?;
        }
        txn.open_table(RAFT_LOG)?;
        txn.open_table(RAFT_STATE)?;
        txn.open_table(KV)?;
        txn.open_table(REVS)?;
        txn.open_table(KEY_REVS)?;
        txn.open_table(MEMBERS)?;
    }
    txn.commit()?;
    Ok(())
}

/// An open member database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    raft: Arc<RedbRaftStorage>,
    kv: KvStore,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens (creating if needed) `<dir>/member.redb` with default options.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) `<dir>/member.redb`. Fails with a typed error when the
    /// directory cannot be created, the file is locked by another process, is corrupt or is
    /// not a redb database, or the disk is full.
    ///
    /// A new database is created under a temporary name and renamed into place once it is
    /// durable, so a crash during creation leaves either no database or a complete one, never
    /// a half-written file that would later look corrupt.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        let wrap = |source: StoreError| StoreError::Open { path: path.clone(), source: Box::new(source) };
        std::fs::create_dir_all(dir).map_err(|e| wrap(StoreError::from_io(e)))?;
        let exists = match std::fs::metadata(&path) {
            Ok(m) => m.len() > 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(wrap(StoreError::from_io(e))),
        };
        if !exists {
            create_atomically(dir, &path, options).map_err(wrap)?;
        }
        let db = builder(options).open(&path).map_err(|e| wrap(e.into()))?;
        let mut store = Self::init(db).map_err(wrap)?;
        store.path = Some(path);
        Ok(store)
    }

    /// Opens a database on any redb storage backend: in memory for simulations, or a backend
    /// that injects crashes in tests.
    pub fn open_backend(backend: impl StorageBackend, options: StoreOptions) -> Result<Store, StoreError> {
        let db = builder(options).create_with_backend(backend)?;
        Self::init(db)
    }

    /// An empty store in memory.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::open_backend(redb::backends::InMemoryBackend::new(), StoreOptions::default())
    }

    /// Creates any missing table and loads the log bounds.
    fn init(db: Database) -> Result<Store, StoreError> {
        init_tables(&db)?;
        let db = Arc::new(db);
        let raft = Arc::new(RedbRaftStorage::open(db.clone())?);
        Ok(Store { kv: KvStore::new(db.clone()), raft, db, path: None })
    }

    /// The Raft log side, shared with the consensus core.
    pub fn raft(&self) -> &Arc<RedbRaftStorage> {
        &self.raft
    }

    /// The key-value state machine.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Path of the database file (`None` for a store on another backend).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Size of the database file in bytes (etcd's `dbSize`), 0 without a file.
    pub fn file_size(&self) -> Result<u64, StoreError> {
        match &self.path {
            Some(p) => Ok(std::fs::metadata(p).map_err(StoreError::from_io)?.len()),
            None => Ok(0),
        }
    }

    /// Makes every earlier (non-durable) commit durable now. The driver calls it on shutdown;
    /// in normal operation the next `persist` does the same.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}
