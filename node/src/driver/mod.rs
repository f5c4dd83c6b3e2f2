//! The driver: the one thread that owns the consensus core and turns it with real time, disk
//! and network.
//!
//! Each turn takes what arrived (peer messages, client proposals, reads, membership and
//! leadership requests), ticks the core on time, hands it this turn's proposals as one batch and
//! this turn's reads as one read index request, then handles the core's `Ready` in an order that
//! keeps Raft safe and overlaps the slow steps:
//!
//! 1. install a snapshot received from the leader (key space first, log second);
//! 2. send a leader's appends, snapshots and TimeoutNow: they promise nothing about the
//!    leader's own disk, so followers write in parallel with it;
//! 3. apply committed entries (durable on a quorum already) and answer the clients waiting here;
//! 4. write entries and hard state durably — one fsync for the whole turn;
//! 5. only then send votes and acknowledgements, which promise durability;
//! 6. `advance`, answer reads applied far enough, compact the log, publish the status.
//!
//! The key space is made durable in batches by a [thread of its own](kv_syncer); while that
//! runs, committed entries queue up and the loop goes on writing, replicating and acknowledging
//! the log. It runs on a dedicated OS thread because its disk writes block; async code talks to
//! it through a [`NodeHandle`]. A storage failure stops it (see [`FatalError`]).

mod apply;
mod compaction;
mod error;
mod handle;
mod kv_syncer;
mod reads;
mod status;
pub mod transport;
mod waiters;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::proto::raftpb::{RaftMessage, raft_message};
use crate::raft::{RaftError, RawNode, Ready, Role, Storage as _};
use crate::storage::{ApplyResult, KvStore, MemberChange, WalRaftStorage};

use apply::Applier;
use compaction::Compactor;
use handle::{ClientRequest, Input, Reply};
use kv_syncer::KvSyncer;
use reads::Reads;
use status::StatusPublisher;
use waiters::Waiters;

pub use error::{DriverError, FatalError};
pub use handle::{
    LoopInbox, MAX_APPLY_BACKLOG, MAX_QUEUED_CLIENT_REQUESTS, MAX_QUEUED_PEER_BATCHES, NodeHandle,
    PeerProgress, RaftStatus,
};
pub use transport::{Inbox, MAX_PEER_MESSAGE_BYTES, PeerSenders, PeerService};

/// Most proposals handed to the core (or forwarded to the leader) as one batch.
const MAX_BATCH_PROPOSALS: usize = 1024;
/// Bytes of proposals after which a batch is closed (a batch always holds at least one).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Inputs taken per turn beyond the first, so that one fsync serves a burst.
const MAX_INPUTS_PER_TURN: usize = 4096;

/// Settings of the loop, derived from the member's flags.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub tick: Duration,
    pub snapshot_count: u64,
    /// Entries kept behind a compaction so slightly-behind followers catch up from the log.
    pub catch_up_entries: u64,
}

/// How the loop ended.
#[derive(Debug, Clone)]
pub enum LoopExit {
    /// Asked to stop, or every handle was dropped.
    Stopped,
    /// It could not go on; the member must not keep serving.
    Failed(Arc<FatalError>),
}

