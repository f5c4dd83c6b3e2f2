//! The member's HTTP endpoints on the metrics port: `/metrics`, `/health`, `/livez`, `/readyz`.
//!
//! Semantics follow etcd's: `/livez` says the process should not be restarted (its Raft loop
//! still turns), `/readyz` and `/health` say it can serve requests now (it knows a leader and a
//! linearizable read completes). Kubernetes probes use `/livez` for liveness and `/readyz` for
//! readiness, so a member on the minority side of a partition leaves the Service's endpoints
//! without being restarted.

pub mod health;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::driver::DriverError;
use crate::metrics::Metrics;

/// Why a member is not live or not ready, as the probes report it.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("raft loop not started")]
    NotStarted,
    #[error("raft loop stalled for {0:?}")]
    Stalled(Duration),
    #[error("no leader")]
    NoLeader,
    #[error("linearizable read barrier failed: {0}")]
    Barrier(#[source] DriverError),
    #[error("linearizable read barrier timed out")]
    BarrierTimeout,
}

/// What the health endpoints ask of the member.
pub trait HealthCheck: Send + Sync + 'static {
    /// Ok while the Raft loop is alive.
    fn live(&self) -> Result<(), Unhealthy>;
    /// Ok when the member can serve a linearizable request now.
    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), Unhealthy>> + Send + '_>>;
    /// Updates gauges that are read rather than counted (database size) just before a scrape.
    fn refresh_metrics(&self) {}
}

struct AppState<H> {
    metrics: Arc<Metrics>,
    health: Arc<H>,
}

/// What the client port serves over plain HTTP beside gRPC, as etcd's client port does:
/// the metrics port's endpoints and `/version`.
pub fn client_port_router<H: HealthCheck>(metrics: Arc<Metrics>, health: Arc<H>) -> Router {
    router(metrics, health).route("/version", get(version_handler))
}

/// etcd's `/version`: the server's and the cluster's etcd API versions.
async fn version_handler() -> Response {
    let body = format!(
        r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
        crate::api::maintenance::ETCD_API_VERSION,
        ETCD_CLUSTER_VERSION
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The cluster version `/version` reports (etcd reports major.minor.0).
const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// Builds the router; kept separate from binding so tests can drive it in-process.
pub fn router<H: HealthCheck>(metrics: Arc<Metrics>, health: Arc<H>) -> Router {
    let state = Arc::new(AppState { metrics, health });
    Router::new()
        .route("/metrics", get(metrics_handler::<H>))
        .route("/health", get(health_handler::<H>))
        .route("/livez", get(livez_handler::<H>))
        .route("/readyz", get(readyz_handler::<H>))
        .with_state(state)
}

async fn metrics_handler<H: HealthCheck>(State(s): State<Arc<AppState<H>>>) -> Response {
    s.health.refresh_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

/// etcd's `/health` answers JSON `{"health":"true"|"false","reason":...}`.
async fn health_handler<H: HealthCheck>(State(s): State<Arc<AppState<H>>>) -> Response {
    let (code, body) = match s.health.ready().await {
        Ok(()) => (StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"health":"false","reason":{}}}"#, json_string(&reason.to_string())),
        ),
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn livez_handler<H: HealthCheck>(State(s): State<Arc<AppState<H>>>) -> Response {
    probe_response(s.health.live())
}

async fn readyz_handler<H: HealthCheck>(State(s): State<Arc<AppState<H>>>) -> Response {
    probe_response(s.health.ready().await)
}

fn probe_response(result: Result<(), Unhealthy>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ok: {reason}\n")).into_response(),
    }
}

/// Minimal JSON string escaping for a reason message.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Serves the router on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reason_is_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
