//! Peer transport: carries Raft messages between members over gRPC.
//!
//! Messages are one-way (a response is a message of its own), so each ordered pair of members
//! needs exactly one long-lived client stream. Every peer gets its own sender task and bounded
//! queue: the Raft loop never waits on the network, and a slow or dead peer only fills (and then
//! drops from) its own queue. Raft tolerates lost messages, so dropping is always safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::proto::peerpb::SendAck;
use crate::proto::peerpb::raft_transport_client::RaftTransportClient;
use crate::proto::peerpb::raft_transport_server::RaftTransport;
use crate::proto::raftpb::{RaftMessage, RaftMessageBatch};
use crate::tls::PeerTls;

/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE_CAPACITY: usize = 4096;
/// Most messages packed into one batch on the wire.
const MAX_BATCH: usize = 256;
/// Largest gRPC message accepted or sent between peers (snapshot chunks are the big ones).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where the transport delivers messages received from peers (the Raft loop's inbox).
pub trait Inbox: Send + Sync + 'static {
    /// Hands a batch of received messages to the Raft loop, waiting while its queue is full
    /// (so a flood slows the sender's stream down); returns false when the loop is gone.
    fn deliver(&self, messages: Vec<RaftMessage>) -> impl Future<Output = bool> + Send;
}

/// The gRPC service peers send to.
pub struct PeerService<I> {
    inbox: Arc<I>,
    /// Set when the member stops: inbound streams end at once instead of holding the server's
    /// graceful shutdown until its timeout (peers keep their streams open for good).
    shutdown: watch::Receiver<bool>,
}

impl<I: Inbox> PeerService<I> {
    /// Serves messages into `inbox` until `shutdown` turns true.
    pub fn new(inbox: Arc<I>, shutdown: watch::Receiver<bool>) -> Self {
        Self { inbox, shutdown }
    }
}

#[tonic::async_trait]
impl<I: Inbox> RaftTransport for PeerService<I> {
    async fn send(&self, request: Request<Streaming<RaftMessageBatch>>) -> Result<Response<SendAck>, Status> {
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                batch = stream.message() => batch?,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(batch) = batch else { break };
            if !self.inbox.deliver(batch.messages).await {
                return Err(Status::unavailable("raft loop stopped"));
            }
        }
        Ok(Response::new(SendAck {}))
    }
}

/// Outbound half: one queue and sender task per peer, addressed by member id.
#[derive(Clone)]
pub struct PeerSenders {
    inner: Arc<Mutex<HashMap<u64, PeerHandle>>>,
    metrics: Arc<Metrics>,
    tls: PeerTls,
}

struct PeerHandle {
    url: String,
    queue: mpsc::Sender<RaftMessage>,
    /// Aborted when the handle is dropped; `None` once detached to drain.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl PeerSenders {
    /// An empty set of peers; must be used from within a tokio runtime (`set_peer` spawns).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { inner: Arc::new(Mutex::new(HashMap::new())), metrics, tls: PeerTls::default() }
    }

    /// Dials `https://` peer URLs with this TLS configuration (peer CA, peer certificate).
    pub fn with_tls(mut self, tls: PeerTls) -> Self {
        self.tls = tls;
        self
    }

    /// Adds a peer or changes its URL (restarting its connection); a no-op if unchanged.
    pub fn set_peer(&self, id: u64, url: &str) {
        let mut peers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.get(&id).is_some_and(|p| p.url == url) {
            return;
        }
        let (queue, rx) = mpsc::channel(PEER_QUEUE_CAPACITY);
        let task = tokio::spawn(run_peer(id, url.to_string(), rx, self.metrics.clone(), self.tls.clone()));
        peers.insert(id, PeerHandle { url: url.to_string(), queue, task: Some(task) });
    }

    /// Forgets a peer (it was removed from the cluster); nothing more is queued for it.
    ///
    /// What is already queued still goes out: the leader's last messages to a member it just
    /// removed carry the commit index of that removal, and without them the member would never
    /// apply it (nor answer a client that asked it to remove itself). The sender task ends once
    /// its queue is empty.
    pub fn remove_peer(&self, id: u64) {
        let removed = self.inner.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        if let Some(mut handle) = removed {
            // Detached: dropping the handle closes the queue instead of aborting the task.
            drop(handle.task.take());
        }
    }

    /// Queues a message for its addressee without waiting. Drops it (and counts the drop) when
    /// the peer is unknown or its queue is full.
    pub fn send(&self, msg: RaftMessage) {
        let peers = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let delivered = match peers.get(&msg.to) {
            Some(peer) => peer.queue.try_send(msg).is_ok(),
            None => false,
        };
        if !delivered {
            self.metrics.peer_messages_dropped.inc();
        }
    }
}

