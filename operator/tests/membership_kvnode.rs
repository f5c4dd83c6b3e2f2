//! The operator's `EtcdMembership` against real kvnode members (in-process, real gRPC on
//! loopback, real disk): every call the planner makes, and the refusals it must survive.

mod kvnode_members;

use std::time::Duration;

use kv_operator::membership::etcd::EtcdMembership;
use kv_operator::membership::{MembershipClient, MembershipError};
use kvnode_members::{Members, eventually};

fn client() -> EtcdMembership {
    EtcdMembership::new(Duration::from_secs(5))
}

/// Asserts `result` is a refusal of `call` whose message carries `text` (etcd's own wording,
/// which kvnode reproduces).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, MembershipError>, call: &str, text: &str) {
    match result {
        Err(MembershipError::Refused { call: c, message }) => {
            assert_eq!(c, call);
            assert!(message.contains(text), "{call}: expected {text:?} in {message:?}");
        }
        other => panic!("{call}: expected a refusal containing {text:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_list_and_status_report_what_the_members_know() {
    let members = Members::start(3).await;
    let leader = members.wait_leader().await;
    let leader_id = members.id(leader);
    let etcd = client();

    let list = etcd.member_list(&members.endpoints()).await.expect("member list");
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|m| !m.is_learner && m.peer_urls.len() == 1));
    // Client URLs appear once each member has published them through the log (etcd does the
    // same; until then the operator derives the endpoint from the pod's ordinal).
    eventually("every member published its client URL", || {
        let (etcd, endpoints) = (etcd.clone(), members.endpoints());
        async move {
            etcd.member_list(&endpoints).await.is_ok_and(|l| l.iter().all(|m| !m.client_urls.is_empty()))
        }
    })
    .await;
    let list = etcd.member_list(&members.endpoints()).await.expect("member list");
    for i in 0..3 {
        let m = list.iter().find(|m| m.id == members.id(i)).expect("every member listed");
        assert_eq!(m.name, members.slots[i].name);
        assert_eq!(m.peer_urls, vec![members.slots[i].peer_url.clone()]);
        assert_eq!(m.client_urls, vec![members.endpoint(i)]);
        assert!(!m.is_learner);
    }
    // One reachable endpoint among dead ones is enough.
    let dead = format!("http://{}", dead_addr().await);
    let partly = etcd.member_list(&[dead.clone(), members.endpoint(2)]).await.expect("one endpoint answers");
    assert_eq!(partly.len(), 3);

    members.write("k", 10).await;
    for i in 0..3 {
        // The answer lies between what the member's own Raft status said before and after it.
        let before = members.member(i).handle.status();
        let s = etcd.status(&members.endpoint(i)).await.expect("status");
        let after = members.member(i).handle.status();
        assert_eq!(s.member_id, members.id(i));
        assert_eq!(s.leader, leader_id);
        assert!(!s.is_learner && !s.has_errors);
        assert!((before.term..=after.term).contains(&s.raft_term), "{s:?} vs {before:?}..{after:?}");
        assert!((before.commit..=after.commit).contains(&s.raft_index), "{s:?} vs {before:?}..{after:?}");
        assert!(
            (before.applied..=after.applied).contains(&s.raft_applied_index),
            "{s:?} vs {before:?}..{after:?}"
        );
    }
    let leader_status = etcd.status(&members.endpoint(leader)).await.expect("status");
    assert!(leader_status.raft_index >= 10, "ten writes committed: {leader_status:?}");

    // Nobody listening: Unreachable, which the reconciler treats as "no membership observed".
    assert!(matches!(etcd.status(&dead).await, Err(MembershipError::Unreachable { .. })));
    assert!(matches!(etcd.member_list(&[dead]).await, Err(MembershipError::Unreachable { .. })));
    members.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_is_added_started_promoted_then_leadership_moves_and_a_member_is_removed() {
    let mut members = Members::start(3).await;
    members.write("k", 50).await;
    let etcd = client();
    // As in the operator, the endpoints include an ordinal whose member is down: every call
    // must still reach a live member.
    let endpoints = [vec![format!("http://{}", dead_addr().await)], members.endpoints()].concat();

    // Scale-up, step 1: MemberAdd as a learner, before its pod runs.
    let joiner = members.joiner().await;
    let peer_url = members.slots[joiner].peer_url.clone();
    let added = etcd.add_learner(&endpoints, &peer_url).await.expect("add learner");
    assert!(added.is_learner);
    assert_ne!(added.id, 0);
    assert_eq!(added.peer_urls, vec![peer_url.clone()]);
    assert!(added.name.is_empty(), "not started yet: {added:?}");
    let list = etcd.member_list(&endpoints).await.expect("list");
    assert_eq!(list.len(), 4);
    assert!(list.iter().any(|m| m.id == added.id && m.is_learner && m.name.is_empty()));

    // The same peer URL twice is refused (a retried reconcile must look before it adds).
    assert_refused(etcd.add_learner(&endpoints, &peer_url).await, "MemberAdd", "Peer URLs already exists");
    // A learner that has not started cannot be promoted, nor lead.
    assert_refused(etcd.promote(&endpoints, added.id).await, "MemberPromote", "in sync with leader");
    let leader = members.wait_leader().await;
    assert_refused(
        etcd.move_leader(&members.endpoint(leader), added.id).await,
        "MoveLeader",
        "bad leader transferee",
    );

    // Step 2: its pod starts with --initial-cluster-state existing and finds its id.
    members.start_member(joiner).await.expect("joiner starts");
    assert_eq!(members.id(joiner), added.id, "the joiner took the id MemberAdd gave it");
    let status = etcd.status(&members.endpoint(joiner)).await.expect("learner status");
    assert_eq!(status.member_id, added.id);
    // It calls itself a learner once it has applied its own MemberAdd from the leader's log.
    eventually("the joiner reports itself a learner", || {
        let (etcd, e) = (etcd.clone(), members.endpoint(joiner));
        async move { etcd.status(&e).await.is_ok_and(|s| s.is_learner) }
    })
    .await;

    // Step 3: promote once caught up, judged as the planner does, from Status.
    eventually("learner caught up with the leader", || {
        let (etcd, learner, leader) = (etcd.clone(), members.endpoint(joiner), members.endpoint(leader));
        async move {
            let (Ok(l), Ok(s)) = (etcd.status(&leader).await, etcd.status(&learner).await) else {
                return false;
            };
            s.leader == l.member_id && s.raft_applied_index >= l.raft_index.saturating_sub(2)
        }
    })
    .await;
    eventually("learner promoted", || {
        let (etcd, endpoints) = (etcd.clone(), endpoints.clone());
        async move { etcd.promote(&endpoints, added.id).await.is_ok() }
    })
    .await;
    assert_refused(
        etcd.promote(&endpoints, added.id).await,
        "MemberPromote",
        "can only promote a learner member",
    );
    eventually("every member sees four voters", || {
        let etcd = etcd.clone();
        let all = members.endpoints();
        async move {
            for e in &all {
                match etcd.member_list(std::slice::from_ref(e)).await {
                    Ok(l) if l.len() == 4 && l.iter().all(|m| !m.is_learner) => {}
                    _ => return false,
                }
            }
            true
        }
    })
    .await;
    eventually("the new voter published its name and client URL", || {
        let (etcd, endpoints, client_url) = (etcd.clone(), endpoints.clone(), members.endpoint(joiner));
        async move {
            etcd.member_list(&endpoints).await.is_ok_and(|l| {
                l.iter().any(|m| m.id == added.id && m.name == "m3" && m.client_urls == [client_url.clone()])
            })
        }
    })
    .await;

    // MoveLeader must be sent to the leader; elsewhere it is refused.
    let leader = members.wait_leader().await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    assert_refused(etcd.move_leader(&members.endpoint(follower), added.id).await, "MoveLeader", "not leader");
    etcd.move_leader(&members.endpoint(leader), added.id).await.expect("move leader to the new voter");
    assert_eq!(members.wait_leader().await, joiner);
    eventually("followers report the new leader", || {
        let (etcd, e) = (etcd.clone(), members.endpoint(follower));
        async move { etcd.status(&e).await.is_ok_and(|s| s.leader == added.id) }
    })
    .await;

    // Scale-down: remove a founding member (not the leader), then stop it.
    let victim = follower;
    let victim_id = members.id(victim);
    etcd.remove(&endpoints, victim_id).await.expect("remove");
    members.stop(victim).await;
    let survivors = [vec![endpoints[0].clone()], members.endpoints()].concat();
    let list = etcd.member_list(&survivors).await.expect("list");
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|m| m.id != victim_id));
    // Removing it again, or an id that never existed, is refused as "member not found".
    assert_refused(etcd.remove(&survivors, victim_id).await, "MemberRemove", "member not found");
    assert_refused(etcd.remove(&survivors, 0xdead_beef).await, "MemberRemove", "member not found");
    assert_refused(etcd.promote(&survivors, 0xdead_beef).await, "MemberPromote", "member not found");
    // The group keeps working with the three voters left.
    members.write("after", 5).await;
    // The removed member's data dir never rejoins under its old identity.
    match members.start_member(victim).await {
        Err(kvnode::member::StartError::Removed(id)) => assert_eq!(id, victim_id),
        other => panic!("a removed member restarted: {:?}", other.map(|()| "started")),
    }
    members.shutdown();
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}
