//! The replicated state machine: an MVCC key space with etcd's semantics (global revision,
//! per-key create/mod revision and version, history, compaction), plus the membership table.
//!
//! Every apply writes the applied index in the same redb transaction as the state change, so
//! after a crash an entry is either fully applied (and its index recorded) or not at all, and
//! replaying the log from the recorded index applies each entry exactly once.

mod alarm;
mod compact;
mod effects;
mod hash;
mod keys;
mod lease;
mod range;
mod slot;
pub mod validate;
mod write;

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::proto::etcdserverpb::{
    AlarmMember, AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, RangeRequest, RangeResponse, TxnResponse,
};
use crate::proto::kvserverpb::{InternalRequest, LeaseRecord, Member, SnapshotData, internal_request};
use crate::proto::mvccpb;
use crate::proto::raftpb::{ConfState, SnapshotMetadata};

use super::error::{KvError, StoreError};
use super::snapshot;
use super::tables::{
    ALARMS, CONF_STATE, KEY_REVS, KV, LEASE_KEYS, LEASES, MEMBERS, MEMBERSHIP, META, META_APPLIED_INDEX,
    META_CLUSTER_ID, META_INSTALLED_SNAPSHOT_INDEX, META_INSTALLED_SNAPSHOT_TERM, META_LOCAL_MEMBER_ID,
    META_REVISION, REVS, get_compact_rev, get_msg, get_rev, get_u64, put_msg,
};
use keys::{KeyRange, event_kv};
use range::ReadView;
use write::Writer;

use alarm::AlarmState;
pub use effects::ActiveAlarms;
pub use effects::LeaseChange;
pub use hash::KvHash;
pub use lease::AttachedKeys;
pub(crate) use slot::DbSlot;

/// What one log entry asks of the state machine.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// A client write (ENTRY_NORMAL with data).
    Request(&'a InternalRequest),
    /// An entry with nothing to apply (the leader's empty entry at the start of its term).
    Noop,
    /// An applied membership change: the core's resulting membership, and the member record
    /// to store or remove.
    ConfChange { conf_state: &'a ConfState, change: &'a MemberChange },
}

/// How an applied membership change alters the membership table.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberChange {
    /// Leaves the table as is (e.g. a change refused by the core).
    None,
    /// Adds the member, or replaces the record with the same id (promotion). Empty name or URL
    /// fields keep the stored record's values, so a promotion does not erase what the member
    /// published.
    Upsert(Member),
    /// Removes the member with this id.
    Remove(u64),
}

/// The result of applying one entry.
#[derive(Debug)]
pub struct ApplyResult {
    /// The entry's log index.
    pub index: u64,
    /// `InternalRequest::id` of the entry (0 for entries that are not requests).
    pub request_id: u64,
    /// The key space's revision after the entry.
    pub revision: i64,
    pub outcome: Outcome,
}

/// What applying an entry did. Response headers carry only the revision; the server fills in
/// cluster id, member id and Raft term.
#[derive(Debug)]
pub enum Outcome {
    /// The entry's index was already applied before (replay after a restart): nothing done.
    AlreadyApplied,
    /// A no-op, an empty request or a membership change: only the applied index moved.
    Applied,
    /// A Put was applied (at `ApplyResult::revision`).
    Put(PutResponse),
    /// A DeleteRange was applied (a new revision only if something was deleted).
    DeleteRange(DeleteRangeResponse),
    /// A Txn was applied (a new revision only if one of its operations wrote).
    Txn(TxnResponse),
    /// History was compacted; the revision does not change.
    Compaction(CompactionResponse),
    /// A lease was granted (the revision does not change).
    LeaseGrant(LeaseGrantResponse),
    /// A lease was revoked, its keys deleted at one new revision (if it had any).
    LeaseRevoke(LeaseRevokeResponse),
    /// An alarm request was applied: the alarms it raised or cleared (all of them for GET).
    Alarm(AlarmResponse),
    /// The request was refused (with etcd's reason); the state is unchanged but the entry
    /// counts as applied.
    Rejected(KvError),
}

/// A batch of changes read from the history, for watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// Events in (revision, position in revision) order. For a deletion, `kv` holds the key and
    /// the deleting revision (`mod_revision`) only.
    pub events: Vec<mvccpb::Event>,
    /// The key space's current revision when the batch was read; a watcher is caught up to it
    /// when `events` ends with no more to read.
    pub revision: i64,
    /// `true` when the batch stopped at `max_events`; read again from the next revision.
    pub truncated: bool,
}

