//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes become Raft proposals; a follower forwards them to the leader's client port (the
//! request is marked so it is forwarded at most once). Linearizable reads pass a ReadIndex
//! barrier first; serializable reads are answered from the local store at once.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse, request_op,
};
use crate::proto::kvserverpb::{InternalRequest, internal_request};
use crate::server::context::{
    RETRY_PAUSE, ServerContext, forwarded_request, is_forwarded, never_reached_leader,
};
use crate::server::errors::EtcdError;
use crate::server::raft_loop::ProposeError;
use crate::storage::kv::validate;
use crate::storage::{ApplyResult, KvError, Outcome};

/// The KV service of one member.
pub struct KvService {
    ctx: Arc<ServerContext>,
}

impl KvService {
    pub fn new(ctx: Arc<ServerContext>) -> Self {
        Self { ctx }
    }

    /// Proposes `request`; on a follower, forwards it to the leader with `forward`. A forward
    /// that certainly never reached a leader's log (the leader was unreachable, or answered
    /// that it is not leader) is retried until the request deadline, so while an election
    /// settles a client sees success, `no leader` or a timeout, never a transport error. A
    /// forward that may have reached the log is never retried: that could apply it twice.
    async fn write<F, Fut, T>(
        &self,
        forwarded: bool,
        request: internal_request::Request,
        forward: F,
    ) -> Result<ApplyResult, Fwd<T>>
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.ctx.limits.request_timeout;
        let proposal = InternalRequest { id: 0, request: Some(request) };
        loop {
            match tokio::time::timeout_at(deadline, self.ctx.node.propose(proposal.clone())).await {
                Err(_) => return Err(Fwd::Failed(EtcdError::Timeout.into())),
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(ProposeError::NotLeader(_))) if !forwarded => match self.forward(&forward).await {
                    Fwd::Failed(status) if never_reached_leader(&status) => {
                        if Instant::now() + RETRY_PAUSE >= deadline {
                            return Err(Fwd::Failed(EtcdError::Timeout.into()));
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    other => return Err(other),
                },
                Ok(Err(e)) => return Err(Fwd::Failed(self.ctx.propose_error(e).into())),
            }
        }
    }

    async fn forward<F, Fut, T>(&self, call: &F) -> Fwd<T>
    where
        F: Fn(KvClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        match self.ctx.leader_channel().await {
            Ok((_, channel)) => {
                let client = KvClient::new(channel)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX);
                match call(client).await {
                    Ok(resp) => Fwd::Answered(resp),
                    Err(status) => Fwd::Failed(status),
                }
            }
            Err(e) => Fwd::Failed(e.into()),
        }
    }
}

/// Responses that carry etcd's header.
trait WithHeader {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($t:ty),*) => {$(
        impl WithHeader for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )*};
}
with_header!(RangeResponse, PutResponse, DeleteRangeResponse, TxnResponse, CompactionResponse);

impl KvService {
    /// Completes a response with this member's header at `revision`.
    fn finish<T: WithHeader>(&self, mut resp: T, revision: i64) -> Response<T> {
        *resp.header_mut() = Some(self.ctx.header(revision));
        Response::new(resp)
    }
}

/// Outcome of a request that could not be served locally.
enum Fwd<T> {
    Answered(Response<T>),
    Failed(Status),
}

impl<T> Fwd<T> {
    fn into_result(self) -> Result<Response<T>, Status> {
        match self {
            Fwd::Answered(r) => Ok(r),
            Fwd::Failed(s) => Err(s),
        }
    }
}

/// A request refused before proposing, with etcd's status.
fn reject(e: KvError) -> Status {
    EtcdError::from(&e).into()
}

fn unexpected(result: &Outcome) -> Status {
    EtcdError::Internal(format!("unexpected apply result {result:?}")).into()
}

/// Whether any branch of a txn (nested ones included) puts a key.
fn txn_writes(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(request_op::Request::RequestPut(_)) => true,
        Some(request_op::Request::RequestTxn(t)) => txn_writes(t),
        _ => false,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_range(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        if !req.serializable {
            self.ctx.linearizable_barrier().await?;
        }
        let resp = self.ctx.kv.range(&req).map_err(|e| Status::from(EtcdError::from(&e)))?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        Ok(self.finish(resp, revision))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        validate::check_put(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        self.ctx.check_quota()?;
        let fwd_req = req.clone();
        let call = |mut c: KvClient<Channel>| {
            let r = fwd_req.clone();
            async move { c.put(forwarded_request(r)).await }
        };
        match self.write(forwarded, internal_request::Request::Put(req), call).await {
            Ok(result) => match result.outcome {
                Outcome::Put(resp) => Ok(self.finish(resp, result.revision)),
                other => Err(unexpected(&other)),
            },
            Err(fwd) => fwd.into_result(),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        validate::check_delete_range(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        let fwd_req = req.clone();
        let call = |mut c: KvClient<Channel>| {
            let r = fwd_req.clone();
            async move { c.delete_range(forwarded_request(r)).await }
        };
        match self.write(forwarded, internal_request::Request::DeleteRange(req), call).await {
            Ok(result) => match result.outcome {
                Outcome::DeleteRange(resp) => Ok(self.finish(resp, result.revision)),
                other => Err(unexpected(&other)),
            },
            Err(fwd) => fwd.into_result(),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        self.ctx.check_size(req.encoded_len())?;
        validate::check_txn(&req, self.ctx.limits.max_txn_ops).map_err(reject)?;
        if txn_writes(&req) {
            self.ctx.check_quota()?;
        }
        let fwd_req = req.clone();
        let call = |mut c: KvClient<Channel>| {
            let r = fwd_req.clone();
            async move { c.txn(forwarded_request(r)).await }
        };
        match self.write(forwarded, internal_request::Request::Txn(req), call).await {
            Ok(result) => match result.outcome {
                Outcome::Txn(resp) => Ok(self.finish(resp, result.revision)),
                other => Err(unexpected(&other)),
            },
            Err(fwd) => fwd.into_result(),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let fwd_req = req;
        let call = |mut c: KvClient<Channel>| {
            let r = fwd_req;
            async move { c.compact(forwarded_request(r)).await }
        };
        match self.write(forwarded, internal_request::Request::Compaction(req), call).await {
            Ok(result) => match result.outcome {
                Outcome::Compaction(resp) => Ok(self.finish(resp, result.revision)),
                other => Err(unexpected(&other)),
            },
            Err(fwd) => fwd.into_result(),
        }
    }
}
