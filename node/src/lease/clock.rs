//! The lessor's task: every lease's clock, run only while this member leads.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::driver::{NodeHandle, RaftStatus};
use crate::metrics::Metrics;
use crate::proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use crate::proto::kvserverpb::{InternalRequest, internal_request};
use crate::storage::{KvStore, LeaseChange, StoreError};

use super::{Command, LeaseError, LessorConfig, Renewal, TimeLeft};

/// Most revocations proposed per second (etcd's `leaseRevokeRate`), so that a pile of leases
/// expiring at once (after a long partition, say) does not flood the log.
const REVOKES_PER_SECOND: u32 = 1000;
/// Most checkpoints in one proposal (etcd's `maxLeaseCheckpointBatchSize`).
const CHECKPOINT_BATCH: usize = 1000;
/// A revocation not applied after this long (its proposal was lost) is proposed again.
const REVOKE_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

struct Lease {
    ttl: i64,
    /// The remaining TTL last checkpointed through the log (0: none).
    remaining_ttl: i64,
    /// When it expires; `None` while this member is not the primary.
    expiry: Option<Instant>,
    /// When a revocation was proposed, until it is applied.
    revoking: Option<Instant>,
}

impl Lease {
    fn restart(&mut self, extend: std::time::Duration, now: Instant) {
        let secs = if self.remaining_ttl > 0 { self.remaining_ttl } else { self.ttl };
        self.expiry = Some(now + extend + secs_duration(secs));
    }
}

