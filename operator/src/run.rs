//! The operator process: HTTP endpoints, leader election and the controller loop.
//!
//! Several replicas may run; only the holder of the `coordination.k8s.io` Lease reconciles
//! ([`crate::election`], on `kube-lease-manager`). The others serve `/healthz` and `/readyz` and
//! wait. A replica that loses the lease, or fails to renew it, stops its controller at once and
//! goes back to waiting, so two replicas never change the same cluster's membership concurrently.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

use crate::crd::KVCluster;
use crate::election::{follow_lease, reconcile_while_leading};
use crate::membership::etcd::EtcdMembership;
use crate::membership::secret_tls::SecretTlsSource;
use crate::metrics::{Metrics, MetricsError};
use crate::names::label;
use crate::plan::PlanConfig;
use crate::reconcile::{Context, error_policy, reconcile};

/// Settings of `kv-operator run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// Address serving `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "KV_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Only watch KVClusters in this namespace (all namespaces when empty).
    #[arg(long, env = "KV_OPERATOR_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "KV_OPERATOR_LEASE_NAME", default_value = "kv-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Identity in the Lease; the pod name is unique among replicas.
    #[arg(long, env = "POD_NAME", default_value = "kv-operator")]
    pub identity: String,
    /// Seconds a lease is valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,
    /// Seconds a pod or member may take to recover after a step before the operation halts.
    #[arg(long, default_value_t = 600)]
    pub step_timeout: u64,
    /// A member is caught up when its applied index is this close to the leader's.
    #[arg(long, default_value_t = 1000)]
    pub max_lag: u64,
    /// Timeout of each call to a cluster's membership API, in seconds.
    #[arg(long, default_value_t = 5)]
    pub membership_timeout: u64,
}

/// A failure that stops the operator process.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

#[derive(Clone)]
struct HttpState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
}

async fn metrics_handler(State(state): State<HttpState>) -> String {
    state.metrics.render()
}

async fn readyz(State(state): State<HttpState>) -> StatusCode {
    if state.ready.load(Ordering::Relaxed) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

/// `/metrics`, `/healthz` (the process serves) and `/readyz` (connected and electing).
pub fn http_router(metrics: Metrics, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, ready })
}

/// Runs the controller until the process is told to stop.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let metrics = Metrics::new()?;
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    info!(addr = %config.http_addr, "serving /metrics, /healthz, /readyz");
    let router = http_router(metrics.clone(), ready.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let client = Client::try_default().await?;
    let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(config.lease_duration)
        .with_grace(config.lease_duration / 3)
        .build()
        .await?;
    let (leading, lease_task) = follow_lease(manager);
    ready.store(true, Ordering::Relaxed);

    let ended = reconcile_while_leading(leading, &config.identity, || {
        controller(client.clone(), &config, metrics.clone())
    })
    .await;
    info!(?ended, "leaving");
    finish(lease_task, server).await
}

async fn finish(
    lease_task: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> Result<(), RunError> {
    server.abort();
    // The lease follower releases the lease once `leading` is dropped, so a standby replica
    // takes over without waiting for expiry.
    if let Err(e) = lease_task.await {
        warn!(error = %e, "lease follower failed");
    }
    Ok(())
}

/// The controller stream for KVClusters, their StatefulSets and member pods.
async fn controller(client: Client, config: &RunConfig, metrics: Metrics) {
    let (kvcs, stss, pods): (Api<KVCluster>, Api<StatefulSet>, Api<Pod>) =
        if config.watch_namespace.is_empty() {
            (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()))
        } else {
            let ns = config.watch_namespace.as_str();
            (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            )
        };
    let reporter = Reporter { controller: "kv-operator".into(), instance: Some(config.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    // Clusters with client TLS are dialed with their client Secret (read when needed).
    let membership = Arc::new(
        EtcdMembership::new(Duration::from_secs(config.membership_timeout))
            .with_tls_source(Arc::new(SecretTlsSource::new(client.clone()))),
    );
    let mut ctx = Context::new(client, membership, recorder, metrics);
    ctx.config =
        PlanConfig { step_timeout: Duration::from_secs(config.step_timeout), max_lag: config.max_lag };
    let managed = watcher::Config::default().labels(&format!("{}={}", label::MANAGED_BY, label::MANAGER));
    // Member pods belong to a StatefulSet, not to the KVCluster: map them by their instance label.
    let pod_labels = watcher::Config::default().labels(&format!("{}={}", label::NAME, label::APP));
    Controller::new(kvcs, watcher::Config::default().any_semantic())
        .owns(stss, managed)
        .watches(pods, pod_labels, |pod: Pod| {
            let ns = pod.namespace()?;
            let instance = pod.labels().get(label::INSTANCE)?.clone();
            Some(ObjectRef::<KVCluster>::new(&instance).within(&ns))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(ctx))
        .for_each(|result| async move {
            if let Err(e) = result {
                error!(error = %e, "controller");
            }
        })
        .await;
}
