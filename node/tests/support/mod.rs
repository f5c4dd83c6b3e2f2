//! An in-process cluster for integration tests: real members (real redb files in temp dirs,
//! real gRPC on loopback ports picked at runtime) that can be killed and restarted.

#![allow(dead_code)]

pub mod pki;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use kvnode::config::{Cli, InitialClusterState, NodeFlags};
use kvnode::member::{self, Listeners, RunningMember};
use tempfile::TempDir;

#[allow(unused_imports)]
pub use raftkv_testkit::{eventually, init_logging};
use raftkv_testkit::{free_addr, shut_down};

/// One member slot: its flags (fixed ports, data dir) and the running member, if up.
pub struct Slot {
    pub flags: NodeFlags,
    pub member: Option<RunningMember>,
    /// Each member runs on a runtime of its own, so that killing it ends every one of its
    /// tasks and connections at once, as a process crash would.
    pub runtime: Option<tokio::runtime::Runtime>,
}

/// A cluster of in-process members.
pub struct TestCluster {
    pub dir: TempDir,
    pub slots: Vec<Slot>,
    pub token: String,
}

fn default_flags() -> NodeFlags {
    Cli::try_parse_from(["kvnode"]).expect("defaults").node
}

/// Flags with fast timers so tests elect and fail over quickly.
pub fn test_flags(
    name: &str,
    dir: &std::path::Path,
    client: SocketAddr,
    peer: SocketAddr,
    metrics: SocketAddr,
) -> NodeFlags {
    NodeFlags {
        name: name.to_string(),
        data_dir: dir.join(name),
        listen_client_urls: vec![format!("http://{client}")],
        advertise_client_urls: vec![format!("http://{client}")],
        listen_peer_urls: vec![format!("http://{peer}")],
        initial_advertise_peer_urls: vec![format!("http://{peer}")],
        listen_metrics_urls: vec![format!("http://{metrics}")],
        heartbeat_interval: 20,
        election_timeout: 200,
        ..default_flags()
    }
}

impl TestCluster {
    /// Starts `n` founding members.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` founding members, letting the caller adjust each member's flags.
    pub async fn start_with(n: usize, adjust: impl Fn(&mut NodeFlags)) -> Self {
        let mut cluster = Self::prepare(n, adjust).await;
        for i in 0..n {
            cluster.start_member(i).await;
        }
        cluster
    }

