//! A member whose storage fails stops with a fatal error instead of stalling: no write after
//! the failure is acknowledged, and `RunningMember::failed` (what `kvnode` waits on to exit
//! non-zero) reports why.

mod support;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvnode::member::{self, Listeners};
use kvnode::storage::{Store, StoreOptions};
use kvnode::tls::NodeTls;
use raftkv_testkit::free_addr;
use redb::backends::InMemoryBackend;
use support::test_flags;
use wal::{Disk, DiskFile, MemDisk, MemFile};

/// An in-memory WAL directory whose writes and flushes start failing when `broken` is set.
#[derive(Debug, Clone)]
struct BreakableDisk {
    inner: MemDisk,
    broken: Arc<AtomicBool>,
}

#[derive(Debug)]
struct BreakableFile {
    inner: MemFile,
    broken: Arc<AtomicBool>,
}

fn check(broken: &AtomicBool) -> io::Result<()> {
    if broken.load(Ordering::SeqCst) { Err(io::Error::other("injected disk failure")) } else { Ok(()) }
}

impl Disk for BreakableDisk {
    type File = BreakableFile;

    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str) -> io::Result<BreakableFile> {
        check(&self.broken)?;
        Ok(BreakableFile { inner: self.inner.create(name)?, broken: self.broken.clone() })
    }
    fn open(&self, name: &str) -> io::Result<BreakableFile> {
        Ok(BreakableFile { inner: self.inner.open(name)?, broken: self.broken.clone() })
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.sync_dir()
    }
}

impl DiskFile for BreakableFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.write_at(offset, data)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        check(&self.broken)?;
        self.inner.sync_data()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_log_disk_stops_the_member_with_a_fatal_error() {
    support::init_logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let (c, p, m) = (free_addr(), free_addr(), free_addr());
    let mut flags = test_flags("solo", dir.path(), c, p, m);
    flags.initial_cluster = format!("solo={}", flags.initial_advertise_peer_urls[0]);
    let broken = Arc::new(AtomicBool::new(false));
    let log = BreakableDisk { inner: MemDisk::new(), broken: broken.clone() };
    let options = StoreOptions { wal_segment_bytes: 1 << 20, ..StoreOptions::default() };
    let store = Store::open_backends(log, InMemoryBackend::new(), options).expect("store");
    let tls = NodeTls::from_flags(&flags).expect("plain");
    let listeners = Listeners::bind(&flags).await.expect("bind");
    let running = member::start_on_store(flags, listeners, tls, store).await.expect("starts");
    let mut client = etcd_client::Client::connect([format!("http://{c}")], None).await.expect("connect");
    support::eventually("a leader", || async { running.handle.status().is_leader }).await;
    client.put("before", "1", None).await.expect("written while the disk works");

    broken.store(true, Ordering::SeqCst);
    let put = client.put("after", "1", None).await;
    assert!(put.is_err(), "nothing is acknowledged once the log cannot be written: {put:?}");
    let fatal =
        tokio::time::timeout(Duration::from_secs(10), running.failed()).await.expect("the member failed");
    assert!(fatal.to_string().contains("storage failed"), "{fatal}");
    // The member answers nothing any more rather than serving from a stalled state machine.
    let later = tokio::time::timeout(Duration::from_secs(5), client.put("later", "1", None)).await;
    assert!(!matches!(later, Ok(Ok(_))), "no write acknowledged after the failure: {later:?}");
    running.kill();
}
