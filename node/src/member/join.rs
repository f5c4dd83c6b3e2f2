//! Asking the running cluster who this member is: a member started with
//! `--initial-cluster-state existing` finds the identity MemberAdd gave it, and a restarting
//! member checks it was not removed while it was down. Both ask other members' peer ports for
//! the member list, as etcd does.

use std::time::Duration;

use crate::config::{NodeFlags, parse_initial_cluster};
use crate::proto::kvserverpb::Member;
use crate::proto::peerpb::peer_client::PeerClient;
use crate::proto::peerpb::{MembersRequest, MembersResponse};
use crate::tls::{PeerEndpointError, PeerTls};

use super::{Identity, StartError};

/// Why no member answered with the member list.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("no other member to ask")]
    NobodyToAsk,
    #[error("{url}: {source}")]
    Endpoint {
        url: String,
        #[source]
        source: PeerEndpointError,
    },
    #[error("{url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{url}: {}", source.message())]
    Refused {
        url: String,
        #[source]
        source: tonic::Status,
    },
    #[error("no member with peer URLs {0:?} in the cluster; add it first (MemberAdd)")]
    NotAdded(Vec<String>),
    #[error("invalid --initial-cluster: {0}")]
    InitialCluster(String),
}

/// Asks the members at `urls` (peer URLs) for the member list, returning the first answer or
/// why none came (the last failure).
async fn fetch_members(
    urls: &[String],
    tls: &PeerTls,
    connect_timeout: Duration,
) -> Result<MembersResponse, JoinError> {
    let mut last_error = JoinError::NobodyToAsk;
    for url in urls {
        let endpoint = match tls.endpoint(url) {
            Ok(e) => e.connect_timeout(connect_timeout).timeout(connect_timeout * 2),
            Err(source) => {
                last_error = JoinError::Endpoint { url: url.clone(), source };
                continue;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(source) => {
                last_error = JoinError::Connect { url: url.clone(), source };
                continue;
            }
        };
        match PeerClient::new(channel).members(MembersRequest {}).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(source) => last_error = JoinError::Refused { url: url.clone(), source },
        }
    }
    Err(last_error)
}

/// Finds this member's identity in the running cluster (for `--initial-cluster-state
/// existing`): the member whose peer URLs match ours, added earlier with MemberAdd. Also
/// returns the peers to talk to until this member's own log tells it the membership.
pub(super) async fn discover_identity(
    flags: &NodeFlags,
    tls: &PeerTls,
) -> Result<(Identity, Vec<(u64, String)>), StartError> {
    let pairs = parse_initial_cluster(&flags.initial_cluster)
        .map_err(|e| JoinError::InitialCluster(e.to_string()))?;
    let urls: Vec<String> = pairs.into_iter().filter(|(n, _)| *n != flags.name).map(|(_, u)| u).collect();
    let resp = fetch_members(&urls, tls, Duration::from_secs(2)).await?;
    let peers = resp.members.iter().filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone()))).collect();
    let me = resp
        .members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| flags.initial_advertise_peer_urls.contains(u)))
        .ok_or_else(|| JoinError::NotAdded(flags.initial_advertise_peer_urls.clone()))?;
    Ok((Identity { member_id: me.id, cluster_id: resp.cluster_id }, peers))
}

/// On a restart, asks the other members whether this one is still a member. A member removed
/// while it was down (or before it applied its own removal) still lists itself locally; only
/// the cluster knows. Unreachable peers prove nothing, so the member then starts as usual.
pub(super) async fn check_still_member(
    identity: Identity,
    members: &[Member],
    tls: &PeerTls,
) -> Result<(), StartError> {
    let urls: Vec<String> = members
        .iter()
        .filter(|m| m.id != identity.member_id)
        .filter_map(|m| m.peer_urls.first().cloned())
        .collect();
    if urls.is_empty() {
        return Ok(());
    }
    let Ok(resp) = fetch_members(&urls, tls, Duration::from_millis(500)).await else { return Ok(()) };
    if resp.cluster_id == identity.cluster_id && !resp.members.iter().any(|m| m.id == identity.member_id) {
        return Err(StartError::Removed(identity.member_id));
    }
    Ok(())
}
