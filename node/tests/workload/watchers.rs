//! Watchers on every member, reconnecting as clientv3 does, and the deletes they pin.
//!
//! Each watcher is opened on its home member with a key range, a start revision (now, an older
//! revision, a revision ahead of the store), and options (`prev_kv`, a NOPUT or NODELETE filter,
//! server progress notifications or `RequestProgress`). When its stream breaks (the member was
//! killed or paused: gRPC keep-alive pings time out; cut off or leaderless: the `hasleader`
//! stream is ended; the member stopped: `server stopped`), it opens the watch again on the next
//! member (its home plus the number of breaks so far, skipping members marked down) from the
//! revision after the last one it was told about (an event's or a progress notification's), as
//! clientv3 does. Everything it sees is recorded as `kvcheck` [`StreamItem`]s with the member
//! that sent it, checked after the run by `check_watch_stream` and `check_members_agree`.
//!
//! [`Pins`]: deletes the server makes on its own (a lease expiring or revoked) are no client's
//! request, but they take revisions. Each key put with a lease gets an unknown-outcome delete in
//! the history, invoked before the put; the first watcher that sees the key deleted completes it
//! with the revision the server reported (a server response like any other), so the check
//! places it exactly there. A client that deletes such a key itself unpins it first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, WatchFilterType, WatchOptions, WatchResponse};
use kvcheck::{
    Change, ChangeKind, DbOp, DbOutcome, DbOutput, DbRecorder, EventFilter, KeyRange, PendingOp, Response,
    Revision, StreamItem, StreamSpec, WatchEvent,
};
use tokio::sync::{Notify, oneshot, watch};

use super::members::Members;
use super::requests::{REQUEST_TIMEOUT, key_value};

/// Client ids of pinned deletes start here (one id each: they overlap everything).
const PIN_CLIENTS: u64 = 100_000;

#[derive(Default)]
struct PinState {
    pending: HashMap<String, PendingOp>,
    /// When a watcher first saw each key deleted.
    deleted: HashMap<String, Instant>,
}

/// Unknown-outcome deletes of lease keys, completed by the first watcher that sees them happen.
/// Cloning shares the state.
#[derive(Clone)]
pub struct Pins {
    rec: DbRecorder,
    state: Arc<Mutex<PinState>>,
    next_client: Arc<AtomicU64>,
    changed: Arc<Notify>,
}

