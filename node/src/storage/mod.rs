//! A member's durable state in its data directory, in two stores:
//!
//! - `wal/`, the Raft log, hard state and snapshot point ([`WalRaftStorage`] over the `wal`
//!   crate): an append-only segmented log, fdatasynced before anything that depends on it is
//!   sent, so a Ready costs one sequential write and one flush;
//! - `member.redb`, the replicated key-value state machine ([`KvStore`]) with its applied
//!   index: committed without an fsync on every apply and made durable in batches, like etcd's
//!   bbolt backend next to its WAL.
//!
//! Keeping them apart is what makes a write cost one small flush. The price is that the two
//! must be kept consistent across crashes, which three rules do: entries are applied only
//! once they are in the log; the log is compacted only up to the state machine's durable
//! applied index; and a snapshot is installed state machine first, log second, with the log
//! half redone on open if a crash cut it off.
//!
//! Data directories of earlier versions kept the log in a redb database, `raft.redb`; it is
//! moved into the WAL on the first open (see `legacy_log.rs`).

pub mod backup;
mod codec;
mod defrag;
mod error;
pub mod kv;
mod legacy_log;
mod raft_log;
mod snapshot;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, StorageBackend};

pub use defrag::Defragmented;
pub use error::{KvError, StoreError};
pub use kv::{
    ApplyResult, AttachedKeys, Changes, Command, KvHash, KvStore, LeaseChange, MemberChange, Outcome,
};
pub use legacy_log::{LEGACY_LOG_FILE, WAL_DIR};
pub use raft_log::WalRaftStorage;

use tables::{ALARMS, KEY_REVS, KV, LEASE_KEYS, LEASES, MEMBERS, MEMBERSHIP, META, META_REVISION, REVS};
use wal::{Disk, DynDisk, MemDisk, OsDisk, Wal, WalOptions};

/// File name of the state-machine database inside the data directory.
pub const DB_FILE: &str = "member.redb";
/// WAL segments of a store in memory: small, since memory segments are preallocated too.
const IN_MEMORY_SEGMENT_BYTES: u64 = 1 << 20;

/// Tuning of the database.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Bytes of page cache redb may use for the key space. redb's default (1 GiB) is too much
    /// when several members share a machine in tests; 64 MiB holds the hot part of a typical
    /// key space.
    pub cache_size: usize,
    /// Size of the WAL's segment files (preallocated; a new one is cut when one is full).
    pub wal_segment_bytes: u64,
    /// Verify every page's checksum on every open. Off by default: after an unclean
    /// shutdown (a crash, kill -9, a power cut) redb finds no valid allocator state and
    /// repairs the file, which verifies every checksum anyway; after a clean one the file is
    /// trusted, so a restart does not read the whole database (restart time stays flat as the
    /// key space grows). Damage made to a cleanly closed file from outside (a bad disk, a
    /// stray write) is then found by the corruption check between members
    /// (`--experimental-corrupt-check-time`), or by this option.
    pub verify_on_open: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_size: 64 * 1024 * 1024,
            wal_segment_bytes: WalOptions::default().segment_bytes,
            verify_on_open: false,
        }
    }
}

fn builder(options: StoreOptions) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(options.cache_size).set_check_integrity_on_open(options.verify_on_open);
    b
}

impl StoreOptions {
    fn wal(&self) -> WalOptions {
        WalOptions { segment_bytes: self.wal_segment_bytes }
    }
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
    sync_dir(dir)
}

/// fsyncs a directory, making the creation, renaming and removal of its entries durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::from_io)
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
    }
    txn.open_table(MEMBERSHIP)?;
    txn.open_table(KV)?;
    txn.open_table(REVS)?;
    txn.open_table(KEY_REVS)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_KEYS)?;
    txn.open_table(ALARMS)?;
    txn.commit()?;
    Ok(())
}

/// Opens the state-machine database in `dir`, creating it atomically if it does not exist.
fn open_file(dir: &Path, options: StoreOptions) -> Result<(Database, PathBuf), StoreError> {
    let path = dir.join(DB_FILE);
    let wrap = |source: StoreError| StoreError::Open { path: path.clone(), source: Box::new(source) };
    let exists = match std::fs::metadata(&path) {
        Ok(m) => m.len() > 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(wrap(StoreError::from_io(e))),
    };
    if !exists {
        create_atomically(dir, &path, options).map_err(wrap)?;
    }
    // A copy left by a defragmentation that did not finish; the original is intact.
    defrag::remove_if_present(&defrag::copy_path(&path)).map_err(wrap)?;
    let check = FullCheck::new(&path, options.verify_on_open);
    let mut b = builder(options);
    b.set_repair_callback(check.on_repair());
    let opened = b.open(&path).map_err(|e| wrap(e.into()));
    check.finished(opened.is_ok());
    Ok((opened?, path))
}

/// Tells the operator when opening the key space's database reads all of it: a start-up that
/// takes minutes instead of milliseconds then says why and how long it took. redb runs the full
/// check (every page's checksum verified, the allocator state rebuilt) after an unclean
/// shutdown, or on every open with `--verify-db-on-open`; it calls the repair callback as it
/// begins, which is when this logs.
struct FullCheck {
    /// When the check began (set by the repair callback).
    started: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    path: PathBuf,
    reason: &'static str,
}

/// Why a full check runs when `--verify-db-on-open` did not ask for it.
const UNCLEAN: &str = "unclean shutdown";

impl FullCheck {
    fn new(path: &Path, verify_on_open: bool) -> Self {
        let reason = if verify_on_open { "--verify-db-on-open" } else { UNCLEAN };
        Self { started: Arc::default(), path: path.to_path_buf(), reason }
    }

