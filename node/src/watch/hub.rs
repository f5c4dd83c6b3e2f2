//! The watch hub: one task owns every watcher of the member, so watchers need no locks and
//! every stream's notices leave in one order.
//!
//! Watchers are *synced* (they were sent every event up to the hub's frontier, `notified`) or
//! *unsynced* (they catch up from the key space's history). After each apply, the hub reads the
//! new revisions once, from the history, and hands each synced watcher its events. A stream
//! whose queue is full does not make the hub wait: its watcher drops back to unsynced at the
//! first revision it missed and replays from the history when the stream has room again
//! (etcd's synced/unsynced/victim design). Memory per stream is its bounded queue.
//!
//! Control notices (created, canceled, compacted, a progress notification for the whole
//! stream) are never dropped: when the queue is full they wait in the stream's backlog, and no
//! event of that stream overtakes them.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::driver::RaftStatus;
use crate::metrics::Metrics;
use crate::proto::mvccpb::Event;
use crate::storage::{KvError, KvStore};

use super::watcher::{StartAt, WatchSpec, Watcher};

/// A watch stream's id within the hub.
pub type StreamId = u64;

/// Notices a stream's queue holds before its watchers fall behind into catch-up.
pub const STREAM_QUEUE: usize = 128;
/// Most events read from the history at once (whole revisions: a read may exceed it by the
/// rest of its last revision).
const MAX_EVENTS_PER_READ: usize = 4096;
/// How often the hub looks again at watchers that wait for room in their stream.
const RETRY: Duration = Duration::from_millis(10);

/// etcd's reasons for refusing a create request, word for word.
pub const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
pub const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// What the hub tells a stream, in the order the stream must send it. `revision` is the
/// response header's revision.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Created {
        watch_id: i64,
        revision: i64,
    },
    /// A create request refused: etcd answers created and canceled at once, with id -1.
    Refused {
        revision: i64,
        reason: &'static str,
    },
    Events {
        watch_id: i64,
        revision: i64,
        events: Vec<Event>,
        fragment: bool,
    },
    /// The watcher's next revision was compacted away; it is canceled.
    Compacted {
        watch_id: i64,
        revision: i64,
        compact_revision: i64,
    },
    Canceled {
        watch_id: i64,
        revision: i64,
    },
    /// Every event at or below `revision` of watcher `watch_id` (of every watcher of the
    /// stream when -1) has been sent before this notice.
    Progress {
        watch_id: i64,
        revision: i64,
    },
}

enum Command {
    Open { stream: StreamId, tx: mpsc::Sender<Notice> },
    Create { stream: StreamId, spec: WatchSpec, fragment: bool },
    Refuse { stream: StreamId, reason: &'static str },
    Cancel { stream: StreamId, watch_id: i64 },
    ProgressAll { stream: StreamId },
    Close { stream: StreamId },
}

/// The cloneable handle the client API uses.
#[derive(Clone)]
pub struct WatchHub {
    commands: mpsc::Sender<Command>,
    next_stream: Arc<AtomicU64>,
}

/// The hub is gone (the member is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the watch hub has stopped")]
pub struct HubStopped;

impl WatchHub {
    /// Starts the hub task. `status` tells it when entries were applied; `progress_every` is
    /// `--experimental-watch-progress-notify-interval`.
    pub fn start(
        kv: KvStore,
        status: watch::Receiver<RaftStatus>,
        metrics: Arc<Metrics>,
        progress_every: Duration,
        response_bytes: usize,
    ) -> Result<WatchHub, KvError> {
        let (commands, rx) = mpsc::channel(1024);
        let hub = Hub {
            notified: kv.current_revision()?,
            kv,
            status,
            commands: rx,
            streams: HashMap::new(),
            watchers: HashMap::new(),
            synced: BTreeSet::new(),
            unsynced: BTreeSet::new(),
            response_bytes,
            metrics,
        };
        tokio::spawn(hub.run(progress_every));
        Ok(WatchHub { commands, next_stream: Arc::new(AtomicU64::new(1)) })
    }

