//! Helpers shared by the integration tests of `kvnode` and `kv-operator`, which both run real
//! kvnode members in process: one place for how tests wait, log, pick ports and tear members
//! down, so the two suites cannot drift apart. A dev-dependency only; nothing here ships.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

/// Logs to the test's captured output; `RUST_LOG` selects (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A loopback address that was free a moment ago (the listener is dropped before returning).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
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
