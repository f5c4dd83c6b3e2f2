//! etcd's `Cluster` service: MemberList, MemberAdd (voter or learner), MemberRemove,
//! MemberUpdate, MemberPromote.
//!
//! Membership lives in the replicated state machine, so every member answers MemberList from
//! its own store; changes go through Raft one at a time (the core refuses a second pending
//! change). Like etcd with `--strict-reconfig-check`, a change that would leave the cluster
//! without a quorum of members the leader currently hears from is refused up front.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::proto::kvserverpb::{InternalRequest, Member, MemberPeerUpdate, internal_request};
use crate::proto::raftpb::{ConfChange, ConfChangeType};
use crate::server::context::{ServerContext, forwarded_request, is_forwarded};
use crate::server::errors::EtcdError;
use crate::server::identity;
use crate::server::raft_loop::ProposeError;

/// A learner is promotable once its log is within this fraction of the leader's (etcd: 90%).
const LEARNER_READY_PERCENT: u64 = 90;

/// The Cluster service of one member.
pub struct ClusterService {
    ctx: Arc<ServerContext>,
}

impl ClusterService {
    pub fn new(ctx: Arc<ServerContext>) -> Self {
        Self { ctx }
    }

    fn members(&self) -> Result<Vec<Member>, Status> {
        self.ctx.kv.members().map_err(|e| EtcdError::Internal(e.to_string()).into())
    }

    fn pb_members(&self) -> Result<Vec<PbMember>, Status> {
        Ok(self.members()?.iter().map(to_pb).collect())
    }

    async fn forward_client(&self) -> Result<ClusterClient<Channel>, Status> {
        let (_, channel) = self.ctx.leader_channel().await?;
        Ok(ClusterClient::new(channel))
    }

    /// Runs a membership change through Raft; `Ok(None)` means "not leader, forward".
    async fn change(&self, cc: ConfChange, forwarded: bool) -> Result<Option<()>, Status> {
        let outcome =
            tokio::time::timeout(self.ctx.limits.request_timeout, self.ctx.node.conf_change(cc)).await;
        match outcome {
            Err(_) => Err(EtcdError::Timeout.into()),
            Ok(Ok(_)) => Ok(Some(())),
            Ok(Err(ProposeError::NotLeader(_))) if !forwarded => Ok(None),
            Ok(Err(e)) => Err(self.ctx.propose_error(e).into()),
        }
    }

    /// Refuses a change after which fewer voters than a quorum would be reachable.
    async fn check_quorum_after(&self, voters_after: &[u64]) -> Result<(), Status> {
        let active =
            self.ctx.node.active_peers().await.map_err(|e| Status::from(self.ctx.propose_error(e)))?;
        let reachable = voters_after.iter().filter(|v| active.contains(v)).count();
        if reachable < voters_after.len() / 2 + 1 {
            return Err(EtcdError::NotEnoughStartedMembers.into());
        }
        Ok(())
    }
}

/// The wire form of a stored member.
pub fn to_pb(m: &Member) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