/// Handles of a started loop.
pub struct Started {
    pub handle: NodeHandle,
    /// Where the peer transport delivers what other members send.
    pub inbox: Arc<LoopInbox>,
    /// `None` while the loop runs.
    pub exit: watch::Receiver<Option<LoopExit>>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Everything the loop owns.
struct RaftLoop {
    id: u64,
    node: RawNode<Arc<WalRaftStorage>>,
    storage: Arc<WalRaftStorage>,
    kv: KvStore,
    peers: PeerSenders,
    metrics: Arc<Metrics>,
    tick: Duration,
    rx: mpsc::Receiver<Input>,
    status: StatusPublisher,
    waiters: Waiters,
    /// This turn's proposals, handed to the core together at the end of the input phase.
    proposals: Vec<(u64, Vec<u8>, Reply<ApplyResult>)>,
    reads: Reads,
    applier: Applier,
    compactor: Compactor,
    syncer: KvSyncer,
    /// Term and vote as last written to disk; messages may only overtake an fsync that does
    /// not change them.
    persisted_term_vote: (u64, u64),
    /// Members whose removal was applied, dropped from the transport only once the next
    /// `Ready`'s messages went out: a leader's farewell append to a removed member (see the
    /// core) travels in it.
    departing_peers: Vec<u64>,
}

/// Starts the loop on its own thread. `runtime` runs the peer sender tasks.
pub fn start(
    node: RawNode<Arc<WalRaftStorage>>,
    storage: Arc<WalRaftStorage>,
    kv: KvStore,
    peers: PeerSenders,
    metrics: Arc<Metrics>,
    config: LoopConfig,
    runtime: tokio::runtime::Handle,
) -> Result<Started, FatalError> {
    let (tx, rx) = mpsc::channel();
    let id = node.status().id;
    let (status, status_rx) = StatusPublisher::new(id, metrics.clone());
    let last_compacted = storage.first_index()?.saturating_sub(1);
    let persisted = storage.hard_state()?;
    let applied = kv.applied_index()?;
    let wake = Mutex::new(tx.clone());
    let syncer = KvSyncer::start(kv.clone(), format!("kv-sync-{id:x}"), move || {
        let _ = wake.lock().unwrap_or_else(PoisonError::into_inner).send(Input::KvSynced);
    })
    .map_err(FatalError::Thread)?;
    let mut rl = RaftLoop {
        id,
        node,
        storage,
        kv: kv.clone(),
        peers,
        metrics,
        tick: config.tick,
        rx,
        status,
        waiters: Waiters::default(),
        proposals: Vec::new(),
        reads: Reads::default(),
        applier: Applier::new(kv, applied),
        compactor: Compactor::new(config.snapshot_count, config.catch_up_entries, last_compacted),
        syncer,
        persisted_term_vote: (persisted.current_term, persisted.voted_for),
        departing_peers: Vec::new(),
    };
    let (exit_tx, exit) = watch::channel(None);
    let thread = std::thread::Builder::new()
        .name(format!("raft-{id:x}"))
        .spawn(move || {
            let _rt = runtime.enter();
            let outcome = rl.run();
            let _ = exit_tx.send(Some(outcome));
        })
        .map_err(FatalError::Thread)?;
    let handle = NodeHandle::new(id, tx.clone(), status_rx);
    Ok(Started { handle, inbox: Arc::new(LoopInbox::new(tx)), exit, thread })
}

/// What one turn's input phase asked for.
enum Turn {
    Continue,
    Stop,
}

impl RaftLoop {
    fn run(&mut self) -> LoopExit {
        match self.turns() {
            Ok(()) => {
                let stopped = DriverError::Stopped;
                self.fail_all(&stopped);
                if let Some(Ok(Err(e))) = self.syncer.wait() {
                    warn!(error = %e, "key-space sync failed");
                }
                // A clean stop leaves both databases durable, so the next start replays nothing.
                if let Err(e) = self.storage.sync().and_then(|()| self.kv.sync().map(drop)) {
                    warn!(error = %e, "could not sync the store on stop");
                }
                info!("raft loop stopped");
                LoopExit::Stopped
            }
            Err(e) => {
                // Nothing is synced: the failed turn may have applied entries its log write
                // never covered, and a durable key space ahead of the log would not reopen.
                error!(error = %e, "raft loop failed; stopping this member");
                self.fail_all(&DriverError::Stopped);
                let _ = self.syncer.wait();
                LoopExit::Failed(Arc::new(e))
            }
        }
    }

    fn turns(&mut self) -> Result<(), FatalError> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            // Work the core produced while advancing (a commit once our own fsync counted)
            // must not wait for the next input or tick.
            let wait = if self.node.has_ready() {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let mut turn = match self.rx.recv_timeout(wait) {
                Ok(input) => self.handle(input)?,
                Err(RecvTimeoutError::Timeout) => Turn::Continue,
                Err(RecvTimeoutError::Disconnected) => Turn::Stop,
            };
            // Take everything else already waiting, so one fsync serves the whole batch.
            for _ in 0..MAX_INPUTS_PER_TURN {
                if matches!(turn, Turn::Stop) {
                    break;
                }
                match self.rx.try_recv() {
                    Ok(input) => turn = self.handle(input)?,
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick()?;
                next_tick += self.tick;
                if next_tick < now {
                    // We fell far behind (a long fsync); do not fire a burst of ticks.
                    next_tick = now + self.tick;
                }
            }
            self.propose_turn()?;
            self.reads.issue(&mut self.node, now)?;
            self.on_ready()?;
            self.syncer.maybe_start(self.applier.applied(), self.storage.last_index()?)?;
            if matches!(turn, Turn::Stop) {
                return Ok(());
            }
        }
    }

    fn handle(&mut self, input: Input) -> Result<Turn, FatalError> {
        match input {
            Input::Peer(messages, _room) => {
                let now = Instant::now();
                for msg in messages {
                    self.status.received(&msg, now);
                    match self.node.step(msg) {
                        Ok(()) => {}
                        Err(RaftError::Storage(e)) => return Err(e.into()),
                        Err(e) => debug!(error = %e, "peer message rejected"),
                    }
                }
            }
            Input::Client(request, _slot) => self.client_request(request)?,
            Input::KvSynced => {}
            Input::Stop => return Ok(Turn::Stop),
        }
        Ok(Turn::Continue)
    }

