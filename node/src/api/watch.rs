//! etcd's `Watch` service: one bidirectional stream per client, any number of watchers on it,
//! served by this member from its own applied state (see [`crate::watch`]).
//!
//! When the member stops, every stream ends with `etcdserver: server stopped` at once (clients
//! resume on another member), instead of holding the server's graceful shutdown.
//!
//! A stream opened with the `hasleader` metadata (clientv3's `WithRequireLeader`) is refused
//! with `etcdserver: no leader` when the member knows none, and ended with it when the member
//! loses its leader for three election timeouts, as etcd's leader monitor does.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::watch::{EMPTY_RANGE, Notice, StartAt, StreamId, WatchHub, WatchRange, WatchSpec};

use super::context::ApiContext;
use super::errors::EtcdError;

/// Responses waiting to be written to one client before the stream stops reading notices.
const OUT_QUEUE: usize = 16;
/// Checks of the leader a `hasleader` stream tolerates failing in a row (etcd's 3).
const NO_LEADER_CHECKS: u32 = 3;

/// The Watch service of one member.
pub struct WatchService {
    ctx: Arc<ApiContext>,
    hub: WatchHub,
    /// How often a `hasleader` stream checks that the member still knows a leader.
    leader_check: Duration,
    /// Turns true when the member stops.
    shutdown: watch::Receiver<bool>,
}

impl WatchService {
    pub fn new(
        ctx: Arc<ApiContext>,
        hub: WatchHub,
        election_timeout: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self { ctx, hub, leader_check: election_timeout, shutdown }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let require_leader = request.metadata().get("hasleader").is_some_and(|v| v == "true");
        Ok(Response::new(self.serve(require_leader, request.into_inner()).await?))
    }
}

