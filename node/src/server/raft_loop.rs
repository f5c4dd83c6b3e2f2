//! The Raft loop: the one thread that owns the consensus core and drives it with real time,
//! disk and network.
//!
//! Every turn it takes what arrived (peer messages, client proposals, read and membership
//! requests), ticks the core on time, and handles the core's `Ready` in an order that keeps
//! Raft safe and overlaps the slow steps: install a received snapshot; send the leader's
//! appends (they promise nothing about the leader's disk, so followers write in parallel with
//! it); apply committed entries and answer their clients; write entries and hard state durably
//! (one fsync for the whole batch, shared by every client that proposed in this turn); only then
//! send the votes and acknowledgements that depend on them; `advance`. It runs on a dedicated OS
//! thread because its disk writes block; async request handlers talk to it through [`NodeHandle`].
//!
//! The key space is made durable in batches by a [thread of its own](super::kv_syncer); while
//! that runs, committed entries queue up (the key space is locked by the sync) and the loop goes
//! on writing, replicating and acknowledging the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::proto::kvserverpb::{InternalRequest, Member};
use crate::proto::raftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, RaftMessage, raft_message,
};
use crate::raft::{RaftError, RawNode, Ready, Role, Storage as _};
use crate::server::errors::EtcdError;
use crate::server::kv_syncer::KvSyncer;
use crate::server::metrics::Metrics;
use crate::server::transport::{Inbox, PeerSenders};
use crate::storage::{ApplyResult, Command, KvStore, MemberChange, Outcome, RedbRaftStorage};

/// Why a request to the Raft loop did not produce a result.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// This member is not the leader; the hint names the leader if one is known.
    #[error("not leader")]
    NotLeader(Option<u64>),
    /// The core refused the request (leadership transfer in progress, change pending, ...).
    #[error("proposal refused: {0}")]
    Refused(RaftError),
    /// The entry was overwritten by a new leader before it committed.
    #[error("leader changed")]
    LeaderChanged,
    /// The committed request was refused by the state machine (deterministically, on every
    /// member), e.g. a compaction at a revision already compacted.
    #[error("{0}")]
    Apply(EtcdError),
    /// No answer within the request deadline (no quorum reachable, or overloaded).
    #[error("timed out")]
    Timeout,
    /// The loop has stopped (member shutting down or failed).
    #[error("raft loop stopped")]
    Stopped,
}

/// What handlers can see of the Raft state without asking the loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// When the loop last completed a turn; `/livez` fails when this goes stale.
    pub heartbeat: Option<Instant>,
}

type Reply<T> = oneshot::Sender<Result<T, ProposeError>>;

/// The leader's view of one member's replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    /// Highest index known replicated on that member.
    pub matched: u64,
    /// Whether the leader heard from it within the last election timeout.
    pub recent_active: bool,
}

/// Requests to the Raft loop.
pub enum Input {
    /// Messages from peers.
    Peer(Vec<RaftMessage>),
    /// A client write; `data` is an encoded [`InternalRequest`] with id `id`.
    Propose { id: u64, data: Vec<u8>, reply: Reply<ApplyResult> },
    /// A membership change; answered when applied, with the new membership.
    ConfChange { cc: ConfChange, reply: Reply<ConfState> },
    /// A linearizable read barrier: answered with an index once it is applied locally.
    ReadIndex { reply: Reply<u64> },
    /// Hand leadership to `to`; answered once the transfer started.
    TransferLeader { to: u64, reply: Reply<()> },
    /// The leader's view of every member's replication progress.
    Progress { reply: Reply<Vec<PeerProgress>> },
    /// Stop the loop (after handing off leadership if `transfer` and possible).
    Stop,
    /// Wakes the loop: a key-space sync finished.
    KvSynced,
}

/// The cloneable handle async code uses to talk to the Raft loop.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Input>,
    status: watch::Receiver<RaftStatus>,
    next_request_id: Arc<std::sync::atomic::AtomicU64>,
}

impl NodeHandle {
    /// The latest published status.
    pub fn status(&self) -> RaftStatus {
        self.status.borrow().clone()
    }

    /// A receiver that changes whenever the status does (leader changes, applies).
    pub fn subscribe(&self) -> watch::Receiver<RaftStatus> {
        self.status.clone()
    }