    /// The repair callback: logs once, as the check begins.
    fn on_repair(&self) -> impl Fn(&mut redb::RepairSession) + 'static {
        let (started, path, reason) = (self.started.clone(), self.path.clone(), self.reason);
        move |_: &mut redb::RepairSession| {
            let mut started = started.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if started.is_none() {
                *started = Some(std::time::Instant::now());
                let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let path = path.display();
                if reason == UNCLEAN {
                    tracing::warn!(
                        %path,
                        reason,
                        size_bytes,
                        "verifying and repairing the database before serving"
                    );
                } else {
                    tracing::info!(%path, reason, size_bytes, "verifying the database before serving");
                }
            }
        }
    }

    /// Logs how long the check took, if one ran.
    fn finished(&self, ok: bool) {
        let started = *self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = started {
            let took_ms = at.elapsed().as_millis() as u64;
            let (path, reason) = (self.path.display(), self.reason);
            if ok {
                tracing::info!(%path, reason, took_ms, "the database is verified");
            } else {
                tracing::warn!(%path, reason, took_ms, "the database failed its full check");
            }
        }
    }
}

/// What `--force-new-cluster` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedCluster {
    /// Members removed from the membership.
    pub removed: Vec<u64>,
    /// Log entries discarded past the commit index.
    pub discarded: u64,
}

/// A member's open storage: the log and the state machine.
#[derive(Debug, Clone)]
pub struct Store {
    raft: Arc<WalRaftStorage>,
    kv: KvStore,
    path: Option<PathBuf>,
    options: StoreOptions,
}

impl Store {
    /// Opens (creating if needed) `<dir>/member.redb` with default options.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) `<dir>/member.redb` and the WAL in `<dir>/wal/`, first
    /// moving the log of an earlier version's `<dir>/raft.redb` into the WAL. Fails with a
    /// typed error when the directory cannot be created, the database is locked by another
    /// process, either store is corrupt, the disk is full, or the two do not belong together
    /// (one of them lost or replaced).
    ///
    /// A new database is created under a temporary name and renamed into place once it is
    /// durable, so a crash during creation leaves either no database or a complete one, never
    /// a half-written file that would later look corrupt.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let wrap_dir =
            |source: StoreError| StoreError::Open { path: dir.to_path_buf(), source: Box::new(source) };
        std::fs::create_dir_all(dir).map_err(|e| wrap_dir(StoreError::from_io(e)))?;
        let (kv_db, path) = open_file(dir, options)?;
        legacy_log::migrate(dir, options.wal()).map_err(wrap_dir)?;
        let wal_dir = dir.join(WAL_DIR);
        let disk = OsDisk::new(&wal_dir).map_err(|e| StoreError::Open {
            path: wal_dir.clone(),
            source: Box::new(StoreError::from_io(e)),
        })?;
        let mut store = Self::init(DynDisk::new(disk), kv_db, options).map_err(wrap_dir)?;
        store.path = Some(path);
        Ok(store)
    }

    /// Opens a store on any WAL disk and redb storage backend (log, state machine): in
    /// memory for simulations, or disks that inject crashes in tests.
    pub fn open_backends(
        log: impl Disk,
        state_machine: impl StorageBackend,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let kv = builder(options).create_with_backend(state_machine)?;
        Self::init(DynDisk::new(log), kv, options)
    }

    /// An empty store in memory.
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::open_backends(
            MemDisk::new(),
            redb::backends::InMemoryBackend::new(),
            StoreOptions { wal_segment_bytes: IN_MEMORY_SEGMENT_BYTES, ..StoreOptions::default() },
        )
    }

    /// Creates any missing table, opens the WAL and reconciles it with the key space.
    fn init(log: DynDisk, kv: Database, options: StoreOptions) -> Result<Store, StoreError> {
        init_tables(&kv)?;
        let kv = KvStore::new(kv)?;
        let wal = Wal::open(log, options.wal())?;
        let raft = Arc::new(WalRaftStorage::open(wal, kv.clone())?);
        Ok(Store { kv, raft, path: None, options })
    }

    /// The Raft log side, shared with the consensus core.
    pub fn raft(&self) -> &Arc<WalRaftStorage> {
        &self.raft
    }

    /// The key-value state machine.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Path of the state-machine database file (`None` for a store on another backend).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Size of the state-machine database file in bytes (etcd's `dbSize`, which also counts
    /// only the key-value backend, not the log), 0 without a file.
    pub fn file_size(&self) -> Result<u64, StoreError> {
        match &self.path {
            Some(p) => Ok(std::fs::metadata(p).map_err(StoreError::from_io)?.len()),
            None => Ok(0),
        }
    }

    /// etcd's `--force-new-cluster` on this member's data: the entries not known committed are
    /// discarded and the member becomes the only member of its cluster (same cluster id, same
    /// data), so it can elect itself and the others can be added back with MemberAdd.
    ///
    /// The new membership is not a log entry, so the log up to the applied index is compacted
    /// away (durably): a member added back later must get it from a snapshot of this state,
    /// not replay the old log, whose membership changes would bring the old members back.
    pub fn force_new_cluster(&self, member_id: u64) -> Result<ForcedCluster, StoreError> {
        let discarded = self.raft.discard_uncommitted()?;
        let removed = self.kv.force_single_member(member_id)?;
        let applied = self.kv.applied_index()?;
        self.raft.compact(applied)?;
        self.raft.sync()?;
        Ok(ForcedCluster { removed, discarded })
    }

    /// Makes every earlier (non-durable) commit of both databases durable now. The driver
    /// calls it on shutdown so a restart replays nothing.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.raft.sync()?;
        self.kv.sync()?;
        Ok(())
    }
}
