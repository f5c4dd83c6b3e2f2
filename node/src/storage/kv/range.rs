//! The Range request with etcd's semantics, over any view of the tables (a read transaction
//! for client reads, the write transaction for reads inside a Txn).

use std::cmp::Ordering;

use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, range_request};
use crate::proto::mvccpb::KeyValue;
use crate::storage::codec::decode_kv;
use crate::storage::error::{KvError, StoreError};

use super::keys::{KeyRange, KeyRevsTable, KvTable, RevsTable, scan_at, scan_current};

/// The tables a read needs, borrowed from one transaction.
pub(crate) struct ReadView<'a, K, H, R> {
    pub kv: &'a K,
    pub key_revs: &'a H,
    pub revs: &'a R,
    /// The revision this view shows as current.
    pub revision: i64,
    pub compact_revision: i64,
}

/// Checks a read revision against the view, etcd's way: 0 or less is the current revision.
pub(crate) fn check_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, KvError> {
    if requested <= 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(KvError::FutureRevision);
    }
    if requested < compacted {
        return Err(KvError::Compacted { compact_revision: compacted });
    }
    Ok(requested)
}

/// Gathers the keys of a range the way etcd does: `count` counts every key in the range
/// (before the revision filters and the limit), values are decoded only for the keys that can
/// end up in the answer.
struct Collector<'r> {
    req: &'r RangeRequest,
    /// Sorting or filtering needs every key; otherwise `limit + 1` is enough to know `more`.
    cap: usize,
    count: i64,
    kvs: Vec<KeyValue>,
}

impl<'r> Collector<'r> {
    fn new(req: &'r RangeRequest) -> Self {
        let needs_all = req.sort_order != range_request::SortOrder::None as i32
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let cap = if req.count_only {
            0
        } else if req.limit > 0 && !needs_all {
            usize::try_from(req.limit).unwrap_or(usize::MAX).saturating_add(1)
        } else {
            usize::MAX
        };
        Collector { req, cap, count: 0, kvs: Vec::new() }
    }

    fn offer(&mut self, decode: impl FnOnce() -> Result<KeyValue, StoreError>) -> Result<bool, StoreError> {
        self.count += 1;
        if self.kvs.len() < self.cap {
            let kv = decode()?;
            if self.passes_filters(&kv) {
                self.kvs.push(kv);
            }
        }
        Ok(true)
    }

    fn passes_filters(&self, kv: &KeyValue) -> bool {
        let r = self.req;
        !((r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision)
            || (r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision)
            || (r.max_create_revision != 0 && kv.create_revision > r.max_create_revision)
            || (r.min_create_revision != 0 && kv.create_revision < r.min_create_revision))
    }

    fn finish(mut self, header_revision: i64) -> Result<RangeResponse, KvError> {
        let r = self.req;
        sort(&mut self.kvs, r.sort_order, r.sort_target)?;
        let mut more = false;
        if r.limit > 0 {
            let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
            if self.kvs.len() > limit {
                self.kvs.truncate(limit);
                more = true;
            }
        }
        if r.keys_only {
            for kv in &mut self.kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse {
            header: Some(ResponseHeader { revision: header_revision, ..Default::default() }),
            kvs: self.kvs,
            more,
            count: self.count,
        })
    }
}

/// Sorts as etcd does: results come in ascending key order, so ASCEND by KEY is a no-op, and
/// a non-KEY target with order NONE means ASCEND.
fn sort(kvs: &mut [KeyValue], order: i32, target: i32) -> Result<(), KvError> {
    use range_request::{SortOrder, SortTarget};
    let order = SortOrder::try_from(order).map_err(|_| KvError::InvalidSortOption)?;
    let target = SortTarget::try_from(target).map_err(|_| KvError::InvalidSortOption)?;
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return Ok(()),
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let cmp: fn(&KeyValue, &KeyValue) -> Ordering = match target {
        SortTarget::Key => |a, b| a.key.cmp(&b.key),
        SortTarget::Version => |a, b| a.version.cmp(&b.version),
        SortTarget::Create => |a, b| a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => |a, b| a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => |a, b| a.value.cmp(&b.value),
    };
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| cmp(b, a));
    } else {
        kvs.sort_by(cmp);
    }
    Ok(())
}

/// Serves a Range request from `view`. The header carries the view's current revision, as
/// etcd's does, even for a read at an older revision.
pub(crate) fn range<K: KvTable, H: KeyRevsTable, R: RevsTable>(
    view: &ReadView<'_, K, H, R>,
    req: &RangeRequest,
) -> Result<RangeResponse, KvError> {
    let rev = check_revision(req.revision, view.revision, view.compact_revision)?;
    let keys = KeyRange::new(&req.key, &req.range_end);
    let mut c = Collector::new(req);
    if rev == view.revision {
        scan_current(view.kv, keys, |k, v| c.offer(|| decode_kv(k, v)))?;
    } else {
        scan_at(view.key_revs, view.revs, keys, rev, |kv| c.offer(|| Ok(kv)))?;
    }
    c.finish(view.revision)
}
