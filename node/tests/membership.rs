//! Membership changes through etcd's Cluster API on a live cluster: add a learner, let it catch
//! up, promote it, remove a member, and check every member agrees.

mod support;

use etcd_client::{GetOptions, MemberAddOptions};
use support::{TestCluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_learner_promote_and_remove_a_member() {
    let mut cluster = TestCluster::start(3).await;
    cluster.wait_leader().await;
    let mut c = cluster.client().await;
    for i in 0..20 {
        c.put(format!("m{i}"), "v", None).await.expect("put");
    }

    let (slot, peer_url) = cluster.new_joiner_slot().await;
    let added = c
        .member_add([peer_url.clone()], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect("member add learner");
    let new_id = added.member().expect("member").id();
    assert!(added.member().expect("member").is_learner());
    assert_eq!(added.member_list().len(), 4);

    // A learner that has not started cannot be promoted yet.
    let err = c.member_promote(new_id).await.expect_err("not ready");
    assert!(
        err.to_string().contains("can only promote a learner member which is in sync with leader"),
        "{err}"
    );

    cluster.start_member(slot).await;
    assert_eq!(cluster.member(slot).id, new_id, "joiner discovered its id from the cluster");
    let lc = cluster.client_of(slot).await;
    eventually("learner replicates the data", || {
        let mut r = lc.clone();
        async move {
            r.get("m", Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
                .await
                .map(|g| g.count() == 20)
                .unwrap_or(false)
        }
    })
    .await;

    eventually("learner promoted", || {
        let mut c = c.clone();
        async move { c.member_promote(new_id).await.is_ok() }
    })
    .await;
    // MemberList answers from the member asked, which may not have applied the promotion yet.
    eventually("every member sees the promotion", || {
        let mut c = c.clone();
        async move {
            c.member_list()
                .await
                .is_ok_and(|l| l.members().iter().any(|m| m.id() == new_id && !m.is_learner()))
        }
    })
    .await;
    eventually("joiner published its name and client URL", || {
        let mut c = c.clone();
        async move {
            c.member_list().await.is_ok_and(|l| {
                l.members()
                    .iter()
                    .any(|m| m.id() == new_id && m.name() == "m3" && !m.client_urls().is_empty())
            })
        }
    })
    .await;

    // Remove one founding member (not the leader), then keep writing with four voters left.
    let leader = cluster.wait_leader().await;
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    let victim_id = cluster.member(victim).id;
    c.member_remove(victim_id).await.expect("member remove");
    // The victim may never learn that its removal committed (the leader stops replicating to
    // it); on restart the other members tell it.
    cluster.stop(victim).await;
    let mut lc = cluster.client_of(leader).await;
    let list = lc.member_list().await.expect("list");
    assert_eq!(list.members().len(), 3);
    assert!(list.members().iter().all(|m| m.id() != victim_id));
    lc.put("after-remove", "ok", None).await.expect("write after remove");

    // A removed member's data dir must not rejoin under its old identity.
    let flags = cluster.slots[victim].flags.clone();
    let listeners = support::bind_exact(&flags).await;
    match kvnode::member::start(flags, listeners).await {
        Err(kvnode::member::StartError::Removed(id)) => assert_eq!(id, victim_id),
        Err(other) => panic!("unexpected start error: {other}"),
        Ok(_) => panic!("a removed member restarted under its old identity"),
    }
    cluster.shutdown().await;
}

/// Adds a fresh member as a learner through `c`, starts it, waits for it to hold `keys` keys
/// under `prefix`, and promotes it.
async fn add_back(cluster: &mut TestCluster, c: &mut etcd_client::Client, prefix: &str, keys: i64) -> usize {
    let (slot, peer_url) = cluster.new_joiner_slot().await;
    let added =
        c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())).await.expect("member add");
    let id = added.member().expect("member").id();
    cluster.start_member(slot).await;
    let lc = cluster.client_of(slot).await;
    let prefix = prefix.to_string();
    eventually("the new member catches up", || {
        let (mut r, prefix) = (lc.clone(), prefix.clone());
        async move {
            r.get(prefix, Some(GetOptions::new().with_prefix().with_count_only().with_serializable()))
                .await
                .is_ok_and(|g| g.count() == keys)
        }
    })
    .await;
    eventually("the new member promoted", || {
        let mut c = c.clone();
        async move { c.member_promote(id).await.is_ok() }
    })
    .await;
    slot
}

/// Quorum lost for good: two of three members gone with their data. `--force-new-cluster` on
/// the survivor brings the cluster back with the survivor's data; the others are added back
/// fresh; every write the survivor acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_new_cluster_recovers_a_cluster_that_lost_its_quorum() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let survivor = (leader + 1) % 3;
    let mut c = cluster.client_of(survivor).await;
    for i in 0..50 {
        c.put(format!("q/{i:02}"), format!("v{i}"), None).await.expect("put");
    }
    let acked = c.get("q/", Some(GetOptions::new().with_prefix())).await.expect("get");
    let before_revision = acked.header().expect("header").revision();
    let cluster_id = acked.header().expect("header").cluster_id();
    for lost in (0..3).filter(|i| *i != survivor) {
        cluster.kill(lost);
        std::fs::remove_dir_all(&cluster.slots[lost].flags.data_dir).expect("wipe");
    }
    // Alone, the survivor cannot commit.
    let stuck = tokio::time::timeout(std::time::Duration::from_secs(2), c.put("q/stuck", "x", None)).await;
    assert!(!matches!(stuck, Ok(Ok(_))), "a minority must not commit");

    cluster.stop(survivor).await;
    cluster.slots[survivor].flags.force_new_cluster = true;
    cluster.start_member(survivor).await;
    let mut c = cluster.client_of(survivor).await;
    eventually("the survivor leads alone", || {
        let mut c = c.clone();
        async move { c.put("q/after", "x", None).await.is_ok() }
    })
    .await;
    let list = c.member_list().await.expect("members");
    assert_eq!(list.members().len(), 1);
    assert_eq!(list.header().expect("header").cluster_id(), cluster_id, "the same cluster");
    let now = c.get("q/", Some(GetOptions::new().with_prefix().with_range("q0"))).await.expect("get");
    for kv in acked.kvs() {
        assert!(
            now.kvs().iter().any(|n| n.key() == kv.key() && n.value() == kv.value()),
            "{:?} lost",
            kv.key_str()
        );
    }
    assert!(now.header().expect("header").revision() > before_revision);

    // The others come back fresh, one at a time; then the survivor restarts without the flag.
    let keys = now.count();
    let a = add_back(&mut cluster, &mut c, "q/", keys).await;
    let b = add_back(&mut cluster, &mut c, "q/", keys).await;
    cluster.stop(survivor).await;
    cluster.slots[survivor].flags.force_new_cluster = false;
    cluster.start_member(survivor).await;
    cluster.wait_leader().await;
    let mut all = cluster.client().await;
    assert_eq!(all.member_list().await.expect("members").members().len(), 3);
    all.put("q/healed", "x", None).await.expect("the healed cluster commits");
    for m in [survivor, a, b] {
        let mut mc = cluster.client_of(m).await;
        let got = mc.get("q/", Some(GetOptions::new().with_prefix().with_count_only())).await.expect("get");
        assert_eq!(got.count(), keys + 1, "member {m}");
    }
    cluster.shutdown().await;
}