fn validate_urls(urls: &[String]) -> Result<(), EtcdError> {
    if urls.is_empty() {
        return Err(EtcdError::InvalidArgument("peer URLs are empty".into()));
    }
    for u in urls {
        let ok = (u.starts_with("http://") || u.starts_with("https://"))
            && u.rsplit_once(':').is_some_and(|(_, port)| port.trim_end_matches('/').parse::<u16>().is_ok());
        if !ok {
            return Err(EtcdError::InvalidArgument(format!("invalid peer URL {u:?}")));
        }
    }
    Ok(())
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        validate_urls(&req.peer_ur_ls)?;
        let members = self.members()?;
        if members.iter().any(|m| m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(EtcdError::PeerUrlExists.into());
        }
        let id = identity::member_id(&req.peer_ur_ls, &self.ctx.cluster_token, Some(now_nanos()));
        let member = Member {
            id,
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        let change_type = if req.is_learner {
            ConfChangeType::ConfChangeAddLearnerNode
        } else {
            ConfChangeType::ConfChangeAddNode
        };
        if !req.is_learner && self.ctx.node.status().is_leader {
            let mut voters = self.ctx.node.status().voters;
            voters.push(id);
            // The new member is not started yet: count it as unreachable.
            let known: Vec<u64> = voters.iter().copied().filter(|v| *v != id).collect();
            let active =
                self.ctx.node.active_peers().await.map_err(|e| Status::from(self.ctx.propose_error(e)))?;
            if known.iter().filter(|v| active.contains(v)).count() < voters.len() / 2 + 1 {
                return Err(EtcdError::NotEnoughStartedMembers.into());
            }
        }
        let cc = ConfChange { change_type: change_type as i32, node_id: id, context: member.encode_to_vec() };
        if self.change(cc, forwarded).await?.is_none() {
            return self.forward_client().await?.member_add(forwarded_request(req)).await;
        }
        Ok(Response::new(MemberAddResponse {
            header: Some(self.ctx.current_header()),
            member: Some(to_pb(&member)),
            members: self.pb_members()?,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let members = self.members()?;
        let Some(target) = members.iter().find(|m| m.id == req.id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if !target.is_learner && self.ctx.node.status().is_leader {
            let voters: Vec<u64> =
                self.ctx.node.status().voters.into_iter().filter(|v| *v != req.id).collect();
            self.check_quorum_after(&voters).await?;
        }
        let cc = ConfChange {
            change_type: ConfChangeType::ConfChangeRemoveNode as i32,
            node_id: req.id,
            context: Vec::new(),
        };
        if self.change(cc, forwarded).await?.is_none() {
            return self.forward_client().await?.member_remove(forwarded_request(req)).await;
        }
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.ctx.current_header()),
            members: self.pb_members()?,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        validate_urls(&req.peer_ur_ls)?;
        let members = self.members()?;
        if !members.iter().any(|m| m.id == req.id) {
            return Err(EtcdError::MemberNotFound.into());
        }
        if members.iter().any(|m| m.id != req.id && m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(EtcdError::PeerUrlExists.into());
        }
        // Peer URLs are not Raft membership, only where to reach a member: an ordinary entry.
        let update = MemberPeerUpdate { id: req.id, peer_urls: req.peer_ur_ls.clone() };
        let proposal =
            InternalRequest { id: 0, request: Some(internal_request::Request::MemberPeerUpdate(update)) };
        match tokio::time::timeout(self.ctx.limits.request_timeout, self.ctx.node.propose(proposal)).await {
            Err(_) => return Err(EtcdError::Timeout.into()),
            Ok(Ok(_)) => {}
            Ok(Err(ProposeError::NotLeader(_))) if !forwarded => {
                return self.forward_client().await?.member_update(forwarded_request(req)).await;
            }
            Ok(Err(e)) => return Err(self.ctx.propose_error(e).into()),
        }
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.ctx.current_header()),
            members: self.pb_members()?,
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.ctx.read_barrier().await.map_err(|e| Status::from(self.ctx.propose_error(e)))?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.ctx.current_header()),
            members: self.pb_members()?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let status = self.ctx.node.status();
        if !status.is_leader {
            if forwarded {
                return Err(EtcdError::NotLeader.into());
            }
            return self.forward_client().await?.member_promote(forwarded_request(req)).await;
        }
        let members = self.members()?;
        let Some(target) = members.iter().find(|m| m.id == req.id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if !target.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let matched =
            self.ctx.node.match_index(req.id).await.map_err(|e| Status::from(self.ctx.propose_error(e)))?;
        if matched.saturating_mul(100) < status.commit.saturating_mul(LEARNER_READY_PERCENT) || matched == 0 {
            return Err(EtcdError::LearnerNotReady.into());
        }
        let mut voters = status.voters.clone();
        voters.push(req.id);
        self.check_quorum_after(&voters).await?;
        let cc = ConfChange {
            change_type: ConfChangeType::ConfChangeAddNode as i32,
            node_id: req.id,
            context: Member { is_learner: false, ..target.clone() }.encode_to_vec(),
        };
        if self.change(cc, forwarded).await?.is_none() {
            return self.forward_client().await?.member_promote(forwarded_request(req)).await;
        }
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.ctx.current_header()),
            members: self.pb_members()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_validated() {
        assert!(validate_urls(&["http://10.0.0.1:2380".into()]).is_ok());
        assert!(validate_urls(&[]).is_err());
        assert!(validate_urls(&["10.0.0.1:2380".into()]).is_err());
        assert!(validate_urls(&["http://host".into()]).is_err());
    }
}
