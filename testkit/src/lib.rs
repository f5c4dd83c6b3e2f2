//! Helpers shared by the integration tests of `kvnode` and `kv-operator`, which both run real
//! kvnode members in process: one place for how tests wait, log, pick ports and tear members
//! down, so the two suites cannot drift apart. A dev-dependency only; nothing here ships.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Logs to the test's captured output; `RUST_LOG` selects (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A loopback address that was free a moment ago (the listener is dropped before returning).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A loopback port that was free a moment ago, below the kernel's ephemeral range.
///
/// Why not port 0: the kernel hands ports from its ephemeral range to outgoing connections
/// too, so once a stopped member releases such a port, any client connection on the machine
/// may take it, and the member cannot rebind it on restart. Ports below that range are only
/// ever bound explicitly. Successive calls in one process walk the range from a start drawn
/// from the process id, so concurrent tests in one binary never get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Some((low, high)) = explicit_port_range() else {
        return ephemeral_port();
    };
    let span = high - low;
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(low + offset).expect("range is below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    ephemeral_port()
}

/// Ports from 15000 up to the start of the kernel's ephemeral range (32768 by default), or
/// `None` when that range starts too low to leave room.
fn explicit_port_range() -> Option<(u32, u32)> {
    const LOW: u32 = 15_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32_768);
    (ephemeral_start > LOW + 1_000).then_some((LOW, ephemeral_start.min(65_536)))
}

fn ephemeral_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls `check` every 25 ms until it holds; panics naming `what` after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Shuts a member's runtime down and waits until its tasks are dropped: connection tasks
/// outlive aborted servers and hold the member's store open, and a restart must find the
/// database files released, as after a real process exit. (Runtimes cannot be shut down with
/// a wait from async code, hence the thread.)
pub fn shut_down(rt: tokio::runtime::Runtime) {
    let waiter = std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(10)));
    if waiter.join().is_err() {
        panic!("member runtime shutdown panicked");
    }
}

/// Retries `attempt` every 50 ms until it succeeds; panics naming `what` and the last error
/// after 10 s. For rebinding a restarted member's ports, which the old listener may still hold
/// for a moment.
pub async fn retry<T, E, F, Fut>(what: &str, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