    /// The slots of `n` founding members (ports, data dirs, `--initial-cluster`), none
    /// started: for tests that make the data dirs themselves first.
    pub async fn prepare(n: usize, adjust: impl Fn(&mut NodeFlags)) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut slots = Vec::new();
        for i in 0..n {
            let (c, p, m) = (free_addr(), free_addr(), free_addr());
            let mut flags = test_flags(&format!("m{i}"), dir.path(), c, p, m);
            adjust(&mut flags);
            slots.push(Slot { flags, member: None, runtime: None });
        }
        let initial = slots
            .iter()
            .map(|s| format!("{}={}", s.flags.name, s.flags.initial_advertise_peer_urls[0]))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("test-{}", std::process::id());
        for s in &mut slots {
            s.flags.initial_cluster = initial.clone();
            s.flags.initial_cluster_token = token.clone();
            s.flags.initial_cluster_state = InitialClusterState::New;
        }
        Self { dir, slots, token }
    }

    /// (Re)starts member `i` from its data dir.
    pub async fn start_member(&mut self, i: usize) {
        self.try_start_member(i).await.expect("member starts");
    }

    /// (Re)starts member `i`, or says why it would not start.
    pub async fn try_start_member(&mut self, i: usize) -> Result<(), kvnode::member::StartError> {
        let flags = self.slots[i].flags.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("member runtime");
        let started = runtime
            .spawn(async move {
                let listeners = bind_exact(&flags).await;
                member::start(flags, listeners).await
            })
            .await
            .expect("start task");
        match started {
            Ok(m) => {
                self.slots[i].member = Some(m);
                self.slots[i].runtime = Some(runtime);
                Ok(())
            }
            Err(e) => {
                shut_down(runtime);
                Err(e)
            }
        }
    }

    /// Crashes member `i`: no leadership hand-off, nothing flushed beyond what Raft fsync'd.
    pub fn kill(&mut self, i: usize) {
        if let Some(m) = self.slots[i].member.take() {
            m.kill();
        }
        if let Some(rt) = self.slots[i].runtime.take() {
            shut_down(rt);
        }
    }

    /// Stops member `i` gracefully.
    pub async fn stop(&mut self, i: usize) {
        if let Some(m) = self.slots[i].member.take() {
            m.stop().await;
        }
        if let Some(rt) = self.slots[i].runtime.take() {
            shut_down(rt);
        }
    }

    pub fn member(&self, i: usize) -> &RunningMember {
        self.slots[i].member.as_ref().expect("member running")
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.slots[i].flags.advertise_client_urls[0].clone()
    }

    /// Client endpoints of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.slots.len()).filter(|i| self.slots[*i].member.is_some()).map(|i| self.endpoint(i)).collect()
    }

    /// Waits until the running members agree on one leader; returns its slot.
    pub async fn wait_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let running: Vec<(usize, &RunningMember)> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.member.as_ref().map(|m| (i, m)))
                .collect();
            let leaders: Vec<Option<u64>> =
                running.iter().map(|(_, m)| m.handle.status().leader_id).collect();
            if let Some(Some(l)) = leaders.first()
                && leaders.iter().all(|x| *x == Some(*l))
                && let Some((i, _)) = running.iter().find(|(_, m)| m.id == *l && m.handle.status().is_leader)
            {
                return *i;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader within 20s: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An etcd-client connected to every running member.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None).await.expect("client connects")
    }

    /// An etcd-client connected to member `i` only.
    pub async fn client_of(&self, i: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint(i)], None).await.expect("client connects")
    }

    /// Stops every running member.
    pub async fn shutdown(mut self) {
        for i in 0..self.slots.len() {
            self.stop(i).await;
        }
    }
}

/// Whether the real `etcdctl` is installed. `scripts/test.sh` installs it and sets
/// `RAFTKV_REQUIRE_ETCDCTL=1`, making its absence a failure; without it, tests say they skipped.
pub fn etcdctl_available() -> bool {
    let found =
        std::process::Command::new("etcdctl").arg("version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_ETCDCTL").is_none(),
            "etcdctl is required (RAFTKV_REQUIRE_ETCDCTL is set) but was not found"
        );
        eprintln!("SKIPPED: etcdctl not installed (apt-get install etcd-client)");
    }
    found
}

/// The code and message of a call etcd-client saw fail with a gRPC status.
pub fn refusal(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// Binds exactly the ports in `flags` (a restarted member keeps its addresses).
pub async fn bind_exact(flags: &NodeFlags) -> Listeners {
    raftkv_testkit::retry("cannot rebind", || Listeners::bind(flags)).await
}

impl TestCluster {
    /// Prepares a slot for a new member that will join with `--initial-cluster-state existing`
    /// (the caller adds it with MemberAdd first); returns its slot index and peer URL.
    pub async fn new_joiner_slot(&mut self) -> (usize, String) {
        let i = self.slots.len();
        let (c, p, m) = (free_addr(), free_addr(), free_addr());
        let mut flags = test_flags(&format!("m{i}"), self.dir.path(), c, p, m);
        let mut initial: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.member.is_some())
            .map(|s| format!("{}={}", s.flags.name, s.flags.initial_advertise_peer_urls[0]))
            .collect();
        initial.push(format!("{}={}", flags.name, flags.initial_advertise_peer_urls[0]));
        flags.initial_cluster = initial.join(",");
        flags.initial_cluster_token = self.token.clone();
        flags.initial_cluster_state = InitialClusterState::Existing;
        let url = flags.initial_advertise_peer_urls[0].clone();
        self.slots.push(Slot { flags, member: None, runtime: None });
        (i, url)
    }
}