/// A snapshot installation's point as recorded in the key space, and its applied index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InstalledPoint {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) applied: u64,
}

/// The state machine over the member's state-machine database. Cheap to clone; reads may run
/// on any thread concurrently with apply (redb's snapshot-isolated read transactions).
#[derive(Debug, Clone)]
pub struct KvStore {
    db: Arc<DbSlot>,
    /// The applied index as of the last durable commit: the log must keep every entry above
    /// it, because a crash takes the state machine back to it. A watch channel, so that what
    /// needs the key space durable up to a point (a measure of the pages in use) can wait for
    /// the Raft loop's sync instead of syncing itself.
    durable_applied: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where lease changes go once applied (the lessor), if anyone listens.
    lease_feed: Arc<Mutex<Option<mpsc::UnboundedSender<LeaseChange>>>>,
    /// The alarm kinds raised as of the last committed apply.
    alarm_state: Arc<AlarmState>,
}

impl KvStore {
    /// Wraps an open database. Whatever it holds on open is durable (redb recovers to its last
    /// durable commit), so that is where the durable applied index starts.
    pub(crate) fn new(db: Database) -> Result<Self, StoreError> {
        let applied = {
            let txn = db.begin_read()?;
            get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?
        };
        let store = KvStore {
            db: Arc::new(DbSlot::new(db)),
            durable_applied: Arc::new(tokio::sync::watch::Sender::new(applied)),
            lease_feed: Arc::default(),
            alarm_state: Arc::default(),
        };
        store.alarm_state.set(ActiveAlarms::of(&store.alarms()?));
        Ok(store)
    }

    /// Every raised alarm, as of the last committed apply.
    pub fn alarms(&self) -> Result<Vec<AlarmMember>, StoreError> {
        let txn = self.db.read()?;
        let mut out = Vec::new();
        for item in txn.open_table(ALARMS)?.iter()? {
            let (member_id, alarm) = item?.0.value();
            out.push(AlarmMember { member_id, alarm });
        }
        Ok(out)
    }

    /// The alarm kinds raised, without reading the database (for every read request).
    pub fn active_alarms(&self) -> ActiveAlarms {
        self.alarm_state.get()
    }

