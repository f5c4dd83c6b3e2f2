//! One member's lifecycle: open its store and settle its identity (bootstrapping a new cluster
//! or joining a running one), start the driver and the three listeners (client gRPC, peer
//! gRPC, HTTP), publish its attributes, and stop it all — gracefully, or because the driver
//! failed.

pub mod compactor;
pub mod corruption;
pub mod dev;
pub mod identity;
mod join;
mod peer_service;
mod publish;
pub mod restore;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::{Routes, RoutesBuilder};
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::api::cluster::ClusterService;
use crate::api::election::ElectionService;
use crate::api::grpc_status::EtcdStatusLayer;
use crate::api::kv::KvService;
use crate::api::lease::{LeaseApi, LeaseService};
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::recipes::Recipes;
use crate::api::watch::WatchService;
use crate::api::{ApiContext, Limits};
use crate::config::{
    InitialClusterError, InitialClusterState, ListenUrlError, NodeFlags, listen_addr, parse_initial_cluster,
};
use crate::driver::{
    self, FatalError, LoopConfig, LoopExit, MAX_PEER_MESSAGE_BYTES, NodeHandle, PeerSenders,
};
use crate::gateway;
use crate::http::{self, health::MemberHealth};
use crate::lease::{Lessor, LessorConfig, min_ttl};
use crate::metrics::{Metrics, MetricsError};
use crate::peer_client::PeerDialer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::kvserverpb::Member;
use crate::proto::peerpb::peer_server::PeerServer;
use crate::proto::peerpb::raft_transport_server::RaftTransportServer;
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::raft::{Config as RaftConfig, RaftError, RawNode, bootstrap_with_context};
use crate::storage::{KvError, Store, StoreError, StoreOptions};
use crate::tls::{NodeTls, PeerTls, TlsError};
use crate::watch::WatchHub;

pub use join::JoinError;

