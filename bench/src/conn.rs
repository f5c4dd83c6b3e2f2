//! Connections to the cluster under test.
//!
//! Like etcd's own benchmark tool, kvbench opens `--connections` gRPC connections and shares
//! them among `--clients` concurrent clients (client `i` uses connection `i % M`). Each
//! connection goes to one endpoint, endpoints taken round-robin, so a run spreads its load the
//! same way on both systems. `Target::Leader` first asks every endpoint for its status and keeps
//! only the leader, as etcd's documentation does for write benchmarks.

use std::time::Duration;

use clap::ValueEnum;
use etcd_client::{Client, ConnectOptions};

use crate::error::BenchError;

/// Which members a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Every endpoint given, round-robin over connections.
    All,
    /// Only the current Raft leader (found through the Maintenance Status call).
    Leader,
}

/// Client options shared by every connection: bounded connects and requests.
pub fn options(request_timeout: Duration) -> ConnectOptions {
    ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(request_timeout)
}

/// Normalizes `host:port` to `http://host:port` so flags accept both spellings.
pub fn url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") }
}

/// Opens `count` connections over `endpoints`, round-robin.
pub async fn connect_many(
    endpoints: &[String],
    count: usize,
    request_timeout: Duration,
) -> Result<Vec<Client>, BenchError> {
    if endpoints.is_empty() {
        return Err(BenchError::Config("no endpoints given".into()));
    }
    if count == 0 {
        return Err(BenchError::Config("--connections must be at least 1".into()));
    }
    let mut clients = Vec::with_capacity(count);
    for endpoint in endpoints.iter().cycle().take(count) {
        clients.push(Client::connect([url(endpoint)], Some(options(request_timeout))).await?);
    }
    Ok(clients)
}

/// The endpoints a run should use for `target`.
pub async fn resolve(
    endpoints: &[String],
    target: Target,
    request_timeout: Duration,
) -> Result<Vec<String>, BenchError> {
    match target {
        Target::All => Ok(endpoints.to_vec()),
        Target::Leader => Ok(vec![leader(endpoints, request_timeout).await?]),
    }
}

/// The endpoint whose member is the current leader, according to that member itself.
pub async fn leader(endpoints: &[String], request_timeout: Duration) -> Result<String, BenchError> {
    for endpoint in endpoints {
        let Ok(mut client) = Client::connect([url(endpoint)], Some(options(request_timeout))).await else {
            continue;
        };
        match client.status().await {
            Ok(status) => {
                let member = status.header().map(|h| h.member_id());
                if status.leader() != 0 && member == Some(status.leader()) {
                    return Ok(endpoint.clone());
                }
            }
            Err(e) => tracing::debug!(%endpoint, error = %e, "status failed"),
        }
    }
    Err(BenchError::NoLeader(endpoints.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_gets_a_scheme() {
        assert_eq!(url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(url("http://127.0.0.1:2379"), "http://127.0.0.1:2379");
    }
}
