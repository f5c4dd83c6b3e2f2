//! Applying writes inside one redb write transaction: puts, deletes, transactions, with every
//! change of one request at one revision.

use redb::{ReadableTable, Table, WriteTransaction};

use crate::proto::etcdserverpb::{
    AlarmMember, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, compare, request_op,
    response_op,
};
use crate::proto::mvccpb::{KeyValue, event::EventType};
use crate::storage::codec::{KvRef, decode_kv};
use crate::storage::error::{KvError, StoreError};
use crate::storage::tables::{
    ALARMS, KEY_REVS, KV, LEASE_KEYS, LEASES, META, META_APPLIED_INDEX, META_COMPACT_REVISION, META_REVISION,
    REVS, get_compact_rev, get_rev, get_u64, set_rev,
};

use super::effects::{ActiveAlarms, LeaseChange};

use super::keys::{KeyRange, scan_current};
use super::range::{ReadView, check_revision, range};
use super::validate;

/// The key-space tables of a write transaction, and the revision bookkeeping of the request
/// being applied.
pub(crate) struct Writer<'t> {
    pub kv: Table<'t, &'static [u8], &'static [u8]>,
    pub key_revs: Table<'t, (&'static [u8], i64, i64), ()>,
    pub revs: Table<'t, (i64, i64), &'static [u8]>,
    pub meta: Table<'t, &'static str, u64>,
    pub leases: Table<'t, i64, &'static [u8]>,
    pub lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    pub alarms: Table<'t, (u64, i32), ()>,
    /// The alarm kinds raised, as of the request being applied.
    pub active_alarms: ActiveAlarms,
    /// Leases granted, revoked or checkpointed by this transaction, for the lessor.
    pub lease_changes: Vec<LeaseChange>,
    /// Revision of the last request that changed something.
    pub revision: i64,
    pub compact_revision: i64,
    pub applied_index: u64,
    /// Changes made so far by the current request, all at `revision + 1`.
    sub: i64,
    /// Scratch space for encoding records.
    buf: Vec<u8>,
}

