//! Leader election on a `coordination.k8s.io` Lease: only the holder reconciles.
//!
//! [`follow_lease`] turns a `kube-lease-manager` [`LeaseManager`] into a `watch` channel that is
//! `true` exactly while this replica holds the lease, and [`reconcile_while_leading`] runs the
//! controller only while it is. Two replicas must never change one cluster's membership at the
//! same time, so the follower is fail-safe where the manager's own `watch()` is not: when a
//! renewal fails (the API server unreachable, a request refused), `watch()` only retries and
//! keeps reporting leadership, although the lease may expire and pass to another replica in the
//! meantime. Here a failed renewal counts as losing the lease: the controller stops at once, the
//! lease is released as soon as the API server accepts it, and the replica competes again.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::LeaseManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// First and longest pause between attempts to release the lease after a failed renewal.
const RELEASE_RETRY_MIN: Duration = Duration::from_millis(200);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows the lease in a task of its own; the receiver says whether this replica holds it.
///
/// Dropping every receiver makes the task release the lease (best effort) and end.
pub fn follow_lease(manager: LeaseManager) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (leading, receiver) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let changed = tokio::select! {
                biased;
                () = leading.closed() => break,
                changed = manager.changed() => changed,
            };
            match changed {
                Ok(holder) => {
                    if leading.send(holder).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "lease renewal failed; stepping down");
                    if leading.send(false).is_err() || !release_until_done(&manager, &leading).await {
                        break;
                    }
                }
            }
        }
        if let Err(e) = manager.release().await {
            warn!(error = %e, "could not release the lease");
        }
    });
    (receiver, task)
}

/// Releases the lease, retrying with backoff until the API server accepts it; until then the
/// manager may still believe it holds the lease and would go on renewing it silently. Returns
/// false when the receivers went away meanwhile.
async fn release_until_done(manager: &LeaseManager, leading: &watch::Sender<bool>) -> bool {
    let mut pause = RELEASE_RETRY_MIN;
    loop {
        tokio::select! {
            biased;
            () = leading.closed() => return false,
            () = tokio::time::sleep(pause) => {}
        }
        match manager.release().await {
            Ok(()) => {
                info!("lease released after a failed renewal; competing again");
                return true;
            }
            Err(e) => warn!(error = %e, "could not release the lease yet"),
        }
        pause = (pause * 2).min(RELEASE_RETRY_MAX);
    }
}

/// Why [`reconcile_while_leading`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadershipEnd {
    /// The controller finished by itself (it stops on SIGTERM/SIGINT).
    ControllerStopped,
    /// The lease follower is gone: no more news about the lease can come.
    LeaseManagerGone,
}

/// Runs a controller made by `controller` only while `leading` is true.
///
/// A controller is started when the lease is acquired and dropped the moment the lease is lost,
/// which cancels any reconcile in flight, so a replica that lost the lease makes no further
/// membership call; a fresh controller (no state carried over, all of it is in the status) starts
/// if the lease comes back. Returns when the controller stops by itself or the lease follower
/// goes away; dropping `leading` then lets the follower release the lease for a standby replica.
pub async fn reconcile_while_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    identity: &str,
    mut controller: F,
) -> LeadershipEnd
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        while !*leading.borrow_and_update() {
            info!(identity, "standing by for the lease");
            if leading.changed().await.is_err() {
                warn!("lease follower stopped");
                return LeadershipEnd::LeaseManagerGone;
            }
        }
        info!(identity, "acquired the lease; reconciling");
        tokio::select! {
            () = controller() => {
                info!("controller stopped (signal)");
                return LeadershipEnd::ControllerStopped;
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    warn!("lease follower stopped");
                    return LeadershipEnd::LeaseManagerGone;
                }
                warn!(identity, "lost the lease; controller stopped");
            }
        }
    }
}
