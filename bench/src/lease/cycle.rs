//! One lease-cycle client: grant a lease, put a key attached to it, revoke the lease — what a
//! short-lived session (a lock holder, a registered worker) costs the cluster from start to end.
//!
//! Each of the three requests goes to the member whose turn it is, so over a run every member
//! receives a third of each kind; a follower passes grants and revocations on to the leader
//! through Raft, as it does puts. The revocation deletes the key, so every cycle starts from the
//! same state. A cycle that fails between its grant and its revocation leaves its lease to expire
//! by itself (after its TTL) rather than spend time of the run on cleaning up.

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};

use crate::conn::Turns;
use crate::error::BenchError;
use crate::runner::{Outcome, Worker};
use crate::stats::Latencies;

/// The latency of each step of the cycles that completed.
#[derive(Debug, Clone)]
pub struct Steps {
    /// LeaseGrant.
    pub grant: Latencies,
    /// Put of the key, attached to the lease.
    pub put: Latencies,
    /// LeaseRevoke (which deletes the key).
    pub revoke: Latencies,
}

impl Steps {
    /// No steps recorded.
    pub fn new() -> Result<Self, BenchError> {
        Ok(Self { grant: Latencies::new()?, put: Latencies::new()?, revoke: Latencies::new()? })
    }

    /// Adds another client's steps.
    pub fn merge(&mut self, other: &Steps) {
        self.grant.merge(&other.grant);
        self.put.merge(&other.put);
        self.revoke.merge(&other.revoke);
    }

    fn record(&mut self, grant: Duration, put: Duration, revoke: Duration) {
        self.grant.record(grant);
        self.put.record(put);
        self.revoke.record(revoke);
    }
}

/// One client repeating the cycle on a key of its own.
pub struct CycleWorker {
    clients: Turns<Client>,
    key: Vec<u8>,
    value: Vec<u8>,
    ttl: i64,
    steps: Steps,
}

impl CycleWorker {
    /// A client cycling leases of `ttl` seconds, putting `value` at `key`.
    pub fn new(clients: Turns<Client>, key: Vec<u8>, value: Vec<u8>, ttl: i64) -> Result<Self, BenchError> {
        Ok(Self { clients, key, value, ttl, steps: Steps::new()? })
    }

    /// Drops the steps recorded so far (the warm-up's), so those handed back after the
    /// measured phase are its own.
    pub fn forget_steps(&mut self) -> Result<(), BenchError> {
        self.steps = Steps::new()?;
        Ok(())
    }

    /// The steps of the cycles this client completed.
    pub fn steps(&self) -> &Steps {
        &self.steps
    }
}

impl Worker for CycleWorker {
    async fn op(&mut self) -> Result<Outcome, BenchError> {
        let started = Instant::now();
        let id = self.clients.turn().lease_grant(self.ttl, None).await?.id();
        let granted = Instant::now();
        let attached = Some(PutOptions::new().with_lease(id));
        self.clients.turn().put(self.key.clone(), self.value.clone(), attached).await?;
        let put = Instant::now();
        self.clients.turn().lease_revoke(id).await?;
        // Only cycles that completed are timed, in every step as in the whole.
        self.steps.record(granted - started, put - granted, put.elapsed());
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_merge_step_by_step() {
        let mut a = Steps::new().unwrap();
        a.record(Duration::from_millis(1), Duration::from_millis(2), Duration::from_millis(3));
        let mut b = Steps::new().unwrap();
        b.record(Duration::from_millis(5), Duration::from_millis(6), Duration::from_millis(7));
        a.merge(&b);
        assert_eq!((a.grant.count(), a.put.count(), a.revoke.count()), (2, 2, 2));
        assert!((a.grant.summary().max_ms - 5.0).abs() < 0.01);
        assert!((a.revoke.summary().max_ms - 7.0).abs() < 0.01);
    }
}
