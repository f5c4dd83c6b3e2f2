//! Test harness: an in-memory Kubernetes API server behind kube's `tower-test` mock service (the
//! pattern of kube-rs/controller-rs's fixtures, answering from a store instead of a script), a
//! simulated StatefulSet controller and kubelet, and the fake Raft group.
//!
//! The membership side is a [`FakeCluster`]; `kvnode_world` is the variant with real in-process
//! kvnode members behind the operator's `EtcdMembership`.

#![allow(dead_code)]

pub mod fake_cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kv_operator::crd::{KVCluster, KVClusterStatus};
use kv_operator::metrics::Metrics;
use kv_operator::names::ClusterNames;
use kv_operator::plan::PlanConfig;
use kv_operator::reconcile::{Context, reconcile};
use serde_json::{Value, json};

use fake_cluster::FakeCluster;

/// One request the operator made: method, path (with query), body.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Value>,
    log: Vec<Logged>,
    next_uid: u64,
    resource_version: u64,
    /// Requests answered with an error: (method, path prefix, code, message).
    refusals: Vec<(Method, String, u16, String)>,
}

/// The in-memory API server.
#[derive(Clone, Default)]
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
}

fn status_error(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
    })
}

fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k].as_str() == Some(v)
    })
}

/// Segments after `namespaces/<ns>/`: 1 = collection, 2 = object, 3 = subresource.
fn split_path(path: &str) -> (String, usize, Option<String>) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ns_at = segs.iter().position(|s| *s == "namespaces").unwrap();
    let rest = segs.len() - ns_at - 2;
    if rest == 3 {
        (format!("/{}", segs[..segs.len() - 1].join("/")), 2, Some(segs[segs.len() - 1].to_string()))
    } else {
        (format!("/{}", segs.join("/")), rest, None)
    }
}

impl Store {
    fn now() -> String {
        "2025-01-01T00:00:00Z".to_string()
    }

    fn bump(&mut self, obj: &mut Value) {
        self.resource_version += 1;
        obj["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
    }

    fn create(&mut self, path: &str, mut obj: Value) -> Value {
        self.next_uid += 1;
        let name = path.rsplit('/').next().unwrap().to_string();
        obj["metadata"]["name"] = json!(name);
        obj["metadata"]["uid"] = json!(format!("uid-{}", self.next_uid));
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["creationTimestamp"] = json!(Self::now());
        self.bump(&mut obj);
        self.objects.insert(path.to_string(), obj.clone());
        obj
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        if let Some((_, _, code, message)) =
            self.refusals.iter().find(|(m, prefix, _, _)| m == method && path.starts_with(prefix.as_str()))
        {
            let reason = if *code == 403 { "Forbidden" } else { "Invalid" };
            return status_error(*code, reason, message);
        }
        let (key, depth, sub) = split_path(path);
        match (method.clone(), depth) {
            (Method::GET, 1) => {
                let selector = query_param(query, "labelSelector").unwrap_or_default();
                let prefix = format!("{key}/");
                let items: Vec<Value> = self
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.starts_with(&prefix)
                            && !k[prefix.len()..].contains('/')
                            && labels_match(v, &selector)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            }
            (Method::POST, 1) => {
                let name = body["metadata"]["name"].as_str().map(str::to_string).unwrap_or_else(|| {
                    format!(
                        "{}{}",
                        body["metadata"]["generateName"].as_str().unwrap_or("obj-"),
                        self.next_uid + 1
                    )
                });
                let created = self.create(&format!("{key}/{name}"), body);
                (StatusCode::CREATED, created)
            }
            (Method::GET, 2) => match self.objects.get(&key) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => status_error(404, "NotFound", "not found"),
            },
            (Method::DELETE, 2) => match self.objects.remove(&key) {
                Some(v) => (StatusCode::OK, v),
                None => status_error(404, "NotFound", "not found"),
            },
            (Method::PATCH, 2) => self.patch(&key, sub.as_deref(), content_type, body),
            _ => status_error(405, "MethodNotAllowed", &format!("{method} {path}")),
        }
    }

