//! End-to-end tests of kvnode members over real gRPC on loopback with real redb files,
//! driven by a third-party etcd client (the `etcd-client` crate).

mod support;

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use support::{TestCluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_get_delete_txn_through_etcd_client() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;

    let put = c.put("foo", "bar", None).await.expect("put");
    let rev1 = put.header().expect("header").revision();
    assert!(rev1 >= 2, "first write bumps the revision past 1, got {rev1}");
    let put = c.put("foo", "baz", Some(PutOptions::new().with_prev_key())).await.expect("put prev");
    assert_eq!(put.prev_key().map(|kv| kv.value()), Some(&b"bar"[..]));

    let got = c.get("foo", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!((kv.value(), kv.version(), kv.create_revision()), (&b"baz"[..], 2, rev1));
    assert_eq!(kv.mod_revision(), got.header().expect("header").revision());

    for i in 0..10 {
        c.put(format!("pre/{i:02}"), format!("v{i}"), None).await.expect("put prefix");
    }
    let all = c.get("pre/", Some(GetOptions::new().with_prefix())).await.expect("prefix");
    assert_eq!(all.kvs().len(), 10);
    let limited = c
        .get(
            "pre/",
            Some(
                GetOptions::new().with_prefix().with_limit(3).with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .expect("limit");
    assert_eq!(limited.kvs().len(), 3);
    assert!(limited.more());
    assert_eq!(limited.count(), 10);
    assert_eq!(limited.kvs()[0].key(), b"pre/09");
    let from_all = c.get("\0", Some(GetOptions::new().with_from_key().with_count_only())).await.expect("all");
    assert_eq!(from_all.count(), 11);

    let old = c.get("foo", Some(GetOptions::new().with_revision(rev1))).await.expect("historic get");
    assert_eq!(old.kvs()[0].value(), b"bar");

    let del =
        c.delete("pre/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.expect("delete");
    assert_eq!(del.deleted(), 10);
    assert_eq!(del.prev_kvs().len(), 10);

    let txn = Txn::new()
        .when([Compare::value("foo", CompareOp::Equal, "baz")])
        .and_then([TxnOp::put("foo", "qux", None), TxnOp::get("foo", None)])
        .or_else([TxnOp::put("foo", "wrong", None)]);
    let resp = c.txn(txn).await.expect("txn");
    assert!(resp.succeeded());
    let txn = Txn::new()
        .when([Compare::version("foo", CompareOp::Greater, 10)])
        .and_then([TxnOp::put("foo", "wrong", None)])
        .or_else([TxnOp::get("foo", None)]);
    let resp = c.txn(txn).await.expect("txn else");
    assert!(!resp.succeeded());
    assert_eq!(c.get("foo", None).await.expect("get").kvs()[0].value(), b"qux");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_to_a_follower_are_forwarded_and_reads_are_linearizable_everywhere() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let mut fc = cluster.client_of(follower).await;
    fc.put("k", "from-follower", None).await.expect("forwarded put");
    for i in 0..3 {
        let mut c = cluster.client_of(i).await;
        let got = c.get("k", None).await.expect("linearizable get");
        assert_eq!(got.kvs()[0].value(), b"from-follower", "member {i}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_crash_keeps_cluster_writable_and_restart_recovers_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let mut acked = Vec::new();
    for i in 0..50 {
        c.put(format!("k{i}"), format!("v{i}"), None).await.expect("put");
        acked.push(i);
    }
    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let mut c = cluster.client().await;
    for i in 50..100 {
        c.put(format!("k{i}"), format!("v{i}"), None).await.expect("put after failover");
        acked.push(i);
    }
    cluster.start_member(leader).await;
    let mut restarted = cluster.client_of(leader).await;
    eventually("restarted member catches up", || {
        let mut r = restarted.clone();
        async move {
            r.get("k", Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
                .await
                .map(|g| g.count() == 100)
                .unwrap_or(false)
        }
    })
    .await;
    for i in acked {
        let got = restarted.get(format!("k{i}"), None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), format!("v{i}").as_bytes());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_far_behind_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(3, |f| f.snapshot_count = 20).await;
    let leader = cluster.wait_leader().await;
    let lagging = (leader + 1) % 3;
    cluster.kill(lagging);
    let mut c = cluster.client().await;
    for i in 0..300 {
        c.put(format!("s{i:03}"), "x", None).await.expect("put while follower down");
    }
    cluster.start_member(lagging).await;
    let mut lc = cluster.client_of(lagging).await;
    // The key space is readable a moment before the install is counted (the log is replaced
    // in between), so the wait covers both.
    let installed = cluster.member(lagging).metrics.snapshots_installed.clone();
    eventually("lagging member has all keys, through InstallSnapshot", || {
        let mut r = lc.clone();
        let installed = installed.clone();
        async move {
            let has_all = r
                .get("s", Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
                .await
                .map(|g| g.count() == 300)
                .unwrap_or(false);
            has_all && installed.get() >= 1
        }
    })
    .await;
    let got = lc.get("s299", None).await.expect("linearizable read on caught-up member");
    assert_eq!(got.kvs().len(), 1);
    cluster.shutdown().await;
}

/// The log shares the database file and its quota with the key space, so it is compacted by
/// size too: with `--snapshot-count` far away, 80 MiB of large entries still trigger a
/// compaction, and the member keeps serving every key afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_is_compacted_by_size_before_snapshot_count() {
    let cluster = TestCluster::start_with(1, |f| {
        f.snapshot_count = 1_000_000;
        f.max_request_bytes = 2 * 1024 * 1024;
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let value = vec![b'x'; 1024 * 1024];
    for i in 0..80 {
        c.put(format!("big{i:02}"), value.clone(), None).await.expect("put 1 MiB");
    }
    assert!(
        cluster.member(0).metrics.log_compactions.get() >= 1,
        "80 MiB of applied entries must compact the log long before 1,000,000 entries"
    );
    let got = c.get("big", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count");
    assert_eq!(got.count(), 80);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_etcd_errors_and_the_member_keeps_serving() {
    let cluster = TestCluster::start_with(1, |f| {
        f.max_request_bytes = 4096;
        f.max_txn_ops = 4;
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;

    let err = c.put("", "v", None).await.expect_err("empty key");
    assert!(err.to_string().contains("etcdserver: key is not provided"), "{err}");

    let err = c.put("big", vec![0u8; 8192], None).await.expect_err("too large");
    assert!(err.to_string().contains("etcdserver: request is too large"), "{err}");

    let ops: Vec<TxnOp> = (0..5).map(|i| TxnOp::put(format!("t{i}"), "v", None)).collect();
    let err = c.txn(Txn::new().and_then(ops)).await.expect_err("too many ops");
    assert!(err.to_string().contains("etcdserver: too many operations in txn request"), "{err}");

    for i in 0..5 {
        c.put("rev", format!("{i}"), None).await.expect("put");
    }
    let head = c.get("rev", None).await.expect("get").header().expect("h").revision();
    c.compact(head - 1, None).await.expect("compact");
    let err = c.get("rev", Some(GetOptions::new().with_revision(head - 3))).await.expect_err("compacted");
    assert!(err.to_string().contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    let err = c.get("rev", Some(GetOptions::new().with_revision(head + 100))).await.expect_err("future");
    assert!(err.to_string().contains("etcdserver: mvcc: required revision is a future revision"), "{err}");

    assert_eq!(c.get("rev", None).await.expect("still serving").kvs()[0].value(), b"4");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_side_fails_fast_with_no_leader() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            cluster.kill(i);
        }
    }
    let mut c = cluster.client_of(survivor).await;
    let started = std::time::Instant::now();
    let err = c.put("x", "y", None).await.expect_err("no quorum");
    let msg = err.to_string();
    assert!(
        msg.contains("etcdserver: no leader") || msg.contains("etcdserver: request timed out"),
        "unexpected error: {msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(15), "must fail within a bounded time");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_of_the_leader_hands_leadership_off_first() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let old_id = cluster.member(leader).id;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let watcher = cluster.member(followers[0]).handle.clone();
    let changes_before = cluster.member(followers[0]).metrics.leader_changes.get();
    cluster.stop(leader).await;
    // The hand-off completes before stop returns: a follower already knows a new leader, with
    // no election timeout spent waiting for the old one.
    let now = watcher.status();
    assert!(
        now.leader_id.is_some_and(|l| l != old_id),
        "leadership was handed off before the leader stopped: {now:?}"
    );
    assert!(cluster.member(followers[0]).metrics.leader_changes.get() > changes_before);
    let mut c = cluster.client().await;
    c.put("after-handoff", "ok", None).await.expect("write after hand-off");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_health_endpoints_report_the_member_state() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client().await;
    for i in 0..10 {
        c.put(format!("m{i}"), "v", None).await.expect("put");
        // Linearizable reads start leader rounds, which the peer round-trip histogram times.
        c.get(format!("m{i}"), None).await.expect("get");
    }
    let mut leaders = 0;
    for i in 0..3 {
        let base = format!("http://{}", cluster.member(i).metrics_addr);
        let text = http_get(&format!("{base}/metrics")).await;
        for name in [
            "raftkv_server_has_leader",
            "raftkv_server_leader_changes_seen_total",
            "raftkv_server_proposals_committed_total",
            "raftkv_server_proposals_applied_total",
            "raftkv_server_proposals_pending",
            "raftkv_server_proposals_failed_total",
            "raftkv_disk_wal_fsync_duration_seconds_bucket",
            "raftkv_disk_backend_commit_duration_seconds_bucket",
            "raftkv_disk_backend_sync_duration_seconds_bucket",
            "raftkv_mvcc_db_total_size_in_bytes",
            "raftkv_server_applied_index",
            "raftkv_server_term",
        ] {
            assert!(text.contains(name), "member {i} lacks {name}");
        }
        assert!(text.contains("raftkv_server_has_leader{member_id="), "{text}");
        assert!(metric_value(&text, "raftkv_server_has_leader") == 1.0);
        assert!(metric_value(&text, "raftkv_server_proposals_applied_total") >= 10.0);
        assert!(metric_value(&text, "raftkv_mvcc_db_total_size_in_bytes") > 0.0);
        leaders += metric_value(&text, "raftkv_server_is_leader") as usize;
        if i == leader {
            assert!(text.contains("raftkv_network_peer_round_trip_time_seconds_bucket"), "{text}");
        }
        assert!(http_get(&format!("{base}/livez")).await.starts_with("ok"));
        assert!(http_get(&format!("{base}/readyz")).await.starts_with("ok"));
        assert!(http_get(&format!("{base}/health")).await.contains(r#""health":"true""#));
    }
    assert_eq!(leaders, 1, "exactly one member reports being leader");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreadable_database_is_a_clear_start_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut flags = support::test_flags(
        "bad",
        dir.path(),
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
    );
    flags.initial_cluster = format!("bad={}", flags.initial_advertise_peer_urls[0]);
    std::fs::create_dir_all(&flags.data_dir).expect("mkdir");
    let garbage = vec![0xA5u8; 64 * 1024];
    std::fs::write(flags.data_dir.join("member.redb"), &garbage).expect("write garbage");
    let listeners = kvnode::member::Listeners::bind(&flags).await.expect("bind");
    let err = match kvnode::member::start(flags.clone(), listeners).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a member started on a garbage database"),
    };
    assert!(err.contains("member.redb"), "error names the file: {err}");
    let after = std::fs::read(flags.data_dir.join("member.redb")).expect("still there");
    assert_eq!(after, garbage, "a failed open never rewrites the file");
}

/// A plain HTTP GET over a TCP stream (the endpoints speak HTTP/1.1).
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).expect("path");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// The value of the first sample of `name` in a Prometheus text exposition.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample for {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_message_gets_a_grpc_error_and_the_member_keeps_serving() {
    /// Field 1 as a varint, where every etcd request has bytes: undecodable as a PutRequest.
    #[derive(Clone, PartialEq, prost::Message)]
    struct NotAPut {
        #[prost(uint64, tag = "1")]
        key: u64,
    }
    let cluster = TestCluster::start(1).await;
    cluster.wait_leader().await;
    let channel = tonic::transport::Endpoint::from_shared(cluster.endpoint(0))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<NotAPut, NotAPut>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let err = grpc.unary(tonic::Request::new(NotAPut { key: 7 }), path, codec).await.expect_err("malformed");
    assert_eq!(err.code(), tonic::Code::Internal, "{err}");
    let mut c = cluster.client().await;
    c.put("still", "serving", None).await.expect("member keeps serving");
    cluster.shutdown().await;
}
