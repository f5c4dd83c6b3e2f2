//! Connections to the cluster under test, and which member each request goes to.
//!
//! Like etcd's own benchmark tool, kvbench opens `--connections` connections and shares them
//! among `--clients` concurrent clients (client `i` uses connection `i % M`). Where a
//! connection's requests go is the run's [`Target`]:
//!
//! - `leader`: every connection goes to the current Raft leader, found by asking every
//!   endpoint for its status, as etcd's documentation does for write benchmarks.
//! - `all`: connection `j` goes to endpoint `j % n`, as etcd's benchmark tool spreads its
//!   connections (the read workloads use this).
//! - `round-robin`: each connection holds one channel per member, and every request goes to
//!   the next member in turn. That is what an application's clientv3 client does: it keeps a
//!   sub-connection to every endpoint and its gRPC round-robin picker sends each RPC to the
//!   next one. Followers then forward writes to the leader, which is the cost the `@all`
//!   workloads of `scripts/bench.sh` measure.

use std::time::Duration;

use clap::ValueEnum;
use etcd_client::{Client, ConnectOptions, KvClient};

use crate::error::BenchError;

/// Which members a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Every endpoint given, one per connection, round-robin over connections.
    All,
    /// Only the current Raft leader (found through the Maintenance Status call).
    Leader,
    /// Every endpoint given, request by request: each connection reaches every member and each
    /// client sends its next request to the next member (clientv3's balancing).
    RoundRobin,
}

impl Target {
    /// The name used on the command line, in records and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Leader => "leader",
            Target::RoundRobin => "round-robin",
        }
    }
}

/// Client options shared by every connection: bounded connects and requests.
pub fn options(request_timeout: Duration) -> ConnectOptions {
    ConnectOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(request_timeout)
}

/// Normalizes `host:port` to `http://host:port` so flags accept both spellings.
pub fn url(endpoint: &str) -> String {
    if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") }
}

/// Which members (indices into the resolved endpoints) each of `connections` connections
/// reaches. Pure, so the spreading rule is tested without a server.
fn layout(members: usize, connections: usize, target: Target) -> Vec<Vec<usize>> {
    (0..connections)
        .map(|j| match target {
            Target::RoundRobin => (0..members).collect(),
            Target::All | Target::Leader => vec![j % members],
        })
        .collect()
}

/// The connections of one run, grouped as the clients share them.
pub struct Pool {
    /// Per connection, one client per member it reaches.
    groups: Vec<Vec<Client>>,
}

impl Pool {
    /// Resolves `target` over `endpoints` and opens `connections` connections.
    pub async fn open(
        endpoints: &[String],
        target: Target,
        connections: usize,
        request_timeout: Duration,
    ) -> Result<Self, BenchError> {
        if endpoints.is_empty() {
            return Err(BenchError::Config("no endpoints given".into()));
        }
        if connections == 0 {
            return Err(BenchError::Config("--connections must be at least 1".into()));
        }
        let members = resolve(endpoints, target, request_timeout).await?;
        let mut groups = Vec::with_capacity(connections);
        for group in layout(members.len(), connections, target) {
            let mut clients = Vec::with_capacity(group.len());
            for m in group {
                let endpoint =
                    members.get(m).ok_or_else(|| BenchError::Unexpected(format!("no member {m}")))?;
                clients.push(Client::connect([url(endpoint)], Some(options(request_timeout))).await?);
            }
            groups.push(clients);
        }
        Ok(Self { groups })
    }

    /// The KV clients client `index` sends through, its first turn staggered by its index so
    /// that the clients of one connection do not all start on the same member.
    pub fn kv_for(&self, index: u64) -> Result<Turns<KvClient>, BenchError> {
        let n = self.groups.len() as u64;
        Turns::new(self.group(index)?.iter().map(Client::kv_client).collect(), index / n.max(1))
    }

    /// The whole clients (every service) client `index` sends through, its first turn on member
    /// `index mod members`. The lease workloads hold a keep-alive stream per client on its first
    /// turn's member, so the start, not the turning, is what spreads them: starting at the index
    /// puts exactly every n-th client on each member, whatever the number of connections.
    pub fn clients_for(&self, index: u64) -> Result<Turns<Client>, BenchError> {
        Turns::new(self.group(index)?.to_vec(), index)
    }

    /// The members' clients of the connection client `index` uses (connection `index mod M`).
    fn group(&self, index: u64) -> Result<&[Client], BenchError> {
        let n = self.groups.len() as u64;
        usize::try_from(index % n.max(1))
            .ok()
            .and_then(|g| self.groups.get(g))
            .map(Vec::as_slice)
            .ok_or_else(|| BenchError::Config("no connection opened".into()))
    }
}

/// Items used in turn, one per call of [`Turns::turn`]: the members a client sends to.
#[derive(Debug, Clone)]
pub struct Turns<T> {
    items: Vec<T>,
    next: usize,
}

impl<T> Turns<T> {
    /// Turns over `items` (at least one), starting at item `start % items.len()`.
    pub fn new(items: Vec<T>, start: u64) -> Result<Self, BenchError> {
        if items.is_empty() {
            return Err(BenchError::Config("a client needs at least one member to send to".into()));
        }
        let next = usize::try_from(start % items.len() as u64).unwrap_or(0);
        Ok(Self { items, next })
    }

    /// The item whose turn it is; the following call gets the one after it.
    pub fn turn(&mut self) -> &mut T {
        let i = self.next;
        self.next = (i + 1) % self.items.len();
        &mut self.items[i]
    }
}

/// The endpoints a run should use for `target`.
async fn resolve(
    endpoints: &[String],
    target: Target,
    request_timeout: Duration,
) -> Result<Vec<String>, BenchError> {
    match target {
        Target::All | Target::RoundRobin => Ok(endpoints.to_vec()),
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

    #[test]
    fn all_gives_each_connection_one_member_in_turn() {
        assert_eq!(layout(3, 4, Target::All), vec![vec![0], vec![1], vec![2], vec![0]]);
        assert_eq!(layout(1, 2, Target::Leader), vec![vec![0], vec![0]]);
    }

    #[test]
    fn round_robin_gives_each_connection_every_member() {
        assert_eq!(layout(3, 2, Target::RoundRobin), vec![vec![0, 1, 2], vec![0, 1, 2]]);
    }

    #[test]
    fn turns_cycle_from_their_start() {
        let mut t = Turns::new(vec!['a', 'b', 'c'], 4).unwrap();
        let seen: String = (0..5).map(|_| *t.turn()).collect();
        assert_eq!(seen, "bcabc");
        let mut one = Turns::new(vec![7], 9).unwrap();
        assert_eq!((*one.turn(), *one.turn()), (7, 7));
        assert!(Turns::<u8>::new(Vec::new(), 0).is_err());
    }

    #[test]
    fn staggered_clients_spread_evenly() {
        // 6 clients of one connection over 3 members: each member is some client's first turn
        // twice, and over 3 requests per client every member gets exactly 6 requests.
        let mut hits = [0; 3];
        for client in 0..6u64 {
            let mut t = Turns::new(vec![0usize, 1, 2], client).unwrap();
            for _ in 0..3 {
                hits[*t.turn()] += 1;
            }
        }
        assert_eq!(hits, [6, 6, 6]);
        assert_eq!(Target::RoundRobin.name(), "round-robin");
        assert_eq!(serde_json::to_string(&Target::RoundRobin).unwrap(), "\"round-robin\"");
    }
}
