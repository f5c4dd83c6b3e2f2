//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are validated as etcd validates them, then proposed on this member (a follower's
//! proposals reach the leader inside Raft) and answered from this member's apply of the entry.
//! Linearizable reads pass a read index barrier first; serializable reads are answered from
//! the local store at once.

use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use crate::proto::kvserverpb::internal_request::Request as Write;
use crate::storage::kv::validate;
use crate::storage::{ApplyResult, KvError, Outcome};

use super::context::ApiContext;
use super::errors::EtcdError;

/// The KV service of one member.
pub struct KvService {
    ctx: Arc<ApiContext>,
}

impl KvService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }

    /// Proposes a write and turns its apply result into the response (`pick` takes the
    /// response out of the outcome of the write's kind).
    async fn write<T: WithHeader>(
        &self,
        write: Write,
        pick: impl FnOnce(Outcome) -> Option<T>,
    ) -> Result<Response<T>, Status> {
        let ApplyResult { revision, outcome, .. } = self.ctx.propose(write).await?;
        let resp = match outcome {
            Outcome::Rejected(e) => return Err(reject(e)),
            other => pick(other).ok_or_else(|| EtcdError::Internal("unexpected apply result".into()))?,
        };
        Ok(self.finish(resp, revision))
    }

    /// Completes a response with this member's header at `revision`.
    fn finish<T: WithHeader>(&self, mut resp: T, revision: i64) -> Response<T> {
        *resp.header_mut() = Some(self.ctx.header(revision));
        Response::new(resp)
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

/// A request refused with etcd's status.
fn reject(e: KvError) -> Status {
    EtcdError::from(&e).into()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_range(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        // Under a CORRUPT alarm nothing is served that might be wrong (writes are refused
        // where they are applied).
        if self.ctx.kv.active_alarms().corrupt() {
            return Err(EtcdError::Corrupt.into());
        }
        if !req.serializable {
            self.ctx.linearizable_barrier().await?;
        }
        let resp = self.ctx.kv.range(&req).map_err(reject)?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        Ok(self.finish(resp, revision))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::check_put(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        self.ctx.check_quota().await?;
        self.write(Write::Put(req), |o| match o {
            Outcome::Put(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_delete_range(&req).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        self.write(Write::DeleteRange(req), |o| match o {
            Outcome::DeleteRange(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::check_txn(&req, self.ctx.limits.max_txn_ops).map_err(reject)?;
        self.ctx.check_size(req.encoded_len())?;
        if validate::txn_puts(&req) {
            self.ctx.check_quota().await?;
        }
        self.write(Write::Txn(req), |o| match o {
            Outcome::Txn(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        self.write(Write::Compaction(req), |o| match o {
            Outcome::Compaction(r) => Some(r),
            _ => None,
        })
        .await
    }
}