    /// A fresh request id, unique on this member (member id in the high bits, then a counter).
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Input) -> Result<T, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Proposes a client write and waits until it is applied on this member.
    pub async fn propose(&self, mut request: InternalRequest) -> Result<ApplyResult, ProposeError> {
        let id = self.next_request_id();
        request.id = id;
        let data = request.encode_to_vec();
        self.call(|reply| Input::Propose { id, data, reply }).await
    }

    /// Proposes a membership change and waits until it is applied here.
    pub async fn conf_change(&self, cc: ConfChange) -> Result<ConfState, ProposeError> {
        self.call(|reply| Input::ConfChange { cc, reply }).await
    }

    /// Waits until this member has applied everything committed before the call (ReadIndex).
    pub async fn read_barrier(&self) -> Result<u64, ProposeError> {
        self.call(|reply| Input::ReadIndex { reply }).await
    }

    /// Starts a leadership transfer to `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), ProposeError> {
        self.call(|reply| Input::TransferLeader { to, reply }).await
    }

    /// Replication progress of every member, as the leader sees it (NotLeader elsewhere).
    pub async fn progress(&self) -> Result<Vec<PeerProgress>, ProposeError> {
        self.call(|reply| Input::Progress { reply }).await
    }

    /// Members the leader heard from recently (itself included).
    pub async fn active_peers(&self) -> Result<Vec<u64>, ProposeError> {
        Ok(self.progress().await?.into_iter().filter(|p| p.recent_active).map(|p| p.id).collect())
    }

    /// Highest index known replicated on member `id` (0 if unknown).
    pub async fn match_index(&self, id: u64) -> Result<u64, ProposeError> {
        Ok(self.progress().await?.into_iter().find(|p| p.id == id).map_or(0, |p| p.matched))
    }

    /// Asks the loop to stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
    }
}

/// Delivers peer messages into the loop's channel.
pub struct LoopInbox(Mutex<mpsc::Sender<Input>>);

impl Inbox for LoopInbox {
    fn deliver(&self, messages: Vec<RaftMessage>) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).send(Input::Peer(messages)).is_ok()
    }
}

/// Settings of the loop, derived from the member's flags.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub tick: Duration,
    pub snapshot_count: u64,
    /// Entries kept behind a compaction so slightly-behind followers catch up from the log.
    pub catch_up_entries: u64,
}

/// Everything the loop owns.
pub struct RaftLoop {
    node: RawNode<Arc<RedbRaftStorage>>,
    storage: Arc<RedbRaftStorage>,
    kv: KvStore,
    peers: PeerSenders,
    metrics: Arc<Metrics>,
    config: LoopConfig,
    rx: mpsc::Receiver<Input>,
    status_tx: watch::Sender<RaftStatus>,
    /// Proposals made here, by request id.
    waiters: HashMap<u64, Reply<ApplyResult>>,
    /// Log index each of our proposals landed at, to fail it if another entry commits there.
    proposed_at: BTreeMap<u64, u64>,
    pending_conf: Option<(ConfChange, Reply<ConfState>)>,
    /// Read requests not yet sent to the core.
    reads_queued: Vec<Reply<u64>>,
    /// Read requests sent to the core, by read context.
    reads_in_core: HashMap<u64, Vec<Reply<u64>>>,
    /// Read requests with a known index, waiting for it to be applied.
    reads_waiting_apply: Vec<(u64, Reply<u64>)>,
    next_read_ctx: u64,
    last_leader: Option<u64>,
    last_compacted: u64,
    /// Send time of each heartbeat/append round, for the peer round-trip histogram.
    round_sent: BTreeMap<u64, Instant>,
    /// The latest round whose round trip was measured, per peer.
    rounds_measured: HashMap<u64, u64>,
    /// Term and vote as last written to disk; messages may only overtake an fsync that does
    /// not change them.
    persisted_term_vote: (u64, u64),
    /// Sizes of the applied entries above the last compaction point.
    log_bytes: AppliedLogBytes,
    /// When the state machine was last made durable.
    last_state_machine_sync: Instant,
    /// Makes the key space durable off this thread.
    kv_syncer: KvSyncer,
    /// Committed entries handed out by the core (and decoded), waiting to be applied to the key
    /// space: they wait while a key-space sync runs.
    pending_apply: VecDeque<(Entry, Decoded)>,
    /// The last index applied to the key space. The core's own applied index runs ahead of it
    /// while entries wait in `pending_apply`; reads, compaction and the published status use
    /// this one.
    applied: u64,
}

/// Handles of a started loop.
pub struct Started {
    pub handle: NodeHandle,
    pub inbox: Arc<LoopInbox>,
    pub thread: std::thread::JoinHandle<()>,
}

