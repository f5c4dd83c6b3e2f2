//! `kvbench wait-ready`: polls members until each answers a get, for cluster start-up and for
//! timing a restart ("how long until a member holding N keys serves again").
//!
//! Each attempt uses a fresh connection with short timeouts, so a member that is still
//! starting costs one refused connect, not a stuck channel, and the measured time is within
//! one poll interval of the first moment the member could answer.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};

use crate::conn::url;
use crate::error::BenchError;

/// What counts as "ready".
#[derive(Debug, Clone)]
pub struct Probe {
    /// The key to read; when set, the read must find it (the member has its data back).
    pub key: Option<Vec<u8>>,
    /// Read linearizably (needs an elected leader) instead of serializably (local state only).
    pub linearizable: bool,
    /// Time between attempts.
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

/// Waits until every endpoint answers; returns the time it took.
pub async fn wait_all(endpoints: &[String], probe: &Probe) -> Result<Duration, BenchError> {
    if endpoints.is_empty() {
        return Err(BenchError::Config("no endpoints given".into()));
    }
    let started = Instant::now();
    let mut pending: Vec<&String> = endpoints.iter().collect();
    let mut last_error = String::from("no attempt made");
    while !pending.is_empty() {
        let mut still = Vec::new();
        for endpoint in pending {
            match attempt(endpoint, probe).await {
                Ok(()) => {}
                Err(e) => {
                    last_error = format!("{endpoint}: {e}");
                    still.push(endpoint);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if started.elapsed() >= probe.timeout {
            return Err(BenchError::NotReady { waited: started.elapsed(), last_error });
        }
        tokio::time::sleep(probe.interval).await;
    }
    Ok(started.elapsed())
}

async fn attempt(endpoint: &str, probe: &Probe) -> Result<(), BenchError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    let mut client = Client::connect([url(endpoint)], Some(options)).await?;
    let key = probe.key.clone().unwrap_or_else(|| b"kvbench-ready-probe".to_vec());
    let get = (!probe.linearizable).then(|| GetOptions::new().with_serializable());
    let resp = client.get(key, get).await?;
    if probe.key.is_some() && resp.kvs().is_empty() {
        return Err(BenchError::Unexpected("the probe key is not there yet".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_up_on_a_closed_port() {
        let port = crate::ports::free_ports(1).unwrap()[0];
        let probe = Probe {
            key: None,
            linearizable: false,
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        };
        let err = wait_all(&[format!("127.0.0.1:{port}")], &probe).await.unwrap_err();
        assert!(matches!(err, BenchError::NotReady { .. }), "{err}");
    }
}
