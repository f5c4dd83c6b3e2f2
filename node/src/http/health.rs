//! The member's answers to `/livez`, `/readyz` and `/health`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::driver::NodeHandle;
use crate::metrics::Metrics;
use crate::storage::Store;

use super::{HealthCheck, Unhealthy};

/// Health of one member, judged from its Raft loop and a real read barrier.
pub struct MemberHealth {
    node: NodeHandle,
    store: Store,
    metrics: Arc<Metrics>,
    /// The loop is considered stuck when it has not turned for this long.
    stall_after: Duration,
    /// How long the read barrier of a readiness check may take.
    barrier_timeout: Duration,
}

impl MemberHealth {
    pub fn new(
        node: NodeHandle,
        store: Store,
        metrics: Arc<Metrics>,
        election_timeout: Duration,
        barrier_timeout: Duration,
    ) -> Self {
        Self {
            node,
            store,
            metrics,
            stall_after: (election_timeout * 5).max(Duration::from_secs(5)),
            barrier_timeout,
        }
    }
}

impl HealthCheck for MemberHealth {
    fn refresh_metrics(&self) {
        if let Ok(size) = self.store.file_size() {
            self.metrics.db_total_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    fn live(&self) -> Result<(), Unhealthy> {
        match self.node.status().heartbeat {
            Some(at) if at.elapsed() <= self.stall_after => Ok(()),
            Some(at) => Err(Unhealthy::Stalled(at.elapsed())),
            None => Err(Unhealthy::NotStarted),
        }
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), Unhealthy>> + Send + '_>> {
        Box::pin(async move {
            self.live()?;
            if self.node.status().leader_id.is_none() {
                return Err(Unhealthy::NoLeader);
            }
            // A linearizable read proves a quorum is reachable and this member caught up.
            match tokio::time::timeout(self.barrier_timeout, self.node.read_barrier()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Unhealthy::Barrier(e)),
                Err(_) => Err(Unhealthy::BarrierTimeout),
            }
        })
    }
}