impl Pins {
    pub fn new(rec: DbRecorder) -> Self {
        Pins {
            rec,
            state: Arc::default(),
            next_client: Arc::new(AtomicU64::new(PIN_CLIENTS)),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the server may delete `key` from now on (call before putting it with a lease).
    pub fn expect_delete(&self, key: &str) {
        let client = self.next_client.fetch_add(1, Ordering::Relaxed);
        let pending = self.rec.invoke(client, DbOp::DeleteRange { range: KeyRange::single(key) });
        // A second put of the key (a retry) keeps the first pending delete.
        self.lock().pending.entry(key.to_string()).or_insert(pending);
    }

    /// A client is about to delete `key` itself: the delete to come is its request's, not the
    /// server's. The pending delete stays unknown.
    pub fn unpin(&self, key: &str) {
        // The pending delete is dropped: it stays in the history with an unknown outcome.
        let _unknown = self.lock().pending.remove(key);
    }

    /// A watcher saw `key` deleted at `revision`.
    fn saw_delete(&self, key: &str, revision: Revision) {
        let mut state = self.lock();
        state.deleted.entry(key.to_string()).or_insert_with(Instant::now);
        if let Some(pending) = state.pending.remove(key) {
            let out = DbOutput { revision, response: Response::DeleteRange { deleted: 1 } };
            self.rec.complete(pending, DbOutcome::Ok(out));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// When a watcher first saw `key` deleted.
    pub fn deleted_at(&self, key: &str) -> Option<Instant> {
        self.lock().deleted.get(key).copied()
    }

    /// Waits until a watcher has seen `key` deleted, up to `deadline`.
    pub async fn wait_deleted(&self, key: &str, deadline: Instant) -> Option<Instant> {
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self.deleted_at(key) {
                return Some(at);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Where a watcher starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// Revision 0: from the revision after the store's current one.
    Now,
    /// An explicit revision (older, or ahead of the store).
    At(Revision),
}

/// What one watcher asks for.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub name: String,
    pub home: usize,
    pub range: KeyRange,
    pub start: Start,
    pub prev_kv: bool,
    pub filter: Option<EventFilter>,
    /// Ask the server for periodic progress notifications.
    pub progress_notify: bool,
    /// Send `RequestProgress` every [`REQUEST_PROGRESS_EVERY`].
    pub request_progress: bool,
}

const REQUEST_PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// What a watcher recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub plan: WatchPlan,
    /// The start revision as resolved by the first created response.
    pub start_revision: Option<Revision>,
    pub items: Vec<StreamItem>,
    /// Revision through which it was told everything.
    pub delivered_through: Revision,
}

impl Recorded {
    /// The spec to check the stream against, complete through `through`.
    pub fn spec(&self, through: Revision) -> Option<StreamSpec> {
        Some(StreamSpec {
            range: self.plan.range.clone(),
            start_revision: self.start_revision?,
            prev_kv: self.plan.prev_kv,
            filter: self.plan.filter,
            complete_through: Some(through),
        })
    }

    /// The stream without what came after `through` (the end of the checked history).
    pub fn items_through(&self, through: Revision) -> Vec<StreamItem> {
        self.items
            .iter()
            .filter_map(|item| match item {
                StreamItem::Events { member, events } => {
                    let events: Vec<WatchEvent> =
                        events.iter().filter(|e| e.change.kv.mod_revision <= through).cloned().collect();
                    (!events.is_empty()).then_some(StreamItem::Events { member: *member, events })
                }
                StreamItem::Progress { revision, .. } if *revision > through => None,
                StreamItem::Start { start_revision, .. } if *start_revision > through + 1 => None,
                other => Some(other.clone()),
            })
            .collect()
    }
}

/// A running watcher.
pub struct Watcher {
    task: tokio::task::JoinHandle<Recorded>,
}

/// Tells running watchers to finish once they have been told everything through a revision.
pub type Finish = watch::Sender<Option<Revision>>;

impl Watcher {
    /// Starts `plan`; `created` fires once the first watch is created.
    pub fn spawn(
        plan: WatchPlan,
        members: Members,
        pins: Pins,
        finish: watch::Receiver<Option<Revision>>,
        created: oneshot::Sender<()>,
    ) -> Self {
        Watcher { task: tokio::spawn(run(plan, members, pins, finish, created)) }
    }

    pub async fn join(self) -> Recorded {
        self.task.await.expect("watcher task panicked")
    }
}

fn watch_options(plan: &WatchPlan, start: Revision) -> (String, WatchOptions) {
    let range = &plan.range;
    let mut options = WatchOptions::new().with_start_revision(start);
    let key = match range.range_end.as_deref() {
        None => range.key.clone(),
        Some("\0") => {
            options = options.with_from_key();
            if range.key.is_empty() { "\0".to_string() } else { range.key.clone() }
        }
        Some(end) => {
            options = options.with_range(end);
            range.key.clone()
        }
    };
    if plan.prev_kv {
        options = options.with_prev_key();
    }
    if plan.progress_notify {
        options = options.with_progress_notify();
    }
    match plan.filter {
        Some(EventFilter::NoPut) => options = options.with_filters([WatchFilterType::NoPut]),
        Some(EventFilter::NoDelete) => options = options.with_filters([WatchFilterType::NoDelete]),
        None => {}
    }
    (key, options)
}

async fn connect_watch(endpoint: &str) -> Option<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_keep_alive(Duration::from_millis(300), Duration::from_millis(700))
        .with_require_leader(true);
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([endpoint], Some(opts))).await.ok()?.ok()
}

fn event(e: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = key_value(e.kv()?);
    let kind = match e.event_type() {
        EventType::Put => ChangeKind::Put,
        EventType::Delete => ChangeKind::Delete,
    };
    Some(WatchEvent { change: Change { kind, kv }, prev_kv: e.prev_kv().map(key_value) })
}

struct State {
    plan: WatchPlan,
    start_revision: Option<Revision>,
    items: Vec<StreamItem>,
    delivered_through: Revision,
}

impl State {
    fn next_start(&self) -> Revision {
        match (self.start_revision, self.plan.start) {
            (Some(_), _) => self.delivered_through + 1,
            (None, Start::Now) => 0,
            (None, Start::At(r)) => r,
        }
    }

    /// Handles one response; false when the watch ended (canceled).
    fn on_response(&mut self, member: usize, r: &WatchResponse, pins: &Pins) -> bool {
        let header = r.header().map_or(0, |h| h.revision());
        if r.canceled() {
            // A refusal (created and canceled at once: no leader, say) or a cancel; only a
            // compaction changes where the watcher resumes.
            if r.compact_revision() > 0 {
                let compact_revision = r.compact_revision();
                self.items.push(StreamItem::Compacted { member, compact_revision });
                self.delivered_through = self.delivered_through.max(compact_revision - 1);
            }
            return false;
        }
        if r.created() {
            let start = match self.next_start() {
                0 => header + 1,
                s => s,
            };
            if self.start_revision.is_none() {
                self.start_revision = Some(start);
                self.delivered_through = start - 1;
            }
            self.items.push(StreamItem::Start { member, start_revision: start });
            return true;
        }
        let events: Vec<WatchEvent> = r.events().iter().filter_map(event).collect();
        if events.is_empty() {
            self.items.push(StreamItem::Progress { member, revision: header });
            self.delivered_through = self.delivered_through.max(header);
            return true;
        }
        for e in &events {
            if e.change.kind == ChangeKind::Delete {
                pins.saw_delete(&e.change.kv.key, e.change.kv.mod_revision);
            }
            self.delivered_through = self.delivered_through.max(e.change.kv.mod_revision);
        }
        self.items.push(StreamItem::Events { member, events });
        true
    }
}

async fn run(
    plan: WatchPlan,
    members: Members,
    pins: Pins,
    mut finish: watch::Receiver<Option<Revision>>,
    created: oneshot::Sender<()>,
) -> Recorded {
    let mut created = Some(created);
    let mut state = State { plan, start_revision: None, items: Vec::new(), delivered_through: 0 };
    let mut breaks = 0usize;
    let done = |state: &State, finish: &watch::Receiver<Option<Revision>>| {
        finish
            .borrow()
            .is_some_and(|through| state.start_revision.is_some() && state.delivered_through >= through)
    };
    'reconnect: while !done(&state, &finish) {
        let member = members.route((state.plan.home + breaks) % members.len());
        breaks += 1;
        let Some(mut client) = connect_watch(members.endpoint(member)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (key, options) = watch_options(&state.plan, state.next_start());
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(REQUEST_TIMEOUT, client.watch(key, Some(options))).await
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut tick = tokio::time::interval(REQUEST_PROGRESS_EVERY);
        let mut is_created = false;
        loop {
            tokio::select! {
                message = stream.message() => {
                    let Ok(Some(r)) = message else { continue 'reconnect };
                    is_created |= r.created() && !r.canceled();
                    if !state.on_response(member, &r, &pins) {
                        continue 'reconnect;
                    }
                    if is_created && let Some(tx) = created.take() {
                        let _ = tx.send(());
                    }
                }
                _ = tick.tick() => {
                    let finishing = finish.borrow().is_some();
                    if is_created && (state.plan.request_progress || finishing)
                        && !matches!(
                            tokio::time::timeout(Duration::from_secs(1), stream.request_progress()).await,
                            Ok(Ok(()))
                        )
                    {
                        continue 'reconnect;
                    }
                }
                _ = finish.changed() => {}
            }
            if done(&state, &finish) {
                break 'reconnect;
            }
        }
    }
    let State { plan, start_revision, items, delivered_through } = state;
    Recorded { plan, start_revision, items, delivered_through }
}

/// The watchers of a run: four per member (see the module docs), over the workload's keys
/// (`[k, l)`) and the lease and lock keys (`[l, m)`); `revision` is the store's revision now,
/// from which the older and future start revisions are taken.
pub fn plans(members: usize, revision: Revision) -> Vec<WatchPlan> {
    let workload = KeyRange::between("k", "l");
    let mut plans = Vec::new();
    for home in 0..members {
        plans.push(WatchPlan {
            name: format!("w{home}-all-now"),
            home,
            range: KeyRange::from_key(""),
            start: Start::Now,
            prev_kv: true,
            filter: None,
            progress_notify: true,
            request_progress: false,
        });
        plans.push(WatchPlan {
            name: format!("w{home}-kv-older-nodelete"),
            home,
            range: workload.clone(),
            start: Start::At((revision / 2).max(1)),
            prev_kv: false,
            filter: Some(EventFilter::NoDelete),
            progress_notify: false,
            request_progress: true,
        });
        plans.push(WatchPlan {
            name: format!("w{home}-kv-future-noput"),
            home,
            range: workload.clone(),
            start: Start::At(revision + 200),
            prev_kv: true,
            filter: Some(EventFilter::NoPut),
            progress_notify: false,
            request_progress: false,
        });
        plans.push(WatchPlan {
            name: format!("w{home}-lease-lock"),
            home,
            range: KeyRange::between("l", "m"),
            start: Start::Now,
            prev_kv: true,
            filter: None,
            progress_notify: false,
            request_progress: true,
        });
    }
    plans
}