    /// Makes every earlier apply durable (one fsync of the state-machine database) and returns
    /// the applied index that is now durable. The Raft loop calls it every so often and before
    /// compacting the log past the previous durable point.
    pub fn sync(&self) -> Result<u64, StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::Immediate)?;
        let applied = get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?;
        txn.commit()?;
        self.note_durable(applied);
        Ok(applied)
    }

    /// The applied index as of the last durable commit of the state machine.
    pub fn durable_applied_index(&self) -> u64 {
        *self.durable_applied.borrow()
    }

    /// Waits until the key space is durable at least up to applied index `index`.
    pub async fn durable_up_to(&self, index: u64) {
        let mut updates = self.durable_applied.subscribe();
        // The sender lives as long as this store, so the wait only ends by reaching `index`.
        let _ = updates.wait_for(|durable| *durable >= index).await;
    }

    /// Whether a defragmentation is rewriting the database now: writes wait for it, so the
    /// Raft loop keeps committed entries queued meanwhile rather than wait with them.
    pub fn defragmenting(&self) -> bool {
        self.db.replacing()
    }

    /// The database slot, for the storage modules that read or write it whole (backups,
    /// defragmentation).
    pub(crate) fn slot(&self) -> &DbSlot {
        &self.db
    }

    pub(crate) fn note_durable(&self, applied: u64) {
        self.durable_applied.send_if_modified(|durable| {
            let advanced = applied > *durable;
            *durable = (*durable).max(applied);
            advanced
        });
    }

    /// Where a snapshot installation recorded its point (index, term; 0 if none) and the
    /// applied index: what the log must be made to match when the store opens.
    pub(crate) fn installed_snapshot_point(&self) -> Result<InstalledPoint, StoreError> {
        let txn = self.db.read()?;
        let meta = txn.open_table(META)?;
        Ok(InstalledPoint {
            index: get_u64(&meta, META_INSTALLED_SNAPSHOT_INDEX)?,
            term: get_u64(&meta, META_INSTALLED_SNAPSHOT_TERM)?,
            applied: get_u64(&meta, META_APPLIED_INDEX)?,
        })
    }

    /// The key-space half of a snapshot installation, durably: the state is replaced by the
    /// snapshot's, with its membership and its point recorded, so that the log half can be
    /// redone after a crash.
    pub(crate) fn install_snapshot(
        &self,
        meta: &SnapshotMetadata,
        data: &SnapshotData,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let applied = get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?;
            if meta.index <= applied {
                return Err(StoreError::SnapshotOutOfDate { snapshot: meta.index, applied });
            }
            snapshot::restore(&txn, data)?;
            let mut m = txn.open_table(META)?;
            m.insert(META_INSTALLED_SNAPSHOT_INDEX, meta.index)?;
            m.insert(META_INSTALLED_SNAPSHOT_TERM, meta.term)?;
            put_msg(
                &mut txn.open_table(MEMBERSHIP)?,
                CONF_STATE,
                &meta.conf_state.clone().unwrap_or_default(),
            )?;
        }
        txn.commit()?;
        self.note_durable(meta.index);
        self.alarm_state.set(ActiveAlarms::of(&data.alarms));
        self.tell_lessor(vec![LeaseChange::Reset]);
        Ok(())
    }

    /// The whole state machine and its membership, from one read transaction (a consistent
    /// point), for a Raft snapshot.
    pub(crate) fn snapshot_data(&self) -> Result<(SnapshotData, ConfState), StoreError> {
        let txn = self.db.read()?;
        let data = snapshot::build(&txn)?;
        let conf_state = get_msg(&txn.open_table(MEMBERSHIP)?, CONF_STATE)?;
        Ok((data, conf_state))
    }

    /// The membership as of the applied index.
    pub fn conf_state(&self) -> Result<ConfState, StoreError> {
        let txn = self.db.read()?;
        get_msg(&txn.open_table(MEMBERSHIP)?, CONF_STATE)
    }

    /// Records the initial membership of a new cluster (before any entry is applied), durably.
    pub fn bootstrap_conf_state(&self, conf_state: &ConfState) -> Result<(), StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::Immediate)?;
        let applied = get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?;
        put_msg(&mut txn.open_table(MEMBERSHIP)?, CONF_STATE, conf_state)?;
        txn.commit()?;
        self.note_durable(applied);
        Ok(())
    }

    /// Makes `member_id` the only member, in the membership table and the applied Raft
    /// configuration, durably; returns the members removed (`--force-new-cluster`).
    pub fn force_single_member(&self, member_id: u64) -> Result<Vec<u64>, StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::Immediate)?;
        let applied = get_u64(&txn.open_table(META)?, META_APPLIED_INDEX)?;
        let mut removed = Vec::new();
        {
            let mut members = txn.open_table(MEMBERS)?;
            for item in members.iter()? {
                let id = item?.0.value();
                if id != member_id {
                    removed.push(id);
                }
            }
            for id in &removed {
                members.remove(id)?;
            }
            let alone = ConfState { voters: vec![member_id], learners: Vec::new() };
            put_msg(&mut txn.open_table(MEMBERSHIP)?, CONF_STATE, &alone)?;
        }
        txn.commit()?;
        self.note_durable(applied);
        Ok(removed)
    }

    /// Serves a Range request from the applied state (the caller has made the read
    /// linearizable if it had to).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        validate::check_range(req)?;
        let txn = self.db.read()?;
        let meta = txn.open_table(META)?;
        let (kv, key_revs, revs) = (txn.open_table(KV)?, txn.open_table(KEY_REVS)?, txn.open_table(REVS)?);
        let view = ReadView {
            kv: &kv,
            key_revs: &key_revs,
            revs: &revs,
            revision: get_rev(&meta, META_REVISION)?,
            compact_revision: get_compact_rev(&meta)?,
        };
        range::range(&view, req)
    }

    /// Index of the last applied log entry (etcd's "consistent index").
    pub fn applied_index(&self) -> Result<u64, StoreError> {
        self.read_meta(META_APPLIED_INDEX)
    }

    /// The key space's current revision (1 for an empty store, as in etcd).
    pub fn current_revision(&self) -> Result<i64, StoreError> {
        Ok(self.read_meta(META_REVISION)?.cast_signed())
    }

    /// The revision history was last compacted at (-1 if never, as etcd reports it).
    pub fn compact_revision(&self) -> Result<i64, StoreError> {
        let txn = self.db.read()?;
        get_compact_rev(&txn.open_table(META)?)
    }

    /// The cluster id recorded at bootstrap (0 until then).
    pub fn cluster_id(&self) -> Result<u64, StoreError> {
        self.read_meta(META_CLUSTER_ID)
    }

    /// Records the cluster id, durably. Called once when a new cluster is bootstrapped; it is
    /// part of the snapshot so members that join later learn it.
    pub fn set_cluster_id(&self, id: u64) -> Result<(), StoreError> {
        let txn = self.db.write()?;
        txn.open_table(META)?.insert(META_CLUSTER_ID, id)?;
        txn.commit()?;
        Ok(())
    }

    /// This member's own id (0 until it was bootstrapped or joined).
    pub fn local_member_id(&self) -> Result<u64, StoreError> {
        self.read_meta(META_LOCAL_MEMBER_ID)
    }

    /// Records this member's id and its cluster's id, durably, before it first starts Raft.
    pub fn set_identity(&self, member_id: u64, cluster_id: u64) -> Result<(), StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_LOCAL_MEMBER_ID, member_id)?;
            meta.insert(META_CLUSTER_ID, cluster_id)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn read_meta(&self, key: &str) -> Result<u64, StoreError> {
        let txn = self.db.read()?;
        get_u64(&txn.open_table(META)?, key)
    }

    /// The membership table, ordered by member id.
    pub fn members(&self) -> Result<Vec<Member>, StoreError> {
        let txn = self.db.read()?;
        let mut out = Vec::new();
        for item in txn.open_table(MEMBERS)?.iter()? {
            let (_, v) = item?;
            out.push(Member::decode(v.value()).map_err(|e| StoreError::decode("members", e))?);
        }
        Ok(out)
    }

    /// Applies one client request at log index `index`.
    pub fn apply(&self, index: u64, req: &InternalRequest) -> Result<ApplyResult, StoreError> {
        self.apply_one(index, Command::Request(req))
    }

    /// Applies an entry with nothing to do: only the applied index moves.
    pub fn apply_noop(&self, index: u64) -> Result<ApplyResult, StoreError> {
        self.apply_one(index, Command::Noop)
    }

    /// Applies a membership change: the new Raft membership and the member table change, with
    /// the applied index, in one transaction.
    pub fn apply_conf_change(
        &self,
        index: u64,
        conf_state: &ConfState,
        change: &MemberChange,
    ) -> Result<ApplyResult, StoreError> {
        self.apply_one(index, Command::ConfChange { conf_state, change })
    }

    fn apply_one(&self, index: u64, cmd: Command<'_>) -> Result<ApplyResult, StoreError> {
        let mut results = self.apply_batch(&[(index, cmd)])?;
        results.pop().ok_or_else(|| StoreError::Engine("apply produced no result".into()))
    }

    /// Applies consecutive log entries in one write transaction (one commit for all the
    /// committed entries of a Ready). Entries at or below the applied index are skipped
    /// (`Outcome::AlreadyApplied`); the first new one must directly follow it.
    ///
    /// Durability: the transaction commits with [`Durability::None`] (no fsync). That is safe
    /// because the entries stay in the Raft log (fsynced by `persist`) until a durable commit of
    /// this database ([`KvStore::sync`]) covers them, and redb commits are ordered: a crash
    /// loses at most a suffix of these commits, the applied index comes back with the state it
    /// belongs to, and replay re-applies exactly the lost entries. Writes thus cost one flush
    /// of the WAL, not of the key space.
    pub fn apply_batch(&self, cmds: &[(u64, Command<'_>)]) -> Result<Vec<ApplyResult>, StoreError> {
        let mut txn = self.db.write()?;
        txn.set_durability(Durability::None)?;
        let mut results = Vec::with_capacity(cmds.len());
        let (lease_changes, alarms);
        {
            let mut w = Writer::open(&txn)?;
            for &(index, cmd) in cmds {
                if index <= w.applied_index {
                    results.push(ApplyResult {
                        index,
                        request_id: request_id(cmd),
                        revision: w.revision,
                        outcome: Outcome::AlreadyApplied,
                    });
                    continue;
                }
                if index != w.applied_index + 1 {
                    return Err(StoreError::ApplyOutOfOrder { expected: w.applied_index + 1, got: index });
                }
                let outcome = match cmd {
                    Command::Request(req) => match &req.request {
                        Some(internal_request::Request::MemberAttributes(a)) => {
                            update_member(&txn, a.id, |m| {
                                m.name.clone_from(&a.name);
                                m.client_urls.clone_from(&a.client_urls);
                            })?;
                            Outcome::Applied
                        }
                        Some(internal_request::Request::MemberPeerUpdate(u)) => {
                            update_member(&txn, u.id, |m| m.peer_urls.clone_from(&u.peer_urls))?;
                            Outcome::Applied
                        }
                        _ => apply_request(&mut w, req)?,
                    },
                    Command::Noop => Outcome::Applied,
                    Command::ConfChange { conf_state, change } => {
                        apply_member_change(&txn, conf_state, change)?;
                        Outcome::Applied
                    }
                };
                let revision = w.finish_request();
                w.applied_index = index;
                results.push(ApplyResult { index, request_id: request_id(cmd), revision, outcome });
            }
            w.save_meta()?;
            lease_changes = std::mem::take(&mut w.lease_changes);
            alarms = w.active_alarms;
        }
        txn.commit()?;
        self.alarm_state.set(alarms);
        self.tell_lessor(lease_changes);
        Ok(results)
    }

    /// Sends what applied entries did to the leases to the lessor, once they are committed.
    pub(crate) fn tell_lessor(&self, changes: Vec<LeaseChange>) {
        if changes.is_empty() {
            return;
        }
        let mut feed = self.lease_feed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = feed.as_ref() {
            for change in changes {
                if tx.send(change).is_err() {
                    *feed = None;
                    return;
                }
            }
        }
    }

    /// From now on, every lease granted, revoked or checkpointed by an apply (and a table
    /// replaced by a snapshot) is told on the returned channel. One listener at a time.
    pub fn watch_leases(&self) -> mpsc::UnboundedReceiver<LeaseChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.lease_feed.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        rx
    }

    /// Every lease, by id.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        let txn = self.db.read()?;
        let mut out = Vec::new();
        for item in txn.open_table(LEASES)?.iter()? {
            out.push(lease::decode_lease(item?.1.value())?);
        }
        Ok(out)
    }

    /// One lease and, with `keys`, the keys attached to it (in key order).
    pub fn lease(&self, id: i64, keys: bool) -> Result<Option<AttachedKeys>, StoreError> {
        let txn = self.db.read()?;
        let Some(stored) = txn.open_table(LEASES)?.get(id)? else { return Ok(None) };
        let record = lease::decode_lease(stored.value())?;
        let mut attached = Vec::new();
        if keys {
            for item in txn.open_table(LEASE_KEYS)?.range((id, &[][..])..)? {
                let (k, _) = item?;
                let (lease, key) = k.value();
                if lease != id {
                    break;
                }
                attached.push(key.to_vec());
            }
        }
        Ok(Some(AttachedKeys { record, keys: attached }))
    }

    /// Reads the history from `start_revision` on, whole revisions at a time, stopping once
    /// at least `max_events` events are gathered. With `prev_kv`, each event carries the key's
    /// previous version when history still has it. Fails with `Compacted` when
    /// `start_revision` is below the compaction revision.
    pub fn changes_since(
        &self,
        start_revision: i64,
        max_events: usize,
        prev_kv: bool,
    ) -> Result<Changes, KvError> {
        let txn = self.db.read()?;
        let meta = txn.open_table(META)?;
        let revision = get_rev(&meta, META_REVISION)?;
        let compact_revision = get_compact_rev(&meta)?;
        if start_revision < compact_revision {
            return Err(KvError::Compacted { compact_revision });
        }
        let (revs, key_revs) = (txn.open_table(REVS)?, txn.open_table(KEY_REVS)?);
        let mut events = Vec::new();
        let mut truncated = false;
        let mut last_rev = None;
        for item in revs.range((start_revision, i64::MIN)..)? {
            let (k, v) = item?;
            let (rev, sub) = k.value();
            if events.len() >= max_events && last_rev != Some(rev) {
                truncated = true;
                break;
            }
            last_rev = Some(rev);
            let mut ev = super::codec::decode_event(v.value())?;
            if prev_kv {
                let key = ev.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
                let before = key_revs.range((key, i64::MIN, i64::MIN)..(key, rev, sub))?.next_back();
                if let Some(item) = before {
                    let (_, r, s) = item?.0.value();
                    ev.prev_kv = event_kv(&revs, r, s)?;
                }
            }
            events.push(ev);
        }
        Ok(Changes { events, revision, truncated })
    }

    /// Number of keys currently live in `[key, range_end)` (etcd's range convention); a cheap
    /// helper for the server's quota and status reporting.
    pub fn count(&self, key: &[u8], range_end: &[u8]) -> Result<u64, StoreError> {
        let txn = self.db.read()?;
        let kv = txn.open_table(KV)?;
        let mut n = 0;
        keys::scan_current(&kv, KeyRange::new(key, range_end), |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }
}

