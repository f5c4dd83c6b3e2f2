//! [`MembershipClient`] over the etcd v3 gRPC API (`etcd-client`), which kvnode serves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use tracing::debug;

use super::{EndpointStatus, Member, MembershipClient, MembershipError};

/// PEM credentials for a cluster's `https://` client endpoints, as its client Secret holds
/// them (`ca.crt`, `tls.crt`, `tls.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA that signed the members' client-port certificates.
    pub ca_pem: Vec<u8>,
    /// Certificate and key presented to members that require client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    fn options(&self) -> TlsOptions {
        let options = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

/// Finds the client TLS credentials of the cluster that `endpoints` belong to (one cluster's
/// client URLs per call). Kept behind a trait so that one membership client serves every
/// cluster, each with its own Secret.
#[async_trait]
pub trait ClientTlsSource: Send + Sync {
    /// Credentials for these `https://` endpoints, `None` when the cluster has none.
    async fn client_tls(&self, endpoints: &[String]) -> Result<Option<ClientTls>, MembershipError>;
}

/// Connects afresh for every call: calls are rare (one reconcile step at a time), and a fresh
/// connection never sticks to a member that has since been removed or restarted.
#[derive(Clone)]
pub struct EtcdMembership {
    timeout: Duration,
    tls: Option<Arc<dyn ClientTlsSource>>,
}

impl std::fmt::Debug for EtcdMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMembership")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl EtcdMembership {
    /// `timeout` bounds connecting and each request, so one dead member never stalls a reconcile.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, tls: None }
    }

    /// Dials `https://` endpoints with the credentials `source` finds for their cluster.
    pub fn with_tls_source(mut self, source: Arc<dyn ClientTlsSource>) -> Self {
        self.tls = Some(source);
        self
    }

    async fn connect(&self, endpoints: &[String]) -> Result<Client, MembershipError> {
        let mut options = ConnectOptions::new().with_connect_timeout(self.timeout).with_timeout(self.timeout);
        if endpoints.iter().any(|e| e.starts_with("https://")) {
            let tls = match &self.tls {
                Some(source) => source.client_tls(endpoints).await?,
                None => None,
            };
            let tls = tls.ok_or_else(|| MembershipError::Unreachable {
                endpoints: endpoints.to_vec(),
                message: "https:// endpoints, but no client TLS credentials for this cluster".to_string(),
            })?;
            options = options.with_tls(tls.options());
        }
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
