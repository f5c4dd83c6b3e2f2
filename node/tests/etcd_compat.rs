//! What etcd clients found that the project's own tests had not: each answer here is etcd's,
//! checked through real gRPC against a real cluster.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use kvnode::proto::etcdserverpb::{PutRequest, RequestOp, ResponseHeader, TxnRequest, request_op};
use support::{TestCluster, eventually};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

/// The part of etcd's `TxnResponse` a client needs here. Decoding only the header and the
/// `succeeded` flag skips the nested responses without recursion, so a transaction deeper
/// than a protobuf decoder's recursion limit can still be answered.
#[derive(Clone, PartialEq, prost::Message)]
struct TxnOutcome {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    succeeded: bool,
}

/// `levels` transactions, each holding the next, the innermost putting `key`.
fn nested_txn(levels: u32, key: &str) -> TxnRequest {
    let put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: format!("{levels} levels").into_bytes(),
            ..Default::default()
        })),
    };
    let mut txn = TxnRequest::new(vec![], vec![put], vec![]);
    for _ in 1..levels {
        txn = TxnRequest::new(
            vec![],
            vec![RequestOp { request: Some(request_op::Request::RequestTxn(txn)) }],
            vec![],
        );
    }
    txn
}

async fn send_txn(endpoint: &str, txn: TxnRequest) -> Result<TxnOutcome, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<TxnRequest, TxnOutcome>::default();
    let path = PathAndQuery::from_static("/etcdserverpb.KV/Txn");
    grpc.unary(tonic::Request::new(txn), path, codec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_transactions_are_applied_up_to_etcd_s_limit_and_refused_past_it() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    // Sent to every member in turn: followers forward them inside Raft.
    for (i, levels) in [50u32, 51, 128].into_iter().enumerate() {
        let endpoint = cluster.endpoint(i % 3);
        let key = format!("nested-{levels}");
        let outcome = send_txn(&endpoint, nested_txn(levels, &key)).await.expect("accepted and applied");
        assert!(outcome.succeeded, "{levels} levels");
        for m in 0..3 {
            let mut c = cluster.client_of(m).await;
            let got = c.get(key.as_str(), None).await.expect("get");
            assert_eq!(got.kvs().len(), 1, "member {m} applied the {levels}-level transaction");
        }
    }
    for levels in [129u32, 1000] {
        let refused =
            send_txn(&cluster.endpoint(0), nested_txn(levels, "too-deep")).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{levels} levels: {refused:?}");
        assert_eq!(refused.message(), "etcdserver: too many operations in txn request");
    }
    let mut c = cluster.client().await;
    assert!(c.get("too-deep", None).await.expect("get").kvs().is_empty());
    // The members keep serving.
    let txn = Txn::new()
        .when([Compare::version("nested-50", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("after", "1", None)]);
    assert!(c.txn(txn).await.expect("txn").succeeded());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_s_codes_for_sizes_compaction_and_missing_services() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;

    // Over --max-request-bytes (1.5 MiB) but within gRPC's limit: etcd's own check.
    let big = vec![b'x'; 1_600_000];
    let err = c.put("big", big, None).await.expect_err("too large");
    let etcd_client::Error::GRpcStatus(s) = err else { panic!("{err:?}") };
    assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "etcdserver: request is too large"));
    // Over gRPC's limit (--max-request-bytes + 512 KiB): grpc-go's answer, which clients
    // branch on by its code.
    let huge = vec![b'x'; 2 * 1024 * 1024];
    let err = c.put("huge", huge, None).await.expect_err("over the gRPC limit");
    let etcd_client::Error::GRpcStatus(s) = err else { panic!("{err:?}") };
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().starts_with("grpc: received message larger than max ("), "{}", s.message());
    assert!(s.message().ends_with(" vs. 2097152)"), "{}", s.message());

    // Compacting a never-compacted store at revision 0 succeeds, once.
    c.compact(0, None).await.expect("compact at 0");
    let err = c.compact(0, None).await.expect_err("compacted already");
    assert!(err.to_string().contains("required revision has been compacted"), "{err}");

    // Services raftkv does not serve yet say so as etcd does.
    let err = c.user_list().await.expect_err("no auth yet");
    let etcd_client::Error::GRpcStatus(s) = err else { panic!("{err:?}") };
    assert_eq!((s.code(), s.message()), (Code::Unimplemented, "etcdserver: not capable"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_does_not_wait_for_peer_streams() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    cluster.client().await.put("k", "v", None).await.expect("put");
    // Peers hold streams to every member; a stop used to wait out its 5 s grace for them.
    // Both the leader (which hands off first) and a follower stop well within it.
    for i in [leader, (leader + 1) % 3] {
        let started = Instant::now();
        cluster.stop(i).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "member {i} took {took:?} to stop");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periodic_auto_compaction_keeps_the_retention_of_history() {
    let cluster = TestCluster::start_with(3, |f| {
        f.auto_compaction_mode = kvnode::config::AutoCompactionMode::Periodic;
        f.auto_compaction_retention = "1s".into();
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let first = c.put("k", "0", None).await.expect("put").header().expect("header").revision();
    // Keep writing until the leader compacted past the first write (a second later, sampled
    // every 100 ms).
    let mut n = 1;
    let compacted = loop {
        c.put("k", n.to_string(), None).await.expect("put");
        n += 1;
        let at_first = c.get("k", Some(etcd_client::GetOptions::new().with_revision(first))).await;
        if let Err(e) = at_first {
            break e.to_string();
        }
        assert!(n < 100_000, "history was never compacted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(compacted.contains("required revision has been compacted"), "{compacted}");
    // Recent history is kept: the revision of now minus a few writes still reads.
    let now = c.get("k", None).await.expect("get").header().expect("header").revision();
    c.get("k", Some(etcd_client::GetOptions::new().with_revision(now - 2)))
        .await
        .expect("recent history kept");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revision_auto_compaction_keeps_the_last_retention_revisions() {
    const KEEP: i64 = 10;
    let cluster = TestCluster::start_with(3, |f| {
        f.auto_compaction_mode = kvnode::config::AutoCompactionMode::Revision;
        f.auto_compaction_retention = KEEP.to_string();
        // etcd compacts every 5 minutes; the hidden flag shortens that for this test.
        f.auto_compaction_revision_interval = Duration::from_millis(100);
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let mut last = 0;
    for i in 0..3 * KEEP {
        last = c
            .put(format!("k/{}", i % 3), i.to_string(), None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision();
    }
    // With the writes over, the leader compacts at the current revision minus the retention,
    // as etcd does, and every member applies that compaction.
    let target = last - KEEP;
    let cluster_ref = &cluster;
    eventually("every member compacted at the current revision minus the retention", || async move {
        for m in 0..3 {
            let mut mc = cluster_ref.client_of(m).await;
            match mc.hash_kv(0).await {
                Ok(h) if h.compact_version() == target => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    let below = c.get("k/0", Some(etcd_client::GetOptions::new().with_revision(target - 1))).await;
    let refused = below.expect_err("history below the compaction revision is gone").to_string();
    assert!(refused.contains("mvcc: required revision has been compacted"), "{refused}");
    // The last KEEP revisions, and the compaction revision itself, still read.
    for rev in target..=last {
        c.get("k/0", Some(etcd_client::GetOptions::new().with_revision(rev)))
            .await
            .unwrap_or_else(|e| panic!("revision {rev} kept: {e}"));
    }
    cluster.shutdown().await;
}

/// A plain HTTP/1.1 GET on a member's client port; returns (status line, body).
async fn http_get(endpoint: &str, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_port_serves_grpc_health_and_etcds_http_endpoints() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    for m in 0..3 {
        let endpoint = cluster.endpoint(m);
        let (status, body) = http_get(&endpoint, "/health").await;
        assert!(status.contains("200"), "{status}");
        assert!(body.contains(r#""health":"true""#), "{body}");
        let (status, body) = http_get(&endpoint, "/version").await;
        assert!(status.contains("200"), "{status}");
        assert!(
            body.contains(r#""etcdserver":"3.5.13""#) && body.contains(r#""etcdcluster":"3.5.0""#),
            "{body}"
        );

        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .expect("url")
            .connect()
            .await
            .expect("dial");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(answer.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    }
    // gRPC still works on the same port.
    cluster.client().await.put("k", "v", None).await.expect("put");
    cluster.shutdown().await;
}
