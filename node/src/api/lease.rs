//! etcd's `Lease` service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive,
//! LeaseLeases.
//!
//! Grants and revocations are proposals like any write (any member; a follower's reach the
//! leader inside Raft). Keep-alives and time-to-live questions need the lease clocks, which run
//! on the leader alone: a follower passes them to the leader's peer port, as etcd does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::lease::{LeaseError, Lessor, MAX_TTL};
use crate::peer_client::{DialError, PeerDialer};
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::proto::kvserverpb::internal_request::Request as Write;
use crate::proto::peerpb::LeaseRenewRequest;
use crate::storage::{KvError, Outcome};

use super::context::ApiContext;
use super::errors::EtcdError;

/// Pause before asking again while leadership moves.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Server-chosen ids that collide with an existing lease are drawn again this many times.
const ID_ATTEMPTS: usize = 3;

/// The Lease service of one member.
pub struct LeaseService {
    ctx: Arc<ApiContext>,
    lessor: Lessor,
    leader: Arc<PeerDialer>,
    /// Smallest TTL granted (one and a half election timeouts, as etcd).
    min_ttl: i64,
    /// Next server-chosen lease id: the member id in the high bits and a clock-seeded counter,
    /// so members and restarts do not draw the same ids.
    next_id: AtomicI64,
}

impl LeaseService {
    pub fn new(ctx: Arc<ApiContext>, lessor: Lessor, leader: Arc<PeerDialer>, min_ttl: i64) -> Self {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis());
        let seed = ((ctx.member_id as i64 & 0x7fff) << 47) | (now as i64 & ((1 << 47) - 1));
        Self { ctx, lessor, leader, min_ttl, next_id: AtomicI64::new(seed.max(1)) }
    }

    fn draw_id(&self) -> i64 {
        (self.next_id.fetch_add(1, Ordering::Relaxed) & i64::MAX).max(1)
    }

    /// Grants a lease: a TTL below the minimum is raised (here, so every member applies the
    /// same), an id of 0 is drawn by the server (again if it collides).
    pub async fn grant(&self, mut req: LeaseGrantRequest) -> Result<LeaseGrantResponse, EtcdError> {
        if req.ttl > MAX_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        self.ctx.check_quota().await?;
        req.ttl = req.ttl.max(self.min_ttl);
        let chosen = req.id == 0;
        for _ in 0..ID_ATTEMPTS {
            if chosen {
                req.id = self.draw_id();
            }
            let applied = self.ctx.propose(Write::LeaseGrant(req)).await?;
            match applied.outcome {
                Outcome::LeaseGrant(mut resp) => {
                    resp.header = Some(self.ctx.header(applied.revision));
                    return Ok(resp);
                }
                Outcome::Rejected(KvError::LeaseExists) if chosen => continue,
                Outcome::Rejected(e) => return Err(EtcdError::from(&e)),
                _ => return Err(EtcdError::Internal("unexpected apply result".into())),
            }
        }
        Err(EtcdError::LeaseExists)
    }

    /// Renews a lease wherever its clock runs; `Ok(0)` when it does not exist (or expired).
    async fn renew(&self, id: i64) -> Result<i64, EtcdError> {
        let deadline = Instant::now() + self.ctx.limits.request_timeout;
        loop {
            // A follower that knows it does not lead goes straight to the leader.
            if self.ctx.node.status().is_leader {
                match timeout_at(deadline, self.lessor.renew(id)).await.map_err(|_| EtcdError::Timeout)? {
                    Ok(ttl) => return Ok(ttl),
                    Err(LeaseError::NotFound) => return Ok(0),
                    Err(LeaseError::NotPrimary) => {}
                    Err(e) => return Err(lease_error(e)),
                }
            }
            let mut leader = self.leader.leader(deadline).await.map_err(dial_error)?;
            match timeout_at(deadline, leader.lease_renew(LeaseRenewRequest { id })).await {
                Err(_) => return Err(EtcdError::Timeout),
                Ok(Ok(answer)) => return Ok(answer.into_inner().ttl),
                Ok(Err(s)) if s.code() == Code::NotFound => return Ok(0),
                Ok(Err(s)) if moving(&s) => pause(deadline).await?,
                Ok(Err(s)) => return Err(EtcdError::Internal(s.message().to_string())),
            }
        }
    }

    /// A lease's time left, from wherever its clock runs; `None` when it does not exist.
    async fn time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
    ) -> Result<Option<LeaseTimeToLiveResponse>, EtcdError> {
        let deadline = Instant::now() + self.ctx.limits.request_timeout;
        loop {
            let asked = self.lessor.time_to_live_response(&self.ctx.kv, request);
            match timeout_at(deadline, asked).await.map_err(|_| EtcdError::Timeout)? {
                Ok(answer) => return Ok(Some(answer)),
                Err(LeaseError::NotFound) => return Ok(None),
                Err(LeaseError::NotPrimary) => {}
                Err(e) => return Err(lease_error(e)),
            }
            let mut leader = self.leader.leader(deadline).await.map_err(dial_error)?;
            match timeout_at(deadline, leader.lease_time_to_live(*request)).await {
                Err(_) => return Err(EtcdError::Timeout),
                Ok(Ok(answer)) => return Ok(Some(answer.into_inner())),
                Ok(Err(s)) if s.code() == Code::NotFound => return Ok(None),
                Ok(Err(s)) if moving(&s) => pause(deadline).await?,
                Ok(Err(s)) => return Err(EtcdError::Internal(s.message().to_string())),
            }
        }
    }
}

