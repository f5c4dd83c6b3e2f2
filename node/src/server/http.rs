//! The member's HTTP endpoints on the metrics port: `/metrics`, `/health`, `/livez`, `/readyz`.
//!
//! Semantics follow etcd's: `/livez` says the process should not be restarted (its Raft loop
//! still turns), `/readyz` and `/health` say it can serve requests now (it knows a leader and a
//! linearizable read completes). Kubernetes probes use `/livez` for liveness and `/readyz` for
//! readiness, so a member on the minority side of a partition leaves the Service's endpoints
//! without being restarted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::server::metrics::Metrics;

/// What the health endpoints ask of the member.
pub trait HealthCheck: Send + Sync + 'static {
    /// Ok while the Raft loop is alive; Err(reason) otherwise.
    fn live(&self) -> Result<(), String>;
    /// Ok when the member can serve a linearizable request now; Err(reason) otherwise.
    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// Updates gauges that are read rather than counted (database size) just before a scrape.
    fn refresh_metrics(&self) {}
}

struct AppState<H> {
    metrics: Arc<Metrics>,
    health: Arc<H>,
}

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
            format!(r#"{{"health":"false","reason":{}}}"#, json_string(&reason)),
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

fn probe_response(result: Result<(), String>) -> Response {
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

/// The address part of a `http://host:port` URL, for binding.
pub fn bind_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().map_err(|e| format!("invalid listen URL {url:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addr_accepts_urls_and_rejects_garbage() {
        assert_eq!(bind_addr("http://127.0.0.1:2381").ok(), Some(SocketAddr::from(([127, 0, 0, 1], 2381))));
        assert_eq!(bind_addr("http://0.0.0.0:2379/").ok(), Some(SocketAddr::from(([0, 0, 0, 0], 2379))));
        assert_eq!(bind_addr("http://localhost:1").ok(), Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert!(bind_addr("http://no-port").is_err());
    }

    #[test]
    fn json_reason_is_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