    async fn send(&self, command: Command) -> Result<(), HubStopped> {
        self.commands.send(command).await.map_err(|_| HubStopped)
    }

    /// Opens a stream; its notices arrive on the returned queue.
    pub async fn open(&self) -> Result<(StreamId, mpsc::Receiver<Notice>), HubStopped> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.send(Command::Open { stream, tx }).await?;
        Ok((stream, rx))
    }

    /// Creates a watcher on `stream` (answered with Created or Refused, then its events).
    pub async fn create(&self, stream: StreamId, spec: WatchSpec, fragment: bool) -> Result<(), HubStopped> {
        self.send(Command::Create { stream, spec, fragment }).await
    }

    /// Answers a create request the client API refused, in order with the stream's notices.
    pub async fn refuse(&self, stream: StreamId, reason: &'static str) -> Result<(), HubStopped> {
        self.send(Command::Refuse { stream, reason }).await
    }

    /// Cancels a watcher (answered with Canceled if it existed).
    pub async fn cancel(&self, stream: StreamId, watch_id: i64) -> Result<(), HubStopped> {
        self.send(Command::Cancel { stream, watch_id }).await
    }

    /// Asks for a progress notification for the whole stream: sent only if every watcher of
    /// the stream is synced (as etcd; a client asks again later otherwise).
    pub async fn progress(&self, stream: StreamId) -> Result<(), HubStopped> {
        self.send(Command::ProgressAll { stream }).await
    }

    /// Forgets a stream and its watchers.
    pub async fn close(&self, stream: StreamId) {
        let _ = self.send(Command::Close { stream }).await;
    }
}

type WatcherKey = (StreamId, i64);

struct StreamState {
    tx: mpsc::Sender<Notice>,
    /// Control notices waiting for room in the queue, in order.
    backlog: VecDeque<Notice>,
    watchers: BTreeSet<i64>,
    /// Whether each watcher wants its large responses fragmented.
    fragment: HashMap<i64, bool>,
    next_auto_id: i64,
}

impl StreamState {
    /// Queues an event notice if the queue has room and no control notice waits.
    fn try_send(&mut self, notice: Notice) -> bool {
        self.backlog.is_empty() && self.tx.try_send(notice).is_ok()
    }

    /// Queues a control notice, keeping it in the backlog until there is room.
    fn send_control(&mut self, notice: Notice) {
        if !self.backlog.is_empty() {
            self.backlog.push_back(notice);
        } else if let Err(mpsc::error::TrySendError::Full(n)) = self.tx.try_send(notice) {
            self.backlog.push_back(n);
        }
    }

    fn flush_backlog(&mut self) {
        while let Some(n) = self.backlog.pop_front() {
            if let Err(mpsc::error::TrySendError::Full(n)) = self.tx.try_send(n) {
                self.backlog.push_front(n);
                return;
            }
        }
    }

    fn has_room(&self) -> bool {
        self.backlog.is_empty() && self.tx.capacity() > 0
    }
}

