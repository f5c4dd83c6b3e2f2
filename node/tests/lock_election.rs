//! etcd's Lock and Election services through real gRPC on in-process members, with the
//! `etcd-client` crate: mutual exclusion and hand-over in order, fencing by the holder key's
//! create revision, waiters that give up or lose their lease, and elections observed from
//! every member.

mod support;

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaderKey, LockOptions, ProclaimOptions, PutOptions,
    ResignOptions, Txn, TxnOp,
};
use support::{TestCluster, eventually, refusal};
use tokio::task::JoinHandle;
use tokio::time::timeout;

async fn lease(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("grant").id()
}

async fn waiters(c: &mut Client, prefix: &str) -> i64 {
    c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.expect("count").count()
}

/// Starts a Lock call in the background; it completes when the lock is acquired.
fn lock_in_background(mut c: Client, name: &'static str, lease: i64) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let resp = c.lock(name, Some(LockOptions::new().with_lease(lease))).await.expect("lock");
        resp.key().to_vec()
    })
}

/// Whether a background call is still waiting after the cluster made progress for a while.
async fn still_waiting<T>(task: &mut JoinHandle<T>) -> bool {
    timeout(Duration::from_millis(500), task).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_is_held_by_one_and_handed_over_in_order() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let (mut c0, c1, c2) =
        (cluster.client_of(0).await, cluster.client_of(1).await, cluster.client_of(2).await);
    let (a, b, c) = (lease(&mut c0, 30).await, lease(&mut c0, 30).await, lease(&mut c0, 30).await);

    let held = c0.lock("mylock", Some(LockOptions::new().with_lease(a))).await.expect("lock a");
    assert_eq!(held.key(), format!("mylock/{a:x}").as_bytes());
    // The same lease locking again keeps its key and place.
    let again = c0.lock("mylock", Some(LockOptions::new().with_lease(a))).await.expect("relock a");
    assert_eq!(again.key(), held.key());

    let mut second = lock_in_background(c1.clone(), "mylock", b);
    eventually("b to queue", || {
        let mut c = c0.clone();
        async move { waiters(&mut c, "mylock/").await == 2 }
    })
    .await;
    let mut third = lock_in_background(c2.clone(), "mylock", c);
    eventually("c to queue", || {
        let mut c = c0.clone();
        async move { waiters(&mut c, "mylock/").await == 3 }
    })
    .await;
    assert!(still_waiting(&mut second).await && still_waiting(&mut third).await, "the lock is held by a");

    // Fencing: a write conditioned on holding the lock succeeds for the holder only.
    let holder_rev = c0.get(held.key(), None).await.expect("get").kvs()[0].create_revision();
    let fenced = |rev: i64| {
        Txn::new()
            .when([Compare::create_revision(held.key(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put("guarded", "by a", None)])
    };
    assert!(c0.txn(fenced(holder_rev)).await.expect("txn").succeeded());

    c0.unlock(held.key()).await.expect("unlock a");
    let b_key = timeout(Duration::from_secs(10), &mut second).await.expect("b acquires").expect("join");
    assert_eq!(b_key, format!("mylock/{b:x}").as_bytes());
    assert!(still_waiting(&mut third).await, "c waits behind b");
    assert!(!c0.txn(fenced(holder_rev)).await.expect("txn").succeeded(), "a's fence is stale");

    // b's lease ends: its key goes with it and c acquires.
    c0.lease_revoke(b).await.expect("revoke b");
    let c_key = timeout(Duration::from_secs(10), &mut third).await.expect("c acquires").expect("join");
    assert_eq!(c_key, format!("mylock/{c:x}").as_bytes());
    assert_eq!(waiters(&mut c0, "mylock/").await, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_waiters_that_give_up_leave_the_queue() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let (a, b) = (lease(&mut c, 30).await, lease(&mut c, 30).await);
    let held = c.lock("q", Some(LockOptions::new().with_lease(a))).await.expect("lock a");
    let mut waiter = lock_in_background(cluster.client_of(1).await, "q", b);
    eventually("b to queue", || {
        let mut c = c.clone();
        async move { waiters(&mut c, "q/").await == 2 }
    })
    .await;
    assert!(still_waiting(&mut waiter).await);
    // The client gives up: its RPC is dropped, and the server takes its key out of the queue.
    waiter.abort();
    eventually("the abandoned waiter's key to go", || {
        let mut c = c.clone();
        async move { waiters(&mut c, "q/").await == 1 }
    })
    .await;
    c.unlock(held.key()).await.expect("unlock");
    assert_eq!(waiters(&mut c, "q/").await, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_answers_bad_leases_as_etcd() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let (code, message) =
        refusal(c.lock("x", Some(LockOptions::new().with_lease(999_999))).await.expect_err("unknown lease"));
    assert_eq!((code, message.as_str()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));
    assert_eq!(waiters(&mut c, "x/").await, 0);

    // No lease: the server grants one of 60 s (etcd's session default) for the key.
    let held = c.lock("x", None).await.expect("lock without a lease");
    let kv = c.get(held.key(), None).await.expect("get").kvs()[0].clone();
    assert!(kv.lease() > 0);
    assert_eq!(held.key(), format!("x/{:x}", kv.lease()).as_bytes());
    let ttl = c.lease_time_to_live(kv.lease(), None).await.expect("ttl");
    assert_eq!(ttl.granted_ttl(), 60);

    // A waiter whose lease expires while it waits hears etcd's "session expired" once its
    // turn comes.
    let short = lease(&mut c, 1).await;
    let mut other = cluster.client_of(2).await;
    let waiter =
        tokio::spawn(async move { other.lock("x", Some(LockOptions::new().with_lease(short))).await });
    eventually("the waiter to queue", || {
        let mut c = c.clone();
        async move { waiters(&mut c, "x/").await == 2 }
    })
    .await;
    eventually("the waiter's lease to expire", || {
        let mut c = c.clone();
        async move { waiters(&mut c, "x/").await == 1 }
    })
    .await;
    c.unlock(held.key()).await.expect("unlock");
    let outcome = timeout(Duration::from_secs(10), waiter).await.expect("the waiter returns").expect("join");
    let (code, message) = refusal(outcome.expect_err("its lease expired"));
    assert_eq!((code, message.as_str()), (tonic::Code::Unknown, "session expired"));
    cluster.shutdown().await;
}

fn leader_key(resp: &etcd_client::CampaignResponse) -> LeaderKey {
    let l = resp.leader().expect("leader key");
    LeaderKey::new().with_name(l.name()).with_key(l.key()).with_rev(l.rev()).with_lease(l.lease())
}

async fn observed(stream: &mut etcd_client::ObserveStream) -> (String, String) {
    let resp = timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an observation within 10 s")
        .expect("observe stream healthy")
        .expect("observe stream open");
    let kv = resp.kv().expect("kv");
    (kv.key_str().expect("utf8").to_string(), kv.value_str().expect("utf8").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_election_is_won_proclaimed_observed_and_resigned() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client_of(0).await;
    let (a, b) = (lease(&mut c, 30).await, lease(&mut c, 30).await);

    let (code, message) = refusal(c.leader("jobs").await.expect_err("nobody campaigns yet"));
    assert_eq!((code, message.as_str()), (tonic::Code::Unknown, "election: no leader"));

    // Observers on two members: the one started before any candidate waits for the first.
    let mut early = cluster.client_of(2).await.observe("jobs").await.expect("observe");
    let won = c.campaign("jobs", "a", a).await.expect("campaign a");
    let a_key = format!("jobs/{a:x}");
    assert_eq!(won.leader().expect("leader").key(), a_key.as_bytes());
    assert_eq!(won.leader().expect("leader").lease(), a);
    assert_eq!(observed(&mut early).await, (a_key.clone(), "a".into()));
    let mut late = cluster.client_of(1).await.observe("jobs").await.expect("observe");
    assert_eq!(observed(&mut late).await, (a_key.clone(), "a".into()));

    let mut challenger = cluster.client_of(1).await;
    let mut campaign_b =
        tokio::spawn(async move { challenger.campaign("jobs", "b", b).await.expect("campaign b") });
    assert!(still_waiting(&mut campaign_b).await, "a leads");

    let a_leader = leader_key(&won);
    c.proclaim("a2", Some(ProclaimOptions::new().with_leader(a_leader.clone()))).await.expect("proclaim");
    for stream in [&mut early, &mut late] {
        assert_eq!(observed(stream).await, (a_key.clone(), "a2".into()));
    }
    let now = c.leader("jobs").await.expect("leader");
    assert_eq!(now.kv().expect("kv").value_str().expect("utf8"), "a2");

    c.resign(Some(ResignOptions::new().with_leader(a_leader.clone()))).await.expect("resign");
    let b_won = timeout(Duration::from_secs(10), &mut campaign_b).await.expect("b wins").expect("join");
    let b_key = format!("jobs/{b:x}");
    assert_eq!(b_won.leader().expect("leader").key(), b_key.as_bytes());
    for stream in [&mut early, &mut late] {
        assert_eq!(observed(stream).await, (b_key.clone(), "b".into()));
    }

    // The old leadership can neither proclaim nor take the new leader's place.
    let (code, message) = refusal(
        c.proclaim("stale", Some(ProclaimOptions::new().with_leader(a_leader.clone())))
            .await
            .expect_err("a no longer leads"),
    );
    assert_eq!((code, message.as_str()), (tonic::Code::Unknown, "election: not leader"));
    c.resign(Some(ResignOptions::new().with_leader(a_leader))).await.expect("a stale resign does nothing");
    assert_eq!(c.leader("jobs").await.expect("leader").kv().expect("kv").key(), b_key.as_bytes());

    let (code, message) = refusal(c.proclaim("x", None).await.expect_err("no leader key"));
    assert_eq!((code, message.as_str()), (tonic::Code::Unknown, "\"leader\" field must be provided"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_expires_is_replaced() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    let (short, long) = (lease(&mut c, 1).await, lease(&mut c, 30).await);
    let mut observer = cluster.client_of(1).await.observe("svc").await.expect("observe");
    c.campaign("svc", "first", short).await.expect("campaign");
    assert_eq!(observed(&mut observer).await.1, "first");
    // The first leader never keeps its lease alive; the next candidate takes over when it ends.
    c.campaign("svc", "second", long).await.expect("campaign after the first lease ends");
    assert_eq!(observed(&mut observer).await.1, "second");
    // A key written under the leader's lease follows the leadership (fencing by lease).
    c.put("svc-owned", "x", Some(PutOptions::new().with_lease(long))).await.expect("put");
    cluster.shutdown().await;
}
