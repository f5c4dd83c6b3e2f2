//! Dials other members' `Peer` service (on their peer port) by member id, for what is neither
//! a Raft message nor a client request: a follower's lease keep-alives and time-to-live
//! questions for the leader, the leader's corruption check asking each member's HashKV.
//!
//! A member's address is the first peer URL of its applied membership record; one channel per
//! URL is kept, connected lazily and reconnected by tonic when it breaks.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use crate::driver::NodeHandle;
use crate::proto::peerpb::peer_client::PeerClient;
use crate::storage::{KvStore, StoreError};
use crate::tls::{PeerEndpointError, PeerTls};

/// Why a member could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("no leader")]
    NoLeader,
    #[error("the member is stopping")]
    Stopped,
    #[error("member {0:x} is not in the membership")]
    UnknownMember(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Endpoint(#[from] PeerEndpointError),
}

pub struct PeerDialer {
    node: NodeHandle,
    kv: KvStore,
    tls: PeerTls,
    channels: Mutex<HashMap<String, Channel>>,
}

impl PeerDialer {
    pub fn new(node: NodeHandle, kv: KvStore, tls: PeerTls) -> Self {
        Self { node, kv, tls, channels: Mutex::new(HashMap::new()) }
    }

    /// A client of member `id`'s Peer service.
    pub fn member(&self, id: u64) -> Result<PeerClient<Channel>, DialError> {
        let url = self
            .kv
            .members()?
            .into_iter()
            .find(|m| m.id == id)
            .and_then(|m| m.peer_urls.into_iter().next())
            .ok_or(DialError::UnknownMember(id))?;
        let mut cache = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = cache.get(&url) {
            return Ok(PeerClient::new(ch.clone()));
        }
        let channel =
            self.tls.endpoint(&url)?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true).connect_lazy();
        cache.insert(url, channel.clone());
        Ok(PeerClient::new(channel))
    }

    /// A client of the current leader's Peer service, once a leader is known (by `deadline`).
    pub async fn leader(&self, deadline: Instant) -> Result<PeerClient<Channel>, DialError> {
        let leader = self.wait_for_leader(deadline).await?;
        self.member(leader)
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<u64, DialError> {
        let mut rx = self.node.subscribe();
        let known = async {
            loop {
                if let Some(l) = rx.borrow_and_update().leader_id {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(DialError::Stopped);
                }
            }
        };
        tokio::time::timeout_at(deadline, known).await.unwrap_or(Err(DialError::NoLeader))
    }
}