impl RaftLoop {
    /// Starts the loop on its own thread. `runtime` runs the peer sender tasks.
    pub fn start(
        node: RawNode<Arc<RedbRaftStorage>>,
        storage: Arc<RedbRaftStorage>,
        kv: KvStore,
        peers: PeerSenders,
        metrics: Arc<Metrics>,
        config: LoopConfig,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Started> {
        let (tx, rx) = mpsc::channel();
        let id = node.status().id;
        let (status_tx, status_rx) = watch::channel(RaftStatus { id, ..Default::default() });
        let last_compacted = storage.first_index().unwrap_or(1).saturating_sub(1);
        let persisted = storage.hard_state().map_err(std::io::Error::other)?;
        let applied = kv.applied_index().map_err(std::io::Error::other)?;
        let wake = Mutex::new(tx.clone());
        let kv_syncer = KvSyncer::start(kv.clone(), format!("kv-sync-{id:x}"), move || {
            let _ = wake.lock().unwrap_or_else(PoisonError::into_inner).send(Input::KvSynced);
        })?;
        let mut rl = RaftLoop {
            node,
            storage,
            kv,
            peers,
            metrics,
            config,
            rx,
            status_tx,
            waiters: HashMap::new(),
            proposed_at: BTreeMap::new(),
            pending_conf: None,
            reads_queued: Vec::new(),
            reads_in_core: HashMap::new(),
            reads_waiting_apply: Vec::new(),
            next_read_ctx: 1,
            last_leader: None,
            last_compacted,
            round_sent: BTreeMap::new(),
            rounds_measured: HashMap::new(),
            persisted_term_vote: (persisted.current_term, persisted.voted_for),
            log_bytes: AppliedLogBytes::default(),
            last_state_machine_sync: Instant::now(),
            kv_syncer,
            pending_apply: VecDeque::new(),
            applied,
        };
        let thread = std::thread::Builder::new().name(format!("raft-{id:x}")).spawn(move || {
            let _rt = runtime.enter();
            rl.run();
        })?;
        let handle = NodeHandle {
            tx: tx.clone(),
            status: status_rx,
            next_request_id: Arc::new(std::sync::atomic::AtomicU64::new((id << 24) ^ now_nanos())),
        };
        Ok(Started { handle, inbox: Arc::new(LoopInbox(Mutex::new(tx))), thread })
    }

    fn run(&mut self) {
        let mut next_tick = Instant::now() + self.config.tick;
        loop {
            // Work the core produced while advancing (a commit once our own fsync counted)
            // must not wait for the next input or tick.
            let wait = if self.node.has_ready() {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            match self.rx.recv_timeout(wait) {
                Ok(Input::Stop) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Take everything else already waiting, so one fsync serves the whole batch.
            let mut stop = false;
            for _ in 0..4096 {
                match self.rx.try_recv() {
                    Ok(Input::Stop) => {
                        stop = true;
                        break;
                    }
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                if let Err(e) = self.node.tick() {
                    error!(error = %e, "raft loop failed; stopping this member");
                    break;
                }
                next_tick += self.config.tick;
                if next_tick < now {
                    // We fell far behind (a long fsync); do not fire a burst of ticks.
                    next_tick = now + self.config.tick;
                }
            }
            self.issue_reads();
            if let Err(e) = self.on_ready() {
                error!(error = %e, "raft loop failed; stopping this member");
                break;
            }
            if let Err(e) = self.maybe_sync_state_machine() {
                error!(error = %e, "raft loop failed; stopping this member");
                break;
            }
            if stop {
                break;
            }
        }
        if let Some(Err(e)) = self.kv_syncer.wait() {
            warn!(error = %e, "key-space sync failed");
        }
        self.fail_all(ProposeError::Stopped);
        // A clean stop leaves both databases durable, so the next start replays nothing.
        if let Err(e) = self.storage.sync().and_then(|()| self.kv.sync().map(drop)) {
            warn!(error = %e, "could not sync the store on stop");
        }
        info!("raft loop stopped");
    }

    /// Starts making the key space durable every [`STATE_MACHINE_SYNC_INTERVAL`] while it
    /// changes. Applies are committed without an fsync, and until a durable commit covers them
    /// the log must keep their entries and a restart replays them; syncing in batches bounds
    /// both, at one fsync of the key space per interval instead of one per write (etcd commits
    /// its backend the same way). Called after the turn's log write, so every apply it covers
    /// is of entries already durable in the log, and no apply happens until it is done.
    fn maybe_sync_state_machine(&mut self) -> Result<(), String> {
        if self.kv_syncer.in_progress()
            || self.last_state_machine_sync.elapsed() < STATE_MACHINE_SYNC_INTERVAL
        {
            return Ok(());
        }
        self.last_state_machine_sync = Instant::now();
        if self.kv.durable_applied_index() >= self.applied {
            return Ok(());
        }
        // Holds by construction (applies happen only in a turn that persists their entries,
        // and this runs after that turn's write); checked because breaking it would let a
        // power cut leave the key space ahead of the log.
        let durable_log = self.storage.last_index().map_err(|e| format!("log bounds: {e}"))?;
        debug_assert!(
            self.applied <= durable_log,
            "applied {} beyond the durable log {durable_log}",
            self.applied
        );
        if self.applied > durable_log {
            error!(applied = self.applied, durable_log, "key space ahead of the log; sync deferred");
            return Ok(());
        }
        self.kv_syncer.start_sync()
    }

    /// Notes a finished key-space sync (without waiting for one).
    fn poll_kv_sync(&mut self) -> Result<(), String> {
        match self.kv_syncer.poll() {
            Some(outcome) => self.on_kv_synced(outcome),
            None => Ok(()),
        }
    }

    fn on_kv_synced(&mut self, outcome: crate::server::kv_syncer::SyncOutcome) -> Result<(), String> {
        let (_, took) = outcome.map_err(|e| format!("sync state machine: {e}"))?;
        self.metrics.backend_sync_duration.observe(took.as_secs_f64());
        Ok(())
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(messages) => {
                let now = Instant::now();
                for msg in messages {
                    self.observe_round_trip(&msg, now);
                    if let Err(e) = self.node.step(msg) {
                        debug!(error = %e, "peer message rejected");
                    }
                }
            }
            Input::Propose { id, data, reply } => match self.node.propose(data) {
                Ok(_) => {
                    self.waiters.insert(id, reply);
                    self.metrics.proposals_pending.set(self.waiters.len() as i64);
                }
                Err(e) => {
                    self.metrics.proposals_failed.inc();
                    let _ = reply.send(Err(map_raft_error(e)));
                }
            },
            Input::ConfChange { cc, reply } => {
                if self.pending_conf.is_some() {
                    let _ = reply.send(Err(ProposeError::Refused(RaftError::ConfChangePending)));
                    return;
                }
                match self.node.propose_conf_change(cc.clone()) {
                    Ok(_) => self.pending_conf = Some((cc, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(map_raft_error(e)));
                    }
                }
            }
            Input::ReadIndex { reply } => self.reads_queued.push(reply),
            Input::TransferLeader { to, reply } => {
                let _ = reply.send(self.node.transfer_leader(to).map_err(map_raft_error));
            }
            Input::Progress { reply } => {
                let _ = reply.send(self.progress());
            }
            Input::Stop | Input::KvSynced => {}
        }
    }

    fn progress(&self) -> Result<Vec<PeerProgress>, ProposeError> {
        let st = self.node.status();
        if st.role != Role::Leader {
            return Err(ProposeError::NotLeader(st.leader_id.filter(|l| *l != 0)));
        }
        Ok(st
            .progress
            .iter()
            .map(|(id, p)| PeerProgress {
                id: *id,
                matched: p.matched,
                recent_active: *id == st.id || p.recent_active,
            })
            .collect())
    }

    /// Sends all queued reads to the core as one ReadIndex request (they share one round).
    fn issue_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.node.read_index(ctx.to_be_bytes().to_vec()) {
            Ok(()) => {
                let batch = std::mem::take(&mut self.reads_queued);
                self.reads_in_core.insert(ctx, batch);
            }
            Err(e) => {
                let err = map_raft_error(e);
                for reply in self.reads_queued.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Times a peer's first answer to each leader round. The core starts a round when it
    /// confirms leadership (ReadIndex) and broadcasts a heartbeat for it; later appends reuse
    /// the round, so only the first answer per peer and round measures a round trip.
    fn observe_round_trip(&mut self, msg: &RaftMessage, now: Instant) {
        if msg.round == 0 || self.rounds_measured.get(&msg.from).is_some_and(|r| *r >= msg.round) {
            return;
        }
        if let Some(raft_message::Body::AppendEntriesResponse(_)) = &msg.body
            && let Some(sent) = self.round_sent.get(&msg.round)
        {
            self.rounds_measured.insert(msg.from, msg.round);
            self.metrics
                .peer_round_trip
                .with_label_values(&[&format!("{:x}", msg.from)])
                .observe(now.duration_since(*sent).as_secs_f64());
        }
    }

    fn on_ready(&mut self) -> Result<(), String> {
        self.poll_kv_sync()?;
        if !self.node.has_ready() {
            // Entries that waited for a sync are applied as soon as it is over.
            self.apply_pending()?;
            self.answer_reads();
            self.publish_status();
            return Ok(());
        }
        let mut rd: Ready = self.node.ready().map_err(|e| format!("ready: {e}"))?;
        if let Some(ss) = &rd.soft_state {
            self.on_soft_state(ss.leader_id, ss.role);
        }
        if let Some(snapshot) = &rd.snapshot {
            // The snapshot replaces the key space: what was committed before it goes in first.
            if let Some(outcome) = self.kv_syncer.wait() {
                self.on_kv_synced(outcome)?;
            }
            self.apply_pending()?;
            let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
            self.storage.install_snapshot(snapshot).map_err(|e| format!("install snapshot: {e}"))?;
            self.metrics.snapshots_installed.inc();
            self.last_compacted = index;
            self.applied = index;
            self.log_bytes.forget_through(index);
            self.refresh_peers();
            info!(index, "installed snapshot from leader");
        }
        for entry in &rd.entries {
            self.note_proposal_index(entry);
        }
        // A leader's requests (appends, snapshots, TimeoutNow) assert nothing about its own
        // disk, so they go out before the fsync and the followers' writes overlap the leader's
        // (Raft thesis §10.2.1). The core counts the leader's own copy toward commitment only
        // after `advance`, i.e. once it is durable. Anything else — votes, and every response,
        // which promises that what it acknowledges is durable — waits for the fsync, and so does
        // everything when this Ready changes the term or the vote.
        let mut messages = std::mem::take(&mut rd.messages);
        if rd.hard_state.as_ref().is_none_or(|hs| {
            hs.current_term == self.persisted_term_vote.0 && hs.voted_for == self.persisted_term_vote.1
        }) {
            let (early, late): (Vec<_>, Vec<_>) = messages.into_iter().partition(is_leader_request);
            self.send_messages(early);
            messages = late;
        }
        // Committed entries are durable on a quorum already, so they are applied (and their
        // clients answered) before this member's own fsync rather than after it. That cannot
        // make the state machine outrun the log across a crash: applies commit without an
        // fsync, and the state machine is made durable only by a sync started after the turn's
        // log write (`maybe_sync_state_machine`; compaction stays below what it made durable)
        // or by a snapshot, which replaces both.
        self.hand_off(std::mem::take(&mut rd.committed_entries))?;
        self.apply_pending()?;
        if !rd.entries.is_empty() || rd.hard_state.is_some() {
            let started = Instant::now();
            self.storage
                .persist(rd.hard_state.as_ref(), &rd.entries)
                .map_err(|e| format!("persist log: {e}"))?;
            self.metrics.wal_fsync_duration.observe(started.elapsed().as_secs_f64());
            if let Some(hs) = &rd.hard_state {
                self.persisted_term_vote = (hs.current_term, hs.voted_for);
            }
        }
        // Only now, with entries and votes durable, may the messages that depend on them go out.
        self.send_messages(messages);
        while self.round_sent.len() > 1024 {
            self.round_sent.pop_first();
        }
        for rs in std::mem::take(&mut rd.read_states) {
            let Ok(ctx_bytes) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else { continue };
            if let Some(batch) = self.reads_in_core.remove(&u64::from_be_bytes(ctx_bytes)) {
                self.reads_waiting_apply.extend(batch.into_iter().map(|r| (rs.index, r)));
            }
        }
        self.node.advance(rd).map_err(|e| format!("advance: {e}"))?;
        self.answer_reads();
        self.maybe_compact()?;
        self.publish_status();
        Ok(())
    }

    fn send_messages(&mut self, messages: Vec<RaftMessage>) {
        if messages.is_empty() {
            return;
        }
        let now = Instant::now();
        for msg in messages {
            if msg.round != 0 && matches!(msg.body, Some(raft_message::Body::AppendEntries(_))) {
                self.round_sent.entry(msg.round).or_insert(now);
            }
            self.peers.send(msg);
        }
    }

    fn on_soft_state(&mut self, leader: Option<u64>, role: Role) {
        let leader = leader.filter(|l| *l != 0);
        self.metrics.has_leader.set(i64::from(leader.is_some()));
        self.metrics.is_leader.set(i64::from(role == Role::Leader));
        if leader != self.last_leader {
            if leader.is_some() {
                self.metrics.leader_changes.inc();
            }
            info!(leader = ?leader.map(|l| format!("{l:x}")), ?role, "leader changed");
            self.last_leader = leader;
        }
        if role != Role::Leader {
            // Reads in flight in the core are lost with leadership; their clients retry.
            for (_, batch) in self.reads_in_core.drain() {
                for reply in batch {
                    let _ = reply.send(Err(ProposeError::LeaderChanged));
                }
            }
        }
    }

    fn note_proposal_index(&mut self, entry: &Entry) {
        if entry.entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            return;
        }
        if let Ok(id) = request_id(&entry.data)
            && self.waiters.contains_key(&id)
        {
            self.proposed_at.insert(entry.index, id);
        }
    }

    /// Takes committed entries for application: decodes them now, which applies membership
    /// changes to the core in log order before the Ready that carried them is advanced (as the
    /// core expects), and queues them for the key space.
    fn hand_off(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        for entry in entries {
            let decoded = self.decode_for_apply(&entry)?;
            self.pending_apply.push_back((entry, decoded));
        }
        Ok(())
    }

    /// Applies the queued committed entries in one key-space transaction and answers their
    /// waiters; nothing while a key-space sync runs (the transaction would wait for it).
    fn apply_pending(&mut self) -> Result<(), String> {
        if self.pending_apply.is_empty() || self.kv_syncer.in_progress() {
            return Ok(());
        }
        let started = Instant::now();
        let batch: Vec<(Entry, Decoded)> = self.pending_apply.drain(..).collect();
        self.apply(&batch)?;
        self.metrics.backend_commit_duration.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Applies decoded committed entries in one state-machine transaction and answers their
    /// waiters.
    fn apply(&mut self, batch: &[(Entry, Decoded)]) -> Result<(), String> {
        let commands: Vec<(u64, Command<'_>)> = batch
            .iter()
            .map(|(e, d)| {
                let cmd = match d {
                    Decoded::Noop => Command::Noop,
                    Decoded::Request(r) => Command::Request(r),
                    Decoded::ConfChange { conf_state, change, .. } => {
                        Command::ConfChange { conf_state, change }
                    }
                };
                (e.index, cmd)
            })
            .collect();
        let results = self.kv.apply_batch(&commands).map_err(|e| format!("apply: {e}"))?;
        self.metrics.proposals_committed.inc_by(batch.len() as u64);
        for (e, _) in batch {
            self.log_bytes.record(e.index, e.data.len() as u64);
        }
        if let Some((last, _)) = batch.last() {
            self.applied = self.applied.max(last.index);
        }
        self.metrics.proposals_applied.inc_by(results.len() as u64);
        let mut membership_changed = false;
        for (result, (_, d)) in results.into_iter().zip(batch) {
            // A proposal of ours expected at this index but another entry landed there: it
            // was overwritten by a newer leader and will never apply.
            if let Some(id) = self.proposed_at.remove(&result.index)
                && id != result.request_id
                && let Some(reply) = self.waiters.remove(&id)
            {
                self.metrics.proposals_failed.inc();
                let _ = reply.send(Err(ProposeError::LeaderChanged));
            }
            if let Decoded::ConfChange { cc, conf_state, change } = d {
                membership_changed = true;
                if let MemberChange::Remove(id) = change {
                    self.peers.remove_peer(*id);
                }
                self.answer_conf_change(cc, conf_state);
            }
            if result.request_id != 0
                && let Some(reply) = self.waiters.remove(&result.request_id)
            {
                let answer = match result.outcome {
                    Outcome::Rejected(e) => Err(ProposeError::Apply(EtcdError::from(&e))),
                    _ => Ok(result),
                };
                let _ = reply.send(answer);
            }
        }
        if membership_changed {
            self.refresh_peers();
        }
        self.metrics.proposals_pending.set(self.waiters.len() as i64);
        Ok(())
    }

    /// Decodes an entry for the state machine; membership changes are applied to the core here,
    /// in log order, so the stored membership is the core's.
    fn decode_for_apply(&mut self, entry: &Entry) -> Result<Decoded, String> {
        match entry.entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => Ok(Decoded::Noop),
            EntryType::EntryNormal => match InternalRequest::decode(entry.data.as_slice()) {
                Ok(r) => Ok(Decoded::Request(r)),
                Err(e) => {
                    // Every member decodes the same bytes the same way, so skipping is consistent.
                    warn!(index = entry.index, error = %e, "undecodable entry; applied as no-op");
                    Ok(Decoded::Noop)
                }
            },
            EntryType::EntryConfChange => {
                let cc = match ConfChange::decode(entry.data.as_slice()) {
                    Ok(cc) => cc,
                    Err(e) => {
                        warn!(index = entry.index, error = %e, "undecodable membership change; ignored");
                        return Ok(Decoded::Noop);
                    }
                };
                let conf_state = match self.node.apply_conf_change(&cc) {
                    Ok(cs) => cs,
                    Err(e) => {
                        warn!(index = entry.index, error = %e, "membership change refused by the core");
                        if let Some((pending, reply)) = self.pending_conf.take() {
                            if pending.node_id == cc.node_id && pending.change_type == cc.change_type {
                                let _ = reply.send(Err(map_raft_error(e)));
                            } else {
                                self.pending_conf = Some((pending, reply));
                            }
                        }
                        return Ok(Decoded::Noop);
                    }
                };
                let change = Self::member_change(&cc);
                info!(
                    index = entry.index,
                    node = format!("{:x}", cc.node_id),
                    change = ?cc.change_type(),
                    voters = ?conf_state.voters,
                    learners = ?conf_state.learners,
                    "membership changed"
                );
                Ok(Decoded::ConfChange { cc, conf_state, change })
            }
        }
    }

    /// The membership-table change a Raft membership change implies. The record comes from
    /// the change's context; the store keeps a record's published name and URLs where the
    /// context has none (a promotion carries only what the leader knew).
    fn member_change(cc: &ConfChange) -> MemberChange {
        let kind = cc.change_type();
        if kind == ConfChangeType::ConfChangeRemoveNode {
            return MemberChange::Remove(cc.node_id);
        }
        let mut member = Member::decode(cc.context.as_slice()).unwrap_or_default();
        member.id = cc.node_id;
        member.is_learner = kind == ConfChangeType::ConfChangeAddLearnerNode;
        MemberChange::Upsert(member)
    }

    fn answer_conf_change(&mut self, cc: &ConfChange, conf_state: &ConfState) {
        if let Some((pending, reply)) = self.pending_conf.take() {
            if pending.node_id == cc.node_id && pending.change_type == cc.change_type {
                let _ = reply.send(Ok(conf_state.clone()));
            } else {
                self.pending_conf = Some((pending, reply));
            }
        }
    }

    /// Points the transport at the current members (after membership changes or a snapshot).
    /// Peers are only ever dropped by an applied removal: a joining member replaying the log
    /// sees a partial membership for a while and must keep talking to the peers it was given.
    fn refresh_peers(&mut self) {
        let my_id = self.node.status().id;
        let members = match self.kv.members() {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read membership");
                return;
            }
        };
        for m in &members {
            if m.id != my_id
                && let Some(url) = m.peer_urls.first()
            {
                self.peers.set_peer(m.id, url);
            }
        }
    }

    fn answer_reads(&mut self) {
        if self.reads_waiting_apply.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.reads_waiting_apply).into_iter().partition(|(i, _)| *i <= applied);
        self.reads_waiting_apply = waiting;
        for (index, reply) in ready {
            let _ = reply.send(Ok(index));
        }
    }

    /// Compacts the log once `snapshot_count` entries were applied since the last compaction,
    /// keeping `catch_up_entries` so followers slightly behind need no snapshot; or earlier,
    /// once the applied entries above the compaction point hold more than [`MAX_LOG_BYTES`]:
    /// counting entries alone lets large entries (a txn of 100 puts) keep hundreds of MiB of
    /// log on disk.
    fn maybe_compact(&mut self) -> Result<(), String> {
        let applied = self.applied;
        let to = if applied >= self.last_compacted + self.config.snapshot_count + self.config.catch_up_entries
        {
            applied - self.config.catch_up_entries
        } else if self.log_bytes.total > MAX_LOG_BYTES {
            self.log_bytes.compaction_point(self.config.catch_up_entries, MAX_LOG_BYTES / 4)
        } else {
            return Ok(());
        };
        // A crash takes the key space back to its last durable commit and replays the log from
        // there, so compaction stops at that point; syncs move it every interval.
        let to = to.min(self.kv.durable_applied_index());
        if to <= self.last_compacted {
            return Ok(());
        }
        self.storage.compact(to).map_err(|e| format!("compact log: {e}"))?;
        self.metrics.log_compactions.inc();
        debug!(to, "compacted log");
        self.last_compacted = to;
        self.log_bytes.forget_through(to);
        Ok(())
    }

    fn publish_status(&mut self) {
        let st = self.node.status();
        let conf = &st.conf_state;
        let status = RaftStatus {
            id: st.id,
            term: st.term,
            leader_id: st.leader_id.filter(|l| *l != 0),
            is_leader: st.role == Role::Leader,
            commit: st.commit,
            applied: self.applied,
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            heartbeat: Some(Instant::now()),
        };
        self.metrics.term.set(st.term as i64);
        self.metrics.applied_index.set(self.applied as i64);
        self.metrics.committed_index.set(st.commit as i64);
        self.status_tx.send_if_modified(|old| {
            let changed = old.term != status.term
                || old.leader_id != status.leader_id
                || old.applied != status.applied
                || old.commit != status.commit
                || old.voters != status.voters
                || old.learners != status.learners
                || old.heartbeat.is_none_or(|h| h.elapsed() > Duration::from_millis(200));
            *old = status;
            changed
        });
    }

    fn fail_all(&mut self, err: ProposeError) {
        for (_, reply) in self.waiters.drain() {
            let _ = reply.send(Err(err.clone()));
        }
        if let Some((_, reply)) = self.pending_conf.take() {
            let _ = reply.send(Err(err.clone()));
        }
        for reply in self.reads_queued.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, batch) in self.reads_in_core.drain() {
            for reply in batch {
                let _ = reply.send(Err(err.clone()));
            }
        }
        for (_, reply) in self.reads_waiting_apply.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

/// How often the state machine is made durable while it changes. Applies wait while a sync
/// runs, and a sync writes every page dirtied since the last one (random pages of the key
/// space), so the interval trades throughput for tail latency: against 100 ms (etcd's backend
/// interval), 25 ms cut put p99 from 35 to 22 ms at 64 clients for 4 % less throughput.
const STATE_MACHINE_SYNC_INTERVAL: Duration = Duration::from_millis(25);

/// Applied entries above this many bytes trigger a log compaction before `snapshot_count`.
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// The sizes of applied entries not yet compacted away, oldest first.
#[derive(Debug, Default)]
struct AppliedLogBytes {
    entries: std::collections::VecDeque<(u64, u64)>,
    total: u64,
}

impl AppliedLogBytes {
    fn record(&mut self, index: u64, bytes: u64) {
        self.entries.push_back((index, bytes));
        self.total += bytes;
    }

    fn forget_through(&mut self, index: u64) {
        while let Some(&(i, bytes)) = self.entries.front() {
            if i > index {
                break;
            }
            self.entries.pop_front();
            self.total -= bytes;
        }
    }

    /// The index to compact through so that at most `keep_entries` newest entries and about
    /// `keep_bytes` stay in the log.
    fn compaction_point(&self, keep_entries: u64, keep_bytes: u64) -> u64 {
        let mut kept_bytes = 0;
        let mut kept = 0;
        for &(index, bytes) in self.entries.iter().rev() {
            kept_bytes += bytes;
            kept += 1;
            if kept > keep_entries || kept_bytes > keep_bytes {
                return index;
            }
        }
        0
    }
}

/// A committed entry, decoded for the state machine.
enum Decoded {
    Noop,
    Request(InternalRequest),
    ConfChange { cc: ConfChange, conf_state: ConfState, change: MemberChange },
}

/// Whether `msg` is a request only a leader sends, which depends on no local durability.
fn is_leader_request(msg: &RaftMessage) -> bool {
    matches!(
        msg.body,
        Some(
            raft_message::Body::AppendEntries(_)
                | raft_message::Body::InstallSnapshot(_)
                | raft_message::Body::TimeoutNow(_)
        )
    )
}

fn map_raft_error(e: RaftError) -> ProposeError {
    match e {
        RaftError::NotLeader { leader_hint } => ProposeError::NotLeader(leader_hint.filter(|l| *l != 0)),
        other => ProposeError::Refused(other),
    }
}

/// Reads only the request id (field 1) of an encoded [`InternalRequest`].
fn request_id(data: &[u8]) -> Result<u64, prost::DecodeError> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct IdOnly {
        #[prost(uint64, tag = "1")]
        id: u64,
    }
    IdOnly::decode(data).map(|m| m.id)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        & 0xff_ffff
}

#[cfg(test)]
mod tests {
    use super::AppliedLogBytes;

    #[test]
    fn byte_bounded_compaction_keeps_the_newest_entries_within_both_limits() {
        let mut log = AppliedLogBytes::default();
        for index in 1..=10 {
            log.record(index, 100);
        }
        assert_eq!(log.total, 1000);
        // Keep at most 3 entries: compact through 7.
        assert_eq!(log.compaction_point(3, 10_000), 7);
        // Keep at most 250 bytes: entries 9 and 10 stay.
        assert_eq!(log.compaction_point(100, 250), 8);
        // Everything fits: nothing to compact.
        assert_eq!(log.compaction_point(100, 10_000), 0);
        log.forget_through(8);
        assert_eq!(log.total, 200);
        assert_eq!(log.entries.len(), 2);
    }
}
