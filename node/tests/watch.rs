//! etcd's Watch through real gRPC on in-process members, with the `etcd-client` crate (and
//! raftkv's own generated client where etcd-client hides a field): every guarantee etcd
//! documents, the answers to bad input, and the regressions etcd's robustness tests found.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};
use kvnode::proto::etcdserverpb::watch_client::WatchClient;
use kvnode::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use support::{TestCluster, eventually};
use tokio::time::timeout;

/// (type, key, value, mod revision) of an event, for comparisons.
type Seen = (EventType, String, String, i64);

fn seen(resp: &WatchResponse) -> Vec<Seen> {
    resp.events()
        .iter()
        .map(|e| {
            let kv = e.kv().expect("event kv");
            (
                e.event_type(),
                kv.key_str().unwrap_or_default().to_string(),
                kv.value_str().unwrap_or_default().to_string(),
                kv.mod_revision(),
            )
        })
        .collect()
}

async fn next(stream: &mut WatchStream) -> WatchResponse {
    timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a response within 10 s")
        .expect("stream healthy")
        .expect("stream open")
}

/// Opens a watch and returns its stream after the created response.
async fn watch(client: &mut Client, key: &str, opts: WatchOptions) -> (WatchStream, i64) {
    let mut stream = client.watch(key, Some(opts)).await.expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled(), "created: {created:?}");
    (stream, created.watch_id())
}

/// Reads events until `n` were received; every response's events are of one watcher.
async fn collect(stream: &mut WatchStream, n: usize) -> Vec<Seen> {
    let mut out = Vec::new();
    while out.len() < n {
        let resp = next(stream).await;
        out.extend(seen(&resp));
    }
    out
}