impl<'t> Writer<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let revision = get_rev(&meta, META_REVISION)?;
        let compact_revision = get_compact_rev(&meta)?;
        let applied_index = get_u64(&meta, META_APPLIED_INDEX)?;
        let alarms = txn.open_table(ALARMS)?;
        let mut raised = Vec::new();
        for item in alarms.iter()? {
            let (member_id, alarm) = item?.0.value();
            raised.push(AlarmMember { member_id, alarm });
        }
        Ok(Writer {
            kv: txn.open_table(KV)?,
            key_revs: txn.open_table(KEY_REVS)?,
            revs: txn.open_table(REVS)?,
            meta,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            alarms,
            active_alarms: ActiveAlarms::of(&raised),
            lease_changes: Vec::new(),
            revision,
            compact_revision,
            applied_index,
            sub: 0,
            buf: Vec::with_capacity(256),
        })
    }

    /// Writes the applied index and revisions back; called once per write transaction.
    pub(crate) fn save_meta(&mut self) -> Result<(), StoreError> {
        self.meta.insert(META_APPLIED_INDEX, self.applied_index)?;
        set_rev(&mut self.meta, META_REVISION, self.revision)?;
        set_rev(&mut self.meta, META_COMPACT_REVISION, self.compact_revision)?;
        Ok(())
    }

    /// Closes the current request: if it changed anything, its revision becomes current.
    pub(crate) fn finish_request(&mut self) -> i64 {
        if self.sub > 0 {
            self.revision += 1;
            self.sub = 0;
        }
        self.revision
    }

    /// Whether the current request has written anything yet.
    pub(crate) fn has_pending_changes(&self) -> bool {
        self.sub > 0
    }

    /// The revision reads see: the request's own revision once it has written something.
    fn view_revision(&self) -> i64 {
        if self.sub > 0 { self.revision + 1 } else { self.revision }
    }

    pub(crate) fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision: self.view_revision(), ..Default::default() })
    }

    /// A read inside the write transaction, seeing the changes made so far.
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let view = ReadView {
            kv: &self.kv,
            key_revs: &self.key_revs,
            revs: &self.revs,
            revision: self.view_revision(),
            compact_revision: self.compact_revision,
        };
        range(&view, req)
    }

    pub(crate) fn current(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.kv.get(key)? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }

    /// Records one change in both history tables.
    fn record(&mut self, ty: EventType, kv: &KvRef<'_>) -> Result<(), StoreError> {
        let at = (kv.mod_revision, self.sub);
        self.buf.clear();
        kv.encode_event(ty, &mut self.buf);
        self.revs.insert(at, self.buf.as_slice())?;
        self.key_revs.insert((kv.key, at.0, at.1), ())?;
        self.sub += 1;
        Ok(())
    }

    /// Checks a put against the current state (etcd's apply-time checks).
    fn check_put(&self, req: &PutRequest) -> Result<(), KvError> {
        validate::check_put(req)?;
        if (req.ignore_value || req.ignore_lease) && self.kv.get(req.key.as_slice())?.is_none() {
            return Err(KvError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && self.leases.get(req.lease)?.is_none() {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    /// A Put request: checks, then writes.
    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, KvError> {
        self.check_put(req)?;
        Ok(self.do_put(req)?)
    }

    fn do_put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        let rev = self.revision + 1;
        let prev = self.current(&req.key)?;
        // The checks guarantee `prev` when ignore_value/ignore_lease are set; if it is missing
        // anyway the empty value/lease is used rather than failing half way through a txn.
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.as_slice(),
            _ => req.value.as_slice(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            (None, true) => 0,
            (_, false) => req.lease,
        };
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease {
            if old_lease != 0 {
                self.lease_keys.remove((old_lease, req.key.as_slice()))?;
            }
            if lease != 0 {
                self.lease_keys.insert((lease, req.key.as_slice()), ())?;
            }
        }
        let mut kv = KvRef { key: b"", create_revision, mod_revision: rev, version, value, lease };
        self.buf.clear();
        kv.encode(&mut self.buf);
        self.kv.insert(req.key.as_slice(), self.buf.as_slice())?;
        kv.key = &req.key;
        self.record(EventType::Put, &kv)?;
        Ok(PutResponse { header: self.header(), prev_kv: if req.prev_kv { prev } else { None } })
    }

    /// A DeleteRange request. Deleting nothing changes nothing (no new revision).
    pub(crate) fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, KvError> {
        validate::check_delete_range(req)?;
        Ok(self.do_delete_range(req)?)
    }

    fn do_delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, StoreError> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        scan_current(&self.kv, KeyRange::new(&req.key, &req.range_end), |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        })?;
        let mut prev_kvs = Vec::new();
        for key in &keys {
            if let Some(prev) = self.delete_key(key)?
                && req.prev_kv
            {
                prev_kvs.push(prev);
            }
        }
        Ok(DeleteRangeResponse { header: self.header(), deleted: keys.len() as i64, prev_kvs })
    }

    /// Deletes one live key at this request's revision, detaching it from its lease; returns
    /// what it held.
    pub(crate) fn delete_key(&mut self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let removed = match self.kv.remove(key)? {
            Some(v) => Some(decode_kv(key, v.value())?),
            None => None,
        };
        if let Some(prev) = &removed
            && prev.lease != 0
        {
            self.lease_keys.remove((prev.lease, key))?;
        }
        let rev = self.revision + 1;
        let tomb = KvRef { key, create_revision: 0, mod_revision: rev, version: 0, value: b"", lease: 0 };
        self.record(EventType::Delete, &tomb)?;
        Ok(removed)
    }

    /// A Txn request: compares and checks against the state before it, then the chosen ops.
    pub(crate) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, KvError> {
        validate::check_duplicates(req)?;
        let mut path = Vec::new();
        self.compare_path(req, &mut path)?;
        let mut at = 0;
        self.check_path(req, &path, &mut at)?;
        let mut at = 0;
        self.run_txn(req, &path, &mut at)
    }

    /// Evaluates the compares of `req` and of every nested txn on the branch taken, all against
    /// the state before the transaction (as etcd does), in pre-order.
    fn compare_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<(), StoreError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    fn branch<'r>(req: &'r TxnRequest, path: &[bool], at: &mut usize) -> &'r [RequestOp] {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        if ok { &req.success } else { &req.failure }
    }

    /// Runs the checks of every operation on the path before anything is written, so a
    /// refused transaction leaves no trace.
    fn check_path(&self, req: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), KvError> {
        for op in Self::branch(req, path, at) {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => self.check_put(p)?,
                Some(request_op::Request::RequestRange(r)) => {
                    validate::check_range(r)?;
                    check_revision(r.revision, self.revision, self.compact_revision)?;
                }
                Some(request_op::Request::RequestDeleteRange(d)) => validate::check_delete_range(d)?,
                Some(request_op::Request::RequestTxn(t)) => self.check_path(t, path, at)?,
                None => {}
            }
        }
        Ok(())
    }

    fn run_txn(&mut self, req: &TxnRequest, path: &[bool], at: &mut usize) -> Result<TxnResponse, KvError> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        let ops = Self::branch(req, path, at);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    Some(response_op::Response::ResponseRange(self.range(r)?))
                }
                Some(request_op::Request::RequestPut(p)) => {
                    Some(response_op::Response::ResponsePut(self.do_put(p)?))
                }
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    Some(response_op::Response::ResponseDeleteRange(self.do_delete_range(d)?))
                }
                Some(request_op::Request::RequestTxn(t)) => {
                    Some(response_op::Response::ResponseTxn(self.run_txn(t, path, at)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse { header: self.header(), succeeded, responses })
    }

    /// One compare, etcd's way: over a range it must hold for every key; on no key at all, a
    /// VALUE compare fails and the others compare against zero.
    fn compare(&self, c: &Compare) -> Result<bool, StoreError> {
        let mut any = false;
        let mut all = true;
        scan_current(&self.kv, KeyRange::new(&c.key, &c.range_end), |k, v| {
            any = true;
            let kv = decode_kv(k, v)?;
            all = compare_kv(c, &kv);
            Ok(all)
        })?;
        if !any {
            if c.target == compare::CompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(all)
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    // The operand is the target_union member matching the target; any other member (or none)
    // means zero / empty, as in etcd.
    let int_operand = |target: CompareTarget| match (target, &c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v)))
        | (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
        | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let operand: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(operand)
        }
        Ok(t @ CompareTarget::Version) => kv.version.cmp(&int_operand(t)),
        Ok(t @ CompareTarget::Create) => kv.create_revision.cmp(&int_operand(t)),
        Ok(t @ CompareTarget::Mod) => kv.mod_revision.cmp(&int_operand(t)),
        Ok(t @ CompareTarget::Lease) => kv.lease.cmp(&int_operand(t)),
        // An unknown target holds, as in etcd.
        Err(_) => return true,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => true,
    }
}