fn request_id(cmd: Command<'_>) -> u64 {
    match cmd {
        Command::Request(r) => r.id,
        _ => 0,
    }
}

/// Applies one client request; a refusal is an outcome, a store failure is an error.
fn apply_request(w: &mut Writer<'_>, req: &InternalRequest) -> Result<Outcome, StoreError> {
    use internal_request::Request;
    let Some(request) = &req.request else { return Ok(Outcome::Applied) };
    if let Some(refused) = w.active_alarms.refusal(request) {
        return Ok(Outcome::Rejected(refused));
    }
    let result = match &req.request {
        None => return Ok(Outcome::Applied),
        Some(Request::Alarm(a)) => return w.alarm(a).map(Outcome::Alarm),
        Some(Request::Put(p)) => w.put(p).map(Outcome::Put),
        Some(Request::DeleteRange(d)) => w.delete_range(d).map(Outcome::DeleteRange),
        Some(Request::Txn(t)) => w.txn(t).map(Outcome::Txn),
        Some(Request::Compaction(c)) => w.compact(c.revision).map(Outcome::Compaction),
        Some(Request::LeaseGrant(g)) => w.lease_grant(g).map(Outcome::LeaseGrant),
        Some(Request::LeaseRevoke(r)) => w.lease_revoke(r).map(Outcome::LeaseRevoke),
        Some(Request::LeaseCheckpoint(c)) => return w.lease_checkpoint(c).map(|()| Outcome::Applied),
        // Membership records are applied by `apply_batch` directly (they touch no key).
        Some(Request::MemberAttributes(_) | Request::MemberPeerUpdate(_)) => return Ok(Outcome::Applied),
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err(KvError::Store(e)) => Err(e),
        // Every refusal is decided before the first write of a request; one after it would
        // leave a half-applied request, so the whole batch is abandoned instead.
        Err(refused) if w.has_pending_changes() => {
            Err(StoreError::Engine(format!("request refused after partial write: {refused}")))
        }
        Err(refused) => Ok(Outcome::Rejected(refused)),
    }
}

