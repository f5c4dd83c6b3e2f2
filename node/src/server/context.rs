//! What every client-facing service of a member shares: its identity, limits, the Raft loop,
//! the key-value store, and the way to reach the leader.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::peerpb::ReadIndexRequest;
use crate::proto::peerpb::peer_client::PeerClient;
use crate::raft::RaftError;
use crate::server::errors::EtcdError;
use crate::server::raft_loop::{NodeHandle, ProposeError};
use crate::server::tls::PeerTls;
use crate::storage::{KvStore, Store};

/// Metadata key marking a request a follower forwarded to the leader, so a request reaching a
/// member that is (no longer) leader fails instead of bouncing between members.
pub const FORWARDED_HEADER: &str = "x-raftkv-forwarded";

/// Limits on client requests (etcd's `--max-request-bytes`, `--max-txn-ops`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Writes that add data are refused once the database file is larger than this.
    pub quota_backend_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    /// How long a write or linearizable read may wait for consensus before failing.
    pub request_timeout: Duration,
    /// How long a request waits for a leader to appear before failing with "no leader".
    pub leader_wait: Duration,
}

/// Shared by the KV, Cluster and Maintenance services of one member.
pub struct ServerContext {
    pub node: NodeHandle,
    pub store: Store,
    pub kv: KvStore,
    pub cluster_id: u64,
    pub member_id: u64,
    pub cluster_token: String,
    pub limits: Limits,
    /// How to dial other members' peer URLs (TLS with the peer certificate for `https://`).
    peer_tls: PeerTls,
    /// Client connections to other members, by URL.
    channels: Mutex<HashMap<String, Channel>>,
}

impl ServerContext {
    pub fn new(
        node: NodeHandle,
        store: Store,
        cluster_id: u64,
        member_id: u64,
        token: String,
        limits: Limits,
    ) -> Self {
        Self {
            node,
            kv: store.kv().clone(),
            store,
            cluster_id,
            member_id,
            cluster_token: token,
            limits,
            peer_tls: PeerTls::default(),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Dials the leader's `https://` peer URL with this TLS configuration.
    pub fn with_peer_tls(mut self, tls: PeerTls) -> Self {
        self.peer_tls = tls;
        self
    }

    /// How this member dials other members (for calls made outside this context).
    pub fn peer_tls(&self) -> &PeerTls {
        &self.peer_tls
    }

    /// A response header as of `revision` (the revision the answer reflects).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.status().term,
        }
    }

    /// A header at the store's current revision.
    pub fn current_header(&self) -> ResponseHeader {
        self.header(self.kv.current_revision().unwrap_or(0))
    }

