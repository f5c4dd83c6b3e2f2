//! Corruption between members: one member's key space damaged on disk while it was stopped
//! (a value's bytes changed in place, which redb does not notice on a clean open). The initial
//! check refuses to start it; without it, the leader's periodic check finds the history that
//! differs and raises CORRUPT, after which the cluster serves nothing it might have wrong.

mod support;

use std::time::Duration;

use support::{TestCluster, eventually, refusal};

const CANARY: &[u8] = b"canary-value-0123456789";
const DAMAGED: &[u8] = b"canary-value-0123456788";

/// Changes every copy of the canary value in a database file, in place.
fn damage(path: &std::path::Path) -> usize {
    let mut bytes = std::fs::read(path).expect("read db");
    let mut changed = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(CANARY.len()).position(|w| w == CANARY) {
        let start = at + found;
        bytes[start..start + CANARY.len()].copy_from_slice(DAMAGED);
        changed += 1;
        at = start + CANARY.len();
    }
    std::fs::write(path, &bytes).expect("write db");
    changed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_a_damaged_history_is_refused_then_alarmed() {
    let mut cluster =
        TestCluster::start_with(3, |f| f.experimental_corrupt_check_time = Duration::from_millis(300)).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client().await;
    for i in 0..20 {
        c.put(format!("k/{i}"), "v", None).await.expect("put");
    }
    c.put("canary", CANARY, None).await.expect("put canary");
    c.put("after", "v", None).await.expect("put");
    let victim = (leader + 1) % 3;
    let victim_id = cluster.member(victim).id;
    // Every member applied everything before the victim stops.
    eventually("the victim to apply every write", || {
        let applied = cluster.member(victim).handle.status().applied;
        let leader_applied = cluster.member(leader).handle.status().applied;
        async move { applied >= leader_applied }
    })
    .await;
    cluster.stop(victim).await;
    let db = cluster.slots[victim].flags.data_dir.join(kvnode::storage::DB_FILE);
    assert!(damage(&db) >= 1, "the canary is in the file");

    // With the initial check, the damaged member refuses to start.
    cluster.slots[victim].flags.experimental_initial_corrupt_check = true;
    let refused = cluster.try_start_member(victim).await.expect_err("a damaged member must not start");
    assert!(refused.to_string().contains("found data inconsistency with peers"), "{refused}");

    // Without it, it starts and serves its damaged copy, until the leader's check finds it.
    cluster.slots[victim].flags.experimental_initial_corrupt_check = false;
    cluster.start_member(victim).await;
    eventually("the CORRUPT alarm for the damaged member", || {
        let mut c = c.clone();
        async move {
            c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await.is_ok_and(|r| {
                r.alarms()
                    .iter()
                    .any(|a| a.member_id() == victim_id && a.alarm() == etcd_client::AlarmType::Corrupt)
            })
        }
    })
    .await;
    for m in 0..3 {
        let mut mc = cluster.client_of(m).await;
        let (code, message) = refusal(mc.put("more", "v", None).await.expect_err("writes refused"));
        assert_eq!(
            (code, message.as_str()),
            (tonic::Code::DataLoss, "etcdserver: corrupt cluster"),
            "member {m}"
        );
        let (code, _) = refusal(mc.get("canary", None).await.expect_err("reads refused"));
        assert_eq!(code, tonic::Code::DataLoss, "member {m}");
    }
    cluster.shutdown().await;
}
