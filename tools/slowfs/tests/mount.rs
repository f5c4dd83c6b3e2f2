//! Mounts slowfs on a temporary directory and checks that what is done through the mount lands
//! in the backing directory, that a flush waits at least the configured delay, and that
//! SIGTERM unmounts it.
//!
//! Needs /dev/fuse (and fusermount3 unless root). Without them the test is skipped with a
//! message, unless RAFTKV_REQUIRE_FUSE=1 (CI's scripts/test.sh), where it fails instead.

use std::fs::Permissions;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The delay under test; large enough to stand out from a real fdatasync on any disk CI has.
const DELAY: Duration = Duration::from_millis(20);

/// Why FUSE cannot be used here, if it cannot.
fn fuse_unavailable() -> Option<String> {
    if let Err(err) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        return Some(format!("/dev/fuse cannot be opened: {err}"));
    }
    let root = rustix::process::geteuid().is_root();
    let fusermount = Command::new("fusermount3").arg("-V").output().is_ok();
    if !root && !fusermount {
        return Some("not root and no fusermount3 on PATH (Debian package fuse3)".into());
    }
    None
}

fn is_mounted(mount: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else { return false };
    let want = mount.to_string_lossy();
    mounts.lines().any(|line| line.split(' ').nth(1) == Some(&*want))
}

/// The running slowfs; dropping it unmounts, so a failed assertion leaves no mount behind.
struct Mounted {
    child: Option<Child>,
    mount: PathBuf,
}

impl Mounted {
    fn start(backing: &Path, mount: &Path) -> Mounted {
        let child = Command::new(env!("CARGO_BIN_EXE_slowfs"))
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .arg("--fsync-delay-us")
            .arg(DELAY.as_micros().to_string())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start slowfs");
        let mut guard = Mounted { child: Some(child), mount: mount.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(mount) {
            if let Some(child) = guard.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                guard.child = None;
                panic!("slowfs exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "slowfs did not mount {} within 10 s", mount.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        guard
    }

    /// SIGTERM, then the exit status once slowfs has unmounted.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.mount) {
            // slowfs did not unmount (killed, or stuck): the documented fallback.
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mount).status();
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut data)).expect("read");
    data
}

fn timed(what: &str, f: impl FnOnce() -> std::io::Result<()>) {
    let start = Instant::now();
    f().unwrap_or_else(|err| panic!("{what}: {err}"));
    let took = start.elapsed();
    assert!(took >= DELAY, "{what} took {took:?} through the mount, less than the {DELAY:?} delay");
    eprintln!("{what} through slowfs: {took:?} (delay {DELAY:?})");
}

#[test]
fn passes_operations_through_and_delays_flushes() {
    if let Some(why) = fuse_unavailable() {
        if std::env::var("RAFTKV_REQUIRE_FUSE").as_deref() == Ok("1") {
            panic!("RAFTKV_REQUIRE_FUSE=1 but FUSE is unavailable: {why}");
        }
        eprintln!("SKIPPED: slowfs mount test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let backing = tmp.path().join("backing");
    let mount = tmp.path().join("mnt");
    fs::create_dir_all(&backing).expect("backing dir");
    fs::create_dir_all(&mount).expect("mount dir");
    fs::write(backing.join("before"), b"was there").expect("seed file");
    let mut slowfs = Mounted::start(&backing, &mount);

    // Contents already in the backing dir are visible.
    assert_eq!(read(&mount.join("before")), b"was there");

    // Create, write, read back; the bytes are in the backing file.
    let mut f = File::create(mount.join("a")).expect("create");
    f.write_all(b"hello slowfs").expect("write");
    f.write_all_at(b"H", 0).expect("pwrite");
    drop(f);
    assert_eq!(read(&mount.join("a")), b"Hello slowfs");
    assert_eq!(read(&backing.join("a")), b"Hello slowfs");

    // etcd's WAL pattern: a temp dir with a file in it, renamed into place.
    fs::create_dir(mount.join("wal.tmp")).expect("mkdir");
    fs::write(mount.join("wal.tmp/0.wal"), b"record").expect("write in new dir");
    fs::rename(mount.join("wal.tmp"), mount.join("wal")).expect("rename dir");
    assert_eq!(read(&mount.join("wal/0.wal")), b"record");
    assert_eq!(read(&backing.join("wal/0.wal")), b"record");
    assert!(!backing.join("wal.tmp").exists());

    // A file renamed over another replaces it.
    fs::rename(mount.join("a"), mount.join("before")).expect("rename file over file");
    assert_eq!(read(&backing.join("before")), b"Hello slowfs");
    assert!(!backing.join("a").exists());

    // Truncate by path and by handle, shrinking and growing; preallocation.
    let f = OpenOptions::new().read(true).write(true).open(mount.join("before")).expect("open rw");
    f.set_len(5).expect("ftruncate shrink");
    assert_eq!(read(&backing.join("before")), b"Hello");
    f.set_len(4096).expect("ftruncate grow");
    assert_eq!(fs::metadata(backing.join("before")).expect("stat").len(), 4096);
    assert_eq!(fs::metadata(mount.join("before")).expect("stat").len(), 4096);
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 1 << 20).expect("fallocate");
    assert_eq!(fs::metadata(backing.join("before")).expect("stat").len(), 1 << 20);
    drop(f);
    nix::unistd::truncate(&mount.join("before"), 3).expect("truncate by path");
    assert_eq!(read(&backing.join("before")), b"Hel");
    fs::set_permissions(mount.join("before"), Permissions::from_mode(0o600)).expect("chmod");
    let mode = fs::metadata(backing.join("before")).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A directory listing matches the backing dir.
    let mut names: Vec<String> = fs::read_dir(&mount)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["before", "wal"]);

    // Flushes: fdatasync, fsync and a directory fsync each wait at least the delay.
    let mut f = OpenOptions::new().create(true).append(true).open(mount.join("wal/1.wal")).expect("open");
    f.write_all(b"entry").expect("append");
    timed("fdatasync", || f.sync_data());
    f.write_all(b"entry").expect("append");
    timed("fsync", || f.sync_all());
    timed("fsync of a directory", || File::open(mount.join("wal"))?.sync_all());
    assert_eq!(read(&backing.join("wal/1.wal")), b"entryentry");

    // A file unlinked while open still serves its handle, as on the backing filesystem.
    fs::remove_file(mount.join("wal/1.wal")).expect("unlink open file");
    assert!(!backing.join("wal/1.wal").exists());
    f.write_all(b"more").expect("write to unlinked file");
    drop(f);

    // Deletes.
    fs::remove_file(mount.join("wal/0.wal")).expect("unlink");
    fs::remove_dir(mount.join("wal")).expect("rmdir");
    fs::remove_file(mount.join("before")).expect("unlink");
    assert_eq!(fs::read_dir(&backing).expect("readdir backing").count(), 0);

    // SIGTERM unmounts cleanly.
    let status = slowfs.stop().expect("slowfs did not exit within 10 s of SIGTERM");
    assert!(status.success(), "slowfs exited with {status}");
    assert!(!is_mounted(&mount), "{} still mounted after SIGTERM", mount.display());
}