    /// Rejects requests larger than `--max-request-bytes`, as etcd does before proposing.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), EtcdError> {
        if encoded_len > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        Ok(())
    }

    /// Refuses writes that add data once the database is over `--quota-backend-bytes`, as
    /// etcd does (deletes and compactions stay allowed so space can be freed).
    pub fn check_quota(&self) -> Result<(), EtcdError> {
        match self.store.file_size() {
            Ok(size) if size > self.limits.quota_backend_bytes => Err(EtcdError::NoSpace),
            _ => Ok(()),
        }
    }

    /// Waits until this member has applied everything committed before the call.
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        match tokio::time::timeout(self.limits.request_timeout, self.node.read_barrier()).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ProposeError::Timeout),
        }
    }

    /// Waits (bounded by `leader_wait`) for some member to be leader and returns its id.
    pub async fn wait_for_leader(&self) -> Result<u64, EtcdError> {
        let mut rx = self.node.subscribe();
        let wait = async {
            loop {
                if let Some(l) = rx.borrow_and_update().leader_id {
                    return Ok(l);
                }
                if rx.changed().await.is_err() {
                    return Err(EtcdError::Stopped);
                }
            }
        };
        tokio::time::timeout(self.limits.leader_wait, wait).await.unwrap_or(Err(EtcdError::NoLeader))
    }

    /// A (cached, lazily connected) channel to the current leader's peer URL. Followers
    /// forward client requests there (the peer port serves KV and Cluster too) rather than to
    /// the leader's client URL, which is only known once the leader has published it.
    pub async fn leader_channel(&self) -> Result<(u64, Channel), EtcdError> {
        let leader = self.wait_for_leader().await?;
        if leader == self.member_id {
            // We became leader meanwhile; the caller retries locally.
            return Err(EtcdError::LeaderChanged);
        }
        let members = self.kv.members().map_err(|e| EtcdError::Internal(e.to_string()))?;
        let url = members
            .iter()
            .find(|m| m.id == leader)
            .and_then(|m| m.peer_urls.first().cloned())
            .ok_or(EtcdError::NoLeader)?;
        let mut cache = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = cache.get(&url) {
            return Ok((leader, ch.clone()));
        }
        let ch = self
            .peer_tls
            .endpoint(&url)
            .map_err(|e| EtcdError::Internal(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        cache.insert(url, ch.clone());
        Ok((leader, ch))
    }

    /// Waits until this member has applied everything committed before the call: on the
    /// leader through ReadIndex directly, on a follower by asking the leader for its read index
    /// over the peer port and waiting to apply up to it (reads are then served locally). Asking
    /// is retried until the deadline while the leader cannot be reached (reads are idempotent).
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let index = loop {
            match tokio::time::timeout_at(deadline, self.node.read_barrier()).await {
                Err(_) => return Err(EtcdError::Timeout),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(ProposeError::NotLeader(_))) => {}
                Ok(Err(e)) => return Err(self.propose_error(e)),
            }
            let (_, channel) = self.leader_channel().await?;
            let mut client = PeerClient::new(channel);
            match tokio::time::timeout_at(deadline, client.read_index(ReadIndexRequest {})).await {
                Err(_) => return Err(EtcdError::Timeout),
                Ok(Ok(resp)) => break resp.into_inner().index,
                Ok(Err(status))
                    if status.code() == tonic::Code::Unavailable || never_reached_leader(&status) =>
                {
                    if Instant::now() + RETRY_PAUSE >= deadline {
                        return Err(EtcdError::Timeout);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(status)) => return Err(EtcdError::from_status(&status)),
            }
        };
        let mut rx = self.node.subscribe();
        let caught_up = async {
            loop {
                if rx.borrow_and_update().applied >= index {
                    return Ok(());
                }
                if rx.changed().await.is_err() {
                    return Err(EtcdError::Stopped);
                }
            }
        };
        tokio::time::timeout_at(deadline, caught_up).await.unwrap_or(Err(EtcdError::Timeout))
    }

    /// Maps a Raft-loop failure to what a client sees, for a request that cannot be forwarded.
    pub fn propose_error(&self, e: ProposeError) -> EtcdError {
        match e {
            ProposeError::NotLeader(Some(_)) => EtcdError::NotLeader,
            ProposeError::NotLeader(None) => EtcdError::NoLeader,
            ProposeError::LeaderChanged => EtcdError::LeaderChanged,
            ProposeError::Refused(RaftError::TransferInProgress) => EtcdError::TransferInProgress,
            ProposeError::Refused(RaftError::ConfChangePending) => EtcdError::ConfChangePending,
            ProposeError::Timeout => EtcdError::Timeout,
            ProposeError::Refused(other) => EtcdError::Internal(other.to_string()),
            ProposeError::Apply(e) => e,
            ProposeError::Stopped => EtcdError::Stopped,
        }
    }
}

/// True when a follower already forwarded this request.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}

/// Wraps a message into a request marked as forwarded.
pub fn forwarded_request<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    req
}

/// Pause between attempts to reach the leader while leadership is unsettled.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Whether a failed request to the leader certainly did not reach its log: the connection was
/// never made, or the receiver said it is not (or no longer) the leader. Only such failures may
/// be retried for writes; anything else might have been applied.
pub fn never_reached_leader(status: &Status) -> bool {
    let msg = status.message();
    [EtcdError::NotLeader, EtcdError::NoLeader, EtcdError::LeaderChanged].iter().any(|e| e.to_string() == msg)
        || (status.code() == tonic::Code::Unavailable && msg.contains("connect"))
}
