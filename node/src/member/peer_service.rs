//! The `Peer` service on the peer port: the member list, for members joining or restarting
//! (etcd's `GET /members`). Everything else between members is Raft messages.

use tonic::{Request, Response, Status};

use crate::proto::peerpb::peer_server::Peer;
use crate::proto::peerpb::{MembersRequest, MembersResponse};
use crate::storage::KvStore;

/// Answers from this member's applied membership.
pub struct PeerService {
    kv: KvStore,
    cluster_id: u64,
}

impl PeerService {
    pub fn new(kv: KvStore, cluster_id: u64) -> Self {
        Self { kv, cluster_id }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        let members = self.kv.members().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MembersResponse { cluster_id: self.cluster_id, members }))
    }
}
