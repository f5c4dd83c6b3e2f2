//! The state machine as one message (`kvserverpb::SnapshotData`): built from one read
//! transaction for a Raft snapshot, restored in one write transaction on installation.

use prost::Message;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::proto::etcdserverpb::AlarmMember;
use crate::proto::kvserverpb::{HistoryEntry, LeaseRecord, Member, SnapshotData};
use crate::proto::mvccpb::event::EventType;

use super::codec::{KvRef, decode_event};
use super::error::StoreError;
use super::tables::{
    ALARMS, KEY_REVS, KV, LEASE_KEYS, LEASES, MEMBERS, META, META_APPLIED_INDEX, META_CLUSTER_ID,
    META_COMPACT_REVISION, META_REVISION, REVS, get_compact_rev, get_rev, get_u64, set_rev,
};

/// Reads the whole state machine as of the transaction. Tables are read in key order, so
/// equal states give equal bytes.
pub(crate) fn build(txn: &ReadTransaction) -> Result<SnapshotData, StoreError> {
    let meta = txn.open_table(META)?;
    let mut data = SnapshotData {
        applied_index: get_u64(&meta, META_APPLIED_INDEX)?,
        revision: get_rev(&meta, META_REVISION)?,
        compact_revision: get_compact_rev(&meta)?,
        cluster_id: get_u64(&meta, META_CLUSTER_ID)?,
        ..Default::default()
    };
    for item in txn.open_table(MEMBERS)?.iter()? {
        let (_, v) = item?;
        data.members.push(Member::decode(v.value()).map_err(|e| StoreError::decode("members", e))?);
    }
    for item in txn.open_table(REVS)?.iter()? {
        let (k, v) = item?;
        let (revision, sub) = k.value();
        data.history.push(HistoryEntry { revision, sub, event: Some(decode_event(v.value())?) });
    }
    for item in txn.open_table(LEASES)?.iter()? {
        data.leases.push(LeaseRecord::decode(item?.1.value()).map_err(|e| StoreError::decode("leases", e))?);
    }
    for item in txn.open_table(ALARMS)?.iter()? {
        let (member_id, alarm) = item?.0.value();
        data.alarms.push(AlarmMember { member_id, alarm });
    }
    Ok(data)
}

/// Replaces the state machine with `data`: members, revisions, history, and the current
/// values rebuilt from the history (the latest record of each key).
pub(crate) fn restore(txn: &WriteTransaction, data: &SnapshotData) -> Result<(), StoreError> {
    txn.delete_table(KV)?;
    txn.delete_table(REVS)?;
    txn.delete_table(KEY_REVS)?;
    txn.delete_table(MEMBERS)?;
    txn.delete_table(LEASES)?;
    txn.delete_table(LEASE_KEYS)?;
    txn.delete_table(ALARMS)?;
    let mut alarms = txn.open_table(ALARMS)?;
    for a in &data.alarms {
        alarms.insert((a.member_id, a.alarm), ())?;
    }
    let mut meta = txn.open_table(META)?;
    meta.insert(META_APPLIED_INDEX, data.applied_index)?;
    meta.insert(META_CLUSTER_ID, data.cluster_id)?;
    set_rev(&mut meta, META_REVISION, data.revision)?;
    set_rev(&mut meta, META_COMPACT_REVISION, data.compact_revision)?;
    let mut members = txn.open_table(MEMBERS)?;
    for m in &data.members {
        members.insert(m.id, m.encode_to_vec().as_slice())?;
    }
    let mut leases = txn.open_table(LEASES)?;
    for l in &data.leases {
        leases.insert(l.id, l.encode_to_vec().as_slice())?;
    }
    let mut history = HistoryRestorer::open(txn)?;
    for h in &data.history {
        history.restore(h)?;
    }
    Ok(())
}

/// Rebuilds the key space from history entries given in (revision, sub) order: each goes into
/// the history tables, and the latest entry of each key becomes its current record (with its
/// lease attachment). Shared by snapshot installation and backup restore.
pub(crate) struct HistoryRestorer<'t> {
    kv: redb::Table<'t, &'static [u8], &'static [u8]>,
    revs: redb::Table<'t, (i64, i64), &'static [u8]>,
    key_revs: redb::Table<'t, (&'static [u8], i64, i64), ()>,
    lease_keys: redb::Table<'t, (i64, &'static [u8]), ()>,
    buf: Vec<u8>,
}

impl<'t> HistoryRestorer<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            kv: txn.open_table(KV)?,
            revs: txn.open_table(REVS)?,
            key_revs: txn.open_table(KEY_REVS)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            buf: Vec::new(),
        })
    }

    pub(crate) fn restore(&mut self, h: &HistoryEntry) -> Result<(), StoreError> {
        let ev = h
            .event
            .as_ref()
            .ok_or_else(|| StoreError::InvalidSnapshot("history entry without event".into()))?;
        let stored =
            ev.kv.as_ref().ok_or_else(|| StoreError::InvalidSnapshot("history event without kv".into()))?;
        self.revs.insert((h.revision, h.sub), ev.encode_to_vec().as_slice())?;
        self.key_revs.insert((stored.key.as_slice(), h.revision, h.sub), ())?;
        // A key's current record is its last history entry; its lease attachment follows it.
        if let Some(old) = self.kv.get(stored.key.as_slice())? {
            let lease = super::codec::decode_kv(&stored.key, old.value())?.lease;
            drop(old);
            if lease != 0 {
                self.lease_keys.remove((lease, stored.key.as_slice()))?;
            }
        }
        if ev.r#type == EventType::Delete as i32 {
            self.kv.remove(stored.key.as_slice())?;
        } else {
            if stored.lease != 0 {
                self.lease_keys.insert((stored.lease, stored.key.as_slice()), ())?;
            }
            self.buf.clear();
            KvRef {
                key: b"",
                create_revision: stored.create_revision,
                mod_revision: stored.mod_revision,
                version: stored.version,
                value: &stored.value,
                lease: stored.lease,
            }
            .encode(&mut self.buf);
            self.kv.insert(stored.key.as_slice(), self.buf.as_slice())?;
        }
        Ok(())
    }
}