/// The member asked no longer leads, or could not be reached: leadership is moving.
fn moving(s: &Status) -> bool {
    matches!(s.code(), Code::FailedPrecondition | Code::Unavailable | Code::Unknown | Code::Cancelled)
}

async fn pause(deadline: Instant) -> Result<(), EtcdError> {
    if Instant::now() + RETRY_PAUSE >= deadline {
        return Err(EtcdError::Timeout);
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

fn dial_error(e: DialError) -> EtcdError {
    match e {
        DialError::NoLeader => EtcdError::NoLeader,
        DialError::Stopped => EtcdError::Stopped,
        other => EtcdError::Internal(other.to_string()),
    }
}

fn lease_error(e: LeaseError) -> EtcdError {
    match e {
        LeaseError::NotFound => EtcdError::LeaseNotFound,
        LeaseError::NotPrimary => EtcdError::NotLeader,
        LeaseError::Stopped => EtcdError::Stopped,
        LeaseError::Store(e) => EtcdError::Internal(e.to_string()),
    }
}

pub type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

/// Serves one keep-alive stream (a gRPC stream, or the JSON gateway's requests).
pub fn keep_alive_stream<S>(service: Arc<LeaseService>, inbound: S) -> KeepAliveStream
where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::channel(16);
    tokio::spawn(keep_alive(service, inbound, out));
    Box::pin(ReceiverStream::new(rx))
}

/// One keep-alive stream's requests, answered in order; it ends when the client closes its
/// side (as etcd's does).
async fn keep_alive<S>(
    service: Arc<LeaseService>,
    mut inbound: S,
    out: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
) where
    S: Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Unpin,
{
    loop {
        let request = match inbound.next().await {
            Some(Ok(r)) => r,
            None => return,
            Some(Err(status)) => {
                let _ = out.send(Err(status)).await;
                return;
            }
        };
        // The header is taken before renewing, as etcd does, so its revision is never after a
        // revocation the client could otherwise believe it outlived.
        let header = service.ctx.current_header();
        let answer = match service.renew(request.id).await {
            Ok(ttl) => Ok(LeaseKeepAliveResponse { header: Some(header), id: request.id, ttl }),
            Err(e) => Err(Status::from(e)),
        };
        let failed = answer.is_err();
        if out.send(answer).await.is_err() || failed {
            return;
        }
    }
}

/// The service is shared with the keep-alive tasks it spawns.
pub struct LeaseApi(pub Arc<LeaseService>);

#[tonic::async_trait]
impl Lease for LeaseApi {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        Ok(Response::new(self.0.grant(request.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let s = &self.0;
        let applied = s.ctx.propose(Write::LeaseRevoke(request.into_inner())).await?;
        match applied.outcome {
            Outcome::LeaseRevoke(mut resp) => {
                resp.header = Some(s.ctx.header(applied.revision));
                Ok(Response::new(resp))
            }
            Outcome::Rejected(e) => Err(EtcdError::from(&e).into()),
            _ => Err(EtcdError::Internal("unexpected apply result".into()).into()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        Ok(Response::new(keep_alive_stream(self.0.clone(), request.into_inner())))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let s = &self.0;
        let req = request.into_inner();
        let header = Some(s.ctx.current_header());
        let answer = match s.time_to_live(&req).await? {
            Some(mut answer) => {
                answer.header = header;
                answer
            }
            // etcd answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse { header, id: req.id, ttl: -1, ..Default::default() },
        };
        Ok(Response::new(answer))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let s = &self.0;
        s.ctx.linearizable_barrier().await?;
        let leases = s.ctx.kv.leases().map_err(|e| EtcdError::Internal(e.to_string()))?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(s.ctx.current_header()),
            leases: leases.into_iter().map(|l| LeaseStatus { id: l.id }).collect(),
        }))
    }
}
