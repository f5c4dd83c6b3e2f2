//! The crash model of [`MemDisk`] (feature `fault-injection`, for tests only).
//!
//! What survives a power cut, as the WAL must assume of a POSIX file system:
//! - a file's data as of its last `sync_data`, and, at most, any part of what was written
//!   since, in 512-byte sectors (a disk writes sectors, in any order);
//! - the directory (which names exist, and which file each names) as of the last
//!   `sync_dir`, and, at most, a prefix of the changes made since (file systems journal
//!   directory changes in order).
//!
//! [`CrashMode::Durable`] keeps only what was made durable; [`CrashMode::Harsh`] adds a
//! seeded random share of the rest, so that the WAL sees torn and reordered writes.

use std::collections::BTreeMap;
use std::io;

use super::{Dir, FileData, MemDisk, Node, lock, write_into};

/// What a power cut leaves of the writes that were not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: the disk holds exactly what `sync_data` and `sync_dir` made durable.
    Durable,
    /// A random subset, chosen from `seed`: each pending write is lost, kept, or torn (some of
    /// its 512-byte sectors kept); each pending `set_len` is lost or kept; a random prefix of
    /// the pending directory changes is kept.
    Harsh { seed: u64 },
}

impl MemDisk {
    /// Cuts the power at the `n`-th mutating operation from now (0 is the next one): that
    /// operation and every later one fail with an I/O error and change nothing. Mutating
    /// operations are `write_at`, `set_len`, `sync_data`, `create`, `remove`, `rename` and
    /// `sync_dir`.
    pub fn fail_after(&self, n: u64) {
        lock(&self.dir).log.fail_in = Some(n);
    }

    /// How many mutating operations have succeeded on this disk.
    pub fn mutating_ops(&self) -> u64 {
        lock(&self.dir).log.ops
    }

    /// The disk as a restart after a power cut now would find it: a new, independent
    /// `MemDisk` with no power cut pending.
    pub fn crash(&self, mode: CrashMode) -> MemDisk {
        let mut rng = match mode {
            CrashMode::Durable => None,
            CrashMode::Harsh { seed } => Some(SplitMix64(seed)),
        };
        let dir = lock(&self.dir);
        let mut names = dir.log.durable.clone();
        if let Some(rng) = rng.as_mut() {
            let kept = rng.below(dir.log.pending.len() as u64 + 1) as usize;
            for op in &dir.log.pending[..kept] {
                op.apply(&mut names);
            }
        }
        let mut after = Dir::default();
        for (name, node) in names {
            let data = lock(&node).log.after_crash(rng.as_mut());
            let node = Node::new(
                FileData { data: data.clone(), log: FileLog { durable: data, pending: Vec::new() } }.into(),
            );
            after.log.durable.insert(name.clone(), node.clone());
            after.names.insert(name, node);
        }
        MemDisk { dir: std::sync::Arc::new(after.into()) }
    }
}

/// splitmix64: a tiny seeded generator, so the crash model needs no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A directory change not yet made durable by `sync_dir`.
#[derive(Debug)]
enum DirOp {
    Create(String, Node),
    Remove(String),
    Rename(String, String),
}

impl DirOp {
    fn apply(&self, names: &mut BTreeMap<String, Node>) {
        match self {
            DirOp::Create(name, node) => {
                names.insert(name.clone(), node.clone());
            }
            DirOp::Remove(name) => {
                names.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(node) = names.remove(from) {
                    names.insert(to.clone(), node);
                }
            }
        }
    }
}

/// The directory's durable state, its pending changes and the power-cut trigger.
#[derive(Debug, Default)]
pub(super) struct DirLog {
    durable: BTreeMap<String, Node>,
    pending: Vec<DirOp>,
    pub(super) ops: u64,
    pub(super) fail_in: Option<u64>,
}

impl DirLog {
    pub(super) fn tick(&mut self) -> io::Result<()> {
        match self.fail_in {
            Some(0) => return Err(io::Error::other("power cut (injected)")),
            Some(n) => self.fail_in = Some(n - 1),
            None => {}
        }
        self.ops += 1;
        Ok(())
    }

    pub(super) fn created(&mut self, name: &str, node: &Node) {
        self.pending.push(DirOp::Create(name.to_owned(), node.clone()));
    }

    pub(super) fn removed(&mut self, name: &str) {
        self.pending.push(DirOp::Remove(name.to_owned()));
    }

    pub(super) fn renamed(&mut self, from: &str, to: &str) {
        self.pending.push(DirOp::Rename(from.to_owned(), to.to_owned()));
    }

    pub(super) fn synced(&mut self) {
        for op in self.pending.drain(..) {
            op.apply(&mut self.durable);
        }
    }
}

/// A file change not yet made durable by `sync_data`.
#[derive(Debug)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file's durable contents and the changes made since.
#[derive(Debug, Default)]
pub(super) struct FileLog {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

const SECTOR: u64 = 512;

impl FileLog {
    pub(super) fn wrote(&mut self, offset: u64, data: &[u8]) {
        self.pending.push(FileOp::Write { offset, data: data.to_vec() });
    }

    pub(super) fn resized(&mut self, len: u64) {
        self.pending.push(FileOp::SetLen(len));
    }

    pub(super) fn synced(&mut self) {
        for op in std::mem::take(&mut self.pending) {
            apply(&mut self.durable, &op, None);
        }
    }

    /// The contents after a power cut: the durable ones, plus (with `rng`) some of the rest.
    fn after_crash(&self, rng: Option<&mut SplitMix64>) -> Vec<u8> {
        let mut data = self.durable.clone();
        if let Some(rng) = rng {
            for op in &self.pending {
                match (op, rng.below(4)) {
                    (_, 0) => {}
                    (FileOp::Write { .. }, 1) => apply(&mut data, op, Some(rng)),
                    (FileOp::SetLen(_), 1) => {}
                    _ => apply(&mut data, op, None),
                }
            }
        }
        data
    }
}

/// Applies `op` to `data`; with `torn`, a write keeps only a random subset of its sectors.
fn apply(data: &mut Vec<u8>, op: &FileOp, mut torn: Option<&mut SplitMix64>) {
    match op {
        FileOp::SetLen(len) => data.resize(usize::try_from(*len).unwrap_or(usize::MAX), 0),
        FileOp::Write { offset, data: bytes } => {
            let end = offset + bytes.len() as u64;
            let mut start = *offset;
            while start < end {
                let sector_end = ((start / SECTOR + 1) * SECTOR).min(end);
                if torn.as_deref_mut().is_none_or(|rng| rng.below(2) == 0) {
                    let chunk = &bytes[(start - offset) as usize..(sector_end - offset) as usize];
                    // Offsets were valid when written, so this cannot fail.
                    let _ = write_into(data, start, chunk);
                }
                start = sector_end;
            }
        }
    }
}