    fn patch(
        &mut self,
        key: &str,
        sub: Option<&str>,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let existing = self.objects.get(key).cloned();
        let Some(mut obj) = existing else {
            if content_type.contains("apply-patch") {
                let created = self.create(key, body);
                return (StatusCode::CREATED, created);
            }
            return status_error(404, "NotFound", "not found");
        };
        let before_spec = obj["spec"].clone();
        if content_type.contains("json-patch") {
            // Like the API server, a `test` for null passes on an absent path.
            let mut ops = body.as_array().cloned().unwrap_or_default();
            let mut null_tests_ok = true;
            ops.retain(|op| {
                if op["op"] == "test" && op["value"].is_null() {
                    let path = op["path"].as_str().unwrap_or_default();
                    null_tests_ok &= obj.pointer(path).is_none_or(Value::is_null);
                    false
                } else {
                    true
                }
            });
            if !null_tests_ok {
                return status_error(422, "Invalid", "json patch test failed");
            }
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
            if json_patch::patch(&mut obj, &patch).is_err() {
                return status_error(422, "Invalid", "json patch test failed");
            }
        } else if sub == Some("status") {
            let mut status_only = json!({"status": body["status"].clone()});
            if status_only["status"].is_null() {
                status_only = json!({});
            }
            json_patch::merge(&mut obj, &status_only);
        } else {
            let mut body = body;
            // (`get_mut`, not indexing: indexing would insert `"metadata": null`, which a merge
            // patch reads as "delete the metadata".)
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                for k in ["uid", "generation", "creationTimestamp", "resourceVersion"] {
                    meta.remove(k);
                }
            }
            json_patch::merge(&mut obj, &body);
        }
        if sub.is_none() && obj["spec"] != before_spec {
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        self.bump(&mut obj);
        // An object being deleted goes once its last finalizer is removed.
        let finalizers_left = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if obj["metadata"]["deletionTimestamp"].is_string() && !finalizers_left {
            self.objects.remove(key);
        } else {
            self.objects.insert(key.to_string(), obj.clone());
        }
        (StatusCode::OK, obj)
    }
}

impl ApiServer {
    /// A kube client whose every request this server answers.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let body: Value =
                    if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                let path = parts.uri.path().to_string();
                let query = parts.uri.query().unwrap_or("").to_string();
                let content_type =
                    parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let (code, response) = {
                    let mut store = store.lock().unwrap();
                    store.log.push(Logged {
                        method: parts.method.clone(),
                        path: format!("{path}?{query}"),
                        body: body.clone(),
                    });
                    store.handle(&parts.method, &path, &query, &content_type, body)
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&response).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    /// The stored KVCluster.
    pub fn kvc(&self) -> KVCluster {
        serde_json::from_value(self.get(KVC).expect("KVCluster exists")).unwrap()
    }

    /// Changes the KVCluster's spec as `kubectl apply` would (generation moves on).
    pub fn edit_kvc(&self, f: impl FnOnce(&mut KVCluster)) {
        let mut kvc = self.kvc();
        f(&mut kvc);
        let mut obj = serde_json::to_value(&kvc).unwrap();
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        obj["metadata"]["generation"] = json!(generation + 1);
        self.put(KVC, obj);
    }

    pub fn put(&self, path: &str, obj: Value) {
        let mut store = self.store.lock().unwrap();
        if store.objects.contains_key(path) {
            let mut obj = obj;
            store.bump(&mut obj);
            store.objects.insert(path.to_string(), obj);
        } else {
            store.create(path, obj);
        }
    }

    pub fn remove(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.remove(path)
    }

    /// Objects under a collection path.
    pub fn list(&self, collection: &str) -> Vec<(String, Value)> {
        let prefix = format!("{collection}/");
        self.store
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.store.lock().unwrap().log.clone()
    }

    /// Stops refusing requests (see [`ApiServer::refuse`]).
    pub fn stop_refusing(&self) {
        self.store.lock().unwrap().refusals.clear();
    }

    /// From now on, answers `method` on paths starting with `prefix` with error `code`.
    pub fn refuse(&self, method: Method, prefix: &str, code: u16, message: &str) {
        self.store.lock().unwrap().refusals.push((method, prefix.to_string(), code, message.to_string()));
    }
}

pub const NS: &str = "ns";
pub const KVC: &str = "/apis/raftkv.dev/v1alpha1/namespaces/ns/kvclusters/kv";
pub const STS: &str = "/apis/apps/v1/namespaces/ns/statefulsets/kv";
pub const PODS: &str = "/api/v1/namespaces/ns/pods";
pub const PVCS: &str = "/api/v1/namespaces/ns/persistentvolumeclaims";
pub const CM: &str = "/api/v1/namespaces/ns/configmaps/kv-members";
pub const PDB: &str = "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/kv";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

/// The simulated cluster: API server, StatefulSet controller, kubelet and Raft group.
pub struct World {
    pub api: ApiServer,
    pub raft: FakeCluster,
    pub names: ClusterNames,
    pub clock: Arc<AtomicI64>,
    pub ctx: Arc<Context>,
    /// Images whose members run but never become healthy.
    pub bad_images: BTreeSet<String>,
    /// Ordinals whose pod the kubelet does not (re)start for now (a node gone, say).
    pub held: BTreeSet<i32>,
    /// Members that started on a claim holding another member's identity.
    pub stale_rejoins: Vec<String>,
    /// The storage driver does not grow volumes for now (capacity stays behind the request).
    pub frozen_volumes: bool,
}

