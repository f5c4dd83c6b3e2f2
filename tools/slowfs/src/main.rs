//! slowfs: a passthrough FUSE filesystem whose fsync costs a set time.
//!
//! Cloud volumes answer a flush in milliseconds, a local NVMe disk in tens of microseconds; a
//! benchmark on the latter hides what batching of syncs is worth. This kernel has no
//! device-mapper (dm-delay), but FUSE works, so slowfs mounts a backing directory elsewhere and
//! passes every operation through, doing each fsync/fdatasync/fsyncdir for real and then
//! waiting `--fsync-delay-ms` before answering. Both systems under test pay the same FUSE
//! round trip on every I/O and the same delay on every flush (see BENCHMARKS.md).
//!
//! Usage: `slowfs --backing DIR --mount DIR --fsync-delay-ms 2`. It serves until SIGTERM,
//! SIGINT or SIGHUP, then unmounts (lazily if the mount is still busy) and exits. If it was
//! killed with SIGKILL, `fusermount3 -u DIR` (or `umount -l DIR` as root) removes the mount.

mod error;
mod fs;
mod inodes;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fuser::{Config, MountOption, Session, SessionUnmounter};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use crate::error::SlowfsError;
use crate::fs::SlowFs;

#[derive(Debug, Parser)]
#[command(name = "slowfs", about = "Passthrough FUSE filesystem that delays every fsync by a set time")]
struct Args {
    /// Directory whose contents are served (where the data really lives).
    #[arg(long)]
    backing: PathBuf,
    /// Empty directory to mount on.
    #[arg(long)]
    mount: PathBuf,
    /// Delay added after every fsync, fdatasync and directory fsync, in milliseconds.
    #[arg(long, conflicts_with = "fsync_delay_us")]
    fsync_delay_ms: Option<u64>,
    /// The delay in microseconds, for delays below a millisecond.
    #[arg(long)]
    fsync_delay_us: Option<u64>,
    /// FUSE request threads (each with its own /dev/fuse fd). etcd and raftkv have several
    /// files in flight at once; one thread would serialise their I/O. The delays do not
    /// occupy these threads (see fs.rs).
    #[arg(long, default_value_t = 4)]
    threads: usize,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), SlowfsError> {
    let delay = match (args.fsync_delay_ms, args.fsync_delay_us) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, Some(us)) => Duration::from_micros(us),
        (None, None) => return Err(SlowfsError::NoDelay),
    };
    let backing = std::fs::canonicalize(&args.backing)
        .map_err(|source| SlowfsError::Backing { path: args.backing.clone(), source })?;
    if !backing.is_dir() {
        return Err(SlowfsError::NotADirectory(backing));
    }
    // Modes given by create and mkdir already had the caller's umask taken off; slowfs's own
    // must not take more.
    rustix::process::umask(rustix::fs::Mode::empty());

    // Blocked before any thread starts, so every thread inherits the mask and only the signal
    // thread below ever sees these signals.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block().map_err(SlowfsError::Signals)?;

    let fs = SlowFs::new(backing.clone(), delay).map_err(SlowfsError::SignalThread)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("slowfs:{}", backing.display())),
        MountOption::Subtype("slowfs".into()),
        MountOption::RW,
        MountOption::NoAtime,
    ];
    config.n_threads = Some(args.threads.max(1));
    config.clone_fd = true;
    let mut session = Session::new(fs, &args.mount, &config)
        .map_err(|source| SlowfsError::Mount { path: args.mount.clone(), source })?;
    info!(backing = %backing.display(), mount = %args.mount.display(), ?delay, "mounted");

    let unmounter = session.unmount_callable();
    let mount = args.mount.clone();
    std::thread::Builder::new()
        .name("slowfs-signals".into())
        .spawn(move || wait_and_unmount(signals, unmounter, &mount))
        .map_err(SlowfsError::SignalThread)?;

    // Returns once the mount is gone: /dev/fuse then reads as ENODEV on every thread.
    session.run().map_err(SlowfsError::Session)?;
    info!("unmounted");
    Ok(())
}

/// Waits for a stop signal, then unmounts, which ends the session. A member still holding
/// files open makes a plain unmount fail with EBUSY; then the mount is detached (it goes once
/// its last file is closed) so slowfs still exits and the mount point is usable again.
fn wait_and_unmount(signals: SigSet, mut unmounter: SessionUnmounter, mount: &Path) {
    match signals.wait() {
        Ok(signal) => info!(?signal, "unmounting"),
        Err(err) => warn!(%err, "waiting for signals failed; unmounting"),
    }
    if let Err(err) = unmounter.unmount() {
        warn!(%err, "unmount failed; detaching the mount instead");
        if let Err(err) = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH) {
            error!(%err, "detaching failed too; run fusermount3 -u {}", mount.display());
        }
    }
}
