//! The passthrough filesystem: every request is carried out on the backing directory; fsync
//! and fsyncdir also wait the configured delay before they are answered.
//!
//! File I/O goes through the backing file opened at open/create time (so a file that is renamed
//! or unlinked while open behaves as on the backing filesystem); metadata operations go through
//! the backing path the inode table holds.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::error::FsError;
use crate::inodes::Inodes;

/// How long the kernel may cache entries and attributes. Nothing but this mount changes the
/// backing directory while it is mounted, so a second saves a getattr round trip per stat
/// without ever serving stale data.
const TTL: Duration = Duration::from_secs(1);

/// One open directory: its listing taken at opendir, so that readdir's offsets stay valid
/// while entries are created and removed, and its fd, which fsyncdir syncs.
struct DirHandle {
    file: File,
    entries: Vec<(u64, FileType, OsString)>,
}

/// An fsync that is done on the backing file and waits to be answered.
type Pending = (Instant, ReplyEmpty);

/// The filesystem served over FUSE.
pub struct SlowFs {
    root: PathBuf,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_handle: AtomicU64,
    delay: Duration,
    /// Synced requests go to one thread that answers each when its delay is over. Every
    /// delay is the same, so deadlines arrive in order and a FIFO queue is enough; the FUSE
    /// worker threads never sleep, so reads and writes are not held up behind a delayed sync
    /// (a real disk also serves other I/O while a flush is in flight).
    delayed: Mutex<mpsc::Sender<Pending>>,
}

