//! [`MembershipClient`] over the etcd v3 gRPC API (`etcd-client`), which kvnode serves.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, MemberAddOptions};

use super::{EndpointStatus, Member, MembershipClient, MembershipError};

/// Connects afresh for every call: calls are rare (one reconcile step at a time), and a fresh
/// connection never sticks to a member that has since been removed or restarted.
#[derive(Debug, Clone)]
pub struct EtcdMembership {
    timeout: Duration,
}

impl EtcdMembership {
    /// `timeout` bounds connecting and each request, so one dead member never stalls a reconcile.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    async fn connect(&self, endpoints: &[String]) -> Result<Client, MembershipError> {
        let options = ConnectOptions::new().with_connect_timeout(self.timeout).with_timeout(self.timeout);
        Client::connect(endpoints, Some(options)).await.map_err(|e| MembershipError::Unreachable {
            endpoints: endpoints.to_vec(),
            message: e.to_string(),
        })
    }
}

fn refused(call: &'static str) -> impl FnOnce(etcd_client::Error) -> MembershipError {
    move |e| MembershipError::Refused { call, message: e.to_string() }
}

fn member_from(m: &etcd_client::Member) -> Member {
    Member {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

#[async_trait]
impl MembershipClient for EtcdMembership {
    async fn member_list(&self, endpoints: &[String]) -> Result<Vec<Member>, MembershipError> {
        let mut client = self.connect(endpoints).await?;
        let resp = client.member_list().await.map_err(|e| MembershipError::Unreachable {
            endpoints: endpoints.to_vec(),
            message: e.to_string(),
        })?;
        Ok(resp.members().iter().map(member_from).collect())
    }

    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, MembershipError> {
        let endpoints = [endpoint.to_string()];
        let mut client = self.connect(&endpoints).await?;
        let resp = client.status().await.map_err(|e| MembershipError::Unreachable {
            endpoints: endpoints.to_vec(),
            message: e.to_string(),
        })?;
        Ok(EndpointStatus {
            member_id: resp.header().map_or(0, |h| h.member_id()),
            leader: resp.leader(),
            raft_index: resp.raft_index(),
            raft_applied_index: resp.raft_applied_index(),
            raft_term: resp.raft_term(),
            is_learner: resp.is_learner(),
            has_errors: !resp.errors().is_empty(),
        })
    }

    async fn add_learner(&self, endpoints: &[String], peer_url: &str) -> Result<Member, MembershipError> {
        let mut client = self.connect(endpoints).await?;
        let resp = client
            .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
            .map_err(refused("MemberAdd"))?;
        resp.member()
            .map(member_from)
            .ok_or(MembershipError::Refused { call: "MemberAdd", message: "response names no member".into() })
    }

    async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        let mut client = self.connect(endpoints).await?;
        client.member_promote(id).await.map_err(refused("MemberPromote"))?;
        Ok(())
    }

    async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        let mut client = self.connect(endpoints).await?;
        client.member_remove(id).await.map_err(refused("MemberRemove"))?;
        Ok(())
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), MembershipError> {
        let mut client = self.connect(&[leader_endpoint.to_string()]).await?;
        client.move_leader(target).await.map_err(refused("MoveLeader"))?;
        Ok(())
    }
}
