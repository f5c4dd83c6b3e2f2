//! Assembles one member: opens its store, settles its identity, starts the Raft loop and the
//! three listeners (client gRPC, peer gRPC, HTTP), and stops it all gracefully.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::config::{InitialClusterState, NodeFlags, parse_initial_cluster};
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::{MemberListRequest, MemberListResponse};
use crate::proto::kvserverpb::{InternalRequest, Member, MemberAttributes, internal_request};
use crate::proto::peerpb::PublishRequest;
use crate::proto::peerpb::peer_client::PeerClient;
use crate::proto::peerpb::peer_server::PeerServer;
use crate::proto::peerpb::raft_transport_server::RaftTransportServer;
use crate::raft::{Config as RaftConfig, RawNode, bootstrap_with_context};
use crate::server::cluster_service::ClusterService;
use crate::server::context::{Limits, ServerContext};
use crate::server::health::MemberHealth;
use crate::server::http;
use crate::server::identity;
use crate::server::kv_service::KvService;
use crate::server::maintenance_service::MaintenanceService;
use crate::server::metrics::Metrics;
use crate::server::peer_api::PeerApi;
use crate::server::raft_loop::{LoopConfig, NodeHandle, RaftLoop};
use crate::server::tls::{NodeTls, PeerTls, TlsError};
use crate::server::transport::{MAX_PEER_MESSAGE_BYTES, PeerSenders, PeerService};
use crate::storage::Store;

/// Why a member could not start. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot open data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("storage: {0}")]
    Storage(String),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error(
        "member {0:x} has been removed from the cluster; wipe its data dir and add it again with MemberAdd"
    )]
    Removed(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Listeners bound before the member starts (tests bind port 0 and learn the ports first).
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the first URL of each `--listen-*-urls` flag.
    pub async fn bind(flags: &NodeFlags) -> Result<Self, StartError> {
        Ok(Self {
            client: bind_first("client", &flags.listen_client_urls).await?,
            peer: bind_first("peer", &flags.listen_peer_urls).await?,
            metrics: bind_first("metrics", &flags.listen_metrics_urls).await?,
        })
    }
}

async fn bind_first(what: &'static str, urls: &[String]) -> Result<TcpListener, StartError> {
    let url = urls.first().ok_or_else(|| StartError::Config(format!("no {what} listen URL")))?;
    let addr = http::bind_addr(url).map_err(StartError::Config)?;
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

/// A running member.
pub struct RunningMember {
    pub id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub handle: NodeHandle,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    raft_thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningMember {
    /// Stops the member: a leader first hands leadership to the most caught-up voter, then the
    /// listeners close and the Raft loop stops. Safe to call once; drop does the abrupt part.
    pub async fn stop(mut self) {
        self.hand_off_leadership().await;
        let _ = self.shutdown.send(true);
        for s in self.servers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        self.handle.stop();
        if let Some(t) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        info!(member = format!("{:x}", self.id), "member stopped");
    }

    async fn hand_off_leadership(&self) {
        let status = self.handle.status();
        if !status.is_leader || status.voters.len() < 2 {
            return;
        }
        let Ok(progress) = self.handle.progress().await else { return };
        let Some(target) = progress
            .iter()
            .filter(|p| p.id != self.id && p.recent_active && status.voters.contains(&p.id))
            .max_by_key(|p| p.matched)
            .map(|p| p.id)
        else {
            return;
        };
        if self.handle.transfer_leader(target).await.is_err() {
            return;
        }
        let mut rx = self.handle.subscribe();
        let moved = async {
            while rx.borrow_and_update().leader_id == Some(self.id) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(3), moved).await.is_err() {
            warn!("leadership hand-off did not complete before shutdown");
        } else {
            info!(to = format!("{target:x}"), "handed leadership off before shutdown");
        }
    }

    /// Aborts everything without a hand-off (tests simulating a crash use this).
    pub fn kill(mut self) {
        let _ = self.shutdown.send(true);
        for s in self.servers.drain(..) {
            s.abort();
        }
        self.handle.stop();
        if let Some(t) = self.raft_thread.take() {
            let _ = t.join();
        }
    }
}

/// The database size limit when `--quota-backend-bytes` is 0 (etcd's default, 2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Who a member is: its own id and its cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// Milliseconds of the two Raft timers, turned into ticks.
fn raft_config(flags: &NodeFlags, id: u64, applied: u64) -> Result<RaftConfig, StartError> {
    if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
        return Err(StartError::Config(format!(
            "--election-timeout ({}ms) must be at least 5 times --heartbeat-interval ({}ms)",
            flags.election_timeout, flags.heartbeat_interval
        )));
    }
    let now_nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let seed = id ^ now_nanos;
    Ok(RaftConfig {
        id,
        election_tick: (flags.election_timeout / flags.heartbeat_interval) as usize,
        heartbeat_tick: 1,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        snapshot_chunk_size: 1024 * 1024,
        applied,
        seed,
        // The wall clock grows across restarts, so batches of this life number above the last.
        forward_seq_base: now_nanos,
        strict_reconfig_check: true,
    })
}

/// The founding members named by `--initial-cluster`, with their derived ids, sorted by id.
fn founding_members(flags: &NodeFlags) -> Result<Vec<Member>, StartError> {
    let pairs =
        parse_initial_cluster(&flags.initial_cluster).map_err(|e| StartError::Config(e.to_string()))?;
    let mut members: Vec<Member> = Vec::new();
    for (name, url) in pairs {
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url),
            None => members.push(Member {
                id: 0,
                name,
                peer_urls: vec![url],
                client_urls: Vec::new(),
                is_learner: false,
            }),
        }
    }
    for m in &mut members {
        m.id = identity::member_id(&m.peer_urls, &flags.initial_cluster_token, None);
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

/// Asks the members at `urls` (peer URLs, which also serve the Cluster API) for the member
/// list, returning the first answer or a description of why none came.
async fn fetch_member_list(
    urls: &[String],
    tls: &PeerTls,
    connect_timeout: Duration,
) -> Result<MemberListResponse, String> {
    let mut last_error = String::from("no other member to ask");
    for url in urls {
        let endpoint = match tls.endpoint(url) {
            Ok(e) => e.connect_timeout(connect_timeout).timeout(connect_timeout * 2),
            Err(e) => {
                last_error = format!("{url}: {e}");
                continue;
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{url}: {e}");
                continue;
            }
        };
        match ClusterClient::new(channel).member_list(MemberListRequest { linearizable: false }).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) => last_error = format!("{url}: {}", e.message()),
        }
    }
    Err(last_error)
}

