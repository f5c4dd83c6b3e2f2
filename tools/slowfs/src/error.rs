//! Error types: one for the requests the kernel sends (each becomes an errno in the reply), one
//! for the program around them (each ends it with a message).

use std::io;
use std::path::PathBuf;

use fuser::Errno;

/// Why one FUSE request failed. The kernel only ever sees [`FsError::errno`]; the text is for
/// the debug log, which says which request and path it was.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The backing filesystem refused the operation; its errno goes back unchanged, so the
    /// program on the mount sees what it would see on the backing directory.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A system call made through rustix failed.
    #[error(transparent)]
    Sys(#[from] rustix::io::Errno),
    /// The kernel named an inode this filesystem never handed out or already forgot.
    #[error("inode {0} is not known")]
    UnknownInode(u64),
    /// The inode's last name was unlinked; only its open handles still reach it.
    #[error("inode {0} has no name any more (unlinked)")]
    Unlinked(u64),
    /// The kernel named a file or directory handle that is not open.
    #[error("handle {0} is not open")]
    UnknownHandle(u64),
}

impl FsError {
    /// The errno the kernel passes on to the program that made the call.
    pub fn errno(&self) -> Errno {
        match self {
            FsError::Io(err) => Errno::from_i32(err.raw_os_error().unwrap_or(libc::EIO)),
            FsError::Sys(err) => Errno::from_i32(err.raw_os_error()),
            FsError::UnknownInode(_) | FsError::Unlinked(_) => Errno::ENOENT,
            FsError::UnknownHandle(_) => Errno::EBADF,
        }
    }
}

/// Why slowfs could not mount, serve or unmount.
#[derive(Debug, thiserror::Error)]
pub enum SlowfsError {
    #[error("backing directory {path}: {source}")]
    Backing { path: PathBuf, source: io::Error },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("give the fsync delay: --fsync-delay-ms or --fsync-delay-us")]
    NoDelay,
    #[error("cannot block SIGTERM/SIGINT/SIGHUP for the signal thread: {0}")]
    Signals(#[source] nix::Error),
    #[error("cannot start the signal thread: {0}")]
    SignalThread(#[source] io::Error),
    #[error("cannot mount on {path} (is /dev/fuse there, and fusermount3 for a non-root user?): {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("the FUSE session ended with an error: {0}")]
    Session(#[source] io::Error),
}