struct Hub {
    kv: KvStore,
    status: watch::Receiver<RaftStatus>,
    commands: mpsc::Receiver<Command>,
    streams: HashMap<StreamId, StreamState>,
    watchers: HashMap<WatcherKey, Watcher>,
    synced: BTreeSet<WatcherKey>,
    unsynced: BTreeSet<WatcherKey>,
    /// Every synced watcher was sent every event at or below this revision.
    notified: i64,
    /// About how large an event response may grow before the rest goes in the next one
    /// (`--max-request-bytes`: clients accept responses of that size, a catch-up of thousands
    /// of revisions in one response they may not).
    response_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Hub {
    async fn run(mut self, progress_every: Duration) {
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting = !self.unsynced.is_empty() || self.streams.values().any(|s| !s.backlog.is_empty());
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => return,
                },
                changed = self.status.changed() => if changed.is_err() { return },
                _ = progress.tick() => self.progress_tick(),
                _ = retry.tick(), if waiting => {}
            }
            while let Ok(c) = self.commands.try_recv() {
                self.command(c);
            }
            self.drop_closed_streams();
            for s in self.streams.values_mut() {
                s.flush_backlog();
            }
            if let Err(e) = self.dispatch_new() {
                warn!(error = %e, "watch: cannot read new events");
            }
            if let Err(e) = self.catch_up() {
                warn!(error = %e, "watch: cannot read history for catching up");
            }
            self.metrics.watchers.set(self.watchers.len() as i64);
            self.metrics.slow_watchers.set(self.unsynced.len() as i64);
            self.metrics.watch_streams.set(self.streams.len() as i64);
        }
    }

    fn current_revision(&self) -> i64 {
        self.kv.current_revision().unwrap_or(self.notified)
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Open { stream, tx } => {
                let state = StreamState {
                    tx,
                    backlog: VecDeque::new(),
                    watchers: BTreeSet::new(),
                    fragment: HashMap::new(),
                    next_auto_id: 0,
                };
                self.streams.insert(stream, state);
            }
            Command::Create { stream, spec, fragment } => self.create(stream, spec, fragment),
            Command::Refuse { stream, reason } => {
                let revision = self.current_revision();
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_control(Notice::Refused { revision, reason });
                }
            }
            Command::Cancel { stream, watch_id } => {
                if self.remove((stream, watch_id)) {
                    let revision = self.current_revision();
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.send_control(Notice::Canceled { watch_id, revision });
                    }
                }
            }
            Command::ProgressAll { stream } => self.progress_all(stream),
            Command::Close { stream } => self.close(stream),
        }
    }

    fn create(&mut self, stream: StreamId, spec: WatchSpec, fragment: bool) {
        let revision = self.current_revision();
        let Some(s) = self.streams.get_mut(&stream) else { return };
        if let StartAt::Revision(r) = spec.start
            && r < 0
        {
            s.send_control(Notice::Refused { revision, reason: COMPACTED });
            return;
        }
        let id = match spec.watch_id {
            Some(id) if s.watchers.contains(&id) => {
                s.send_control(Notice::Refused { revision, reason: DUPLICATE_ID });
                return;
            }
            Some(id) => id,
            None => {
                while s.watchers.contains(&s.next_auto_id) {
                    s.next_auto_id += 1;
                }
                let id = s.next_auto_id;
                s.next_auto_id += 1;
                id
            }
        };
        s.watchers.insert(id);
        s.fragment.insert(id, fragment);
        s.send_control(Notice::Created { watch_id: id, revision });
        let (start_rev, next_rev) = match spec.start {
            // From now: the first revision after the store's current one.
            StartAt::Now => (0, revision + 1),
            StartAt::Revision(r) => (r, r),
        };
        let key = (stream, id);
        // A watcher from a revision the hub has sent is caught up from the history; one from
        // after it only waits for new events.
        if next_rev > self.notified {
            self.synced.insert(key);
        } else {
            self.unsynced.insert(key);
        }
        self.watchers.insert(key, Watcher { spec, next_rev, start_rev, sent_since_tick: false });
    }

    fn remove(&mut self, key: WatcherKey) -> bool {
        self.synced.remove(&key);
        self.unsynced.remove(&key);
        if let Some(s) = self.streams.get_mut(&key.0) {
            s.watchers.remove(&key.1);
            s.fragment.remove(&key.1);
        }
        self.watchers.remove(&key).is_some()
    }

    fn close(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.remove(&stream) {
            for id in s.watchers {
                self.synced.remove(&(stream, id));
                self.unsynced.remove(&(stream, id));
                self.watchers.remove(&(stream, id));
            }
        }
    }

    fn drop_closed_streams(&mut self) {
        let closed: Vec<StreamId> =
            self.streams.iter().filter(|(_, s)| s.tx.is_closed()).map(|(id, _)| *id).collect();
        for stream in closed {
            self.close(stream);
        }
    }

    /// Sends synced watchers the events of the revisions applied since the last call.
    fn dispatch_new(&mut self) -> Result<(), KvError> {
        let current = self.kv.current_revision()?;
        if current <= self.notified {
            return Ok(());
        }
        if self.synced.is_empty() {
            // Nobody to send to: no history to read (writes cost nothing without watchers).
            self.notified = current;
            return Ok(());
        }
        let prev_kv = self.synced.iter().any(|k| self.watchers.get(k).is_some_and(|w| w.spec.prev_kv));
        let changes = match self.kv.changes_since(self.notified + 1, MAX_EVENTS_PER_READ, prev_kv) {
            Ok(c) => c,
            Err(KvError::Compacted { .. }) => {
                // The history the synced watchers needed is gone (a snapshot replaced the key
                // space): they catch up, which cancels them with the compaction revision.
                let all: Vec<WatcherKey> = std::mem::take(&mut self.synced).into_iter().collect();
                self.unsynced.extend(all);
                self.notified = current;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let upto = read_upto(&changes.events, changes.revision, changes.truncated);
        let keys: Vec<WatcherKey> = self.synced.iter().copied().collect();
        for key in keys {
            self.deliver(key, &changes.events, upto);
            if self.watchers.get(&key).is_some_and(|w| w.next_rev <= upto) {
                // Its stream had no room: it catches up from the first revision it missed.
                self.synced.remove(&key);
                self.unsynced.insert(key);
            }
        }
        self.notified = upto;
        Ok(())
    }

    /// Sends watcher `key` its events among `events` (all revisions up to `upto`), in
    /// responses of whole revisions of about [`Hub::response_bytes`] each; its next revision
    /// moves past what was sent: past `upto` when all was, otherwise to the first revision it
    /// missed.
    fn deliver(&mut self, key: WatcherKey, events: &[Event], upto: i64) {
        let Some(w) = self.watchers.get_mut(&key) else { return };
        let Some(s) = self.streams.get_mut(&key.0) else { return };
        if w.next_rev > upto {
            return;
        }
        let fragment = s.fragment.get(&key.1).copied().unwrap_or(false);
        for chunk in by_size(w.select(events), self.response_bytes) {
            let first = chunk.first().map_or(upto, event_revision);
            let count = chunk.len() as u64;
            let notice = Notice::Events { watch_id: key.1, revision: upto, events: chunk, fragment };
            if !s.try_send(notice) {
                w.next_rev = first;
                return;
            }
            w.sent_since_tick = true;
            self.metrics.watch_events.inc_by(count);
        }
        w.next_rev = upto + 1;
    }

    /// Replays the history to unsynced watchers whose streams have room, up to the frontier;
    /// cancels those whose next revision was compacted away.
    fn catch_up(&mut self) -> Result<(), KvError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let compact = self.kv.compact_revision()?;
        let revision = self.current_revision();
        let lost: Vec<WatcherKey> = self
            .unsynced
            .iter()
            .copied()
            .filter(|k| self.watchers.get(k).is_some_and(|w| w.next_rev < compact))
            .collect();
        for key in lost {
            self.remove(key);
            if let Some(s) = self.streams.get_mut(&key.0) {
                s.send_control(Notice::Compacted { watch_id: key.1, revision, compact_revision: compact });
            }
        }
        let ready: Vec<WatcherKey> = self
            .unsynced
            .iter()
            .copied()
            .filter(|k| self.streams.get(&k.0).is_some_and(StreamState::has_room))
            .collect();
        let Some(from) = ready.iter().filter_map(|k| self.watchers.get(k)).map(|w| w.next_rev).min() else {
            return Ok(());
        };
        if from <= self.notified {
            let prev_kv = ready.iter().any(|k| self.watchers.get(k).is_some_and(|w| w.spec.prev_kv));
            let changes = match self.kv.changes_since(from, MAX_EVENTS_PER_READ, prev_kv) {
                Ok(c) => c,
                // Compacted meanwhile: the next round cancels them.
                Err(KvError::Compacted { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let upto = read_upto(&changes.events, changes.revision, changes.truncated).min(self.notified);
            let events: Vec<Event> =
                changes.events.into_iter().filter(|e| event_revision(e) <= upto).collect();
            for key in &ready {
                self.deliver(*key, &events, upto);
            }
        }
        for key in ready {
            if self.watchers.get(&key).is_some_and(|w| w.next_rev > self.notified) {
                self.unsynced.remove(&key);
                self.synced.insert(key);
            }
        }
        Ok(())
    }

    /// A progress notification for every watcher of `stream`, if all are synced and none
    /// waits for a revision beyond the frontier (etcd's `RequestProgressAll`).
    fn progress_all(&mut self, stream: StreamId) {
        let Some(s) = self.streams.get(&stream) else { return };
        if s.watchers.is_empty() {
            return;
        }
        let all_synced = s.watchers.iter().all(|id| {
            let key = (stream, *id);
            self.synced.contains(&key)
                && self.watchers.get(&key).is_some_and(|w| w.start_rev <= self.notified)
        });
        if !all_synced {
            return;
        }
        let revision = self.notified;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.send_control(Notice::Progress { watch_id: -1, revision });
        }
    }

    /// The periodic progress notifications of watchers that asked for them and got no event
    /// since the last tick (only synced ones, never below their start revision).
    fn progress_tick(&mut self) {
        let revision = self.notified;
        for (key, w) in self.watchers.iter_mut().filter(|(_, w)| w.spec.progress_notify) {
            let due = !w.sent_since_tick && self.synced.contains(key) && w.start_rev <= revision;
            w.sent_since_tick = false;
            if due && let Some(s) = self.streams.get_mut(&key.0) {
                // Like etcd's, dropped when the stream is full: the events it would announce
                // are on their way anyway.
                s.try_send(Notice::Progress { watch_id: key.1, revision });
            }
        }
    }
}

/// Splits events into runs of whole revisions of about `limit` encoded bytes each (a revision
/// larger than that alone is one run: its events stay together).
fn by_size(events: Vec<Event>, limit: usize) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut bytes = 0;
    for e in events {
        let starts_revision = current.last().is_none_or(|l| event_revision(l) != event_revision(&e));
        let size = prost::Message::encoded_len(&e);
        if starts_revision && !current.is_empty() && bytes + size > limit {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(e);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn event_revision(e: &Event) -> i64 {
    e.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// The last revision a history read covers completely: the store's revision, or, for a read
/// cut short, the revision of its last event (reads stop at whole revisions).
fn read_upto(events: &[Event], revision: i64, truncated: bool) -> i64 {
    match events.last() {
        Some(last) if truncated => event_revision(last),
        _ => revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn event(rev: i64, bytes: usize) -> Event {
        Event {
            kv: Some(KeyValue { mod_revision: rev, value: vec![0; bytes], ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn responses_are_cut_between_revisions_never_inside_one() {
        let events = vec![event(1, 400), event(2, 400), event(2, 400), event(3, 400), event(4, 2000)];
        let runs: Vec<Vec<i64>> =
            by_size(events, 1000).iter().map(|r| r.iter().map(event_revision).collect()).collect();
        // Revision 2's second event stays with its first although the run then passes the
        // limit; the cut comes before revision 3. Revision 4 alone is over the limit.
        assert_eq!(runs, vec![vec![1, 2, 2], vec![3], vec![4]]);
        assert!(by_size(Vec::new(), 1000).is_empty());
    }
}
