//! The `Peer` service (proto/peer.proto): requests followers make of the leader over the peer
//! port — a read index for linearizable reads served locally, and publishing a member's name
//! and client URLs.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::kvserverpb::{InternalRequest, MemberAttributes, internal_request};
use crate::proto::peerpb::peer_server::Peer;
use crate::proto::peerpb::{PublishRequest, PublishResponse, ReadIndexRequest, ReadIndexResponse};
use crate::server::context::ServerContext;
use crate::server::errors::EtcdError;

/// The Peer service of one member; only its leader answers.
pub struct PeerApi {
    ctx: Arc<ServerContext>,
}

impl PeerApi {
    pub fn new(ctx: Arc<ServerContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl Peer for PeerApi {
    async fn read_index(&self, _: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let index = tokio::time::timeout(self.ctx.limits.request_timeout, self.ctx.node.read_barrier())
            .await
            .map_err(|_| Status::from(EtcdError::Timeout))?
            .map_err(|e| Status::from(self.ctx.propose_error(e)))?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let req = request.into_inner();
        let proposal = InternalRequest {
            id: 0,
            request: Some(internal_request::Request::MemberAttributes(MemberAttributes {
                id: req.id,
                name: req.name,
                client_urls: req.client_urls,
            })),
        };
        tokio::time::timeout(self.ctx.limits.request_timeout, self.ctx.node.propose(proposal))
            .await
            .map_err(|_| Status::from(EtcdError::Timeout))?
            .map_err(|e| Status::from(self.ctx.propose_error(e)))?;
        Ok(Response::new(PublishResponse {}))
    }
}