impl SlowFs {
    /// Serves `root` (an absolute, canonical directory), delaying each fsync by `delay`.
    pub fn new(root: PathBuf, delay: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new().name("slowfs-delay".into()).spawn(move || {
            for (deadline, reply) in rx {
                let now = Instant::now();
                if deadline > now {
                    std::thread::sleep(deadline - now);
                }
                reply.ok();
            }
        })?;
        Ok(SlowFs {
            inodes: Mutex::new(Inodes::new(root.clone())),
            root,
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            delay,
            delayed: Mutex::new(tx),
        })
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, FsError> {
        self.inodes.lock().path(ino.0)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, FsError> {
        self.inodes.lock().child(parent.0, name)
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, FsError> {
        self.files.lock().get(&fh.0).cloned().ok_or(FsError::UnknownHandle(fh.0))
    }

    fn new_handle(&self) -> u64 {
        self.next_handle.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a kernel lookup of `path` (which exists, as `meta` shows) and builds its entry.
    fn entry(&self, path: PathBuf, meta: &fs::Metadata) -> FileAttr {
        let ino = self.inodes.lock().remember(path);
        attr(ino, meta)
    }

    /// Answers a synced request once the delay is over (at once if there is none).
    fn reply_delayed(&self, reply: ReplyEmpty) {
        if self.delay.is_zero() {
            reply.ok();
            return;
        }
        let deadline = Instant::now() + self.delay;
        if let Err(mpsc::SendError((_, reply))) = self.delayed.lock().send((deadline, reply)) {
            // The delay thread is gone (it only ends when the process does); answer late
            // rather than never, so the caller does not hang.
            warn!("delay thread gone, sleeping on the request thread");
            std::thread::sleep(self.delay);
            reply.ok();
        }
    }

    /// Applies a setattr: mode, then owner (uid, gid), size, and times (atime, mtime).
    fn do_setattr(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        mode: Option<u32>,
        (uid, gid): (Option<u32>, Option<u32>),
        size: Option<u64>,
        (atime, mtime): (Option<TimeOrNow>, Option<TimeOrNow>),
    ) -> Result<FileAttr, FsError> {
        let open = fh.and_then(|fh| self.files.lock().get(&fh.0).cloned());
        // An unlinked file can only be reached through its handle; otherwise the path serves.
        let path = if open.is_some() { None } else { Some(self.path(ino)?) };
        let handle = |write: bool| -> Result<Arc<File>, FsError> {
            match (&open, &path) {
                (Some(file), _) => Ok(file.clone()),
                (None, Some(path)) => Ok(Arc::new(OpenOptions::new().read(!write).write(write).open(path)?)),
                (None, None) => Err(FsError::UnknownInode(ino.0)),
            }
        };
        if let Some(mode) = mode {
            handle(false)?.set_permissions(Permissions::from_mode(mode))?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(handle(false)?.as_ref(), uid, gid)?;
        }
        if let Some(size) = size {
            handle(true)?.set_len(size)?;
        }
        if atime.is_some() || mtime.is_some() {
            let mut times = FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(time_of(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(time_of(t));
            }
            handle(false)?.set_times(times)?;
        }
        let meta = match (&open, &path) {
            (Some(file), _) => file.metadata()?,
            (None, Some(path)) => fs::symlink_metadata(path)?,
            (None, None) => return Err(FsError::UnknownInode(ino.0)),
        };
        Ok(attr(ino.0, &meta))
    }

    /// Removes entry `name` of `parent` (a directory if `dir`); its inode loses its name.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), FsError> {
        let path = self.child(parent, name)?;
        if dir {
            fs::remove_dir(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        self.inodes.lock().unlinked(&path);
        Ok(())
    }

    fn do_rename(&self, from: &Path, to: &Path, flags: RenameFlags) -> Result<(), FsError> {
        if flags.is_empty() {
            fs::rename(from, to)?;
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                from,
                rustix::fs::CWD,
                to,
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )?;
        }
        let mut inodes = self.inodes.lock();
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            inodes.exchanged(from, to);
        } else {
            inodes.renamed(from, to);
        }
        Ok(())
    }

    fn do_opendir(&self, ino: INodeNo) -> Result<u64, FsError> {
        let path = self.path(ino)?;
        let file = File::open(&path)?;
        let parent_ino = fs::metadata(path.parent().unwrap_or(&path))?.ino();
        let mut entries = vec![
            (file.metadata()?.ino(), FileType::Directory, OsString::from(".")),
            (parent_ino, FileType::Directory, OsString::from("..")),
        ];
        for entry in fs::read_dir(&path)? {
            let entry = entry?;
            let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
            entries.push((entry.ino(), kind, entry.file_name()));
        }
        let fh = self.new_handle();
        self.dirs.lock().insert(fh, Arc::new(DirHandle { file, entries }));
        Ok(fh)
    }

    fn do_read(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let file = self.file(fh)?;
        let mut buf = vec![0; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH.checked_sub(Duration::new(secs.unsigned_abs(), 0)).unwrap_or(UNIX_EPOCH)
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// The backing file's attributes under FUSE inode number `ino`.
fn attr(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino: INodeNo(ino),
        size: meta.size(),
        blocks: meta.blocks(),
        atime: system_time(meta.atime(), meta.atime_nsec()),
        mtime: system_time(meta.mtime(), meta.mtime_nsec()),
        ctime: system_time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// The backing file's open options for the kernel's open flags.
///
/// Only the access mode and O_TRUNC are passed on. O_DIRECT is dropped: the kernel has
/// already split and aligned the I/O and hands it over in plain buffers, which the backing
/// file would refuse under O_DIRECT. O_APPEND is dropped because the kernel sends every write
/// with its offset already at the end. O_CREAT/O_EXCL were handled by lookup/create. O_SYNC
/// and O_DSYNC are kept, so such a file's writes stay durable on the backing disk (the kernel
/// also sends an fsync after each such write, which is where the delay comes in).
fn open_options(flags: i32) -> OpenOptions {
    let mut opts = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => opts.write(true),
        libc::O_RDWR => opts.read(true).write(true),
        _ => opts.read(true),
    };
    if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
        opts.truncate(true);
    }
    opts.custom_flags(flags & (libc::O_SYNC | libc::O_DSYNC));
    opts
}

/// Answers a request that returns nothing but success or an errno.
fn answer(reply: ReplyEmpty, op: &str, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(failed(op, &err)),
    }
}

/// Logs a failed request at debug level (ENOENT from lookup is routine) and gives its errno.
fn failed(op: &str, err: &FsError) -> fuser::Errno {
    debug!(op, %err, "request failed");
    err.errno()
}

impl Filesystem for SlowFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.child(parent, name).and_then(|path| {
            let meta = fs::symlink_metadata(&path)?;
            Ok(self.entry(path, &meta))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(failed("lookup", &err)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let open = fh.and_then(|fh| self.files.lock().get(&fh.0).cloned());
        let meta = match open {
            Some(file) => file.metadata().map_err(FsError::from),
            None => self.path(ino).and_then(|p| fs::symlink_metadata(p).map_err(FsError::from)),
        };
        match meta {
            Ok(meta) => reply.attr(&TTL, &attr(ino.0, &meta)),
            Err(err) => reply.error(failed("getattr", &err)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.do_setattr(ino, fh, mode, (uid, gid), size, (atime, mtime)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(err) => reply.error(failed("setattr", &err)),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let result = self.child(parent, name).and_then(|path| {
            DirBuilder::new().mode(mode & !umask).create(&path)?;
            let meta = fs::symlink_metadata(&path)?;
            Ok(self.entry(path, &meta))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(err) => reply.error(failed("mkdir", &err)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, "unlink", self.remove(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(reply, "rmdir", self.remove(parent, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .child(parent, name)
            .and_then(|from| Ok((from, self.child(newparent, newname)?)))
            .and_then(|(from, to)| self.do_rename(&from, &to, flags));
        answer(reply, "rename", result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.path(ino).and_then(|path| Ok(open_options(flags.0).open(path)?));
        match result {
            Ok(file) => {
                let fh = self.new_handle();
                self.files.lock().insert(fh, Arc::new(file));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(err) => reply.error(failed("open", &err)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.child(parent, name).and_then(|path| {
            let mut opts = open_options(flags);
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // create(2) with O_RDONLY still creates; the backing open needs write access
                // to be allowed to.
                opts.write(true);
            }
            opts.create(true).create_new(flags & libc::O_EXCL != 0).mode(mode & !umask);
            let file = opts.open(&path)?;
            let meta = file.metadata()?;
            Ok((self.entry(path, &meta), file))
        });
        match result {
            Ok((attr, file)) => {
                let fh = self.new_handle();
                self.files.lock().insert(fh, Arc::new(file));
                reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty());
            }
            Err(err) => reply.error(failed("create", &err)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.do_read(fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(failed("read", &err)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.file(fh).and_then(|file| Ok(file.write_all_at(data, offset)?));
        match (result, u32::try_from(data.len())) {
            (Ok(()), Ok(len)) => reply.written(len),
            (Ok(()), Err(_)) => reply.error(fuser::Errno::EIO),
            (Err(err), _) => reply.error(failed("write", &err)),
        }
    }

    /// Nothing is buffered here (every write went to the backing file), so close has nothing
    /// to flush.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.file(fh) {
            Ok(_) => reply.ok(),
            Err(err) => reply.error(failed("flush", &err)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().remove(&fh.0);
        reply.ok();
    }

    /// The point of slowfs: the real fsync/fdatasync on the backing file, then the delay.
    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let result = self.file(fh).and_then(|file| {
            if datasync {
                file.sync_data()?
            } else {
                file.sync_all()?
            }
            Ok(())
        });
        match result {
            Ok(()) => self.reply_delayed(reply),
            Err(err) => reply.error(failed("fsync", &err)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.do_opendir(ino) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(err) => reply.error(failed("opendir", &err)),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(dir) = self.dirs.lock().get(&fh.0).cloned() else {
            reply.error(failed("readdir", &FsError::UnknownHandle(fh.0)));
            return;
        };
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in dir.entries.iter().enumerate().skip(skip) {
            // The offset of an entry is where the next readdir resumes.
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    /// A directory sync (etcd's and redb's after creating or renaming files) is a flush too.
    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let result = match self.dirs.lock().get(&fh.0).cloned() {
            Some(dir) if datasync => dir.file.sync_data().map_err(FsError::from),
            Some(dir) => dir.file.sync_all().map_err(FsError::from),
            None => Err(FsError::UnknownHandle(fh.0)),
        };
        match result {
            Ok(()) => self.reply_delayed(reply),
            Err(err) => reply.error(failed("fsyncdir", &err)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                u32::try_from(s.f_namemax).unwrap_or(255),
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(err) => reply.error(failed("statfs", &FsError::from(err))),
        }
    }

    /// Without default_permissions the kernel asks here; the mount is its owner's alone (no
    /// allow_other), and the backing directory's own permissions still apply to every call.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    /// Extended attributes are not passed through: neither system uses them. ENOSYS (rather
    /// than an error per call) makes the kernel stop asking, which matters because it asks for
    /// `security.capability` before every write.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(fuser::Errno::ENOSYS);
    }

    /// etcd preallocates its WAL segments; passing fallocate on keeps that allocation real.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.file(fh).and_then(|file| {
            let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
            Ok(rustix::fs::fallocate(file.as_ref(), flags, offset, length)?)
        });
        answer(reply, "fallocate", result);
    }
}
