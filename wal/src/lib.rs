//! raftkv's write-ahead log: the Raft log, the hard state and the snapshot point of one
//! member, in an append-only, segmented, preallocated file log.
//!
//! # Why a log of its own
//!
//! A Raft member's storage does one thing all the time: append a few entries and a hard
//! state, and fdatasync them before answering. An append-only log does exactly that: one
//! sequential write and one fdatasync per batch, with no tree to rebalance and no pages to
//! rewrite. Reads never touch the disk: the entries after the snapshot point are also kept in
//! memory (as etcd's `MemoryStorage` does), which the node's compaction policy bounds.
//!
//! # On disk
//!
//! A directory of segment files (see `segment.rs` for names, preallocation and how a segment
//! is cut), each a sequence of checksummed records (see `record.rs` for the framing). Every
//! segment starts with a header holding the snapshot point and hard state current when it
//! was cut, so older segments can be deleted without losing them. Then come records of:
//!
//! - an entry (index, term, data): it replaces any entry at or after its index, which is how
//!   a leader's overwrite of a conflicting suffix is written;
//! - a hard state;
//! - a snapshot point, from a compaction (entries up to it dropped) or a snapshot
//!   installation (every entry dropped, commit index raised to it);
//! - a truncation (entries after an index dropped).
//!
//! Each operation is written as one batch of records, applied on replay only if whole, and
//! is durable (fdatasync) before it returns: after a crash the log is as it was after the last
//! operation that returned, or after the one in flight, never in between. See `replay.rs` for
//! what opening a log repairs and what it reports as corruption.
//!
//! # Releasing segments
//!
//! `compact` first makes its snapshot-point record durable, then deletes the oldest segments
//! whose entries are all at or below the point (never the active one), then fsyncs the
//! directory. Deleting a prefix of segments is safe once the record is durable: replay starts
//! from the oldest remaining segment's header, and the snapshot point covers the entries the
//! deleted segments held. A crash midway leaves a shorter prefix deleted, which is as good.
//!
//! # Errors
//!
//! A failed write leaves the disk in an unknown state (and a failed fdatasync may have lost
//! earlier writes, as the kernel drops the dirty pages it could not write). The WAL therefore
//! refuses further writes ([`WalError::Poisoned`]) until it is opened again, which learns what
//! is durable. Reads go on answering from memory.

mod disk;
mod dyn_disk;
mod error;
mod mem_disk;
mod record;
mod replay;
mod segment;
mod state;

use std::path::Path;

use tracing::{debug, info};

pub use disk::{Disk, DiskFile, OsDisk, OsFile};
pub use dyn_disk::DynDisk;
pub use error::WalError;
#[cfg(feature = "fault-injection")]
pub use mem_disk::CrashMode;
pub use mem_disk::{MemDisk, MemFile};

use record::{Record, SegmentHeader, SnapshotKind};
use segment::{ActiveSegment, SegmentInfo};
use state::LogState;

/// The Raft hard state: current term, vote in it, and commit index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// A log entry; `data` is opaque to the WAL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

impl LogEntry {
    /// The size counted against `max_bytes` in [`Wal::entries`]: the data's, which is what the
    /// caller stores (a node stores the encoded Raft entry, so this is the size a message
    /// carrying it has, which is what its `max_bytes` limits).
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

/// How the WAL lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// The size segments are preallocated to, and after which a new one is cut. A record
    /// larger than that goes alone into a segment that grows as needed.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: 64 << 20 }
    }
}

/// The write-ahead log. See the crate docs.
pub struct Wal<D: Disk = OsDisk> {
    disk: D,
    opts: WalOptions,
    /// Every segment on disk, oldest first; the last is the active one.
    segments: Vec<SegmentInfo>,
    active: ActiveSegment<D::File>,
    state: LogState,
    /// A write failed: no more until the log is opened again.
    poisoned: bool,
}

impl<D: Disk + std::fmt::Debug> std::fmt::Debug for Wal<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("disk", &self.disk)
            .field("segments", &self.segments.len())
            .field("snapshot", &self.state.snapshot)
            .field("last_index", &self.state.last_index())
            .finish_non_exhaustive()
    }
}

impl Wal<OsDisk> {
    /// Opens (or creates) the log in `dir`, creating the directory if missing.
    pub fn open_dir(dir: &Path, opts: WalOptions) -> Result<Self, WalError> {
        let disk = OsDisk::new(dir).map_err(WalError::io("create directory", &dir.display().to_string()))?;
        Wal::open(disk, opts)
    }
}