/// Changes the stored record of member `id`; a member no longer in the table is left out
/// (its removal was applied first, on every member alike).
fn update_member(
    txn: &redb::WriteTransaction,
    id: u64,
    change: impl FnOnce(&mut Member),
) -> Result<(), StoreError> {
    let mut members = txn.open_table(MEMBERS)?;
    let current = match members.get(id)? {
        Some(v) => Member::decode(v.value()).map_err(|e| StoreError::decode("members", e))?,
        None => return Ok(()),
    };
    let mut updated = current;
    change(&mut updated);
    members.insert(id, updated.encode_to_vec().as_slice())?;
    Ok(())
}

fn apply_member_change(
    txn: &redb::WriteTransaction,
    conf_state: &ConfState,
    change: &MemberChange,
) -> Result<(), StoreError> {
    put_msg(&mut txn.open_table(MEMBERSHIP)?, CONF_STATE, conf_state)?;
    let mut members = txn.open_table(MEMBERS)?;
    match change {
        MemberChange::None => {}
        MemberChange::Upsert(m) => {
            let mut record = m.clone();
            if let Some(old) = members.get(m.id)? {
                let old = Member::decode(old.value()).map_err(|e| StoreError::decode("members", e))?;
                if record.name.is_empty() {
                    record.name = old.name;
                }
                if record.client_urls.is_empty() {
                    record.client_urls = old.client_urls;
                }
                if record.peer_urls.is_empty() {
                    record.peer_urls = old.peer_urls;
                }
            }
            members.insert(m.id, record.encode_to_vec().as_slice())?;
        }
        MemberChange::Remove(id) => {
            members.remove(*id)?;
        }
    }
    Ok(())
}