const START: i64 = 1_735_689_600; // 2025-01-01T00:00:00Z

impl World {
    pub fn new(kvc: &KVCluster) -> Self {
        let api = ApiServer::default();
        let raft = FakeCluster::new();
        let clock = Arc::new(AtomicI64::new(START));
        let ctx = Self::context(&api, &raft, &clock);
        let mut obj = serde_json::to_value(kvc).unwrap();
        obj["metadata"].as_object_mut().unwrap().remove("uid");
        api.put(KVC, obj);
        Self {
            api,
            raft,
            names: ClusterNames::new("kv", NS),
            clock,
            ctx,
            bad_images: BTreeSet::new(),
            held: BTreeSet::new(),
            stale_rejoins: Vec::new(),
            frozen_volumes: false,
        }
    }

    fn context(api: &ApiServer, raft: &FakeCluster, clock: &Arc<AtomicI64>) -> Arc<Context> {
        let client = api.client();
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: "kv-operator".into(), instance: None });
        let mut ctx = Context::new(client, Arc::new(raft.clone()), recorder, Metrics::new().unwrap());
        ctx.config = PlanConfig { step_timeout: std::time::Duration::from_secs(120), max_lag: 100 };
        let clock = clock.clone();
        ctx.clock = Arc::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap());
        Arc::new(ctx)
    }

    /// A new operator process: fresh context, nothing carried over but the API server's state.
    pub fn restart_operator(&mut self) {
        self.ctx = self.new_context();
    }

    /// The context of another operator process against the same API server and cluster.
    pub fn new_context(&self) -> Arc<Context> {
        Self::context(&self.api, &self.raft, &self.clock)
    }

    pub fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds, Ordering::SeqCst);
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

    pub fn pod(&self, ordinal: i32) -> Option<Value> {
        self.api.get(&self.pod_path(ordinal))
    }

    /// A claim as the API server holds it.
    pub fn pvc(&self, ordinal: i32) -> Option<Value> {
        self.api.get(&self.pvc_path(ordinal))
    }

    pub fn has_pvc(&self, ordinal: i32) -> bool {
        self.api.get(&self.pvc_path(ordinal)).is_some()
    }

    /// Deletes a pod as a node failure or `kubectl delete pod` would.
    pub fn kill_pod(&self, ordinal: i32) {
        self.api.remove(&self.pod_path(ordinal));
        self.raft.stop(&self.names.peer_url(ordinal, false));
    }

    /// One pass of the StatefulSet controller, the kubelet and the members.
    pub fn step_world(&mut self) {
        let Some(mut sts) = self.api.get(STS) else { return };
        let replicas = sts["spec"]["replicas"].as_i64().unwrap() as i32;
        let generation = sts["metadata"]["generation"].clone();
        sts["status"] = json!({"observedGeneration": generation, "replicas": replicas});
        self.api.put(STS, sts.clone());
        let template = sts["spec"]["template"].clone();
        let claim_labels = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["labels"].clone();
        let claim_spec = sts["spec"]["volumeClaimTemplates"][0]["spec"].clone();

        // StatefulSet controller: pods and claims for 0..replicas, nothing above.
        for (path, pod) in self.api.list(PODS) {
            let ordinal = self.names.ordinal_of(pod["metadata"]["name"].as_str().unwrap()).unwrap();
            if ordinal >= replicas {
                self.api.remove(&path);
                self.raft.stop(&self.names.peer_url(ordinal, false));
            }
        }
        for ordinal in 0..replicas {
            if self.held.contains(&ordinal) {
                continue;
            }
            if self.api.get(&self.pvc_path(ordinal)).is_none() {
                // Created from the claim template and bound at the size it asks for.
                let size = claim_spec["resources"]["requests"]["storage"].clone();
                self.api.put(&self.pvc_path(ordinal), json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": self.names.pvc(ordinal), "namespace": NS, "labels": claim_labels},
                    "spec": claim_spec,
                    "status": {"phase": "Bound", "capacity": {"storage": size}}
                }));
            }
            if self.pod(ordinal).is_none() {
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

        // The storage driver grows a volume whose claim asks for more (online expansion).
        if !self.frozen_volumes {
            for (path, mut claim) in self.api.list(PVCS) {
                let requested = claim["spec"]["resources"]["requests"]["storage"].clone();
                if !requested.is_null() && claim["status"]["capacity"]["storage"] != requested {
                    claim["status"]["capacity"]["storage"] = requested;
                    self.api.put(&path, claim);
                }
            }
        }

        // The members: bootstrap from the ConfigMap once every initial pod runs.
        let cm = self.api.get(CM);
        if !self.raft.is_bootstrapped()
            && let Some(cm) = &cm
            && cm["data"]["initial-cluster-state"] == "new"
        {
            let initial: Vec<i32> = cm["data"]["initial-cluster"]
                .as_str()
                .unwrap()
                .split(',')
                .filter_map(|e| self.names.ordinal_of(e.split_once('=')?.0))
                .collect();
            if initial.iter().all(|o| self.pod(*o).is_some()) {
                let members: Vec<_> = initial
                    .iter()
                    .map(|o| {
                        (
                            self.names.member(*o),
                            self.names.peer_url(*o, false),
                            self.names.client_url(*o, false),
                        )
                    })
                    .collect();
                self.raft.bootstrap(&members);
                for o in &initial {
                    self.mark_identity(*o);
                }
            }
        }

        // The kubelet: start members of running pods, report readiness.
        let members = self.raft.members();
        for ordinal in 0..replicas {
            let peer = self.names.peer_url(ordinal, false);
            let Some(mut pod) = self.pod(ordinal) else {
                self.raft.stop(&peer);
                continue;
            };
            let image = pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string();
            let member = members.iter().find(|(_, url, _)| *url == peer);
            if let Some((id, _, _)) = member {
                // kvnode with an initialized data dir rejoins under the identity stored there.
                let claim = self.api.get(&self.pvc_path(ordinal)).unwrap();
                match claim["metadata"]["annotations"]["sim/member-id"].as_str() {
                    Some(stored) if stored != format!("{id:x}") => {
                        self.stale_rejoins
                            .push(format!("{} holds {stored}, member is {id:x}", self.names.pvc(ordinal)));
                    }
                    None => self.mark_identity(ordinal),
                    _ => {}
                }
                self.raft.start(&self.names.member(ordinal), &peer, &self.names.client_url(ordinal, false));
                self.raft.set_faulty(&peer, self.bad_images.contains(&image));
            }
            let ready = member.is_some()
                && !self.bad_images.contains(&image)
                && self.raft.leader_peer_url().is_some();
            pod["status"] =
                json!({"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
            self.api.put(&self.pod_path(ordinal), pod);
        }
    }

    /// Records on the claim which member identity its data directory holds.
    fn mark_identity(&self, ordinal: i32) {
        let peer = self.names.peer_url(ordinal, false);
        let Some((id, _, _)) = self.raft.members().into_iter().find(|(_, url, _)| *url == peer) else {
            return;
        };
        if let Some(mut claim) = self.api.get(&self.pvc_path(ordinal)) {
            claim["metadata"]["annotations"]["sim/member-id"] = json!(format!("{id:x}"));
            self.api.put(&self.pvc_path(ordinal), claim);
        }
    }

    /// One reconcile of the current KVCluster (5 seconds later, as a requeue would be).
    pub async fn reconcile(&mut self) {
        self.step_world();
        self.advance(5);
        let kvc = Arc::new(self.kvc());
        reconcile(kvc, self.ctx.clone()).await.expect("reconcile succeeds");
        self.step_world();
    }

    /// Whether the cluster reports Ready with nothing in progress.
    pub fn settled(&self) -> bool {
        let status = self.status();
        status.operation.is_none()
            && status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// Reconciles until settled; panics after `max` rounds with the status for diagnosis.
    pub async fn converge(&mut self, max: usize) -> usize {
        for round in 0..max {
            self.reconcile().await;
            if self.settled() {
                return round + 1;
            }
        }
        panic!("did not converge in {max} rounds; status: {:#?}", self.status());
    }

    pub fn condition(&self, type_: &str) -> (String, String) {
        let status = self.status();
        let c = status.conditions.iter().find(|c| c.type_ == type_).expect("condition present");
        (c.status.clone(), c.reason.clone())
    }

    /// Reasons of the Events published so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.api
            .log()
            .iter()
            .filter(|l| l.method == Method::POST && l.path.starts_with(EVENTS))
            .map(|l| l.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Revisions of the running pods, by ordinal.
    pub fn pod_revisions(&self) -> BTreeMap<i32, String> {
        self.api
            .list(PODS)
            .iter()
            .map(|(_, p)| {
                (
                    self.names.ordinal_of(p["metadata"]["name"].as_str().unwrap()).unwrap(),
                    p["metadata"]["annotations"]["raftkv.dev/revision"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    pub fn sts_replicas(&self) -> i32 {
        self.api.get(STS).unwrap()["spec"]["replicas"].as_i64().unwrap() as i32
    }
}