async fn revision(client: &mut Client) -> i64 {
    client.get("any", None).await.expect("get").header().expect("header").revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_come_in_order_with_prev_kv_and_filters_on_every_member() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut writer = cluster.client().await;
    let start = revision(&mut writer).await + 1;
    let mut streams = Vec::new();
    for m in 0..3 {
        let mut c = cluster.client_of(m).await;
        let all = watch(&mut c, "p/", WatchOptions::new().with_prefix().with_prev_key()).await.0;
        let no_delete =
            watch(&mut c, "p/", WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete]))
                .await
                .0;
        let no_put =
            watch(&mut c, "p/", WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]))
                .await
                .0;
        let one_key = watch(&mut c, "p/a", WatchOptions::new()).await.0;
        streams.push((c, all, no_delete, no_put, one_key));
    }
    // Writes through every member.
    for (i, (key, value)) in
        [("p/a", "1"), ("p/b", "1"), ("p/a", "2"), ("x", "0"), ("p/b", "2")].into_iter().enumerate()
    {
        let mut c = cluster.client_of(i % 3).await;
        c.put(key, value, None).await.expect("put");
    }
    cluster.client_of(1).await.delete("p/a", None).await.expect("delete");
    let expected: Vec<Seen> = vec![
        (EventType::Put, "p/a".into(), "1".into(), start),
        (EventType::Put, "p/b".into(), "1".into(), start + 1),
        (EventType::Put, "p/a".into(), "2".into(), start + 2),
        (EventType::Put, "p/b".into(), "2".into(), start + 4),
        (EventType::Delete, "p/a".into(), "".into(), start + 5),
    ];
    for (m, (_, all, no_delete, no_put, one_key)) in streams.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut prevs = Vec::new();
        while got.len() < expected.len() {
            let resp = next(all).await;
            for e in resp.events() {
                prevs.push(e.prev_kv().map(|p| p.value_str().unwrap_or_default().to_string()));
            }
            got.extend(seen(&resp));
        }
        assert_eq!(got, expected, "member {m}: every event of the prefix, in revision order");
        let prev_values: Vec<Option<&str>> = prevs.iter().map(|p| p.as_deref()).collect();
        assert_eq!(prev_values, [None, None, Some("1"), Some("1"), Some("2")], "member {m}: prev_kv");
        let puts: Vec<Seen> = expected.iter().filter(|e| e.0 == EventType::Put).cloned().collect();
        assert_eq!(collect(no_delete, puts.len()).await, puts, "member {m}: NODELETE");
        let deletes: Vec<Seen> = expected.iter().filter(|e| e.0 == EventType::Delete).cloned().collect();
        assert_eq!(collect(no_put, deletes.len()).await, deletes, "member {m}: NOPUT");
        let a: Vec<Seen> = expected.iter().filter(|e| e.1 == "p/a").cloned().collect();
        assert_eq!(collect(one_key, a.len()).await, a, "member {m}: one key");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_s_events_arrive_in_one_response() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client_of(2).await;
    let (mut stream, _) = watch(&mut c, "t/", WatchOptions::new().with_prefix()).await;
    let txn = Txn::new().when([Compare::version("t/a", CompareOp::Equal, 0)]).and_then([
        TxnOp::put("t/a", "1", None),
        TxnOp::put("t/b", "1", None),
        TxnOp::put("t/c", "1", None),
    ]);
    assert!(cluster.client_of(0).await.txn(txn).await.expect("txn").succeeded());
    let resp = next(&mut stream).await;
    let events = seen(&resp);
    assert_eq!(events.len(), 3, "all events of the revision together: {events:?}");
    assert!(events.iter().all(|e| e.3 == events[0].3), "one revision");
    let kvs: Vec<_> = resp.events().iter().map(|e| e.kv().expect("kv").clone()).collect();
    assert!(kvs.iter().all(|kv| kv.create_revision() == kv.mod_revision() && kv.version() == 1), "IsCreate");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_from_the_past_replays_and_a_resumed_one_continues_exactly() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let first = revision(&mut c).await + 1;
    for i in 0..20 {
        c.put(format!("r/{}", i % 4), i.to_string(), None).await.expect("put");
    }
    let mut reader = cluster.client_of(1).await;
    let opts = WatchOptions::new().with_prefix().with_start_revision(first + 3);
    let (mut stream, _) = watch(&mut reader, "r/", opts).await;
    let got = collect(&mut stream, 8).await;
    let revs: Vec<i64> = got.iter().map(|e| e.3).collect();
    assert_eq!(revs, (first + 3..first + 3 + got.len() as i64).collect::<Vec<_>>(), "no gap, no repeat");
    drop(stream);
    // The client stops after the 8th event it saw (a response may have carried more).
    let revs = &revs[..8];
    // Resume on another member at the last revision seen plus one.
    let last = revs[revs.len() - 1];
    let mut other = cluster.client_of(2).await;
    let (mut resumed, _) =
        watch(&mut other, "r/", WatchOptions::new().with_prefix().with_start_revision(last + 1)).await;
    let rest = collect(&mut resumed, (first + 19 - last) as usize).await;
    assert_eq!(rest.first().map(|e| e.3), Some(last + 1));
    assert_eq!(rest.last().map(|e| e.3), Some(first + 19));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compacted_start_cancels_and_the_compaction_revision_itself_is_served_whole() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    c.put("c/a", "1", None).await.expect("put");
    c.put("c/b", "1", None).await.expect("put");
    // A deletion at the revision compacted to (etcd-io/etcd#18089, #19179).
    let deleted_at = c.delete("c/a", None).await.expect("delete").header().expect("header").revision();
    c.put("c/b", "2", None).await.expect("put");
    c.compact(deleted_at, None).await.expect("compact");
    let mut w = cluster.client_of(1).await;
    let (mut at, _) =
        watch(&mut w, "c/", WatchOptions::new().with_prefix().with_start_revision(deleted_at)).await;
    let got = collect(&mut at, 2).await;
    assert_eq!(
        got[0],
        (EventType::Delete, "c/a".into(), "".into(), deleted_at),
        "the deletion at the compaction revision"
    );
    assert_eq!(got[1].3, deleted_at + 1);
    let mut stream = w
        .watch("c/", Some(WatchOptions::new().with_prefix().with_start_revision(deleted_at - 1)))
        .await
        .expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created());
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled(), "{canceled:?}");
    assert_eq!(canceled.compact_revision(), deleted_at);
    assert_eq!(canceled.cancel_reason(), "etcdserver: mvcc: required revision has been compacted");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_future_watch_waits_and_never_reports_below_its_start() {
    // Progress notifications every 100 ms, so a premature one would be seen.
    let cluster = TestCluster::start_with(3, |f| {
        f.experimental_watch_progress_notify_interval = Duration::from_millis(100);
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let now = revision(&mut c).await;
    let start = now + 5;
    let mut w = cluster.client_of(2).await;
    let opts = WatchOptions::new().with_prefix().with_start_revision(start).with_progress_notify();
    let (mut stream, _) = watch(&mut w, "f/", opts).await;
    // Nothing at all until the revision exists (etcd-io/etcd#20221).
    assert!(timeout(Duration::from_millis(500), stream.message()).await.is_err(), "nothing before the start");
    for i in 0..8 {
        c.put("f/k", i.to_string(), None).await.expect("put");
    }
    let mut events = Vec::new();
    while events.len() < 4 {
        let resp = next(&mut stream).await;
        let rev = resp.header().expect("header").revision();
        assert!(rev >= start, "a response at {rev}, below the start {start}: {resp:?}");
        events.extend(seen(&resp));
    }
    assert_eq!(events.iter().map(|e| e.3).collect::<Vec<_>>(), [start, start + 1, start + 2, start + 3]);
    // Idle now: periodic progress notifications come, at the revision reached.
    let progress = next(&mut stream).await;
    assert!(progress.events().is_empty() && !progress.canceled());
    assert_eq!(progress.header().expect("header").revision(), now + 8);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_progress_request_follows_every_event_it_covers() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut w = cluster.client_of(0).await;
    let (mut stream, _) = watch(&mut w, "g/", WatchOptions::new().with_prefix()).await;
    stream.watch("h/", Some(WatchOptions::new().with_prefix())).await.expect("second watcher");
    assert!(next(&mut stream).await.created());
    let mut c = cluster.client_of(1).await;
    for i in 0..30 {
        c.put(format!("{}/k", if i % 2 == 0 { "g" } else { "h" }), i.to_string(), None).await.expect("put");
        if i % 7 == 0 {
            stream.request_progress().await.expect("progress request");
        }
    }
    let last = revision(&mut c).await;
    stream.request_progress().await.expect("progress request");
    // Progress notifications (watch id -1) interleave with events, but one at revision R comes
    // only after every event at or below R (etcd-io/etcd#15220).
    let mut highest_event = 0;
    loop {
        let resp = next(&mut stream).await;
        let rev = resp.header().expect("header").revision();
        if resp.events().is_empty() {
            assert_eq!(resp.watch_id(), -1, "a stream-wide notification");
            assert!(rev >= highest_event, "progress at {rev} after an event at {highest_event}");
            if rev >= last {
                break;
            }
        } else {
            highest_event = highest_event.max(seen(&resp).iter().map(|e| e.3).max().unwrap_or(0));
            assert!(highest_event <= rev);
        }
    }
    assert_eq!(highest_event, last, "every event before the last notification");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_reader_loses_nothing_and_blocks_no_writer() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut w = cluster.client_of(1).await;
    let mut c = cluster.client().await;
    let first = revision(&mut c).await + 1;
    let (mut slow, _) = watch(&mut w, "s/", WatchOptions::new().with_prefix().with_prev_key()).await;
    // Far more than the stream's queues hold, while nobody reads (etcd-io/etcd#17529).
    const WRITES: i64 = 3000;
    for i in 0..WRITES {
        c.put(format!("s/{}", i % 10), "x".repeat(4000), None).await.expect("writes are not held up");
    }
    eventually("the watcher fell behind into catch-up", || {
        let m = cluster.member(1).metrics.clone();
        async move { m.slow_watchers.get() > 0 }
    })
    .await;
    let got = collect(&mut slow, WRITES as usize).await;
    let revs: Vec<i64> = got.iter().map(|e| e.3).collect();
    assert_eq!(revs, (first..first + WRITES).collect::<Vec<_>>(), "every event once, in order");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_etcd_s_answers_and_the_stream_goes_on() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut w = cluster.client_of(0).await;
    let (mut stream, _) = watch(&mut w, "b/", WatchOptions::new().with_watch_id(7)).await;
    // The same id again: created and canceled at once, id -1.
    stream.watch("b/x", Some(WatchOptions::new().with_watch_id(7))).await.expect("send");
    let dup = next(&mut stream).await;
    assert!(dup.created() && dup.canceled() && dup.watch_id() == -1, "{dup:?}");
    assert_eq!(dup.cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");
    // A negative start revision.
    stream.watch("b/x", Some(WatchOptions::new().with_start_revision(-3))).await.expect("send");
    let neg = next(&mut stream).await;
    assert!(neg.created() && neg.canceled() && neg.watch_id() == -1);
    assert_eq!(neg.cancel_reason(), "etcdserver: mvcc: required revision has been compacted");
    // A range whose end is before its key.
    stream.watch("b/z", Some(WatchOptions::new().with_range("b/a"))).await.expect("send");
    let empty = next(&mut stream).await;
    assert!(empty.created() && empty.canceled());
    assert_eq!(empty.cancel_reason(), "mvcc: watcher range is empty");
    // Canceling an unknown id is ignored; canceling a real one is answered.
    stream.cancel(12345).await.expect("send");
    stream.cancel(7).await.expect("send");
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled() && canceled.watch_id() == 7, "{canceled:?}");
    // The stream still works: a new watcher, auto id.
    stream.watch("b/y", None).await.expect("send");
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled());
    w.put("b/y", "1", None).await.expect("put");
    assert_eq!(seen(&next(&mut stream).await)[0].1, "b/y");

    // Garbage on the wire ends that stream with an error, not the member.
    let channel = tonic::transport::Endpoint::from_shared(cluster.endpoint(0))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let garbage = tokio_stream::iter(vec![vec![0xffu8, 0xff, 0xff, 0xff, 0x0f]]);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    let result = grpc.streaming(tonic::Request::new(garbage), path, RawCodec).await;
    match result {
        Ok(resp) => {
            let mut inbound = resp.into_inner();
            let ended = timeout(Duration::from_secs(5), inbound.message()).await.expect("ends");
            assert!(ended.is_err(), "a decode error ends the stream: {ended:?}");
        }
        Err(status) => assert_ne!(status.code(), tonic::Code::Ok),
    }
    w.put("b/after", "1", None).await.expect("the member still serves");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_catch_ups_come_in_fragments_when_asked() {
    let cluster = TestCluster::start_with(3, |f| f.max_request_bytes = 64 * 1024).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let first = revision(&mut c).await + 1;
    for i in 0..2 {
        c.put(format!("big/{i}"), "v".repeat(20 * 1024), None).await.expect("put");
    }
    // One revision whose events, with their previous values, are larger than the limit.
    let txn = Txn::new().and_then([
        TxnOp::put("big/0", "w".repeat(20 * 1024), None),
        TxnOp::put("big/1", "w".repeat(20 * 1024), None),
    ]);
    c.txn(txn).await.expect("txn");
    let channel = tonic::transport::Endpoint::from_shared(cluster.endpoint(2))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = WatchClient::new(channel);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            start_revision: first,
            fragment: true,
            prev_kv: true,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(create).await.expect("send");
    let mut inbound =
        client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("watch").into_inner();
    let mut events = Vec::new();
    let mut fragments = 0;
    while events.len() < 4 {
        let resp = timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if resp.created {
            continue;
        }
        assert!(prost::Message::encoded_len(&resp) <= 64 * 1024 + 1024, "each fragment within the limit");
        fragments += usize::from(resp.fragment);
        events.extend(resp.events.into_iter().map(|e| e.kv.expect("kv").mod_revision));
    }
    assert!(fragments > 0, "the large revision was fragmented");
    assert_eq!(events, [first, first + 1, first + 2, first + 2]);
    drop(tx);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_that_requires_a_leader_ends_when_its_member_loses_it() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivor = (leader + 1) % 3;
    let opts = ConnectOptions::new().with_require_leader(true);
    let mut c = Client::connect([cluster.endpoint(survivor)], Some(opts)).await.expect("connect");
    let (mut stream, _) = watch(&mut c, "l/", WatchOptions::new().with_prefix()).await;
    for i in 0..3 {
        if i != survivor {
            cluster.kill(i);
        }
    }
    let ended = timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    let err = ended.expect_err("with an error");
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    // And a new one is refused while there is no leader.
    let refused = c.watch("l/", None).await;
    match refused {
        Err(e) => assert!(e.to_string().contains("no leader"), "{e}"),
        Ok(mut s) => {
            let r = timeout(Duration::from_secs(5), s.message()).await.expect("answered");
            assert!(r.is_err(), "{r:?}");
        }
    }
    cluster.shutdown().await;
}

/// Sends raw bytes as messages and decodes nothing: a client that speaks garbage.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
