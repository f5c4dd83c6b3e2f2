//! Leader election on a Lease: operator replicas (real `kube-lease-manager` managers behind the
//! operator's `follow_lease` and `reconcile_while_leading`) share the in-memory API server; only
//! the holder reconciles, a replica that loses the lease (to another replica, or because its
//! renewal failed) stops at once, and a replica that shuts down releases the lease.
//!
//! The lease manager works in wall-clock seconds, so the test waits for events by polling with
//! deadlines (never fixed sleeps as synchronisation); with a 2 s lease every hand-over takes at
//! most a few seconds.

mod fixtures;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fixtures::example;
use http::Method;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube_lease_manager::LeaseManagerBuilder;
use kv_operator::election::{LeadershipEnd, follow_lease, reconcile_while_leading};
use kv_operator::reconcile::{Context, reconcile};
use serde_json::json;
use support::{ApiServer, NS, World};
use tokio::sync::Notify;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/kv-operator";

/// What one replica's controller did, observed from outside.
#[derive(Default)]
struct Replica {
    reconciles: AtomicUsize,
    running: AtomicBool,
    starts: AtomicUsize,
    /// Tells the running controller to stop, as SIGTERM would.
    stop: Notify,
}

/// Clears `running` when the controller future is dropped (lease lost) or returns.
struct RunningGuard(Arc<Replica>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// One operator replica: a lease manager with its own identity and client, and the real
/// reconciler behind `reconcile_while_leading`.
async fn replica(
    api: &ApiServer,
    world: &World,
    identity: &'static str,
) -> (Arc<Replica>, tokio::task::JoinHandle<LeadershipEnd>) {
    let manager = LeaseManagerBuilder::new(api.client(), "kv-operator")
        .with_namespace(NS)
        .with_identity(identity)
        .with_duration(2)
        .with_grace(1)
        .build()
        .await
        .expect("lease manager");
    let (leading, lease_task) = follow_lease(manager);
    let state = Arc::new(Replica::default());
    let ctx: Arc<Context> = world.new_context();
    let kvc = Arc::new(world.kvc());
    let task = {
        let state = state.clone();
        tokio::spawn(async move {
            let ended = reconcile_while_leading(leading, identity, || {
                let (state, ctx, kvc) = (state.clone(), ctx.clone(), kvc.clone());
                async move {
                    state.running.store(true, Ordering::SeqCst);
                    state.starts.fetch_add(1, Ordering::SeqCst);
                    let _guard = RunningGuard(state.clone());
                    let work = async {
                        loop {
                            let _ = reconcile(kvc.clone(), ctx.clone()).await;
                            state.reconciles.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        () = work => {}
                        () = state.stop.notified() => {}
                    }
                }
            })
            .await;
            // As `run` does: the receiver is gone, so the manager releases the lease and ends.
            let _ = lease_task.await;
            ended
        })
    };
    (state, task)
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn holder(api: &ApiServer) -> Option<String> {
    api.get(LEASE).and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

fn reconciles(r: &Replica) -> usize {
    r.reconciles.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_losing_the_lease_stops_it() {
    let world = World::new(&example(3));
    let api = world.api.clone();

    // Replica A comes up first and takes the lease; B then stands by.
    let (a, a_task) = replica(&api, &world, "op-a").await;
    until("A leads and reconciles", || reconciles(&a) >= 3).await;
    assert_eq!(holder(&api).as_deref(), Some("op-a"));
    let (b, b_task) = replica(&api, &world, "op-b").await;
    let a_before = reconciles(&a);
    until("A keeps reconciling while B stands by", || reconciles(&a) >= a_before + 20).await;
    assert_eq!(reconciles(&b), 0, "the standby never reconciles");
    assert!(!b.running.load(Ordering::SeqCst));

    // The lease passes to B (as when A's renewals stalled past expiry and B took it over).
    let mut lease = api.get(LEASE).unwrap();
    let now = serde_json::to_value(MicroTime(jiff::Timestamp::now())).unwrap();
    let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
    lease["spec"] = json!({
        "holderIdentity": "op-b", "acquireTime": now, "renewTime": now,
        "leaseDurationSeconds": 2, "leaseTransitions": transitions + 1,
    });
    api.put(LEASE, lease);

    until("A notices and stops its controller", || !a.running.load(Ordering::SeqCst)).await;
    let a_frozen = reconciles(&a);
    until("B takes over", || reconciles(&b) >= 20).await;
    assert_eq!(reconciles(&a), a_frozen, "A never reconciles after losing the lease");
    assert_eq!(holder(&api).as_deref(), Some("op-b"), "B renews the lease it holds");
    assert!(!a_task.is_finished(), "A stands by for the lease again");

    // B shuts down (SIGTERM): it returns, releases the lease, and A takes over with a fresh
    // controller.
    b.stop.notify_one();
    let ended = tokio::time::timeout(Duration::from_secs(20), b_task).await.expect("B ends").unwrap();
    assert_eq!(ended, LeadershipEnd::ControllerStopped);
    let b_frozen = reconciles(&b);
    until("A leads again", || a.running.load(Ordering::SeqCst) && reconciles(&a) >= a_frozen + 5).await;
    assert_eq!(a.starts.load(Ordering::SeqCst), 2, "one controller per term of leadership");
    assert_eq!(reconciles(&b), b_frozen);
    assert_eq!(holder(&api).as_deref(), Some("op-a"));
    let typed: Lease = serde_json::from_value(api.get(LEASE).unwrap()).unwrap();
    assert!(typed.spec.unwrap().lease_transitions.unwrap_or(0) >= 3, "A, B, then A again");

    a.stop.notify_one();
    let ended = tokio::time::timeout(Duration::from_secs(20), a_task).await.expect("A ends").unwrap();
    assert_eq!(ended, LeadershipEnd::ControllerStopped);
    assert_eq!(holder(&api), None, "the last replica released the lease on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_renewal_stops_reconciling_until_the_lease_is_held_again() {
    let world = World::new(&example(3));
    let api = world.api.clone();
    let (a, a_task) = replica(&api, &world, "op-a").await;
    until("A leads and reconciles", || reconciles(&a) >= 3).await;

    // The API server stops accepting Lease updates (an outage, a network partition from it):
    // A cannot renew, so it must stop before the lease could expire and pass to someone else.
    api.refuse(Method::PATCH, LEASE, 503, "the server is currently unable to handle the request");
    until("A stops reconciling after its renewal fails", || !a.running.load(Ordering::SeqCst)).await;
    let stopped_at = jiff::Timestamp::now();
    let frozen = reconciles(&a);
    let lease: Lease = serde_json::from_value(api.get(LEASE).unwrap()).unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("op-a"), "the release could not go through either");
    let expiry = spec.renew_time.unwrap().0 + jiff::SignedDuration::from_secs(2);
    assert!(stopped_at < expiry, "stopped at {stopped_at}, before the lease expired at {expiry}");

    // While the outage lasts A keeps trying to give the lease up and never reconciles. Wait for
    // several refused release attempts (events, not time).
    let patches =
        || api.log().iter().filter(|l| l.method == Method::PATCH && l.path.starts_with(LEASE)).count();
    let before = patches();
    until("A retries the release", || patches() >= before + 3).await;
    assert_eq!(reconciles(&a), frozen);
    assert!(!a.running.load(Ordering::SeqCst));

    // The API server recovers: the lease is released, then taken again, with a fresh controller.
    api.stop_refusing();
    until("A leads again", || a.running.load(Ordering::SeqCst) && reconciles(&a) >= frozen + 3).await;
    assert_eq!(a.starts.load(Ordering::SeqCst), 2);
    assert_eq!(holder(&api).as_deref(), Some("op-a"));

    a.stop.notify_one();
    let ended = tokio::time::timeout(Duration::from_secs(20), a_task).await.expect("A ends").unwrap();
    assert_eq!(ended, LeadershipEnd::ControllerStopped);
    assert_eq!(holder(&api), None);
}
