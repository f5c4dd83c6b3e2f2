//! The cloneable handle async code uses to talk to the Raft loop, and the loop's input queue.
//!
//! The queue is bounded twice over, because the loop is one thread and everything else is
//! many: client requests take a slot of [`MAX_QUEUED_CLIENT_REQUESTS`] (one more is refused
//! with [`DriverError::TooManyRequests`] at once), and the peer transport waits for one of
//! [`MAX_QUEUED_PEER_BATCHES`] permits before it hands over a batch, so a flood from peers
//! slows their streams down instead of filling memory. Like etcd, a member whose applied index
//! lags its commit index by more than [`MAX_APPLY_BACKLOG`] entries refuses new proposals.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Instant;

use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::proto::kvserverpb::{InternalRequest, internal_request};
use crate::proto::raftpb::{ConfChange, RaftMessage};
use crate::storage::ApplyResult;

use super::error::DriverError;
use super::transport::Inbox;

/// Client requests that may wait in the loop's queue before more are refused.
pub const MAX_QUEUED_CLIENT_REQUESTS: usize = 16 * 1024;
/// Batches of peer messages that may wait in the loop's queue before peers are slowed down.
pub const MAX_QUEUED_PEER_BATCHES: usize = 1024;
/// Committed entries not yet applied beyond which proposals are refused (etcd's 5,000).
pub const MAX_APPLY_BACKLOG: u64 = 5000;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, DriverError>>;

/// What handlers can see of the Raft state without asking the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub commit: u64,
    /// The index applied to the key space (what reads see).
    pub applied: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// When the loop last completed a turn; `/livez` fails when this goes stale.
    pub heartbeat: Option<Instant>,
}

/// The leader's view of one member's replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    /// Highest index known replicated on that member.
    pub matched: u64,
    /// Whether the leader heard from it within the last election timeout.
    pub recent_active: bool,
}

/// A client request to the loop.
pub(crate) enum ClientRequest {
    /// A write; `data` is an encoded [`InternalRequest`] whose id is `id`.
    Propose { id: u64, data: Vec<u8>, reply: Reply<ApplyResult> },
    /// A membership change, carrying its own request id; answered when applied here.
    ConfChange { cc: ConfChange, reply: Reply<ApplyResult> },
    /// A linearizable read barrier: answered with an index once it is applied here.
    ReadIndex { reply: Reply<u64> },
    /// Hand leadership to `to`; answered once the transfer started.
    TransferLeader { to: u64, reply: Reply<()> },
    /// The leader's view of every member's replication progress.
    Progress { reply: Reply<Vec<PeerProgress>> },
}

/// Everything the loop receives.
pub(crate) enum Input {
    /// Messages from a peer; the permit is the batch's place in the queue.
    Peer(Vec<RaftMessage>, OwnedSemaphorePermit),
    /// A client request holding one of the queue's client slots until the loop takes it.
    Client(ClientRequest, QueueSlot),
    /// Wakes the loop: a key-space sync finished.
    KvSynced,
    /// Stop the loop.
    Stop,
}

/// One of the client slots of the loop's queue, given back when dropped.
pub(crate) struct QueueSlot(Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The cloneable handle async code uses to talk to the Raft loop.
#[derive(Clone)]
pub struct NodeHandle {
    id: u64,
    tx: mpsc::Sender<Input>,
    status: watch::Receiver<RaftStatus>,
    queued: Arc<AtomicUsize>,
    /// Counter of this member's request ids. It starts at the wall clock in nanoseconds, so
    /// ids never repeat across restarts: an entry proposed before a crash and applied after it
    /// must not answer a new request that happens to reuse its number.
    next_request_id: Arc<AtomicU64>,
}

impl NodeHandle {
    pub(crate) fn new(id: u64, tx: mpsc::Sender<Input>, status: watch::Receiver<RaftStatus>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            id,
            tx,
            status,
            queued: Arc::new(AtomicUsize::new(0)),
            next_request_id: Arc::new(AtomicU64::new(now)),
        }
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The latest published status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// A receiver that changes whenever the status does (leader changes, applies).
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> ClientRequest) -> Result<T, DriverError> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_CLIENT_REQUESTS {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(DriverError::TooManyRequests);
        }
        let slot = QueueSlot(self.queued.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Input::Client(make(reply), slot)).map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Refuses proposals while this member is far behind in applying (etcd's
    /// `ErrTooManyRequests`): queueing more would only make every client wait longer.
    fn check_apply_backlog(&self) -> Result<(), DriverError> {
        let st = self.status.borrow();
        if st.commit.saturating_sub(st.applied) > MAX_APPLY_BACKLOG {
            return Err(DriverError::TooManyRequests);
        }
        Ok(())
    }

    /// Proposes a client write on this member (the leader appends it, a follower forwards it
    /// inside Raft) and waits until this member has applied it.
    pub async fn propose(&self, mut request: InternalRequest) -> Result<ApplyResult, DriverError> {
        self.check_apply_backlog()?;
        let id = self.next_request_id();
        request.id = id;
        request.proposer = self.id;
        let data = request.encode_to_vec();
        // Transactions nest; what was accepted must decode at apply on every member, so it is
        // decoded once here (the other requests are flat).
        if matches!(request.request, Some(internal_request::Request::Txn(_))) {
            InternalRequest::decode(data.as_slice()).map_err(DriverError::Undecodable)?;
        }
        self.call(|reply| ClientRequest::Propose { id, data, reply }).await
    }

    /// Proposes a membership change and waits until it is applied here.
    pub async fn conf_change(&self, mut cc: ConfChange) -> Result<ApplyResult, DriverError> {
        self.check_apply_backlog()?;
        cc.request_id = self.next_request_id();
        cc.proposer = self.id;
        self.call(|reply| ClientRequest::ConfChange { cc, reply }).await
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex,
    /// through the leader when this member is a follower); returns the read index.
    pub async fn read_barrier(&self) -> Result<u64, DriverError> {
        self.call(|reply| ClientRequest::ReadIndex { reply }).await
    }

    /// Starts a leadership transfer to `to` (leader only).
    pub async fn transfer_leader(&self, to: u64) -> Result<(), DriverError> {
        self.call(|reply| ClientRequest::TransferLeader { to, reply }).await
    }

    /// Replication progress of every member, as the leader sees it (leader only).
    pub async fn progress(&self) -> Result<Vec<PeerProgress>, DriverError> {
        self.call(|reply| ClientRequest::Progress { reply }).await
    }

    /// Asks the loop to stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

/// Delivers peer messages into the loop's queue, waiting for room.
pub struct LoopInbox {
    tx: Mutex<mpsc::Sender<Input>>,
    room: Arc<Semaphore>,
}

impl LoopInbox {
    pub(crate) fn new(tx: mpsc::Sender<Input>) -> Self {
        Self { tx: Mutex::new(tx), room: Arc::new(Semaphore::new(MAX_QUEUED_PEER_BATCHES)) }
    }
}

impl Inbox for LoopInbox {
    async fn deliver(&self, messages: Vec<RaftMessage>) -> bool {
        let Ok(permit) = self.room.clone().acquire_owned().await else { return false };
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).send(Input::Peer(messages, permit)).is_ok()
    }
}
