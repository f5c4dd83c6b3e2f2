//! Real kvnode members for the operator's tests: each started in-process through kvnode's public
//! API (`kvnode::member::start`) from a command line parsed by kvnode's own flag parser,
//! serving real gRPC on loopback ports picked at runtime and keeping real redb files in a temp
//! dir. The operator's [`EtcdMembership`](kv_operator::membership::etcd::EtcdMembership) talks to
//! them exactly as it talks to pods.
//!
//! Ground truth for assertions comes from each member's own Raft status
//! ([`RunningMember::handle`]), never from the client under test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use kvnode::config::Cli;
use kvnode::member::{self, Listeners, RunningMember, StartError};
use tempfile::TempDir;

pub use raftkv_testkit::{eventually, init_logging};
use raftkv_testkit::{free_addr, shut_down};

/// One member slot: the command line it starts with and the member, when running.
pub struct Slot {
    pub name: String,
    pub args: Vec<String>,
    pub client_url: String,
    pub peer_url: String,
    pub member: Option<RunningMember>,
    /// Each member runs on a runtime of its own, so stopping it ends all its tasks at once.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A group of in-process kvnode members.
pub struct Members {
    dir: TempDir,
    token: String,
    pub slots: Vec<Slot>,
}

impl Members {
    /// Starts `n` founding members (`--initial-cluster-state new`) and waits for a leader.
    pub async fn start(n: usize) -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let token = format!("operator-test-{}", std::process::id());
        let mut members = Self { dir, token, slots: Vec::new() };
        let mut initial = Vec::new();
        for i in 0..n {
            let (name, client, peer, metrics) = (format!("m{i}"), free_addr(), free_addr(), free_addr());
            initial.push(format!("{name}=http://{peer}"));
            let slot = members.slot(name, client, peer, metrics);
            members.slots.push(slot);
        }
        let initial = initial.join(",");
        for slot in &mut members.slots {
            slot.args.extend([
                "--initial-cluster".into(),
                initial.clone(),
                "--initial-cluster-state".into(),
                "new".into(),
            ]);
        }
        for i in 0..n {
            members.start_member(i).await.expect("founding member starts");
        }
        members.wait_leader().await;
        members
    }

    fn slot(&self, name: String, client: SocketAddr, peer: SocketAddr, metrics: SocketAddr) -> Slot {
        let data_dir = self.dir.path().join(&name);
        let args = vec![
            "kvnode".to_string(),
            "--name".into(),
            name.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            format!("http://{client}"),
            "--advertise-client-urls".into(),
            format!("http://{client}"),
            "--listen-peer-urls".into(),
            format!("http://{peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://{peer}"),
            "--listen-metrics-urls".into(),
            format!("http://{metrics}"),
            "--initial-cluster-token".into(),
            self.token.clone(),
            // Fast timers, so that elections and transfers take milliseconds.
            "--heartbeat-interval".into(),
            "20".into(),
            "--election-timeout".into(),
            "200".into(),
        ];
        Slot {
            name,
            args,
            client_url: format!("http://{client}"),
            peer_url: format!("http://{peer}"),
            member: None,
            runtime: None,
        }
    }

    /// Prepares a member that joins the running group (`--initial-cluster-state existing`):
    /// the caller MemberAdds its peer URL first, then starts it. Returns its slot.
    pub async fn joiner(&mut self) -> usize {
        let i = self.slots.len();
        let (client, peer, metrics) = (free_addr(), free_addr(), free_addr());
        let mut slot = self.slot(format!("m{i}"), client, peer, metrics);
        let mut initial: Vec<String> = self
            .slots
            .iter()
            .filter(|s| s.member.is_some())
            .map(|s| format!("{}={}", s.name, s.peer_url))
            .collect();
        initial.push(format!("{}={}", slot.name, slot.peer_url));
        slot.args.extend([
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "existing".into(),
        ]);
        self.slots.push(slot);
        i
    }

    /// Starts (or restarts from its data dir) member `i`.
    pub async fn start_member(&mut self, i: usize) -> Result<(), StartError> {
        let (member, runtime) = launch(&self.slots[i].args).await?;
        self.slots[i].member = Some(member);
        self.slots[i].runtime = Some(runtime);
        Ok(())
    }

    /// Stops member `i` gracefully (a leader hands leadership off first).
    pub async fn stop(&mut self, i: usize) {
        if let Some(m) = self.slots[i].member.take() {
            m.stop().await;
        }
        if let Some(rt) = self.slots[i].runtime.take() {
            shut_down(rt);
        }
    }

    /// Crashes member `i`: no hand-off.
    pub fn kill(&mut self, i: usize) {
        if let Some(m) = self.slots[i].member.take() {
            m.kill();
        }
        if let Some(rt) = self.slots[i].runtime.take() {
            shut_down(rt);
        }
    }

    pub fn member(&self, i: usize) -> &RunningMember {
        self.slots[i].member.as_ref().expect("member running")
    }

    pub fn id(&self, i: usize) -> u64 {
        self.member(i).id
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.slots[i].client_url.clone()
    }

    /// Client URLs of the running members.
    pub fn endpoints(&self) -> Vec<String> {
        self.slots.iter().filter(|s| s.member.is_some()).map(|s| s.client_url.clone()).collect()
    }

    /// Slot of the member with this id.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.slots.iter().position(|s| s.member.as_ref().is_some_and(|m| m.id == id))
    }

    /// Waits until the running voters agree on one leader (by their own Raft status); its slot.
    pub async fn wait_leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let statuses: Vec<_> =
                self.slots.iter().filter_map(|s| s.member.as_ref()).map(|m| m.handle.status()).collect();
            let first = statuses.first().and_then(|s| s.leader_id);
            if let Some(leader) = first
                && statuses.iter().all(|s| s.leader_id == Some(leader))
                && let Some(i) = self.slot_of(leader)
                && self.member(i).handle.status().is_leader
            {
                return i;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader within 20s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `n` keys through member `i`'s client port, so that the log has something to catch up on.
    pub async fn write(&self, prefix: &str, n: usize) {
        let mut client = etcd_client::Client::connect(self.endpoints(), None).await.expect("client connects");
        for k in 0..n {
            client.put(format!("{prefix}{k}"), "v", None).await.expect("put");
        }
    }

    /// Ends the test's members abruptly: a graceful stop waits up to seconds per member for
    /// peer connections to close, and nothing is checked after this.
    pub fn shutdown(mut self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }
}

/// Starts one kvnode member from its command line (parsed by kvnode's own parser) on a runtime
/// of its own; shutting that runtime down ends every task of the member at once.
pub async fn launch(args: &[String]) -> Result<(RunningMember, tokio::runtime::Runtime), StartError> {
    let flags = Cli::try_parse_from(args).expect("kvnode accepts the test's flags").node;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let started = runtime
        .spawn(async move {
            let listeners = bind(&flags).await;
            member::start(flags, listeners).await
        })
        .await
        .expect("start task");
    match started {
        Ok(m) => Ok((m, runtime)),
        Err(e) => {
            runtime.shutdown_background();
            Err(e)
        }
    }
}

/// Stops a member gracefully, then its runtime.
pub async fn stop(member: RunningMember, runtime: tokio::runtime::Runtime) {
    member.stop().await;
    shut_down(runtime);
}

/// Binds exactly the ports in `flags` (a restarted member keeps its addresses).
async fn bind(flags: &kvnode::config::NodeFlags) -> Listeners {
    raftkv_testkit::retry("cannot bind", || Listeners::bind(flags)).await
}
