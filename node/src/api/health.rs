//! `grpc.health.v1.Health` on the client port, as etcd registers it (kine, gRPC load
//! balancers and Kubernetes' gRPC probes ask it). The overall status (service `""`) is
//! SERVING while this member knows a leader and no CORRUPT alarm is raised, NOT_SERVING
//! otherwise and once the member stops.

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::driver::NodeHandle;
use crate::storage::KvStore;

/// The Health service, kept up to date by a task that follows the member's status.
pub fn start(node: NodeHandle, kv: KvStore, shutdown: watch::Receiver<bool>) -> HealthServer<impl Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    tokio::spawn(follow(reporter, node, kv, shutdown));
    server
}

async fn follow(
    reporter: HealthReporter,
    node: NodeHandle,
    kv: KvStore,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut status = node.subscribe();
    let mut last = None;
    loop {
        let serving = status.borrow_and_update().leader_id.is_some() && !kv.active_alarms().corrupt();
        let now = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(now) {
            reporter.set_service_status("", now).await;
            last = Some(now);
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    reporter.set_service_status("", ServingStatus::NotServing).await;
}
