//! [`DynDisk`]: any [`Disk`] behind one type.
//!
//! A node picks its disk at run time (the real directory, memory for simulations, a disk
//! that fails on purpose in a test), but `Wal<D>` is generic over the disk and `Disk` has an
//! associated file type, so it cannot be a trait object directly. `DynDisk` erases both, so
//! the code that owns a `Wal` names one type. The cost is one virtual call per disk
//! operation, nothing next to the system call behind it.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::disk::{Disk, DiskFile};

/// The object-safe half of [`Disk`]: files come back boxed.
trait ErasedDisk: Send + Sync {
    fn list(&self) -> io::Result<Vec<String>>;
    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>>;
    fn open(&self, name: &str) -> io::Result<Box<dyn DiskFile>>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn sync_dir(&self) -> io::Result<()>;
}

impl<D: Disk> ErasedDisk for D {
    fn list(&self) -> io::Result<Vec<String>> {
        Disk::list(self)
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(Disk::create(self, name)?))
    }
    fn open(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(Disk::open(self, name)?))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        Disk::remove(self, name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Disk::rename(self, from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        Disk::sync_dir(self)
    }
}

/// Any [`Disk`], chosen at run time. Clones share the disk.
#[derive(Clone)]
pub struct DynDisk {
    inner: Arc<dyn ErasedDisk>,
    /// What the disk is, for `Debug` (the erased disk cannot say).
    kind: &'static str,
}

impl DynDisk {
    pub fn new<D: Disk>(disk: D) -> Self {
        DynDisk { inner: Arc::new(disk), kind: std::any::type_name::<D>() }
    }
}

impl fmt::Debug for DynDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DynDisk").field(&self.kind).finish()
    }
}

impl Disk for DynDisk {
    type File = Box<dyn DiskFile>;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> io::Result<Self::File> {
        self.inner.create(name)
    }
    fn open(&self, name: &str) -> io::Result<Self::File> {
        self.inner.open(name)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
}

impl DiskFile for Box<dyn DiskFile> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        (**self).sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogEntry, MemDisk, Wal, WalOptions};

    #[test]
    fn a_wal_on_a_dyn_disk_reopens_with_its_entries() {
        let mem = MemDisk::new();
        let opts = WalOptions { segment_bytes: 4096 };
        let mut wal = Wal::open(DynDisk::new(mem.clone()), opts).expect("open");
        let entries: Vec<LogEntry> =
            (1..=50).map(|index| LogEntry { index, term: 1, data: vec![index as u8; 100] }).collect();
        for entry in &entries {
            wal.append(None, std::slice::from_ref(entry)).expect("append");
        }
        drop(wal);
        let wal = Wal::open(DynDisk::new(mem), opts).expect("reopen");
        assert_eq!(wal.entries(1, 51, None).expect("entries"), entries);
        assert!(wal.segment_count() > 1, "several segments were cut");
    }
}
