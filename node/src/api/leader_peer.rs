//! The leader's peer port, for what only the leader can answer and is not a Raft proposal nor a
//! read: lease keep-alives and time-to-live (lease time runs on the leader alone, as in etcd,
//! which passes them to the leader over its peer port too).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use crate::driver::NodeHandle;
use crate::proto::peerpb::peer_client::PeerClient;
use crate::storage::KvStore;
use crate::tls::PeerTls;

use super::errors::EtcdError;

/// Dials the current leader's peer URL (cached per URL, connected lazily).
pub struct LeaderPeer {
    node: NodeHandle,
    kv: KvStore,
    tls: PeerTls,
    channels: Mutex<HashMap<String, Channel>>,
}

impl LeaderPeer {
    pub fn new(node: NodeHandle, kv: KvStore, tls: PeerTls) -> Self {
        Self { node, kv, tls, channels: Mutex::new(HashMap::new()) }
    }

    /// A client of the leader's Peer service, once a leader is known (by `deadline`).
    pub async fn client(&self, deadline: Instant) -> Result<PeerClient<Channel>, EtcdError> {
        let leader = self.wait_for_leader(deadline).await?;
        let url = self
            .kv
            .members()
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .into_iter()
            .find(|m| m.id == leader)
            .and_then(|m| m.peer_urls.into_iter().next())
            .ok_or(EtcdError::NoLeader)?;
        let mut cache = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = cache.get(&url) {
            return Ok(PeerClient::new(ch.clone()));
        }
        let channel = self
            .tls
            .endpoint(&url)
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        cache.insert(url, channel.clone());
        Ok(PeerClient::new(channel))
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<u64, EtcdError> {
        let mut rx = self.node.subscribe();
        let known = async {
            loop {
                if let Some(l) = rx.borrow_and_update().leader_id {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(EtcdError::Stopped);
                }
            }
        };
        tokio::time::timeout_at(deadline, known).await.unwrap_or(Err(EtcdError::NoLeader))
    }
}
