//! The `Peer` service on the peer port: the member list, for members joining or restarting
//! (etcd's `GET /members`), and lease time, which only the leader keeps, for followers' clients
//! (etcd's `/leases`). Everything else between members is Raft messages.

use tonic::{Request, Response, Status};

use crate::api::EtcdError;
use crate::lease::{LeaseError, Lessor};
use crate::proto::etcdserverpb::{
    HashKvRequest, HashKvResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::peerpb::peer_server::Peer;
use crate::proto::peerpb::{LeaseRenewRequest, LeaseRenewResponse, MembersRequest, MembersResponse};
use crate::storage::KvStore;

/// Answers from this member's applied membership and its lessor.
pub struct PeerService {
    kv: KvStore,
    cluster_id: u64,
    lessor: Lessor,
}

impl PeerService {
    pub fn new(kv: KvStore, cluster_id: u64, lessor: Lessor) -> Self {
        Self { kv, cluster_id, lessor }
    }
}

/// How a lessor refusal travels to the follower that asked (it maps the status back).
fn lease_status(e: LeaseError) -> Status {
    match e {
        LeaseError::NotFound => EtcdError::LeaseNotFound.into(),
        LeaseError::NotPrimary => EtcdError::NotLeader.into(),
        LeaseError::Stopped => EtcdError::Stopped.into(),
        LeaseError::Store(e) => EtcdError::Internal(e.to_string()).into(),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn members(&self, _: Request<MembersRequest>) -> Result<Response<MembersResponse>, Status> {
        let members = self.kv.members().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(MembersResponse { cluster_id: self.cluster_id, members }))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        let ttl = self.lessor.renew(request.get_ref().id).await.map_err(lease_status)?;
        Ok(Response::new(LeaseRenewResponse { ttl }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let answer =
            self.lessor.time_to_live_response(&self.kv, request.get_ref()).await.map_err(lease_status)?;
        Ok(Response::new(answer))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let h = self.kv.hash_kv(request.get_ref().revision).map_err(|e| Status::from(EtcdError::from(&e)))?;
        Ok(Response::new(HashKvResponse {
            header: None,
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }
}
