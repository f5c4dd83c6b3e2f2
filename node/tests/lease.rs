//! etcd's Lease service through real gRPC on in-process members, with the `etcd-client`
//! crate: every RPC from every member, the answers to bad input, keys deleted with their lease
//! in one revision, expiry, keep-alives through followers, and lease time across leader
//! changes, whole-cluster restarts, checkpoints and snapshots.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use kvnode::proto::etcdserverpb::LeaseKeepAliveRequest;
use kvnode::proto::etcdserverpb::lease_client::LeaseClient;
use support::{TestCluster, eventually, refusal};
use tokio::time::{Instant, timeout};

async fn time_to_live(client: &mut Client, id: i64) -> (i64, i64, Vec<String>) {
    let r =
        client.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.expect("ttl");
    let keys = r.keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    (r.ttl(), r.granted_ttl(), keys)
}

/// Waits for the next watch response with events; returns (type, key, mod revision) of each.
async fn next_events(stream: &mut WatchStream) -> Vec<(EventType, String, i64)> {
    loop {
        let resp = timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a watch response within 30 s")
            .expect("watch stream healthy")
            .expect("watch stream open");
        if resp.events().is_empty() {
            continue;
        }
        return resp
            .events()
            .iter()
            .map(|e| {
                let kv = e.kv().expect("event kv");
                (e.event_type(), kv.key_str().unwrap_or_default().to_string(), kv.mod_revision())
            })
            .collect();
    }
}

async fn watch_prefix(client: &mut Client, prefix: &str) -> WatchStream {
    let mut stream = client.watch(prefix, Some(WatchOptions::new().with_prefix())).await.expect("watch");
    let created = stream.message().await.expect("created").expect("open");
    assert!(created.created());
    stream
}

