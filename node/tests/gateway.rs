//! etcd's HTTP/JSON gateway with `curl`, following etcd's documented gateway examples (put,
//! range, txn with camelCase and snake_case fields, watch as a stream, lease grant and
//! keep-alive, cluster and maintenance calls), and the answers to bad JSON, unknown routes and
//! oversized bodies.
//!
//! `scripts/test.sh` installs curl and sets `RAFTKV_REQUIRE_CURL=1`; run directly without curl,
//! the test says it skipped.

mod support;

use std::process::Command;

use support::TestCluster;

fn curl_available() -> bool {
    let found = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("RAFTKV_REQUIRE_CURL").is_none(), "curl is required but was not found");
        eprintln!("SKIPPED: curl not installed");
    }
    found
}

/// `curl -s -X POST <endpoint><path> -d <body>`; returns (HTTP status, body).
async fn post(endpoint: &str, path: &str, body: &str, extra: &[&str]) -> (u16, String) {
    curl(&["-X", "POST", &format!("{endpoint}{path}"), "--data-binary", body], extra).await
}

/// `curl -s <endpoint><path>`; returns (HTTP status, body).
async fn get(endpoint: &str, path: &str) -> (u16, String) {
    curl(&[&format!("{endpoint}{path}")], &[]).await
}

/// Runs `curl -s` with `args` then `extra`, asking for the status after the body.
async fn curl(args: &[&str], extra: &[&str]) -> (u16, String) {
    let args: Vec<String> =
        ["-s", "-w", "\n%{http_code}"].iter().chain(args).chain(extra).map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new("curl").args(&args).output())
        .await
        .expect("join")
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcds_documented_gateway_examples_work_with_curl() {
    if !curl_available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let (a, b) = (cluster.endpoint(0), cluster.endpoint(1));

    // etcd's plain HTTP endpoints on the client port.
    let (status, body) = get(&a, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""health":"true""#), "{body}");
    let (status, body) = get(&b, "/version").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""etcdserver":"3.5.13""#) && body.contains(r#""etcdcluster":"3.5.0""#), "{body}");

    // "foo" = Zm9v, "bar" = YmFy.
    let (code, body) = post(&a, "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""header":{"cluster_id":""#) && body.contains(r#""revision":"2""#), "{body}");
    let (code, body) = post(&b, "/v3/kv/range", r#"{"key": "Zm9v"}"#, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(r#""kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1""#),
        "{body}"
    );
    // A prefix (range_end "foo" + 1 = "fop" = Zm9w).
    let (_, body) = post(&b, "/v3/kv/range", r#"{"key": "Zm9v", "range_end": "Zm9w"}"#, &[]).await;
    assert!(body.contains(r#""count":"1""#), "{body}");

    // The docs' txn, in camelCase; then the same shape in snake_case.
    let txn = r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}"#;
    let (code, body) = post(&a, "/v3/kv/txn", txn, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""succeeded":true"#), "{body}");
    let txn = r#"{"compare":[{"target":"MOD","key":"Zm9v","mod_revision":"1"}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#;
    let (_, body) = post(&b, "/v3/kv/txn", txn, &[]).await;
    assert!(!body.contains("succeeded") && body.contains("response_range"), "failure branch: {body}");

    // Watch: a stream of {"result": ...} lines while the client stays connected.
    let watch_url = format!("{b}/v3/watch");
    let watcher = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-s",
                "-N",
                "-m",
                "3",
                "-X",
                "POST",
                &watch_url,
                "-d",
                r#"{"create_request": {"key":"Zm9v"}}"#,
            ])
            .output()
            .expect("curl watch")
    });
    let mut delivered = String::new();
    for _ in 0..20 {
        post(&a, "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmF6"}"#, &[]).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if watcher.is_finished() {
            break;
        }
    }
    let out = watcher.await.expect("join");
    delivered.push_str(&String::from_utf8_lossy(&out.stdout));
    let mut lines = delivered.lines();
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with(r#"{"result":{"header""#) && l.contains(r#""created":true"#)),
        "{delivered}"
    );
    assert!(
        lines.any(|l| l.contains(r#""events":[{"kv":{"key":"Zm9v""#) && l.contains(r#""value":"YmF6""#)),
        "{delivered}"
    );

    // Leases: grant, keep-alive (a stream answering one request), time-to-live with keys.
    let (code, body) = post(&a, "/v3/lease/grant", r#"{"TTL": 30, "ID": 7}"#, &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""ID":"7","TTL":"30""#), "{body}");
    let (_, body) =
        post(&b, "/v3/kv/put", r#"{"key": "bGVhc2Vk", "value": "eA==", "lease": "7"}"#, &[]).await;
    assert!(body.contains("revision"), "{body}");
    let (_, body) = post(&b, "/v3/lease/keepalive", r#"{"ID": 7}"#, &[]).await;
    assert!(body.starts_with(r#"{"result":{"header""#) && body.contains(r#""TTL":"30""#), "{body}");
    let (_, body) = post(&a, "/v3/kv/lease/timetolive", r#"{"ID": 7, "keys": true}"#, &[]).await;
    assert!(body.contains(r#""grantedTTL":"30""#) && body.contains(r#""keys":["bGVhc2Vk"]"#), "{body}");

    // Cluster and maintenance.
    let (_, body) = post(&a, "/v3/cluster/member/list", "{}", &[]).await;
    assert_eq!(body.matches("\"peerURLs\"").count(), 3, "{body}");
    let (_, body) = post(&a, "/v3/maintenance/status", "", &[]).await;
    assert!(body.contains(r#""version":"3.5.13""#), "{body}");
    let (_, body) = post(&a, "/v3/maintenance/hashkv", "{}", &[]).await;
    assert!(body.contains(r#""hash":"#), "{body}");

    // Errors as etcd's gateway writes them.
    let (code, body) = post(&a, "/v3/kv/put", r#"{"key": "", "value": "YmFy"}"#, &[]).await;
    assert_eq!(code, 400);
    assert_eq!(
        body,
        r#"{"error":"etcdserver: key is not provided","code":3,"message":"etcdserver: key is not provided"}"#
    );
    let (code, body) = post(&a, "/v3/lease/revoke", r#"{"ID": 424242}"#, &[]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""code":5"#) && body.contains("requested lease not found"), "{body}");
    let (code, body) = post(&a, "/v3/kv/range", r#"{"key": "#, &[]).await;
    assert_eq!(code, 400, "bad JSON: {body}");
    assert!(body.contains(r#""code":3"#), "{body}");
    let (code, body) = post(&a, "/v3/kv/range", r#"{"key": "Zm9v", "no_such_field": 1}"#, &[]).await;
    assert_eq!(code, 400, "unknown field: {body}");
    let (code, body) = post(&a, "/v3/kv/nothing", "{}", &[]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(r#""code":5"#), "{body}");
    let big = format!(r#"{{"key": "Zm9v", "value": "{}"}}"#, "A".repeat(3 * 1024 * 1024));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), big).expect("write");
    let (code, body) = post(&a, "/v3/kv/put", &format!("@{}", file.path().display()), &[]).await;
    assert_eq!(code, 429, "an oversized body is refused as gRPC refuses it: {body}");
    assert!(
        body.contains(r#""code":8"#) && body.contains("grpc: received message larger than max ("),
        "{body}"
    );

    cluster.shutdown().await;
}