/// Finds this member's identity by asking the running cluster (for `--initial-cluster-state
/// existing`): the member whose peer URLs match ours, added earlier with MemberAdd.
async fn discover_identity(
    flags: &NodeFlags,
    tls: &PeerTls,
) -> Result<(Identity, Vec<(u64, String)>), StartError> {
    let pairs =
        parse_initial_cluster(&flags.initial_cluster).map_err(|e| StartError::Config(e.to_string()))?;
    let urls: Vec<String> = pairs.into_iter().filter(|(n, _)| *n != flags.name).map(|(_, u)| u).collect();
    let resp = fetch_member_list(&urls, tls, Duration::from_secs(2)).await.map_err(StartError::Join)?;
    let cluster_id = resp.header.map_or(0, |h| h.cluster_id);
    let me = resp
        .members
        .iter()
        .find(|m| m.peer_ur_ls.iter().any(|u| flags.initial_advertise_peer_urls.contains(u)));
    let peers = resp.members.iter().filter_map(|m| m.peer_ur_ls.first().map(|u| (m.id, u.clone()))).collect();
    match me {
        Some(m) => Ok((Identity { member_id: m.id, cluster_id }, peers)),
        None => Err(StartError::Join(format!(
            "no member with peer URLs {:?} in the cluster; add it first (MemberAdd)",
            flags.initial_advertise_peer_urls
        ))),
    }
}

/// On a restart, asks the other members whether this one is still a member. A member removed
/// while it was down (or before it applied its own removal) still lists itself locally; only
/// the cluster knows. Unreachable peers prove nothing, so the member then starts as usual.
async fn check_still_member(identity: Identity, members: &[Member], tls: &PeerTls) -> Result<(), StartError> {
    let urls: Vec<String> = members
        .iter()
        .filter(|m| m.id != identity.member_id)
        .filter_map(|m| m.peer_urls.first().cloned())
        .collect();
    if urls.is_empty() {
        return Ok(());
    }
    let Ok(resp) = fetch_member_list(&urls, tls, Duration::from_millis(500)).await else { return Ok(()) };
    let same_cluster = resp.header.is_some_and(|h| h.cluster_id == identity.cluster_id);
    if same_cluster && !resp.members.iter().any(|m| m.id == identity.member_id) {
        return Err(StartError::Removed(identity.member_id));
    }
    Ok(())
}

