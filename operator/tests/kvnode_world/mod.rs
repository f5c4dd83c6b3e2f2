//! Reconcile scenarios with real members: the in-memory API server of `support`, a simulated
//! StatefulSet controller and kubelet that start and stop real in-process kvnode members, and
//! the operator's real `EtcdMembership` talking to them.
//!
//! The operator addresses members by their cluster DNS names (`kv-3.kv-peer.ns.svc:2380`);
//! here every member listens on loopback ports picked at runtime, so [`Dns`] plays the cluster's
//! DNS: [`Resolving`] rewrites names to loopback addresses on the way to the members and back on
//! the way to the operator. Nothing else stands between the operator and kvnode.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kube::runtime::events::{Recorder, Reporter};
use kv_operator::crd::{KVCluster, KVClusterStatus};
use kv_operator::membership::etcd::EtcdMembership;
use kv_operator::membership::{EndpointStatus, Member, MembershipClient, MembershipError};
use kv_operator::metrics::Metrics;
use kv_operator::names::ClusterNames;
use kv_operator::plan::PlanConfig;
use kv_operator::reconcile::{Context, reconcile};
use kvnode::member::RunningMember;
use raftkv_testkit::free_addr;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::kvnode_members::{init_logging, launch, stop};
use crate::support::{ApiServer, CM, KVC, NS, PODS, PVCS, STS};

/// Loopback addresses of one ordinal's member, fixed at first use so restarts keep them.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub metrics: SocketAddr,
}

/// The cluster DNS of the test: member host names to loopback addresses and back.
pub struct Dns {
    names: ClusterNames,
    addrs: Mutex<BTreeMap<i32, Addrs>>,
}

impl Dns {
    fn new(names: ClusterNames) -> Self {
        Self { names, addrs: Mutex::new(BTreeMap::new()) }
    }

    pub fn addrs(&self, ordinal: i32) -> Addrs {
        *self.addrs.lock().unwrap().entry(ordinal).or_insert_with(|| Addrs {
            client: free_addr(),
            peer: free_addr(),
            metrics: free_addr(),
        })
    }

    /// `http://kv-N.kv-peer.ns.svc:PORT` to the loopback URL of that member's port.
    pub fn resolve(&self, url: &str) -> String {
        let Some(ordinal) = self.names.ordinal_of_peer_url(url) else { return url.to_string() };
        let a = self.addrs(ordinal);
        if url.ends_with(":2380") { format!("http://{}", a.peer) } else { format!("http://{}", a.client) }
    }

    /// A loopback URL back to the member's DNS URL (what the pod would advertise).
    pub fn reverse(&self, url: &str) -> String {
        let addrs = self.addrs.lock().unwrap();
        for (o, a) in addrs.iter() {
            if url == format!("http://{}", a.peer) {
                return self.names.peer_url(*o, false);
            }
            if url == format!("http://{}", a.client) {
                return self.names.client_url(*o, false);
            }
        }
        url.to_string()
    }

    fn member(&self, m: Member) -> Member {
        Member {
            peer_urls: m.peer_urls.iter().map(|u| self.reverse(u)).collect(),
            client_urls: m.client_urls.iter().map(|u| self.reverse(u)).collect(),
            ..m
        }
    }
}

/// The operator's `EtcdMembership`, reached through [`Dns`].
pub struct Resolving {
    dns: Arc<Dns>,
    inner: EtcdMembership,
}

impl Resolving {
    fn endpoints(&self, endpoints: &[String]) -> Vec<String> {
        endpoints.iter().map(|e| self.dns.resolve(e)).collect()
    }
}

#[async_trait]
impl MembershipClient for Resolving {
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, MembershipError> {
        let list = self.inner.member_list(&self.endpoints(endpoints)).await?;
        Ok(list.into_iter().map(|m| self.dns.member(m)).collect())
    }

    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, MembershipError> {
        self.inner.status(&self.dns.resolve(endpoint)).await
    }

    async fn add_learner(&self, endpoints: &[String], peer_url: &str) -> Result<Member, MembershipError> {
        let added = self.inner.add_learner(&self.endpoints(endpoints), &self.dns.resolve(peer_url)).await?;
        Ok(self.dns.member(added))
    }

    async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        self.inner.promote(&self.endpoints(endpoints), id).await
    }

    async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        self.inner.remove(&self.endpoints(endpoints), id).await
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), MembershipError> {
        self.inner.move_leader(&self.dns.resolve(leader_endpoint), target).await
    }
}

struct Running {
    member: RunningMember,
    runtime: tokio::runtime::Runtime,
}

