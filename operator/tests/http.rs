//! The operator's HTTP endpoints, served on a free loopback port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kv_operator::metrics::Metrics;
use kv_operator::run::http_router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let metrics = Metrics::new().unwrap();
    metrics.reconciles.with_label_values(&["ok"]).inc();
    metrics.members.with_label_values(&["ns", "kv"]).set(3);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = http_router(metrics.clone(), ready.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("kv_operator_reconciles_total{result=\"ok\"} 1"), "{body}");
    assert!(body.contains("kv_operator_cluster_members{name=\"kv\",namespace=\"ns\"} 3"), "{body}");
    metrics.forget("ns", "kv");
    assert!(!get(addr, "/metrics").await.1.contains("kv_operator_cluster_members{"));
}