/// Opens the store and settles who this member is, bootstrapping a new cluster if asked. Also
/// returns the peers a joining member learned from the cluster: its own membership table is
/// empty until the leader's log or snapshot reaches it, and it must answer the leader before.
async fn open_and_identify(
    flags: &NodeFlags,
    tls: &PeerTls,
) -> Result<(Store, Identity, Vec<(u64, String)>), StartError> {
    std::fs::create_dir_all(&flags.data_dir)
        .map_err(|source| StartError::DataDir { path: flags.data_dir.display().to_string(), source })?;
    let store = Store::open(Path::new(&flags.data_dir)).map_err(|e| StartError::Storage(e.to_string()))?;
    let storage_err = |e: crate::storage::StoreError| StartError::Storage(e.to_string());
    let member_id = store.kv().local_member_id().map_err(storage_err)?;
    if member_id != 0 {
        let cluster_id = store.kv().cluster_id().map_err(storage_err)?;
        return Ok((store, Identity { member_id, cluster_id }, Vec::new()));
    }
    let mut discovered = Vec::new();
    let identity = match flags.initial_cluster_state {
        InitialClusterState::New => {
            let members = founding_members(flags)?;
            let me = members.iter().find(|m| m.name == flags.name).ok_or_else(|| {
                StartError::Config(format!("--name {:?} is not in --initial-cluster", flags.name))
            })?;
            let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
            let identity = Identity { member_id: me.id, cluster_id: identity::cluster_id(&ids) };
            // The founding membership is the first entries of the log, with every member's
            // name and peer URLs, the same bytes on every founding member.
            let contexts: Vec<(u64, Vec<u8>)> = members.iter().map(|m| (m.id, m.encode_to_vec())).collect();
            let boot = bootstrap_with_context(&contexts).map_err(|e| StartError::Config(e.to_string()))?;
            store.raft().persist(Some(&boot.hard_state), &boot.entries).map_err(storage_err)?;
            identity
        }
        InitialClusterState::Existing => {
            let (identity, peers) = discover_identity(flags, tls).await?;
            discovered = peers;
            identity
        }
    };
    // Recorded last: a crash before this point leaves a member that bootstraps again from
    // scratch with the same result.
    store.kv().set_identity(identity.member_id, identity.cluster_id).map_err(storage_err)?;
    Ok((store, identity, discovered))
}