/// Keeps one client stream open to a peer and feeds it from the queue, reconnecting with
/// backoff. Messages that cannot be sent while the peer is down are dropped.
async fn run_peer(
    id: u64,
    url: String,
    mut rx: mpsc::Receiver<RaftMessage>,
    metrics: Arc<Metrics>,
    tls: PeerTls,
) {
    let endpoint = match tls.endpoint(&url) {
        Ok(e) => e
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true),
        Err(e) => {
            warn!(peer = id, %url, error = %e, "cannot dial this peer; messages to it are dropped");
            while rx.recv().await.is_some() {
                metrics.peer_messages_dropped.inc();
            }
            return;
        }
    };
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        // Wait for something to send before dialing, so idle peers cost nothing.
        let Some(first) = rx.recv().await else { return };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                debug!(peer = id, %url, error = %e, "peer connect failed");
                metrics.peer_messages_dropped.inc();
                drain_now(&mut rx, &metrics);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        backoff = RECONNECT_BACKOFF_MIN;
        if stream_to(channel, first, &mut rx, &metrics).await.is_none() {
            return;
        }
    }
}

/// Streams queued messages over one connection until it fails (`Some`) or the queue closes
/// (`None`).
async fn stream_to(
    channel: Channel,
    first: RaftMessage,
    rx: &mut mpsc::Receiver<RaftMessage>,
    metrics: &Metrics,
) -> Option<()> {
    let mut client = RaftTransportClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
    let (batch_tx, batch_rx) = mpsc::channel::<RaftMessageBatch>(64);
    let call = tokio::spawn(async move { client.send(ReceiverStream::new(batch_rx)).await });
    let mut pending = Some(first);
    loop {
        let mut messages = Vec::with_capacity(8);
        match pending.take() {
            Some(m) => messages.push(m),
            None => match rx.recv().await {
                Some(m) => messages.push(m),
                None => return None,
            },
        }
        while messages.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        let count = messages.len() as u64;
        if batch_tx.send(RaftMessageBatch { messages }).await.is_err() || call.is_finished() {
            metrics.peer_messages_dropped.inc_by(count);
            return Some(());
        }
        metrics.peer_messages_sent.inc_by(count);
    }
}

/// Drops everything queued right now (the peer is unreachable; stale Raft messages are useless).
fn drain_now(rx: &mut mpsc::Receiver<RaftMessage>, metrics: &Metrics) {
    while rx.try_recv().is_ok() {
        metrics.peer_messages_dropped.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peerpb::raft_transport_server::RaftTransportServer;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::transport::Server;

    #[derive(Default)]
    struct Collect {
        got: Mutex<Vec<RaftMessage>>,
        changed: Notify,
    }

    impl Inbox for Collect {
        async fn deliver(&self, messages: Vec<RaftMessage>) -> bool {
            self.got.lock().unwrap_or_else(PoisonError::into_inner).extend(messages);
            self.changed.notify_waiters();
            true
        }
    }

    fn msg(to: u64, round: u64) -> RaftMessage {
        RaftMessage { from: 1, to, round, body: None }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_and_silent_peers_never_hold_up_a_live_one() {
        let inbox = Arc::new(Collect::default());
        let (_running, stop) = watch::channel(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live = listener.local_addr().expect("addr");
        let server = Server::builder()
            .add_service(RaftTransportServer::new(PeerService::new(inbox.clone(), stop)))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        // A peer that accepts connections but never answers, and one that refuses them.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind silent");
        let refused =
            TcpListener::bind("127.0.0.1:0").await.expect("bind refused").local_addr().expect("addr");

        let metrics = Arc::new(Metrics::new(1).expect("metrics"));
        let peers = PeerSenders::new(metrics.clone());
        peers.set_peer(2, &format!("http://{live}"));
        peers.set_peer(3, &format!("http://{refused}"));
        peers.set_peer(4, &format!("http://{}", silent.local_addr().expect("addr")));
        for _ in 0..(PEER_QUEUE_CAPACITY * 2) {
            peers.send(msg(3, 0));
            peers.send(msg(4, 0));
        }
        for round in 1..=100 {
            peers.send(msg(2, round));
        }
        let all_arrived = async {
            loop {
                let notified = inbox.changed.notified();
                if inbox.got.lock().unwrap_or_else(PoisonError::into_inner).len() >= 100 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all_arrived)
            .await
            .expect("live peer got every message");
        let rounds: Vec<u64> =
            inbox.got.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|m| m.round).collect();
        assert_eq!(rounds, (1..=100).collect::<Vec<_>>(), "delivered in send order");
        assert!(
            metrics.peer_messages_dropped.get() > 0,
            "overflow for unreachable peers is dropped, not queued"
        );
        drop(silent);
    }

    #[tokio::test]
    async fn messages_to_unknown_peers_are_dropped_and_counted() {
        let metrics = Arc::new(Metrics::new(1).expect("metrics"));
        let peers = PeerSenders::new(metrics.clone());
        peers.send(msg(9, 1));
        assert_eq!(metrics.peer_messages_dropped.get(), 1);
    }
}
