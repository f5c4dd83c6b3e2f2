//! etcd's `Cluster` service: MemberList, MemberAdd (voter or learner), MemberRemove,
//! MemberUpdate, MemberPromote.
//!
//! Membership lives in the replicated state machine, so every member answers MemberList from
//! its own store. Changes are proposed on any member like any other proposal (a follower's
//! reach the leader inside Raft) and go through Raft one at a time. Like etcd with
//! `--strict-reconfig-check`, the leader refuses a change that would leave the cluster without
//! a quorum of members it currently hears from, and a promotion of a learner that is behind.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tonic::{Request, Response, Status};

use crate::member::identity;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member as PbMember, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::proto::kvserverpb::{Member, MemberPeerUpdate, internal_request};
use crate::proto::raftpb::{ConfChange, ConfChangeType};

use super::context::ApiContext;
use super::errors::EtcdError;

/// The Cluster service of one member.
pub struct ClusterService {
    ctx: Arc<ApiContext>,
}

impl ClusterService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        Self { ctx }
    }

    fn members(&self) -> Result<Vec<Member>, Status> {
        self.ctx.kv.members().map_err(|e| EtcdError::Internal(e.to_string()).into())
    }

    fn pb_members(&self) -> Result<Vec<PbMember>, Status> {
        Ok(self.members()?.iter().map(to_pb).collect())
    }
}

fn conf_change(kind: ConfChangeType, node_id: u64, member: Option<&Member>) -> ConfChange {
    ConfChange {
        change_type: kind as i32,
        node_id,
        context: member.map(Message::encode_to_vec).unwrap_or_default(),
        ..Default::default()
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
        let req = request.into_inner();
        validate_urls(&req.peer_ur_ls)?;
        // Checked against every change committed before this request (the client may have
        // made one through another member a moment ago), as etcd checks on the leader.
        self.ctx.linearizable_barrier().await?;
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
        let kind = if req.is_learner {
            ConfChangeType::ConfChangeAddLearnerNode
        } else {
            ConfChangeType::ConfChangeAddNode
        };
        // The leader that appends it refuses a voter whose addition would leave fewer
        // reachable voters than a quorum (the new member is not running yet).
        self.ctx.conf_change(conf_change(kind, id, Some(&member))).await?;
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
        let req = request.into_inner();
        self.ctx.linearizable_barrier().await?;
        if !self.members()?.iter().any(|m| m.id == req.id) {
            return Err(EtcdError::MemberNotFound.into());
        }
        self.ctx.conf_change(conf_change(ConfChangeType::ConfChangeRemoveNode, req.id, None)).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.ctx.current_header()),
            members: self.pb_members()?,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = request.into_inner();
        validate_urls(&req.peer_ur_ls)?;
        // Checked against every change committed before this request (the client may have
        // made one through another member a moment ago), as etcd checks on the leader.
        self.ctx.linearizable_barrier().await?;
        let members = self.members()?;
        if !members.iter().any(|m| m.id == req.id) {
            return Err(EtcdError::MemberNotFound.into());
        }
        if members.iter().any(|m| m.id != req.id && m.peer_urls.iter().any(|u| req.peer_ur_ls.contains(u))) {
            return Err(EtcdError::PeerUrlExists.into());
        }
        // Peer URLs are not Raft membership, only where to reach a member: an ordinary entry.
        let update = MemberPeerUpdate { id: req.id, peer_urls: req.peer_ur_ls.clone() };
        self.ctx.propose(internal_request::Request::MemberPeerUpdate(update)).await?;
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
            self.ctx.linearizable_barrier().await?;
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
        let req = request.into_inner();
        // Checked against every change committed before this request (the client may have
        // made one through another member a moment ago), as etcd checks on the leader.
        self.ctx.linearizable_barrier().await?;
        let members = self.members()?;
        let Some(target) = members.iter().find(|m| m.id == req.id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if !target.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        // Only the leader knows how far the learner got: it refuses a learner that is behind.
        let promoted = Member { is_learner: false, ..target.clone() };
        self.ctx.conf_change(conf_change(ConfChangeType::ConfChangeAddNode, req.id, Some(&promoted))).await?;
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
