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
use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use support::test_flags;

/// An in-memory disk whose writes and flushes start failing when `broken` is set.
#[derive(Debug)]
struct BreakableDisk {
    inner: InMemoryBackend,
    broken: Arc<AtomicBool>,
}

impl BreakableDisk {
    fn check(&self) -> io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(io::Error::other("injected disk failure"))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for BreakableDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.inner.close()
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
    let log = BreakableDisk { inner: InMemoryBackend::new(), broken: broken.clone() };
    let store = Store::open_backends(log, InMemoryBackend::new(), StoreOptions::default()).expect("store");
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
