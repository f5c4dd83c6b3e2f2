//! [`MembershipClient`] over the etcd v3 gRPC API (`etcd-client`), which kvnode serves.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use tracing::debug;

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

/// Whether a failure says nothing about the request itself (the member could not be reached, or
/// it answered that it cannot serve now), so the same call may go to another member.
fn member_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

impl EtcdMembership {
    /// Sends `call` to the members one at a time, in the order given, until one answers.
    ///
    /// The endpoints include every ordinal that may hold a member, so some are usually down (a
    /// pod being restarted, an ordinal not started yet). One client balancing over all of them
    /// may pick a dead one for the request and fail although others are up; asking each in turn
    /// never does. A member that cannot be reached (or answers Unavailable, e.g. without a
    /// leader) is skipped; any other answer, success or refusal, is final.
    async fn on_any_member<T, F, Fut>(
        &self,
        endpoints: &[String],
        call: &'static str,
        mut request: F,
    ) -> Result<T, MembershipError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut failures = Vec::new();
        for endpoint in endpoints {
            let client = match self.connect(std::slice::from_ref(endpoint)).await {
                Ok(client) => client,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            match request(client).await {
                Ok(answer) => return Ok(answer),
                Err(e) if member_unavailable(&e) => {
                    debug!(%endpoint, call, error = %e, "member unavailable; trying the next one");
                    failures.push(format!("{endpoint}: {e}"));
                }
                Err(e) => return Err(MembershipError::Refused { call, message: e.to_string() }),
            }
        }
        Err(MembershipError::Unreachable { endpoints: endpoints.to_vec(), message: failures.join("; ") })
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
        let list = self
            .on_any_member(endpoints, "MemberList", |mut c| async move { c.member_list().await })
            .await
            .map_err(|e| match e {
                // Listing refused by a member that answered still tells nothing about the list.
                MembershipError::Refused { message, .. } => {
                    MembershipError::Unreachable { endpoints: endpoints.to_vec(), message }
                }
                unreachable => unreachable,
            })?;
        Ok(list.members().iter().map(member_from).collect())
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
        let resp = self
            .on_any_member(endpoints, "MemberAdd", |mut c| async move {
                c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())).await
            })
            .await?;
        resp.member()
            .map(member_from)
            .ok_or(MembershipError::Refused { call: "MemberAdd", message: "response names no member".into() })
    }

    async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        self.on_any_member(endpoints, "MemberPromote", |mut c| async move { c.member_promote(id).await })
            .await?;
        Ok(())
    }

    async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), MembershipError> {
        self.on_any_member(endpoints, "MemberRemove", |mut c| async move { c.member_remove(id).await })
            .await?;
        Ok(())
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), MembershipError> {
        let mut client = self.connect(&[leader_endpoint.to_string()]).await?;
        client.move_leader(target).await.map_err(refused("MoveLeader"))?;
        Ok(())
    }
}
