//! Reconcile scenarios whose membership calls go to real in-process kvnode members (real gRPC
//! on loopback, real disk) through the operator's `EtcdMembership`, instead of the fake group.

mod fixtures;
mod kvnode_members;
mod kvnode_world;
mod support;

use std::time::Duration;

use fixtures::example;
use kv_operator::membership::MembershipClient;
use kv_operator::membership::etcd::EtcdMembership;
use kvnode_world::KvnodeWorld;

fn event_reasons(world: &KvnodeWorld) -> Vec<String> {
    world
        .api
        .log()
        .iter()
        .filter(|l| l.method == http::Method::POST && l.path.starts_with(support::EVENTS))
        .map(|l| l.body["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every running member sees the same `voters` and no learner.
fn assert_agreed_voters(world: &KvnodeWorld, voters: usize) -> Vec<u64> {
    let views = world.raft_views();
    let (_, first, _) = views.first().expect("members running").clone();
    for (o, v, l) in &views {
        assert_eq!(v, &first, "member {o} disagrees on the voters");
        assert!(l.is_empty(), "member {o} still lists learners {l:?}");
    }
    assert_eq!(first.len(), voters, "{views:?}");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_3_to_5_to_3_on_real_members() {
    let mut world = KvnodeWorld::new(&example(3));
    world.converge("create").await;
    assert_eq!(world.running_ordinals(), vec![0, 1, 2]);
    let founders = assert_agreed_voters(&world, 3);
    let status = world.status();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.healthy));
    let leader_name = status.leader.clone().expect("leader reported");
    assert_eq!(Some(world.names.ordinal_of(&leader_name).unwrap()), world.leader_ordinal());

    // Data written before the changes must survive them.
    let mut client = etcd_client::Client::connect([world.client_endpoint(0)], None).await.unwrap();
    for i in 0..20 {
        client.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
    }

    world.edit(|k| k.spec.replicas = 5);
    world.converge("scale up").await;
    assert_eq!(world.running_ordinals(), vec![0, 1, 2, 3, 4]);
    let voters = assert_agreed_voters(&world, 5);
    assert!(founders.iter().all(|f| voters.contains(f)), "founders kept their ids");
    let status = world.status();
    assert_eq!(status.members.iter().filter(|m| m.healthy).count(), 5);
    assert!(world.start_errors.is_empty(), "{:?}", world.start_errors);

    // Put leadership on the highest ordinal, so the scale-down must move it before removing.
    let etcd = EtcdMembership::new(Duration::from_secs(5));
    let leader = world.leader_ordinal().expect("a leader");
    let target = world.member(4).unwrap().id;
    etcd.move_leader(&world.client_endpoint(leader), target).await.expect("move leader to kv-4");
    kvnode_members::eventually("kv-4 leads", || {
        let leads = world.leader_ordinal() == Some(4);
        async move { leads }
    })
    .await;

    world.edit(|k| k.spec.replicas = 3);
    world.converge("scale down").await;
    assert_eq!(world.running_ordinals(), vec![0, 1, 2]);
    let voters = assert_agreed_voters(&world, 3);
    assert_eq!(voters, founders, "the members added last were removed");
    let leader = world.leader_ordinal().expect("a leader among the survivors");
    assert!(leader < 3);
    assert_eq!(world.status().leader.as_deref(), Some(world.names.member(leader).as_str()));
    let reasons = event_reasons(&world);
    for (reason, n) in [("MemberAdded", 2), ("MemberPromoted", 2), ("LeaderMoved", 1), ("MemberRemoved", 2)] {
        assert_eq!(reasons.iter().filter(|r| *r == reason).count(), n, "{reason} in {reasons:?}");
    }

    let mut client = etcd_client::Client::connect([world.client_endpoint(leader)], None).await.unwrap();
    for i in 0..20 {
        let got = client.get(format!("k{i}"), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("v{i}").as_bytes());
    }
    world.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_the_leader_in_the_middle_restarts_it_last_on_real_members() {
    let mut world = KvnodeWorld::new(&example(3));
    world.converge("create").await;
    let ids: Vec<u64> = (0..3).map(|o| world.member(o).unwrap().id).collect();
    let mut client = etcd_client::Client::connect([world.client_endpoint(0)], None).await.unwrap();
    for i in 0..20 {
        client.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
    }
    // Leader in the middle: kv-1.
    let etcd = EtcdMembership::new(Duration::from_secs(5));
    let leader = world.leader_ordinal().expect("a leader");
    etcd.move_leader(&world.client_endpoint(leader), ids[1]).await.expect("move leader to kv-1");
    kvnode_members::eventually("kv-1 leads", || {
        let leads = world.leader_ordinal() == Some(1);
        async move { leads }
    })
    .await;
    let starts_before = world.starts.clone();

    world.edit(|k| k.spec.version = Some("0.2.0".into()));
    world.converge("upgrade").await;

    let deleted: Vec<String> = world
        .api
        .log()
        .iter()
        .filter(|l| l.method == http::Method::DELETE && l.path.starts_with(support::PODS))
        .map(|l| l.path.split('?').next().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(deleted, ["kv-2", "kv-0", "kv-1"], "followers first, the leader last");
    for o in 0..3 {
        assert_eq!(world.starts[&o], starts_before[&o] + 1, "kv-{o} restarted exactly once");
        assert_eq!(world.member(o).unwrap().id, ids[o as usize], "kv-{o} came back under its identity");
    }
    let reasons = event_reasons(&world);
    assert_eq!(reasons.iter().filter(|r| *r == "LeaderMoved").count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "PodRestarted").count(), 3, "{reasons:?}");
    assert_ne!(world.leader_ordinal(), None);
    assert_eq!(world.status().current_version.as_deref(), Some("0.2.0"));
    assert_agreed_voters(&world, 3);

    let endpoint = world.client_endpoint(world.leader_ordinal().unwrap());
    let mut client = etcd_client::Client::connect([endpoint], None).await.unwrap();
    for i in 0..20 {
        let got = client.get(format!("k{i}"), None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), format!("v{i}").as_bytes());
    }
    world.shutdown();
}