/// API server, StatefulSet controller, kubelet and real kvnode members.
pub struct KvnodeWorld {
    pub api: ApiServer,
    pub names: ClusterNames,
    pub dns: Arc<Dns>,
    pub ctx: Arc<Context>,
    dir: TempDir,
    running: BTreeMap<i32, Running>,
    /// Why the last start of an ordinal's member failed (a pod in CrashLoopBackOff).
    pub start_errors: BTreeMap<i32, String>,
    /// Failed reconciles, in order.
    pub errors: Vec<String>,
    /// How many times each ordinal's member was started.
    pub starts: BTreeMap<i32, usize>,
}

impl KvnodeWorld {
    pub fn new(kvc: &KVCluster) -> Self {
        init_logging();
        let api = ApiServer::default();
        let names = ClusterNames::new("kv", NS);
        let dns = Arc::new(Dns::new(names.clone()));
        let client = api.client();
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: "kv-operator".into(), instance: None });
        let membership =
            Arc::new(Resolving { dns: dns.clone(), inner: EtcdMembership::new(Duration::from_secs(5)) });
        let mut ctx = Context::new(client, membership, recorder, Metrics::new().unwrap());
        // Real members catch up in real time; the deadline only guards against a hung test.
        ctx.config = PlanConfig { step_timeout: Duration::from_secs(3600), max_lag: 100 };
        let mut obj = serde_json::to_value(kvc).unwrap();
        obj["metadata"].as_object_mut().unwrap().remove("uid");
        api.put(KVC, obj);
        Self {
            api,
            names,
            dns,
            ctx: Arc::new(ctx),
            dir: tempfile::tempdir().expect("tempdir"),
            running: BTreeMap::new(),
            start_errors: BTreeMap::new(),
            errors: Vec::new(),
            starts: BTreeMap::new(),
        }
    }

    pub fn kvc(&self) -> KVCluster {
        self.api.kvc()
    }

    pub fn status(&self) -> KVClusterStatus {
        self.kvc().status.unwrap_or_default()
    }

    /// Changes the spec as `kubectl apply` would (generation moves on).
    pub fn edit(&self, f: impl FnOnce(&mut KVCluster)) {
        self.api.edit_kvc(f);
    }

    fn pod_path(&self, ordinal: i32) -> String {
        format!("{PODS}/{}", self.names.member(ordinal))
    }

    fn pvc_path(&self, ordinal: i32) -> String {
        format!("{PVCS}/{}", self.names.pvc(ordinal))
    }

    fn data_dir(&self, ordinal: i32) -> PathBuf {
        self.dir.path().join(self.names.member(ordinal))
    }

    /// The member running for an ordinal, if any.
    pub fn member(&self, ordinal: i32) -> Option<&RunningMember> {
        self.running.get(&ordinal).map(|r| &r.member)
    }

    pub fn client_endpoint(&self, ordinal: i32) -> String {
        format!("http://{}", self.dns.addrs(ordinal).client)
    }

    async fn stop_member(&mut self, ordinal: i32) {
        if let Some(r) = self.running.remove(&ordinal) {
            stop(r.member, r.runtime).await;
        }
    }

    /// The kvnode command line the pod of `ordinal` runs, with the ConfigMap's membership
    /// resolved to loopback addresses.
    fn args(&self, ordinal: i32, cm: &Value) -> Vec<String> {
        let a = self.dns.addrs(ordinal);
        let initial: Vec<String> = cm["data"]["initial-cluster"]
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter_map(|e| e.split_once('='))
            .map(|(name, url)| format!("{name}={}", self.dns.resolve(url)))
            .collect();
        [
            "kvnode",
            "--name",
            &self.names.member(ordinal),
            "--data-dir",
            &self.data_dir(ordinal).display().to_string(),
            "--listen-client-urls",
            &format!("http://{}", a.client),
            "--advertise-client-urls",
            &format!("http://{}", a.client),
            "--listen-peer-urls",
            &format!("http://{}", a.peer),
            "--initial-advertise-peer-urls",
            &format!("http://{}", a.peer),
            "--listen-metrics-urls",
            &format!("http://{}", a.metrics),
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            cm["data"]["initial-cluster-state"].as_str().unwrap_or("new"),
            "--initial-cluster-token",
            cm["data"]["initial-cluster-token"].as_str().unwrap_or("raftkv"),
            "--heartbeat-interval",
            "20",
            "--election-timeout",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// One pass of the StatefulSet controller and the kubelet: pods and claims follow the
    /// StatefulSet's replicas; a pod's member runs while the pod exists; a new claim is an
    /// empty volume.
    pub async fn step_world(&mut self) {
        let Some(mut sts) = self.api.get(STS) else { return };
        let replicas = sts["spec"]["replicas"].as_i64().unwrap() as i32;
        let generation = sts["metadata"]["generation"].clone();
        sts["status"] = json!({"observedGeneration": generation, "replicas": replicas});
        self.api.put(STS, sts.clone());
        let template = sts["spec"]["template"].clone();
        let claim = sts["spec"]["volumeClaimTemplates"][0].clone();

        for (path, pod) in self.api.list(PODS) {
            let ordinal = self.names.ordinal_of(pod["metadata"]["name"].as_str().unwrap()).unwrap();
            if ordinal >= replicas {
                self.api.remove(&path);
            }
        }
        // Members of pods that are gone (scaled away, or deleted for a restart) stop.
        let gone: Vec<i32> =
            self.running.keys().copied().filter(|o| self.api.get(&self.pod_path(*o)).is_none()).collect();
        for o in gone {
            self.stop_member(o).await;
        }
        for ordinal in 0..replicas {
            if self.api.get(&self.pvc_path(ordinal)).is_none() {
                // A new volume: whatever an earlier claim of this ordinal held is gone.
                let _ = std::fs::remove_dir_all(self.data_dir(ordinal));
                self.api.put(
                    &self.pvc_path(ordinal),
                    json!({
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": self.names.pvc(ordinal), "namespace": NS,
                                     "labels": claim["metadata"]["labels"].clone()},
                        "spec": claim["spec"].clone(),
                    }),
                );
            }
            if self.api.get(&self.pod_path(ordinal)).is_none() {
                let mut pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": template["metadata"].clone(),
                    "spec": template["spec"].clone(),
                    "status": {"conditions": [{"type": "Ready", "status": "False"}]}
                });
                pod["metadata"]["name"] = json!(self.names.member(ordinal));
                pod["metadata"]["namespace"] = json!(NS);
                self.api.put(&self.pod_path(ordinal), pod);
            }
        }

        // The kubelet starts the container of every pod whose member is not running, with the
        // membership the ConfigMap holds at that moment.
        let Some(cm) = self.api.get(CM) else { return };
        for ordinal in 0..replicas {
            if self.running.contains_key(&ordinal) {
                continue;
            }
            let args = self.args(ordinal, &cm);
            match launch(&args).await {
                Ok((member, runtime)) => {
                    self.start_errors.remove(&ordinal);
                    *self.starts.entry(ordinal).or_default() += 1;
                    self.running.insert(ordinal, Running { member, runtime });
                }
                Err(e) => {
                    self.start_errors.insert(ordinal, e.to_string());
                }
            }
        }

        // Readiness: the member runs and knows a leader.
        for ordinal in 0..replicas {
            let ready = self.member(ordinal).is_some_and(|m| m.handle.status().leader_id.is_some());
            if let Some(mut pod) = self.api.get(&self.pod_path(ordinal)) {
                pod["status"] = json!({"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
                self.api.put(&self.pod_path(ordinal), pod);
            }
        }
    }

    /// One reconcile, between two passes of the world.
    pub async fn reconcile(&mut self) {
        self.step_world().await;
        let kvc = Arc::new(self.kvc());
        // A membership call the cluster refuses for now (a learner not yet in sync by kvnode's
        // own measure) fails the reconcile; the controller retries it, and so does this loop.
        if let Err(e) = reconcile(kvc, self.ctx.clone()).await {
            self.errors.push(e.to_string());
        }
        self.step_world().await;
    }

    pub fn settled(&self) -> bool {
        let status = self.status();
        status.operation.is_none()
            && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// Reconciles (every 50 ms of real time, the members need it to replicate) until settled.
    pub async fn converge(&mut self, what: &str) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut rounds = 0;
        loop {
            self.reconcile().await;
            rounds += 1;
            if self.settled() {
                return rounds;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not settled after {rounds} rounds; start errors {:?}; reconcile errors {:?}; status {:#?}",
                self.start_errors,
                self.errors,
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Voters and learners as the members themselves see them: `(ordinal, voters, learners)`.
    pub fn raft_views(&self) -> Vec<(i32, Vec<u64>, Vec<u64>)> {
        self.running
            .iter()
            .map(|(o, r)| {
                let s = r.member.handle.status();
                let (mut voters, mut learners) = (s.voters.clone(), s.learners.clone());
                voters.sort_unstable();
                learners.sort_unstable();
                (*o, voters, learners)
            })
            .collect()
    }

    /// Ordinals with a running member.
    pub fn running_ordinals(&self) -> Vec<i32> {
        self.running.keys().copied().collect()
    }

    /// Ordinal of the member that leads, by its own status.
    pub fn leader_ordinal(&self) -> Option<i32> {
        self.running.iter().find(|(_, r)| r.member.handle.status().is_leader).map(|(o, _)| *o)
    }

    /// Ends the members abruptly (see `Members::shutdown`).
    pub fn shutdown(mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.member.kill();
            r.runtime.shutdown_background();
        }
    }
}