impl WatchService {
    /// Serves one watch stream: the client's requests come in on `inbound` (a gRPC stream, or
    /// the JSON gateway's), the responses go out on the returned stream.
    pub async fn serve<S>(&self, require_leader: bool, inbound: S) -> Result<ResponseStream, Status>
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
    {
        if require_leader && self.ctx.node.status().leader_id.is_none() {
            return Err(EtcdError::NoLeader.into());
        }
        let (stream, notices) = self.hub.open().await.map_err(|_| Status::from(EtcdError::Stopped))?;
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        tokio::spawn(receive(inbound, self.hub.clone(), stream, out.clone()));
        let sender = Sender {
            ctx: self.ctx.clone(),
            hub: self.hub.clone(),
            stream,
            out,
            require_leader,
            leader_check: self.leader_check,
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(sender.run(notices));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Reads the client's requests until it sends something undecodable (the stream then ends with
/// that error; the member goes on serving) or goes away. A client that only closes its sending
/// side keeps its watchers, as with etcd: a JSON gateway client posts one create request and
/// reads events for as long as it stays connected.
async fn receive<S>(
    mut inbound: S,
    hub: WatchHub,
    stream: StreamId,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
) where
    S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
{
    loop {
        let request = match inbound.next().await {
            Some(Ok(r)) => r,
            None => {
                out.closed().await;
                break;
            }
            Some(Err(status)) => {
                debug!(%status, "watch stream ended by a bad request");
                let _ = out.send(Err(status)).await;
                break;
            }
        };
        let sent = match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => match spec(&create) {
                Some(spec) => hub.create(stream, spec, create.fragment).await,
                None => hub.refuse(stream, EMPTY_RANGE).await,
            },
            Some(RequestUnion::CancelRequest(cancel)) => hub.cancel(stream, cancel.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => hub.progress(stream).await,
            // etcd ignores a request of no known kind rather than closing the stream.
            None => Ok(()),
        };
        if sent.is_err() {
            let _ = out.send(Err(EtcdError::Stopped.into())).await;
            break;
        }
    }
    hub.close(stream).await;
}

/// A create request in the hub's terms; `None` for a range that selects nothing.
fn spec(create: &WatchCreateRequest) -> Option<WatchSpec> {
    let filters = || create.filters.iter().filter_map(|f| FilterType::try_from(*f).ok());
    Some(WatchSpec {
        watch_id: (create.watch_id != 0).then_some(create.watch_id),
        range: WatchRange::new(&create.key, &create.range_end)?,
        start: if create.start_revision == 0 {
            StartAt::Now
        } else {
            StartAt::Revision(create.start_revision)
        },
        no_put: filters().any(|f| f == FilterType::Noput),
        no_delete: filters().any(|f| f == FilterType::Nodelete),
        prev_kv: create.prev_kv,
        progress_notify: create.progress_notify,
    })
}

/// Turns the hub's notices into responses, in order, and watches the leader if asked to.
struct Sender {
    ctx: Arc<ApiContext>,
    hub: WatchHub,
    stream: StreamId,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    require_leader: bool,
    leader_check: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Sender {
    async fn run(self, mut notices: mpsc::Receiver<Notice>) {
        let mut shutdown = self.shutdown.clone();
        let mut check = tokio::time::interval(self.leader_check);
        let mut leaderless = 0;
        loop {
            tokio::select! {
                notice = notices.recv() => {
                    let Some(notice) = notice else { break };
                    if !self.send(notice).await {
                        break;
                    }
                }
                _ = check.tick(), if self.require_leader => {
                    leaderless = if self.ctx.node.status().leader_id.is_none() { leaderless + 1 } else { 0 };
                    if leaderless >= NO_LEADER_CHECKS {
                        let _ = self.out.send(Err(EtcdError::NoLeader.into())).await;
                        break;
                    }
                }
                () = self.out.closed() => break,
                () = stopping(&mut shutdown) => {
                    let _ = self.out.send(Err(EtcdError::Stopped.into())).await;
                    break;
                }
            }
        }
        self.hub.close(self.stream).await;
    }

    /// Writes one notice as one response, or as fragments when the watcher asked for them and
    /// the response is larger than `--max-request-bytes`; false once the client is gone.
    async fn send(&self, notice: Notice) -> bool {
        for response in self.responses(notice) {
            if self.out.send(Ok(response)).await.is_err() {
                return false;
            }
        }
        true
    }

    fn responses(&self, notice: Notice) -> Vec<WatchResponse> {
        let header = |revision| Some(self.ctx.header(revision));
        match notice {
            Notice::Created { watch_id, revision } => {
                vec![WatchResponse {
                    header: header(revision),
                    watch_id,
                    created: true,
                    ..Default::default()
                }]
            }
            Notice::Refused { revision, reason } => vec![WatchResponse {
                header: header(revision),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            }],
            Notice::Canceled { watch_id, revision } => {
                vec![WatchResponse {
                    header: header(revision),
                    watch_id,
                    canceled: true,
                    ..Default::default()
                }]
            }
            Notice::Compacted { watch_id, revision, compact_revision } => vec![WatchResponse {
                header: header(revision),
                watch_id,
                canceled: true,
                compact_revision,
                cancel_reason: EtcdError::Compacted.to_string(),
                ..Default::default()
            }],
            Notice::Progress { watch_id, revision } => {
                vec![WatchResponse { header: header(revision), watch_id, ..Default::default() }]
            }
            Notice::Events { watch_id, revision, events, fragment } => {
                let whole =
                    WatchResponse { header: header(revision), watch_id, events, ..Default::default() };
                if fragment { fragments(whole, self.ctx.limits.max_request_bytes) } else { vec![whole] }
            }
        }
    }
}

/// Resolves once the member is stopping (or gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Splits a response whose encoding is larger than `limit` into responses of whole events, each
/// within it when an event allows, all but the last marked `fragment` (etcd's sendFragments).
fn fragments(whole: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if whole.encoded_len() <= limit {
        return vec![whole];
    }
    let WatchResponse { header, watch_id, events, .. } = whole;
    let mut out = Vec::new();
    let mut current = WatchResponse { header, watch_id, fragment: true, ..Default::default() };
    for event in events {
        if !current.events.is_empty() && current.encoded_len() + event.encoded_len() + 8 > limit {
            out.push(std::mem::replace(
                &mut current,
                WatchResponse { header, watch_id, fragment: true, ..Default::default() },
            ));
        }
        current.events.push(event);
    }
    current.fragment = false;
    out.push(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::{Event, KeyValue};

    fn event(i: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("k{i}").into_bytes(),
                value: vec![b'x'; 100],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn large_responses_split_into_fragments_of_whole_events() {
        let whole = WatchResponse { watch_id: 3, events: (0..50).map(event).collect(), ..Default::default() };
        let parts = fragments(whole.clone(), 1000);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= 1000 && p.watch_id == 3));
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts[parts.len() - 1].fragment, "the last fragment closes the response");
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, whole.events);
        // Small enough: sent whole.
        let small = WatchResponse { events: vec![event(1)], ..Default::default() };
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
    }

    #[test]
    fn create_requests_become_watch_specs() {
        let c = WatchCreateRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            start_revision: 7,
            filters: vec![FilterType::Nodelete as i32],
            prev_kv: true,
            watch_id: 5,
            ..Default::default()
        };
        let s = spec(&c).expect("valid");
        assert_eq!(s.watch_id, Some(5));
        assert_eq!(s.start, StartAt::Revision(7));
        assert!(s.no_delete && !s.no_put && s.prev_kv);
        assert!(spec(&WatchCreateRequest { key: b"b".to_vec(), range_end: b"a".to_vec(), ..c }).is_none());
    }
}