/// Starts a member on the given listeners.
pub async fn start(flags: NodeFlags, listeners: Listeners) -> Result<RunningMember, StartError> {
    // Checked first: a TLS mistake must stop the member before it touches its data or peers.
    let tls = NodeTls::from_flags(&flags)?;
    let (client_builder, peer_builder) = (tls.client_server()?, tls.peer_server()?);
    let (store, identity, discovered) = open_and_identify(&flags, &tls.peer_client).await?;
    let id = identity.member_id;
    let kv = store.kv().clone();
    let raft_storage = store.raft().clone();
    let members = kv.members().map_err(|e| StartError::Storage(e.to_string()))?;
    let applied = kv.applied_index().map_err(|e| StartError::Storage(e.to_string()))?;
    // A member that applied its own removal must not come back under the same identity.
    if applied > 0 && !members.is_empty() && !members.iter().any(|m| m.id == id) {
        return Err(StartError::Removed(id));
    }
    if applied > 0 {
        check_still_member(identity, &members, &tls.peer_client).await?;
    }
    let config = raft_config(&flags, id, applied)?;
    let node = RawNode::new(&config, raft_storage.clone()).map_err(|e| StartError::Storage(e.to_string()))?;
    let metrics = Arc::new(Metrics::new(id).map_err(|e| StartError::Config(e.to_string()))?);
    let peers = PeerSenders::new(metrics.clone()).with_tls(tls.peer_client.clone());
    let known = members.iter().filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())));
    for (peer_id, url) in known.chain(discovered).filter(|(p, _)| *p != id) {
        peers.set_peer(peer_id, &url);
    }
    let loop_config = LoopConfig {
        tick: Duration::from_millis(flags.heartbeat_interval),
        snapshot_count: flags.snapshot_count.max(1),
        catch_up_entries: (flags.snapshot_count / 2).clamp(1, 5000),
    };
    let started = RaftLoop::start(
        node,
        raft_storage,
        kv.clone(),
        peers,
        metrics.clone(),
        loop_config,
        tokio::runtime::Handle::current(),
    )?;
    let handle = started.handle.clone();
    let election = Duration::from_millis(flags.election_timeout);
    let limits = Limits {
        quota_backend_bytes: if flags.quota_backend_bytes == 0 {
            DEFAULT_QUOTA_BACKEND_BYTES
        } else {
            flags.quota_backend_bytes
        },
        max_request_bytes: flags.max_request_bytes as usize,
        max_txn_ops: flags.max_txn_ops as usize,
        request_timeout: Duration::from_secs(5) + 2 * election,
        leader_wait: 2 * election,
    };
    let ctx = Arc::new(
        ServerContext::new(
            handle.clone(),
            store.clone(),
            identity.cluster_id,
            id,
            flags.initial_cluster_token.clone(),
            limits,
        )
        .with_peer_tls(tls.peer_client.clone()),
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let client_addr = listeners.client.local_addr()?;
    let peer_addr = listeners.peer.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    // gRPC's own limit sits above --max-request-bytes so oversized requests reach our check
    // and get etcd's message; far larger ones are cut off by gRPC itself.
    let grpc_limit = limits.max_request_bytes + 512 * 1024;
    let client_server = client_builder
        .tcp_nodelay(true)
        .add_service(KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(grpc_limit))
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(MaintenanceServer::new(MaintenanceService::new(ctx.clone())))
        .serve_with_incoming_shutdown(nodelay_incoming(listeners.client), wait_for(shutdown_rx.clone()));
    let peer_server = peer_builder
        .tcp_nodelay(true)
        .add_service(
            RaftTransportServer::new(PeerService::new(started.inbox.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .add_service(KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(grpc_limit))
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(PeerServer::new(PeerApi::new(ctx.clone())))
        .serve_with_incoming_shutdown(nodelay_incoming(listeners.peer), wait_for(shutdown_rx.clone()));
    let health = Arc::new(MemberHealth::new(ctx.clone(), metrics.clone(), election));
    let http_server =
        http::serve(listeners.metrics, http::router(metrics.clone(), health), wait_for(shutdown_rx.clone()));
    let mut servers = vec![
        tokio::spawn(async move {
            if let Err(e) = client_server.await {
                warn!(error = %e, "client server failed");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = peer_server.await {
                warn!(error = %e, "peer server failed");
            }
        }),
        tokio::spawn(async move {
            if let Err(e) = http_server.await {
                warn!(error = %e, "metrics server failed");
            }
        }),
    ];
    servers.push(tokio::spawn(publish_attributes(
        ctx.clone(),
        flags.name.clone(),
        flags.advertise_client_urls.clone(),
        shutdown_rx.clone(),
    )));
    info!(
        member = format!("{id:x}"),
        cluster = format!("{:x}", identity.cluster_id),
        name = %flags.name,
        %client_addr,
        %peer_addr,
        %metrics_addr,
        client_tls = tls.client_enabled(),
        client_cert_auth = tls.client_cert_required,
        peer_tls = tls.peer_enabled(),
        "member started"
    );
    Ok(RunningMember {
        id,
        cluster_id: identity.cluster_id,
        name: flags.name,
        client_addr,
        peer_addr,
        metrics_addr,
        handle,
        metrics,
        shutdown,
        servers,
        raft_thread: Some(started.thread),
    })
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself; without this, a response split over several writes waits for
/// the client's delayed ACK (~40 ms on Linux) whenever another one is in flight.
fn nodelay_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Records this member's name and client URLs in the replicated membership (as etcd's
/// `publish`), so MemberList shows them and followers can forward to it when it leads. Retries
/// until the stored attributes match.
async fn publish_attributes(
    ctx: Arc<ServerContext>,
    name: String,
    client_urls: Vec<String>,
    shutdown: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let current = ctx.kv.members().ok().and_then(|ms| ms.into_iter().find(|m| m.id == ctx.member_id));
        if let Some(m) = &current
            && m.name == name
            && m.client_urls == client_urls
        {
            return;
        }
        if current.is_some() && ctx.node.status().leader_id.is_some() {
            let request = InternalRequest {
                id: 0,
                request: Some(internal_request::Request::MemberAttributes(MemberAttributes {
                    id: ctx.member_id,
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                })),
            };
            match tokio::time::timeout(ctx.limits.request_timeout, ctx.node.propose(request)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(crate::server::raft_loop::ProposeError::NotLeader(_)))
                    if forward_attributes(&ctx, &name, &client_urls).await =>
                {
                    continue;
                }
                _ => {}
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Followers publish through the leader's `Peer.Publish` (their proposals would be refused).
async fn forward_attributes(ctx: &ServerContext, name: &str, client_urls: &[String]) -> bool {
    let Ok((_, channel)) = ctx.leader_channel().await else { return false };
    let request =
        PublishRequest { id: ctx.member_id, name: name.to_string(), client_urls: client_urls.to_vec() };
    PeerClient::new(channel).publish(request).await.is_ok()
}