fn secs_duration(secs: i64) -> std::time::Duration {
    std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

pub(super) struct Clock {
    kv: KvStore,
    node: NodeHandle,
    metrics: Arc<Metrics>,
    config: LessorConfig,
    leases: HashMap<i64, Lease>,
    primary: bool,
    /// Renewals of expired leases, answered when the revocation is applied or leadership ends.
    renewals_after_revocation: HashMap<i64, Vec<RenewReply>>,
}

type RenewReply = tokio::sync::oneshot::Sender<Result<Renewal, LeaseError>>;

impl Clock {
    pub(super) fn new(
        kv: KvStore,
        node: NodeHandle,
        metrics: Arc<Metrics>,
        config: LessorConfig,
    ) -> Result<Self, StoreError> {
        let mut clock = Clock {
            kv,
            node,
            metrics,
            config,
            leases: HashMap::new(),
            primary: false,
            renewals_after_revocation: HashMap::new(),
        };
        clock.reload()?;
        Ok(clock)
    }

    /// Reads every lease from the key space (at start, and when a snapshot replaced them).
    fn reload(&mut self) -> Result<(), StoreError> {
        let now = Instant::now();
        self.leases.clear();
        for r in self.kv.leases()? {
            let mut lease =
                Lease { ttl: r.ttl, remaining_ttl: r.remaining_ttl, expiry: None, revoking: None };
            if self.primary {
                lease.restart(self.config.extend_on_promotion, now);
            }
            self.leases.insert(r.id, lease);
        }
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<LeaseChange>,
        mut status: watch::Receiver<RaftStatus>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut expiry_tick = tokio::time::interval(self.config.tick);
        expiry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.config.checkpoint_interval;
        let mut checkpoint_tick = tokio::time::interval_at(Instant::now() + every, every);
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.follow_leadership(status.borrow().is_leader);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(c) => self.changed(c),
                    None => return,
                },
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let leads = status.borrow_and_update().is_leader;
                    self.follow_leadership(leads);
                }
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => return,
                },
                _ = expiry_tick.tick() => self.revoke_expired(),
                _ = checkpoint_tick.tick() => self.checkpoint(),
            }
        }
    }

    /// Starts every clock when this member becomes leader, stops them when it no longer is.
    fn follow_leadership(&mut self, leads: bool) {
        if leads == self.primary {
            return;
        }
        self.primary = leads;
        let now = Instant::now();
        for lease in self.leases.values_mut() {
            lease.revoking = None;
            if leads {
                lease.restart(self.config.extend_on_promotion, now);
            } else {
                lease.expiry = None;
            }
        }
        if leads {
            info!(leases = self.leases.len(), "leading: lease clocks started");
        } else {
            self.answer_renewals(None, LeaseError::NotPrimary);
        }
    }

    fn changed(&mut self, change: LeaseChange) {
        match change {
            LeaseChange::Granted { id, ttl } => {
                self.metrics.leases_granted.inc();
                let expiry = self.primary.then(|| Instant::now() + secs_duration(ttl));
                self.leases.insert(id, Lease { ttl, remaining_ttl: 0, expiry, revoking: None });
            }
            LeaseChange::Revoked { id } => {
                self.metrics.leases_revoked.inc();
                self.leases.remove(&id);
                self.answer_renewals(Some(id), LeaseError::NotFound);
            }
            LeaseChange::Checkpointed { id, remaining_ttl } => {
                if let Some(l) = self.leases.get_mut(&id) {
                    l.remaining_ttl = remaining_ttl;
                }
            }
            LeaseChange::Reset => {
                if let Err(e) = self.reload() {
                    warn!(error = %e, "lessor: cannot read the leases a snapshot installed");
                }
                let gone: Vec<i64> = self
                    .renewals_after_revocation
                    .keys()
                    .filter(|id| !self.leases.contains_key(id))
                    .copied()
                    .collect();
                for id in gone {
                    self.answer_renewals(Some(id), LeaseError::NotFound);
                }
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Renew { id, checkpoint_cleared, reply } => match self.renew(id, checkpoint_cleared) {
                Some(answer) => {
                    let _ = reply.send(answer);
                }
                None => self.renewals_after_revocation.entry(id).or_default().push(reply),
            },
            Command::TimeToLive { id, reply } => {
                let _ = reply.send(self.time_left(id));
            }
        }
    }

    fn live(&mut self, id: i64) -> Result<&mut Lease, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let now = Instant::now();
        match self.leases.get_mut(&id) {
            // An expired lease is as good as gone: its revocation is (or is about to be) on
            // its way through the log.
            Some(l) if l.expiry.is_some_and(|e| e > now) && l.revoking.is_none() => Ok(l),
            _ => Err(LeaseError::NotFound),
        }
    }

    /// The answer to a renewal, or `None` when the lease expired and its revocation is under
    /// way: the caller then waits for it (see [`Clock::answer_renewals`]).
    fn renew(&mut self, id: i64, checkpoint_cleared: bool) -> Option<Result<Renewal, LeaseError>> {
        if !self.primary {
            return Some(Err(LeaseError::NotPrimary));
        }
        let now = Instant::now();
        let Some(lease) = self.leases.get_mut(&id) else { return Some(Err(LeaseError::NotFound)) };
        if lease.revoking.is_some() || lease.expiry.is_none_or(|e| e <= now) {
            return None;
        }
        if lease.remaining_ttl > 0 && !checkpoint_cleared {
            return Some(Ok(Renewal::ClearCheckpointFirst));
        }
        lease.expiry = Some(now + secs_duration(lease.ttl));
        lease.remaining_ttl = 0;
        self.metrics.leases_renewed.inc();
        Some(Ok(Renewal::Renewed(lease.ttl)))
    }

    /// Answers the renewals that waited for a lease's revocation: `NotFound` once it is
    /// revoked, `NotPrimary` (ask the next leader, where the lease may live on) when this
    /// member stops leading.
    fn answer_renewals(&mut self, id: Option<i64>, answer: LeaseError) {
        let waiting: Vec<_> = match id {
            Some(id) => self.renewals_after_revocation.remove(&id).into_iter().flatten().collect(),
            None => self.renewals_after_revocation.drain().flat_map(|(_, w)| w).collect(),
        };
        for reply in waiting {
            let _ = reply.send(Err(answer.clone()));
        }
    }

    fn time_left(&mut self, id: i64) -> Result<TimeLeft, LeaseError> {
        let lease = self.live(id)?;
        let left = lease.expiry.map_or(0, |e| e.saturating_duration_since(Instant::now()).as_secs());
        Ok(TimeLeft { remaining: i64::try_from(left).unwrap_or(i64::MAX), granted: lease.ttl })
    }

    /// Proposes the revocation of leases whose time ran out, at most a tick's share of
    /// [`REVOKES_PER_SECOND`] at a time.
    fn revoke_expired(&mut self) {
        if !self.primary {
            return;
        }
        let now = Instant::now();
        let budget = (REVOKES_PER_SECOND as u128 * self.config.tick.as_millis() / 1000).max(1) as usize;
        let expired: Vec<(i64, bool)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expiry.is_some_and(|e| e <= now))
            .filter(|(_, l)| l.revoking.is_none_or(|at| now.duration_since(at) >= REVOKE_RETRY))
            .map(|(id, l)| (*id, l.revoking.is_some()))
            .take(budget)
            .collect();
        for (id, again) in expired {
            if let Some(l) = self.leases.get_mut(&id) {
                l.revoking = Some(now);
            }
            debug!(lease = id, again, "lease expired: proposing its revocation");
            if !again {
                self.metrics.leases_expired.inc();
            }
            self.propose(internal_request::Request::LeaseRevoke(LeaseRevokeRequest { id }));
        }
    }

    /// Checkpoints the remaining TTL of every lease long enough for it to matter.
    fn checkpoint(&mut self) {
        if !self.primary {
            return;
        }
        let now = Instant::now();
        let interval = i64::try_from(self.config.checkpoint_interval.as_secs()).unwrap_or(i64::MAX);
        let due: Vec<LeaseCheckpoint> = self
            .leases
            .iter()
            .filter(|(_, l)| l.ttl > interval && l.revoking.is_none())
            .filter_map(|(id, l)| {
                let left = l.expiry?.saturating_duration_since(now).as_secs();
                Some(LeaseCheckpoint { id: *id, remaining_ttl: i64::try_from(left).ok()?.max(1) })
            })
            .collect();
        for batch in due.chunks(CHECKPOINT_BATCH) {
            let request = LeaseCheckpointRequest { checkpoints: batch.to_vec() };
            self.propose(internal_request::Request::LeaseCheckpoint(request));
        }
    }

    /// Proposes through the log without waiting here: the outcome comes back as a lease
    /// change; a revocation not applied within [`REVOKE_RETRY`] is proposed again.
    fn propose(&self, request: internal_request::Request) {
        let node = self.node.clone();
        tokio::spawn(async move {
            let revoke = matches!(request, internal_request::Request::LeaseRevoke(_));
            let proposal = InternalRequest { request: Some(request), ..Default::default() };
            if let Err(e) = node.propose(proposal).await {
                debug!(error = %e, revoke, "lessor proposal failed; retried on a later tick");
            }
        });
    }
}
