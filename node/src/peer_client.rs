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
    cache: Mutex<Cache>,
}

/// Channels by peer URL, and members' URLs as last read from the membership (re-read at most
/// every [`URLS_FRESH`], so a keep-alive forwarded per request does not read the database).
#[derive(Default)]
struct Cache {
    channels: HashMap<String, Channel>,
    urls: HashMap<u64, String>,
    read_at: Option<std::time::Instant>,
}

/// How long members' URLs are reused before the membership is read again.
const URLS_FRESH: Duration = Duration::from_secs(1);

impl PeerDialer {
    pub fn new(node: NodeHandle, kv: KvStore, tls: PeerTls) -> Self {
        Self { node, kv, tls, cache: Mutex::new(Cache::default()) }
    }

    /// A client of member `id`'s Peer service.
    pub fn member(&self, id: u64) -> Result<PeerClient<Channel>, DialError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = cache.read_at.is_none_or(|at| at.elapsed() >= URLS_FRESH);
        if stale || !cache.urls.contains_key(&id) {
            cache.urls = self
                .kv
                .members()?
                .into_iter()
                .filter_map(|m| m.peer_urls.into_iter().next().map(|u| (m.id, u)))
                .collect();
            cache.read_at = Some(std::time::Instant::now());
        }
        let url = cache.urls.get(&id).cloned().ok_or(DialError::UnknownMember(id))?;
        if let Some(ch) = cache.channels.get(&url) {
            return Ok(PeerClient::new(ch.clone()));
        }
        let channel =
            self.tls.endpoint(&url)?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true).connect_lazy();
        cache.channels.insert(url, channel.clone());
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