impl<D: Disk> Wal<D> {
    /// Opens the log on `disk` (creating an empty one if there is none): replays it, and
    /// repairs, durably, what a crash may have left: a temporary or headerless last segment,
    /// a torn tail of the last segment. Anything else amiss is [`WalError::Corrupt`].
    pub fn open(disk: D, opts: WalOptions) -> Result<Self, WalError> {
        let opened = replay::open(&disk, opts.segment_bytes)?;
        debug!(
            segments = opened.segments.len(),
            first_index = opened.state.snapshot.0.saturating_add(1),
            last_index = opened.state.last_index(),
            "opened the WAL"
        );
        Ok(Wal {
            disk,
            opts,
            segments: opened.segments,
            active: opened.active,
            state: opened.state,
            poisoned: false,
        })
    }

    pub fn hard_state(&self) -> HardState {
        self.state.hard_state
    }

    /// The snapshot point (index, term): the last entry compacted or covered by a snapshot,
    /// (0, 0) for none.
    pub fn snapshot_point(&self) -> (u64, u64) {
        self.state.snapshot
    }

    /// The index of the first entry held (which may not exist yet): snapshot index + 1.
    pub fn first_index(&self) -> u64 {
        self.state.snapshot.0.saturating_add(1)
    }

    /// The index of the last entry, or the snapshot index if there is none.
    pub fn last_index(&self) -> u64 {
        self.state.last_index()
    }

