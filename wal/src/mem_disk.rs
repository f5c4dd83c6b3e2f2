//! [`MemDisk`]: a WAL directory in memory, for simulations of a node and for tests.
//!
//! Names map to shared file contents the way a directory maps names to inodes, so an open
//! file keeps working after it is renamed or removed, as on POSIX.
//!
//! With the `fault-injection` feature (tests only) the disk also models durability: see
//! `CrashMode` and `MemDisk::crash`.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::disk::{Disk, DiskFile};

#[cfg(feature = "fault-injection")]
mod fault;
#[cfg(feature = "fault-injection")]
pub use fault::CrashMode;

/// A file's contents, shared by its names and open handles.
type Node = Arc<Mutex<FileData>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct FileData {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What a power cut would leave of it.
    #[cfg(feature = "fault-injection")]
    log: fault::FileLog,
}

#[derive(Debug, Default)]
struct Dir {
    names: BTreeMap<String, Node>,
    #[cfg(feature = "fault-injection")]
    log: fault::DirLog,
}

/// A WAL directory in memory. Clones share the same files.
///
/// Without `fault-injection` every operation simply succeeds in memory (and `sync_data`
/// and `sync_dir` do nothing), which is what a simulation of a node wants. Use a small
/// `segment_bytes` with it: segments are preallocated in memory too.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    dir: Arc<Mutex<Dir>>,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a mutating operation, failing it if a power cut is due.
    fn mutate(&self) -> io::Result<()> {
        #[cfg(feature = "fault-injection")]
        lock(&self.dir).log.tick()?;
        Ok(())
    }
}

/// An open file of a [`MemDisk`].
#[derive(Debug)]
pub struct MemFile {
    node: Node,
    disk: MemDisk,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
}

impl Disk for MemDisk {
    type File = MemFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.dir).names.keys().cloned().collect())
    }

    fn create(&self, name: &str) -> io::Result<MemFile> {
        self.mutate()?;
        let node = Node::default();
        let mut dir = lock(&self.dir);
        dir.names.insert(name.to_owned(), node.clone());
        #[cfg(feature = "fault-injection")]
        dir.log.created(name, &node);
        Ok(MemFile { node, disk: self.clone() })
    }

    fn open(&self, name: &str) -> io::Result<MemFile> {
        let node = lock(&self.dir).names.get(name).cloned().ok_or_else(|| not_found(name))?;
        Ok(MemFile { node, disk: self.clone() })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.mutate()?;
        let mut dir = lock(&self.dir);
        dir.names.remove(name).ok_or_else(|| not_found(name))?;
        #[cfg(feature = "fault-injection")]
        dir.log.removed(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.mutate()?;
        let mut dir = lock(&self.dir);
        let node = dir.names.remove(from).ok_or_else(|| not_found(from))?;
        dir.names.insert(to.to_owned(), node);
        #[cfg(feature = "fault-injection")]
        dir.log.renamed(from, to);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.mutate()?;
        #[cfg(feature = "fault-injection")]
        lock(&self.dir).log.synced();
        Ok(())
    }
}

impl DiskFile for MemFile {
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.node).data.len() as u64)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let file = lock(&self.node);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.data.len());
        let n = buf.len().min(file.data.len() - start);
        buf[..n].copy_from_slice(&file.data[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.mutate()?;
        let mut file = lock(&self.node);
        write_into(&mut file.data, offset, data)?;
        #[cfg(feature = "fault-injection")]
        file.log.wrote(offset, data);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.disk.mutate()?;
        let mut file = lock(&self.node);
        file.data.resize(to_usize(len)?, 0);
        #[cfg(feature = "fault-injection")]
        file.log.resized(len);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.disk.mutate()?;
        #[cfg(feature = "fault-injection")]
        lock(&self.node).log.synced();
        Ok(())
    }
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

/// Writes `data` at `offset` of `buf`, growing it with zeros as needed.
fn write_into(buf: &mut Vec<u8>, offset: u64, data: &[u8]) -> io::Result<()> {
    let start = to_usize(offset)?;
    let end = start
        .checked_add(data.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_behave_like_posix_ones() {
        let disk = MemDisk::new();
        let mut f = disk.create("a").unwrap();
        f.write_at(3, b"xyz").unwrap();
        assert_eq!(f.len().unwrap(), 6);
        let mut buf = [9; 8];
        assert_eq!(f.read_at(0, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"\0\0\0xyz");
        assert_eq!(f.read_at(6, &mut buf).unwrap(), 0);
        disk.rename("a", "b").unwrap();
        assert_eq!(disk.list().unwrap(), vec!["b".to_owned()]);
        f.set_len(4).unwrap();
        assert_eq!(disk.open("b").unwrap().len().unwrap(), 4);
        assert!(disk.open("a").is_err());
        disk.remove("b").unwrap();
        assert!(disk.list().unwrap().is_empty());
        // The clone shares the directory.
        let other = disk.clone();
        other.create("c").unwrap();
        assert_eq!(disk.list().unwrap(), vec!["c".to_owned()]);
    }
}
