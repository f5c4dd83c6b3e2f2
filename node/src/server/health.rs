//! The member's answers to `/livez`, `/readyz` and `/health`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::server::context::ServerContext;
use crate::server::http::HealthCheck;
use crate::server::metrics::Metrics;

/// Health of one member, judged from its Raft loop and a real read barrier.
pub struct MemberHealth {
    ctx: Arc<ServerContext>,
    metrics: Arc<Metrics>,
    /// The loop is considered stuck when it has not turned for this long.
    stall_after: Duration,
}

impl MemberHealth {
    pub fn new(ctx: Arc<ServerContext>, metrics: Arc<Metrics>, election_timeout: Duration) -> Self {
        Self { ctx, metrics, stall_after: (election_timeout * 5).max(Duration::from_secs(5)) }
    }
}

impl HealthCheck for MemberHealth {
    fn refresh_metrics(&self) {
        if let Ok(size) = self.ctx.store.file_size() {
            self.metrics.db_total_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    fn live(&self) -> Result<(), String> {
        match self.ctx.node.status().heartbeat {
            Some(at) if at.elapsed() <= self.stall_after => Ok(()),
            Some(at) => Err(format!("raft loop stalled for {:?}", at.elapsed())),
            None => Err("raft loop not started".into()),
        }
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.live()?;
            if self.ctx.node.status().leader_id.is_none() {
                return Err("no leader".into());
            }
            // A linearizable read proves a quorum is reachable and this member caught up.
            self.ctx.linearizable_barrier().await.map_err(|e| e.to_string())
        })
    }
}