    fn client_request(&mut self, request: ClientRequest) -> Result<(), FatalError> {
        match request {
            ClientRequest::Propose { id, data, reply } => self.proposals.push((id, data, reply)),
            ClientRequest::ConfChange { cc, reply } => {
                let id = cc.request_id;
                match self.node.propose_conf_change(cc) {
                    Ok(proposed) => self.waiters.register(proposed, vec![(id, reply)]),
                    Err(RaftError::Storage(e)) => return Err(e.into()),
                    Err(e) => {
                        let _ = reply.send(Err(DriverError::from_raft(e)));
                    }
                }
            }
            ClientRequest::ReadIndex { reply } => self.reads.push(reply),
            ClientRequest::TransferLeader { to, reply } => match self.node.transfer_leader(to) {
                Err(RaftError::Storage(e)) => return Err(e.into()),
                other => {
                    let _ = reply.send(other.map_err(DriverError::from_raft));
                }
            },
            ClientRequest::Progress { reply } => {
                let st = self.node.status();
                let answer = if st.role == Role::Leader {
                    Ok(status::progress(&st))
                } else {
                    Err(DriverError::NotLeader { leader: st.leader_id })
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Hands this turn's proposals to the core in batches: appended on a leader, forwarded
    /// to the leader as one message per batch on a follower.
    fn propose_turn(&mut self) -> Result<(), FatalError> {
        let mut proposals = std::mem::take(&mut self.proposals).into_iter().peekable();
        while proposals.peek().is_some() {
            let mut batch = Vec::new();
            let mut data = Vec::new();
            let mut bytes = 0;
            while let Some((id, d, reply)) = proposals.next_if(|(_, d, _)| {
                data.is_empty() || (data.len() < MAX_BATCH_PROPOSALS && bytes + d.len() <= MAX_BATCH_BYTES)
            }) {
                bytes += d.len();
                data.push(d);
                batch.push((id, reply));
            }
            match self.node.propose_batch(data) {
                Ok(proposed) => {
                    if matches!(proposed, crate::raft::Proposed::Forwarded { .. }) {
                        self.metrics.proposals_forwarded.inc_by(batch.len() as u64);
                    }
                    self.waiters.register(proposed, batch);
                }
                Err(RaftError::Storage(e)) => return Err(e.into()),
                Err(e) => {
                    self.metrics.proposals_failed.inc_by(batch.len() as u64);
                    let error = DriverError::from_raft(e);
                    for (_, reply) in batch {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        }
        self.metrics.proposals_pending.set(self.waiters.len() as i64);
        Ok(())
    }

    fn on_ready(&mut self) -> Result<(), FatalError> {
        self.poll_kv_sync()?;
        // Removals applied before this Ready: their farewells are in it (or nothing is pending).
        let departed = std::mem::take(&mut self.departing_peers);
        if !self.node.has_ready() {
            self.drop_peers(departed);
            // Entries that waited for a sync are applied as soon as it is over.
            self.apply_queued()?;
            self.reads.applied(self.applier.applied());
            self.status.publish(&self.node.status(), self.applier.applied());
            return Ok(());
        }
        let mut rd: Ready = self.node.ready()?;
        if let Some(ss) = &rd.soft_state
            && self.status.soft_state(ss.leader_id, ss.role)
        {
            // Reads asked of the old leader are asked of the new one.
            self.reads.leader_changed();
        }
        if let Some(snapshot) = &rd.snapshot {
            self.install_snapshot(snapshot)?;
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
        // make the key space outrun the log across a crash: applies commit without an fsync,
        // and the key space is made durable only by a sync started after the turn's log write
        // (or by a snapshot, which replaces both).
        self.applier.hand_off(&mut self.node, std::mem::take(&mut rd.committed_entries))?;
        self.apply_queued()?;
        // Watchers hear of what was just applied now, not after this turn's fsync.
        self.status.publish(&self.node.status(), self.applier.applied());
        if !rd.entries.is_empty() || rd.hard_state.is_some() {
            let started = Instant::now();
            self.storage.persist(rd.hard_state.as_ref(), &rd.entries)?;
            self.metrics.wal_fsync_duration.observe(started.elapsed().as_secs_f64());
            if let Some(hs) = &rd.hard_state {
                self.persisted_term_vote = (hs.current_term, hs.voted_for);
            }
        }
        // Only now, with entries and votes durable, may the messages that depend on them go out.
        self.send_messages(messages);
        self.drop_peers(departed);
        for rs in std::mem::take(&mut rd.read_states) {
            self.reads.confirmed(rs);
        }
        for rejected in std::mem::take(&mut rd.rejected_proposals) {
            let failed = self.waiters.batch_refused(rejected.seq, &rejected.error);
            self.metrics.proposals_failed.inc_by(failed as u64);
        }
        self.node.advance(rd)?;
        self.reads.applied(self.applier.applied());
        let durable = self.kv.durable_applied_index();
        if self.compactor.maybe_compact(&self.storage, self.applier.applied(), durable)?.is_some() {
            self.metrics.log_compactions.inc();
        }
        self.status.publish(&self.node.status(), self.applier.applied());
        Ok(())
    }

    /// Replaces the key space and the log with a snapshot from the leader.
    fn install_snapshot(&mut self, snapshot: &crate::proto::raftpb::Snapshot) -> Result<(), FatalError> {
        // What was committed before the snapshot goes in first; a running sync must finish.
        if let Some(outcome) = self.syncer.wait() {
            self.on_kv_synced(outcome?)?;
        }
        self.apply_queued()?;
        let index = snapshot.metadata.as_ref().map_or(0, |m| m.index);
        self.storage.install_snapshot(snapshot)?;
        self.metrics.snapshots_installed.inc();
        self.compactor.restored_to(index);
        self.applier.restored_to(index);
        // Proposals made here may be inside the snapshot without this member having seen them
        // apply: their clients cannot be told either way.
        self.waiters.fail_all(&DriverError::OutcomeUnknown);
        self.refresh_peers();
        info!(index, "installed snapshot from leader");
        Ok(())
    }

    /// Applies the queued committed entries and answers their clients; nothing while a
    /// key-space sync runs (the transaction would wait for it).
    fn apply_queued(&mut self) -> Result<(), FatalError> {
        // Not while the key space syncs or is defragmented: the loop must not wait on its
        // write lock (it would stop persisting, replicating and heartbeating meanwhile).
        if !self.applier.has_pending() || self.syncer.in_progress() || self.kv.defragmenting() {
            return Ok(());
        }
        let started = Instant::now();
        let applied = self.applier.apply_queued()?;
        self.syncer.note_applied();
        self.metrics.backend_commit_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.proposals_committed.inc_by(applied.len() as u64);
        self.metrics.proposals_applied.inc_by(applied.len() as u64);
        let mut top_term = 0;
        let mut membership_changed = false;
        for a in applied {
            self.compactor.applied(a.index, a.bytes);
            top_term = top_term.max(a.term);
            if let Some(change) = a.membership_change {
                membership_changed = true;
                if let MemberChange::Remove(id) = change {
                    self.departing_peers.push(id);
                }
            }
            if let Some((proposer, id)) = a.requester
                && proposer == self.id
            {
                self.waiters.answer(id, a.result);
            }
        }
        let lost = self.waiters.term_applied(top_term);
        self.metrics.proposals_failed.inc_by(lost as u64);
        if membership_changed {
            self.refresh_peers();
        }
        self.metrics.proposals_pending.set(self.waiters.len() as i64);
        Ok(())
    }

    /// Notes a finished key-space sync (without waiting for one).
    fn poll_kv_sync(&mut self) -> Result<(), FatalError> {
        match self.syncer.poll() {
            Some(outcome) => self.on_kv_synced(outcome?),
            None => Ok(()),
        }
    }

    fn on_kv_synced(&mut self, outcome: kv_syncer::SyncOutcome) -> Result<(), FatalError> {
        let (_, took) = outcome?;
        self.metrics.backend_sync_duration.observe(took.as_secs_f64());
        Ok(())
    }

    fn drop_peers(&mut self, ids: Vec<u64>) {
        for id in ids {
            self.peers.remove_peer(id);
        }
    }

    fn send_messages(&mut self, messages: Vec<RaftMessage>) {
        let now = Instant::now();
        for msg in messages {
            self.status.sent(&msg, now);
            self.peers.send(msg);
        }
    }

    /// Points the transport at the current members (after membership changes or a snapshot).
    /// Peers are only ever dropped by an applied removal: a joining member replaying the log
    /// sees a partial membership for a while and must keep talking to the peers it was given.
    fn refresh_peers(&mut self) {
        let members = match self.kv.members() {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read membership");
                return;
            }
        };
        for m in &members {
            if m.id != self.id
                && let Some(url) = m.peer_urls.first()
            {
                self.peers.set_peer(m.id, url);
            }
        }
    }

    fn fail_all(&mut self, error: &DriverError) {
        self.waiters.fail_all(error);
        self.reads.fail_all(error);
        for (_, _, reply) in self.proposals.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }
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