    /// The term of the entry at `index`, or of the snapshot point; `None` if it is compacted
    /// or beyond the last index.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.state.term(index)
    }

    /// The entries in `[low, high)`, as many as fit in `max_bytes` (counting
    /// [`LogEntry::size`]) but at least one if the range is not empty.
    pub fn entries(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Result<Vec<LogEntry>, WalError> {
        if low > high {
            return Err(WalError::InvalidRange { low, high });
        }
        if low < self.first_index() {
            return Err(WalError::Compacted { index: low, first_index: self.first_index() });
        }
        let last_index = self.last_index();
        if high > last_index.saturating_add(1) {
            return Err(WalError::Unavailable { index: high - 1, last_index });
        }
        let mut out = Vec::new();
        let mut size = 0u64;
        for index in low..high {
            let Some(entry) = self.state.entry(index) else { break };
            size = size.saturating_add(entry.size());
            if !out.is_empty() && max_bytes.is_some_and(|max| size > max) {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// Appends `entries` and records `hard_state`, durably (one fdatasync) if anything needed
    /// writing.
    ///
    /// Entries at or below the snapshot point are skipped. The rest must be contiguous and
    /// start at most at `last_index + 1` ([`WalError::Gap`] otherwise); one at or below the
    /// last index replaces the stored entries from there on (a leader overwriting a
    /// conflicting suffix). The hard state is written only if it differs from the current
    /// one.
    pub fn append(&mut self, hard_state: Option<HardState>, entries: &[LogEntry]) -> Result<(), WalError> {
        self.check_writable()?;
        let snapshot_index = self.state.snapshot.0;
        let skip = entries.iter().take_while(|e| e.index <= snapshot_index).count();
        let entries = entries.get(skip..).unwrap_or_default();
        if let Some(first) = entries.first() {
            let expected = self.last_index().saturating_add(1);
            if first.index > expected {
                return Err(WalError::Gap { expected, got: first.index });
            }
        }
        for pair in entries.windows(2) {
            if let [a, b] = pair
                && a.index.checked_add(1) != Some(b.index)
            {
                return Err(WalError::Gap { expected: a.index.saturating_add(1), got: b.index });
            }
        }
        let hard_state = hard_state.filter(|hs| *hs != self.state.hard_state);
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(entries.len() + 1);
        records.extend(hard_state.map(Record::HardState));
        records.extend(entries.iter().map(|e| Record::Entry { index: e.index, term: e.term, data: &e.data }));
        self.write(&records)?;
        if let Some(hs) = hard_state {
            self.state.hard_state = hs;
        }
        for entry in entries {
            self.state.put_entry(entry.clone());
        }
        Ok(())
    }

    /// Compacts the log up to `index` (which must be at most the last index): the snapshot
    /// point becomes `(index, term(index))`, durably, and the segments holding only entries
    /// up to it are deleted. Compacting at or below the current point does nothing.
    pub fn compact(&mut self, index: u64) -> Result<(), WalError> {
        self.check_writable()?;
        if index <= self.state.snapshot.0 {
            return Ok(());
        }
        let last_index = self.last_index();
        let term = self.state.term(index).ok_or(WalError::CompactBeyondLast { index, last_index })?;
        self.write(&[Record::Snapshot { index, term, kind: SnapshotKind::Compact }])?;
        self.state.compact(index, term);
        // The entries still live in the segments before segment j were all written before j
        // was cut, when the log ended just below j's first index: once that is at most
        // `index + 1` they are all compacted, and those segments can go.
        let releasable = (1..self.segments.len())
            .rev()
            .find(|&j| self.segments[j].first_index <= index.saturating_add(1))
            .unwrap_or(0);
        self.release(releasable)
    }

    /// Installs a snapshot point: the log is emptied, the point becomes `(index, term)` and
    /// the commit index rises to at least `index`, durably; then every segment but the active
    /// one is deleted.
    pub fn install_snapshot(&mut self, index: u64, term: u64) -> Result<(), WalError> {
        self.check_writable()?;
        let snapshot_index = self.state.snapshot.0;
        if index < snapshot_index {
            return Err(WalError::SnapshotOutOfDate { index, snapshot_index });
        }
        self.write(&[Record::Snapshot { index, term, kind: SnapshotKind::Install }])?;
        self.state.install(index, term);
        self.release(self.segments.len().saturating_sub(1))
    }

    /// Drops the entries after `index`, durably, and returns how many there were (for
    /// `--force-new-cluster`, which discards what is not known committed). `index` may not be
    /// below the snapshot point.
    pub fn truncate_after(&mut self, index: u64) -> Result<u64, WalError> {
        self.check_writable()?;
        let last_index = self.last_index();
        if index >= last_index {
            return Ok(0);
        }
        if index < self.state.snapshot.0 {
            return Err(WalError::Compacted { index, first_index: self.first_index() });
        }
        self.write(&[Record::TruncateAfter(index)])?;
        self.state.truncate_after(index);
        Ok(last_index - index)
    }

    /// Makes everything written durable. Every write already is when it returns, so this is
    /// only a barrier for callers that want one (on a clean stop, say), and costs nothing
    /// when there is nothing to sync.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_writable()?;
        let result = self.active.sync();
        self.poison_on_error(result)
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_writable(&self) -> Result<(), WalError> {
        if self.poisoned { Err(WalError::Poisoned) } else { Ok(()) }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Writes `records` as one batch and fdatasyncs them, cutting a new segment first if they
    /// do not fit in the active one (and it holds anything but its header).
    fn write(&mut self, records: &[Record<'_>]) -> Result<(), WalError> {
        let mut bytes = Vec::new();
        record::encode_batch(records, &mut bytes)?;
        let result = (|| {
            let fits = self.active.end().saturating_add(bytes.len() as u64) <= self.opts.segment_bytes;
            if !fits && self.active.has_records() {
                self.cut()?;
            }
            self.active.append(&bytes)?;
            self.active.sync()
        })();
        self.poison_on_error(result)
    }

    /// Closes the active segment and starts the next one.
    fn cut(&mut self) -> Result<(), WalError> {
        self.active.sync()?;
        let seq = self.active.info.seq.checked_add(1).ok_or_else(|| {
            WalError::corrupt(&self.active.info.name, 0, "no sequence number left for the next segment")
        })?;
        let header = SegmentHeader {
            seq,
            first_index: self.last_index().saturating_add(1),
            snapshot: self.state.snapshot,
            hard_state: self.state.hard_state,
        };
        let next = segment::create(&self.disk, &header, self.opts.segment_bytes)?;
        debug!(segment = %next.info.name, "cut a new WAL segment");
        self.segments.push(next.info.clone());
        self.active = next;
        Ok(())
    }

    /// Deletes the `count` oldest segments (never the active one), then fsyncs the directory.
    fn release(&mut self, count: usize) -> Result<(), WalError> {
        let count = count.min(self.segments.len().saturating_sub(1));
        if count == 0 {
            return Ok(());
        }
        let result = (|| {
            for _ in 0..count {
                let name = &self.segments[0].name;
                self.disk.remove(name).map_err(WalError::io("remove", name))?;
                info!(segment = %name, "released a WAL segment");
                self.segments.remove(0);
            }
            self.disk.sync_dir().map_err(WalError::io("fsync", "the WAL directory"))
        })();
        self.poison_on_error(result)
    }
}