fn follower_of(cluster: &TestCluster, leader: usize) -> usize {
    (0..cluster.slots.len()).find(|i| *i != leader && cluster.slots[*i].member.is_some()).expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grant_attach_list_and_revoke_through_followers() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = follower_of(&cluster, leader);
    let mut via_follower = cluster.client_of(follower).await;
    let mut watcher_client = cluster.client_of(leader).await;
    let mut events = watch_prefix(&mut watcher_client, "l/").await;

    let granted = via_follower.lease_grant(60, None).await.expect("grant");
    assert!(granted.id() > 0, "a server-chosen id is positive");
    assert_eq!(granted.ttl(), 60);
    let id = granted.id();
    for key in ["l/a", "l/b"] {
        via_follower.put(key, "v", Some(PutOptions::new().with_lease(id))).await.expect("put with lease");
    }
    via_follower.put("l/free", "v", None).await.expect("put without lease");
    let puts = next_events(&mut events).await.len()
        + next_events(&mut events).await.len()
        + next_events(&mut events).await.len();
    assert_eq!(puts, 3);

    for m in 0..3 {
        let mut c = cluster.client_of(m).await;
        let (ttl, granted_ttl, keys) = time_to_live(&mut c, id).await;
        assert!((58..=60).contains(&ttl), "member {m}: ttl {ttl}");
        assert_eq!(granted_ttl, 60);
        assert_eq!(keys, ["l/a", "l/b"], "member {m}");
        let listed: Vec<i64> = c.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
        assert_eq!(listed, [id], "member {m}");
        let got = c.get("l/a", None).await.expect("get");
        assert_eq!(got.kvs()[0].lease(), id, "member {m}: the key carries its lease");
    }

    let revoked = via_follower.lease_revoke(id).await.expect("revoke");
    let revision = revoked.header().expect("header").revision();
    let deletes = next_events(&mut events).await;
    assert_eq!(
        deletes,
        [(EventType::Delete, "l/a".to_string(), revision), (EventType::Delete, "l/b".to_string(), revision)],
        "both keys go in one revision, the revocation's"
    );
    let left = via_follower.get("l/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    assert_eq!(left.kvs().len(), 1);
    assert_eq!(left.kvs()[0].key_str().expect("utf8"), "l/free");

    let (code, message) = refusal(via_follower.lease_revoke(id).await.expect_err("second revoke"));
    assert_eq!((code, message.as_str()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
    let (ttl, _, keys) = time_to_live(&mut via_follower, id).await;
    assert_eq!((ttl, keys.len()), (-1, 0), "etcd answers an unknown lease with TTL -1");
    assert!(via_follower.leases().await.expect("leases").leases().is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_lease_requests_get_etcds_errors() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;

    let (code, message) =
        refusal(c.put("k", "v", Some(PutOptions::new().with_lease(12345))).await.expect_err("unknown lease"));
    assert_eq!((code, message.as_str()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
    let txn = Txn::new().when([Compare::version("k", CompareOp::Equal, 0)]).and_then([TxnOp::put(
        "k",
        "v",
        Some(PutOptions::new().with_lease(12345)),
    )]);
    let (code, message) = refusal(c.txn(txn).await.expect_err("unknown lease in a txn"));
    assert_eq!((code, message.as_str()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
    assert_eq!(c.get("k", None).await.expect("get").kvs().len(), 0, "nothing was written");

    let fixed = c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(77))).await.expect("grant id 77");
    assert_eq!(fixed.id(), 77);
    let (code, message) =
        refusal(c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(77))).await.expect_err("dup"));
    assert_eq!(
        (code, message.as_str()),
        (tonic::Code::FailedPrecondition, "etcdserver: lease already exists")
    );

    let (code, message) = refusal(c.lease_grant(9_000_000_001, None).await.expect_err("too long"));
    assert_eq!((code, message.as_str()), (tonic::Code::OutOfRange, "etcdserver: too large lease TTL"));

    // Below the minimum (1.5 election timeouts, 1 s with the test timers) a TTL is raised.
    let short = c.lease_grant(0, None).await.expect("grant ttl 0");
    assert_eq!(short.ttl(), 1);

    // A keep-alive of an unknown lease answers TTL 0 and the stream goes on serving (raw
    // client: etcd-client turns the first TTL 0 into an error of its own).
    let mut raw = LeaseClient::connect(cluster.endpoint(0)).await.expect("connect");
    let requests = tokio_stream::iter([424242, fixed.id()].map(|id| LeaseKeepAliveRequest { id }));
    let mut answers = raw.lease_keep_alive(requests).await.expect("keep-alive stream").into_inner();
    let unknown = answers.message().await.expect("answer").expect("open");
    assert_eq!((unknown.id, unknown.ttl), (424242, 0));
    assert!(unknown.header.is_some_and(|h| h.revision > 0));
    let known = answers.message().await.expect("answer").expect("open");
    assert_eq!((known.id, known.ttl), (77, 30));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_lease_takes_its_keys_in_one_revision_on_every_member() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let mut streams = Vec::new();
    for m in 0..3 {
        streams.push(watch_prefix(&mut cluster.client_of(m).await, "e/").await);
    }
    let id = c.lease_grant(2, None).await.expect("grant").id();
    let granted_at = Instant::now();
    for key in ["e/1", "e/2", "e/3"] {
        c.put(key, "v", Some(PutOptions::new().with_lease(id))).await.expect("put");
    }
    let mut seen_by_member = Vec::new();
    for stream in &mut streams {
        let mut events = Vec::new();
        while events.iter().filter(|(t, _, _)| *t == EventType::Delete).count() < 3 {
            events.extend(next_events(stream).await);
        }
        seen_by_member
            .push(events.into_iter().filter(|(t, _, _)| *t == EventType::Delete).collect::<Vec<_>>());
    }
    let lived = granted_at.elapsed();
    assert!(lived >= Duration::from_secs(2), "expired after {lived:?}, before its TTL");
    let revision = seen_by_member[0][0].2;
    assert!(seen_by_member[0].iter().all(|(_, _, r)| *r == revision), "{:?}", seen_by_member[0]);
    assert!(seen_by_member.iter().all(|s| *s == seen_by_member[0]), "members differ: {seen_by_member:?}");
    assert_eq!(time_to_live(&mut c, id).await.0, -1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alives_through_a_follower_outlive_the_ttl() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client_of(follower_of(&cluster, leader)).await;
    let id = c.lease_grant(2, None).await.expect("grant").id();
    c.put("alive", "v", Some(PutOptions::new().with_lease(id))).await.expect("put");
    let (mut keeper, mut answers) = c.lease_keep_alive(id).await.expect("keep-alive");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        keeper.keep_alive().await.expect("send");
        let answer = answers.message().await.expect("answer").expect("open");
        assert_eq!((answer.id(), answer.ttl()), (id, 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(c.get("alive", None).await.expect("get").kvs().len(), 1, "kept alive past its TTL");
    drop(keeper);
    eventually("the key to expire once keep-alives stop", || {
        let mut c = c.clone();
        async move { c.get("alive", None).await.is_ok_and(|r| r.kvs().is_empty()) }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_keeps_leases_and_expires_the_abandoned() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client_of(follower_of(&cluster, leader)).await;
    let kept = c.lease_grant(3, None).await.expect("grant").id();
    let abandoned = c.lease_grant(3, None).await.expect("grant").id();
    c.put("kept", "v", Some(PutOptions::new().with_lease(kept))).await.expect("put");
    c.put("abandoned", "v", Some(PutOptions::new().with_lease(abandoned))).await.expect("put");

    cluster.kill(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let mut c = cluster.client().await;
    let (mut keeper, mut answers) = c.lease_keep_alive(kept).await.expect("keep-alive");
    // The new leader restarted the clocks with an election timeout's grace: the kept lease is
    // renewable, and the abandoned one expires only after its whole TTL under the new leader.
    keeper.keep_alive().await.expect("send");
    assert_eq!(answers.message().await.expect("answer").expect("open").ttl(), 3);
    let (ttl, granted, _) = time_to_live(&mut c, abandoned).await;
    assert!(ttl > 0 && granted == 3, "abandoned lease still running: ttl {ttl}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        keeper.keep_alive().await.expect("send");
        answers.message().await.expect("answer").expect("open");
        if c.get("abandoned", None).await.expect("get").kvs().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned lease never expired");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(c.get("kept", None).await.expect("get").kvs().len(), 1);
    cluster.start_member(leader).await;
    let mut back = cluster.client_of(leader).await;
    eventually("the abandoned lease's key to go on the restarted member", || {
        let mut back = back.clone();
        async move { back.get("abandoned", None).await.is_ok_and(|r| r.kvs().is_empty()) }
    })
    .await;
    assert_eq!(time_to_live(&mut back, kept).await.1, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_carry_the_time_left_across_a_whole_cluster_restart() {
    let mut cluster = TestCluster::start_with(3, |f| {
        f.experimental_lease_checkpoint_interval = Duration::from_millis(500);
    })
    .await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let long = c.lease_grant(30, None).await.expect("grant").id();
    c.put("long", "v", Some(PutOptions::new().with_lease(long))).await.expect("put");
    // Let a few seconds of the lease's life pass and be checkpointed.
    let spent = Duration::from_secs(4);
    tokio::time::sleep(spent).await;
    let before = time_to_live(&mut c, long).await.0;
    assert!(before <= 26, "ttl {before} after {spent:?}");
    drop(c);
    for m in 0..3 {
        cluster.stop(m).await;
    }
    for m in 0..3 {
        cluster.start_member(m).await;
    }
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let (after, granted, keys) = time_to_live(&mut c, long).await;
    assert_eq!((granted, keys.as_slice()), (30, ["long".to_string()].as_slice()));
    // The restart began from the last checkpoint (at most 500 ms before `before` was read) plus
    // an election timeout, not from the whole TTL.
    assert!(after <= before + 1 && after < 30, "ttl {after} after a restart; {before} before it");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_travel_in_snapshots_and_a_member_that_got_them_leads() {
    let mut cluster = TestCluster::start_with(3, |f| f.snapshot_count = 20).await;
    let leader = cluster.wait_leader().await;
    let behind = follower_of(&cluster, leader);
    cluster.stop(behind).await;
    let mut c = cluster.client().await;
    let short = c.lease_grant(3, None).await.expect("grant").id();
    let long = c.lease_grant(600, None).await.expect("grant").id();
    c.put("s/key", "v", Some(PutOptions::new().with_lease(short))).await.expect("put");
    c.put("l/key", "v", Some(PutOptions::new().with_lease(long))).await.expect("put");
    for i in 0..100 {
        c.put(format!("filler/{i}"), "x", None).await.expect("put");
    }
    cluster.start_member(behind).await;
    let mut lagging = cluster.client_of(behind).await;
    eventually("the lagging member to catch up from a snapshot", || {
        let mut lagging = lagging.clone();
        async move {
            lagging
                .get("filler/99", Some(etcd_client::GetOptions::new().with_serializable()))
                .await
                .is_ok_and(|r| r.count() == 1)
        }
    })
    .await;
    let mut listed: Vec<i64> =
        lagging.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
    listed.sort();
    let mut want = vec![short, long];
    want.sort();
    assert_eq!(listed, want);

    // Make the member that got its leases from a snapshot the leader: its clocks run now.
    let target = cluster.member(behind).id;
    cluster.client_of(leader).await.move_leader(target).await.expect("move leader");
    assert_eq!(cluster.wait_leader().await, behind);
    let (_, granted, keys) = time_to_live(&mut lagging, long).await;
    assert_eq!((granted, keys.as_slice()), (600, ["l/key".to_string()].as_slice()));
    eventually("the short lease to expire under the new leader", || {
        let mut lagging = lagging.clone();
        async move { lagging.get("s/key", None).await.is_ok_and(|r| r.kvs().is_empty()) }
    })
    .await;
    assert_eq!(lagging.get("l/key", None).await.expect("get").kvs().len(), 1);
    cluster.shutdown().await;
}
