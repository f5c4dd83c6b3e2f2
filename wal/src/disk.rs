//! The WAL's view of a directory, and the real one over `std::fs`.
//!
//! The WAL needs little of a file system: a flat directory of named files, positional reads
//! and writes, `set_len`, `fdatasync`, and a durable rename. Putting that behind a trait lets
//! the crash tests run the real code against [`crate::MemDisk`], which can cut the power
//! after any operation and show what a disk would hold afterwards.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A flat directory holding the WAL's files.
///
/// Directory changes (`create`, `remove`, `rename`) are durable only after `sync_dir`, as on
/// a POSIX file system.
pub trait Disk: Send + Sync + 'static {
    type File: DiskFile;

    /// The names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` empty (truncating it if it exists), open for reading and writing.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes the directory changes so far durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
}

/// An open file of a [`Disk`].
pub trait DiskFile: Send + Sync {
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads at `offset`; returns how many bytes were read (0 at the end of the file).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's data, and the metadata needed to read it, durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Reads a whole file.
pub(crate) fn read_all<F: DiskFile>(file: &F) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large for memory"))?;
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        match file.read_at(done as u64, &mut buf[done..])? {
            0 => break, // shorter than it said; what is missing reads as zeros
            n => done += n,
        }
    }
    Ok(buf)
}

/// The WAL directory on the real file system.
#[derive(Debug, Clone)]
pub struct OsDisk {
    dir: PathBuf,
}

impl OsDisk {
    /// The directory `dir`, created (with its parents) if missing. A directory created here
    /// is made durable in its parent, so a power cut cannot lose the whole log with it.
    pub fn new(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(&dir)?;
        for created in &missing {
            let parent = created.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            sync_dir(parent)?;
        }
        Ok(OsDisk { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Disk for OsDisk {
    type File = OsFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<OsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        Ok(OsFile { file })
    }

    fn open(&self, name: &str) -> io::Result<OsFile> {
        Ok(OsFile { file: OpenOptions::new().read(true).write(true).open(self.dir.join(name))? })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        sync_dir(&self.dir)
    }
}

/// fsyncs a directory, making the creation, removal and renaming of its entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file of an [`OsDisk`].
#[derive(Debug)]
pub struct OsFile {
    file: File,
}

impl DiskFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}
