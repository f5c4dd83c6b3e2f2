//! The lessor: lease time, kept by the leader only.
//!
//! Leases themselves are replicated state (granted, revoked and checkpointed through the log;
//! see `storage::kv::lease`). Their clocks are not: only the member that leads runs them (the
//! *primary*), renews leases on keep-alives and, when one expires, proposes its revocation
//! through the log, so every member deletes its keys at the same revision. A member that
//! becomes leader restarts every lease's clock from its checkpointed remaining TTL (or its
//! TTL) plus an election timeout, so a change of leader never expires a lease early; while it
//! leads it checkpoints remaining TTLs through the log, so a restart or the next leader does
//! not hand long leases their whole TTL again (etcd's lease checkpointing).

mod clock;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::{NodeHandle, RaftStatus};
use crate::metrics::Metrics;
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::kvserverpb::InternalRequest;
use crate::proto::kvserverpb::internal_request::Request;
use crate::storage::{KvStore, StoreError};

use clock::Clock;

/// Why the lessor could not renew a lease or tell its time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseError {
    /// This member does not lead: ask the leader.
    #[error("not the primary lessor")]
    NotPrimary,
    /// No such lease (or it expired and its revocation is under way).
    #[error("lease not found")]
    NotFound,
    /// The lessor has stopped.
    #[error("lessor stopped")]
    Stopped,
    /// The key space could not be read.
    #[error("storage: {0}")]
    Store(Arc<StoreError>),
}

/// A lease's time as the primary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLeft {
    /// Whole seconds left before it expires.
    pub remaining: i64,
    /// The TTL it was granted.
    pub granted: i64,
}

/// Settings of the lessor.
#[derive(Debug, Clone, Copy)]
pub struct LessorConfig {
    /// Added to every lease's time when this member becomes leader (an election timeout).
    pub extend_on_promotion: Duration,
    /// How often remaining TTLs are checkpointed through the log; leases with a shorter TTL
    /// are not checkpointed (they are renewed or expire before it matters).
    pub checkpoint_interval: Duration,
    /// How often expiries are looked for.
    pub tick: Duration,
}

/// The clock's answer to a renewal.
enum Renewal {
    /// Renewed: the lease's TTL.
    Renewed(i64),
    /// The lease has a checkpointed remaining TTL, which must be cleared through the log before
    /// the renewal counts (or a restart would cut the renewed lease short).
    ClearCheckpointFirst,
}

enum Command {
    /// `checkpoint_cleared`: the caller has just cleared the checkpoint (renew regardless).
    Renew {
        id: i64,
        checkpoint_cleared: bool,
        reply: oneshot::Sender<Result<Renewal, LeaseError>>,
    },
    TimeToLive {
        id: i64,
        reply: oneshot::Sender<Result<TimeLeft, LeaseError>>,
    },
}

/// The handle the API (and the peer service, for followers' requests) uses.
#[derive(Clone)]
pub struct Lessor {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RaftStatus>,
    node: NodeHandle,
}

impl Lessor {
    /// Starts the lessor task: it follows the key space's lease changes and this member's
    /// leadership, and proposes revocations and checkpoints through `node`.
    pub fn start(
        kv: KvStore,
        node: NodeHandle,
        status: watch::Receiver<RaftStatus>,
        metrics: Arc<Metrics>,
        config: LessorConfig,
    ) -> Result<Lessor, StoreError> {
        let changes = kv.watch_leases();
        let clock = Clock::new(kv, node.clone(), metrics, config)?;
        let (commands, rx) = mpsc::channel(1024);
        tokio::spawn(clock.run(changes, status.clone(), rx));
        Ok(Lessor { commands, status, node })
    }

    /// Asks the clock task, once this member (if it leads) applied everything committed: a
    /// revocation committed by the previous leader but not yet applied here must not be
    /// answered as a live lease (etcd waits the same way).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LeaseError>>) -> Command,
    ) -> Result<T, LeaseError> {
        let mut status = self.status.clone();
        let target = status.borrow_and_update().commit;
        status.wait_for(|s| s.applied >= target || !s.is_leader).await.map_err(|_| LeaseError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| LeaseError::Stopped)?;
        rx.await.map_err(|_| LeaseError::Stopped)?
    }

    /// Renews a lease for its whole TTL (primary only); returns the TTL. As etcd's lessor: a
    /// checkpointed remaining TTL is cleared through the log before the renewal is answered,
    /// and a lease that expired but is not revoked yet is answered once its revocation is
    /// applied (not found) or this member stops leading (ask the next leader).
    pub async fn renew(&self, id: i64) -> Result<i64, LeaseError> {
        match self.ask(|reply| Command::Renew { id, checkpoint_cleared: false, reply }).await? {
            Renewal::Renewed(ttl) => return Ok(ttl),
            Renewal::ClearCheckpointFirst => {}
        }
        let clear = LeaseCheckpointRequest { checkpoints: vec![LeaseCheckpoint { id, remaining_ttl: 0 }] };
        let proposal =
            InternalRequest { request: Some(Request::LeaseCheckpoint(clear)), ..Default::default() };
        self.node.propose(proposal).await.map_err(|_| LeaseError::NotPrimary)?;
        match self.ask(|reply| Command::Renew { id, checkpoint_cleared: true, reply }).await? {
            Renewal::Renewed(ttl) => Ok(ttl),
            Renewal::ClearCheckpointFirst => Err(LeaseError::NotPrimary),
        }
    }

    /// A lease's time left (primary only).
    pub async fn time_to_live(&self, id: i64) -> Result<TimeLeft, LeaseError> {
        self.ask(|reply| Command::TimeToLive { id, reply }).await
    }

    /// etcd's LeaseTimeToLive answer (without its header), as the primary gives it: time left,
    /// granted TTL and, if asked, the keys attached (from this member's key space).
    pub async fn time_to_live_response(
        &self,
        kv: &KvStore,
        request: &LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, LeaseError> {
        let left = self.time_to_live(request.id).await?;
        let keys = match kv.lease(request.id, request.keys) {
            Ok(Some(found)) => found.keys,
            Ok(None) => return Err(LeaseError::NotFound),
            Err(e) => return Err(LeaseError::Store(Arc::new(e))),
        };
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id: request.id,
            ttl: left.remaining,
            granted_ttl: left.granted,
            keys,
        })
    }
}

/// The smallest TTL a lease gets (etcd's rule: one and a half election timeouts, in whole
/// seconds rounded up), so a lease survives a leader change.
pub fn min_ttl(election_timeout: Duration) -> i64 {
    let millis = election_timeout.as_millis() as i64 * 3 / 2;
    (millis + 999) / 1000
}

/// The largest TTL etcd grants (about 285 years).
pub const MAX_TTL: i64 = 9_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(Duration::from_millis(1000)), 2);
        assert_eq!(min_ttl(Duration::from_millis(200)), 1);
        assert_eq!(min_ttl(Duration::from_millis(4000)), 6);
    }
}