/// A configuration that cannot work, said in terms of the flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--election-timeout ({election}ms) must be at least 5 times --heartbeat-interval ({heartbeat}ms)"
    )]
    Timeouts { election: u64, heartbeat: u64 },
    #[error("--name {0:?} is not in --initial-cluster")]
    NameNotInCluster(String),
    #[error("no {0} listen URL")]
    NoListenUrl(&'static str),
    #[error(transparent)]
    ListenUrl(#[from] ListenUrlError),
    #[error("invalid --initial-cluster: {0}")]
    InitialCluster(#[from] InitialClusterError),
    #[error("--members must be 1..=9")]
    DevMembers,
    #[error(transparent)]
    Retention(#[from] compactor::RetentionError),
}

/// Why a member could not start. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot open data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    #[error("key space: {0}")]
    KeySpace(#[from] KvError),
    #[error("the consensus core cannot start: {0}")]
    Raft(#[from] RaftError),
    #[error("cannot start the raft loop: {0}")]
    Driver(#[from] FatalError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster: {0}")]
    Join(#[from] JoinError),
    #[error(transparent)]
    Corrupt(#[from] corruption::CorruptionError),
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
    let url = urls.first().ok_or(ConfigError::NoListenUrl(what))?;
    let addr = listen_addr(url).map_err(ConfigError::from)?;
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
    exit: watch::Receiver<Option<LoopExit>>,
}

/// How long the servers may take to finish in-flight requests once a stop began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl RunningMember {
    /// Stops the member: a leader first hands leadership to the most caught-up voter, then the
    /// listeners close (peer streams and idle connections at once, in-flight requests within
    /// [`SHUTDOWN_GRACE`]) and the Raft loop stops. Drop does the abrupt part.
    pub async fn stop(mut self) {
        self.hand_off_leadership().await;
        let _ = self.shutdown.send(true);
        for s in self.servers.drain(..) {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, s).await;
        }
        self.handle.stop();
        if let Some(t) = self.raft_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        info!(member = format!("{:x}", self.id), "member stopped");
    }

    /// Resolves if the Raft loop fails: the member then serves nothing correctly any more and
    /// must exit (non-zero) so that it is restarted.
    pub async fn failed(&self) -> Arc<FatalError> {
        let mut exit = self.exit.clone();
        loop {
            match exit.borrow_and_update().clone() {
                Some(LoopExit::Failed(e)) => return e,
                Some(LoopExit::Stopped) => return std::future::pending().await,
                None => {}
            }
            if exit.changed().await.is_err() {
                // The loop thread ended without saying how: it panicked.
                return Arc::new(FatalError::LoopPanicked);
            }
        }
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

/// How often the lessor looks for expired leases.
const LEASE_TICK: Duration = Duration::from_millis(500);

/// The database size limit when `--quota-backend-bytes` is 0 (etcd's default, 2 GiB).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Who a member is: its own id and its cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// Milliseconds of the two Raft timers, turned into ticks.
fn raft_config(flags: &NodeFlags, id: u64, applied: u64) -> Result<RaftConfig, ConfigError> {
    if flags.heartbeat_interval == 0 || flags.election_timeout < 5 * flags.heartbeat_interval {
        return Err(ConfigError::Timeouts {
            election: flags.election_timeout,
            heartbeat: flags.heartbeat_interval,
        });
    }
    let now_nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
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
        seed: id ^ now_nanos,
        // The wall clock grows across restarts, so the batches of this life number above the
        // last one's.
        forward_seq_base: now_nanos,
        strict_reconfig_check: true,
    })
}

/// What makes a founding member's identity: its name, `--initial-cluster` and the token.
pub(crate) struct Founding<'a> {
    pub name: &'a str,
    pub initial_cluster: &'a str,
    pub token: &'a str,
}

impl<'a> Founding<'a> {
    fn of(flags: &'a NodeFlags) -> Self {
        Self {
            name: &flags.name,
            initial_cluster: &flags.initial_cluster,
            token: &flags.initial_cluster_token,
        }
    }
}

/// The founding members named by `--initial-cluster`, with their derived ids, sorted by id.
fn founding_members(founding: &Founding<'_>) -> Result<Vec<Member>, ConfigError> {
    let pairs = parse_initial_cluster(founding.initial_cluster)?;
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
        m.id = identity::member_id(&m.peer_urls, founding.token, None);
    }
    members.sort_by_key(|m| m.id);
    Ok(members)
}

/// Opens the store in `--data-dir`.
fn open_store(flags: &NodeFlags) -> Result<Store, StartError> {
    std::fs::create_dir_all(&flags.data_dir)
        .map_err(|source| StartError::DataDir { path: flags.data_dir.clone(), source })?;
    let options = StoreOptions { verify_on_open: flags.verify_db_on_open, ..StoreOptions::default() };
    Ok(Store::open_with(Path::new(&flags.data_dir), options)?)
}

/// Writes the log of a founding member of the cluster in `--initial-cluster` (its first
/// entries add every founding member, with its name and peer URLs: the same bytes on every
/// founding member) and returns the member's identity, which the caller records.
fn bootstrap_log(founding: &Founding<'_>, store: &Store) -> Result<Identity, StartError> {
    let members = founding_members(founding)?;
    let me = members
        .iter()
        .find(|m| m.name == founding.name)
        .ok_or_else(|| ConfigError::NameNotInCluster(founding.name.to_string()))?;
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let identity = Identity { member_id: me.id, cluster_id: identity::cluster_id(&ids) };
    let contexts: Vec<(u64, Vec<u8>)> = members.iter().map(|m| (m.id, m.encode_to_vec())).collect();
    let boot = bootstrap_with_context(&contexts)?;
    store.raft().persist(Some(&boot.hard_state), &boot.entries)?;
    Ok(identity)
}

/// Settles who this member is, bootstrapping a new cluster if asked. Also returns the peers a
/// joining member learned from the cluster: its own membership table is empty until the
/// leader's log or snapshot reaches it, and it must answer the leader before.
async fn identify(
    flags: &NodeFlags,
    store: &Store,
    tls: &PeerTls,
) -> Result<(Identity, Vec<(u64, String)>), StartError> {
    let member_id = store.kv().local_member_id()?;
    if member_id != 0 {
        let cluster_id = store.kv().cluster_id()?;
        return Ok((Identity { member_id, cluster_id }, Vec::new()));
    }
    let mut discovered = Vec::new();
    let identity = match flags.initial_cluster_state {
        InitialClusterState::New => bootstrap_log(&Founding::of(flags), store)?,
        InitialClusterState::Existing => {
            let (identity, peers) = join::discover_identity(flags, tls).await?;
            discovered = peers;
            identity
        }
    };
    // Recorded last: a crash before this point leaves a member that bootstraps again from
    // scratch with the same result.
    store.kv().set_identity(identity.member_id, identity.cluster_id)?;
    Ok((identity, discovered))
}

/// Starts a member on the given listeners, on the store in its `--data-dir`.
pub async fn start(flags: NodeFlags, listeners: Listeners) -> Result<RunningMember, StartError> {
    // Checked first: a TLS mistake must stop the member before it touches its data or peers.
    let tls = NodeTls::from_flags(&flags)?;
    let store = open_store(&flags)?;
    start_on_store(flags, listeners, tls, store).await
}

/// Starts a member on a store opened by the caller (an embedding, or a test that injects
/// storage faults through redb's storage backends).
pub async fn start_on_store(
    flags: NodeFlags,
    listeners: Listeners,
    tls: NodeTls,
    store: Store,
) -> Result<RunningMember, StartError> {
    let (client_builder, peer_builder) = (tls.client_server()?, tls.peer_server()?);
    let retention = compactor::parse_retention(flags.auto_compaction_mode, &flags.auto_compaction_retention)
        .map_err(ConfigError::from)?;
    let (identity, discovered) = identify(&flags, &store, &tls.peer_client).await?;
    let id = identity.member_id;
    let kv = store.kv().clone();
    let raft_storage = store.raft().clone();
    let mut members = kv.members()?;
    let applied = kv.applied_index()?;
    // A member that applied its own removal must not come back under the same identity.
    if applied > 0 && !members.is_empty() && !members.iter().any(|m| m.id == id) {
        return Err(StartError::Removed(id));
    }
    if applied > 0 && flags.force_new_cluster {
        let forced = store.force_new_cluster(id)?;
        warn!(
            removed = ?forced.removed.iter().map(|m| format!("{m:x}")).collect::<Vec<_>>(),
            discarded_entries = forced.discarded,
            "--force-new-cluster: this member is now the only member of its cluster, with its data; \
             add the others back with MemberAdd (fresh data dirs) and restart it without the flag"
        );
        members = kv.members()?;
    } else if applied > 0 {
        join::check_still_member(identity, &members, &tls.peer_client).await?;
    }
    let config = raft_config(&flags, id, applied)?;
    let node = RawNode::new(&config, raft_storage.clone())?;
    let metrics = Arc::new(Metrics::new(id)?);
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
    let started = driver::start(
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
    let ctx = Arc::new(ApiContext::new(
        handle.clone(),
        store.clone(),
        identity.cluster_id,
        id,
        flags.initial_cluster_token.clone(),
        limits,
    ));
    let hub = WatchHub::start(
        kv.clone(),
        handle.subscribe(),
        metrics.clone(),
        flags.experimental_watch_progress_notify_interval,
        limits.max_request_bytes,
    )?;
    let lessor = Lessor::start(
        kv.clone(),
        handle.clone(),
        handle.subscribe(),
        metrics.clone(),
        LessorConfig {
            extend_on_promotion: election,
            checkpoint_interval: flags.experimental_lease_checkpoint_interval,
            tick: LEASE_TICK,
        },
    )?;
    let peers_dialer = Arc::new(PeerDialer::new(handle.clone(), kv.clone(), tls.peer_client.clone()));
    let lease_service =
        Arc::new(LeaseService::new(ctx.clone(), lessor.clone(), peers_dialer.clone(), min_ttl(election)));
    if flags.experimental_initial_corrupt_check
        && let Err(e) = corruption::initial_check(&ctx, &peers_dialer).await
    {
        // Stop the loop and wait for it, so the store is released as it would be by an exit.
        handle.stop();
        let _ = tokio::task::spawn_blocking(move || started.thread.join()).await;
        return Err(e.into());
    }
    let recipes = Arc::new(Recipes::new(ctx.clone(), hub.clone(), lease_service.clone()));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let client_addr = listeners.client.local_addr()?;
    let peer_addr = listeners.peer.local_addr()?;
    let metrics_addr = listeners.metrics.local_addr()?;
    // gRPC's own limit sits above --max-request-bytes so oversized requests reach our check
    // and get etcd's message; far larger ones are cut off by gRPC itself.
    let grpc_limit = limits.max_request_bytes + 512 * 1024;
    let health = Arc::new(MemberHealth::new(
        handle.clone(),
        store.clone(),
        metrics.clone(),
        election,
        limits.request_timeout,
    ));
    let services = gateway::Services {
        kv: Arc::new(KvService::new(ctx.clone())),
        lease: Arc::new(LeaseApi(lease_service)),
        cluster: Arc::new(ClusterService::new(ctx.clone())),
        maintenance: Arc::new(MaintenanceService::new(ctx.clone())),
        watch: Arc::new(WatchService::new(ctx.clone(), hub, election, shutdown_rx.clone())),
        lock: Arc::new(LockService::new(recipes.clone())),
        election: Arc::new(ElectionService::new(recipes)),
    };
    let mut grpc = RoutesBuilder::default();
    grpc.add_service(KvServer::from_arc(services.kv.clone()).max_decoding_message_size(grpc_limit))
        .add_service(ClusterServer::from_arc(services.cluster.clone()))
        .add_service(MaintenanceServer::from_arc(services.maintenance.clone()))
        .add_service(LeaseServer::from_arc(services.lease.clone()))
        .add_service(LockServer::from_arc(services.lock.clone()))
        .add_service(ElectionServer::from_arc(services.election.clone()))
        .add_service(WatchServer::from_arc(services.watch.clone()))
        .add_service(crate::api::health::start(handle.clone(), kv.clone(), shutdown_rx.clone()));
    // One port for gRPC, etcd's JSON gateway (/v3/...) and its plain HTTP endpoints (/health,
    // /version, /metrics), as etcd serves them: HTTP/1.1 is accepted beside HTTP/2.
    let client_routes = grpc
        .routes()
        .into_axum_router()
        .merge(gateway::router(services, grpc_limit))
        .merge(http::client_port_router(metrics.clone(), health.clone()));
    let client_server = client_builder
        .tcp_nodelay(true)
        .accept_http1(true)
        .layer(EtcdStatusLayer)
        .add_routes(Routes::from(client_routes))
        .serve_with_incoming_shutdown(nodelay_incoming(listeners.client), wait_for(shutdown_rx.clone()));
    let peer_server = peer_builder
        .tcp_nodelay(true)
        .add_service(
            RaftTransportServer::new(driver::PeerService::new(started.inbox.clone(), shutdown_rx.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .add_service(PeerServer::new(peer_service::PeerService::new(kv.clone(), identity.cluster_id, lessor)))
        .serve_with_incoming_shutdown(nodelay_incoming(listeners.peer), wait_for(shutdown_rx.clone()));
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
    if let Some(retention) = retention {
        let revision_every = flags.auto_compaction_revision_interval;
        servers.push(tokio::spawn(compactor::run(
            ctx.clone(),
            retention,
            revision_every,
            shutdown_rx.clone(),
        )));
    }
    if !flags.experimental_corrupt_check_time.is_zero() {
        servers.push(tokio::spawn(corruption::run_periodic(
            ctx.clone(),
            peers_dialer.clone(),
            flags.experimental_corrupt_check_time,
            shutdown_rx.clone(),
        )));
    }
    servers.push(tokio::spawn(publish::publish_attributes(
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
        exit: started.exit,
    })
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay` only applies to
/// listeners tonic binds itself; without this, a response split over several writes waits for
/// the client's delayed ACK (~40 ms on Linux) whenever another one is in flight.
fn nodelay_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
