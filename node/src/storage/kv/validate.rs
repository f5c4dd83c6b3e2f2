//! The request checks etcd makes before a request is proposed. The server calls them to refuse
//! bad requests early; apply runs the deterministic ones again, so a request that slipped past
//! (an older member, another proposer) is refused identically on every member.

use crate::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, range_request, request_op,
};
use crate::storage::error::KvError;

/// Checks a Range request: a key, and known sort options.
pub fn check_range(req: &RangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if range_request::SortOrder::try_from(req.sort_order).is_err()
        || range_request::SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(KvError::InvalidSortOption);
    }
    Ok(())
}

/// Checks a Put request: a key, and no value/lease next to `ignore_value`/`ignore_lease`.
pub fn check_put(req: &PutRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// Checks a DeleteRange request: a key.
pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() { Err(KvError::EmptyKey) } else { Ok(()) }
}

/// Checks a Txn request recursively, as etcd does: at most `max_ops` compares, and at most
/// `max_ops` operations per branch, where a nested transaction gets what its parent left
/// (`max_ops` minus the parent's largest count: so nesting is bounded by `--max-txn-ops` too);
/// every compare and operation well formed; no key written twice in one branch. A transaction
/// nested past what the decoder follows ([`TxnRequest::too_deep`]) has too many operations.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<(), KvError> {
    check_txn_shape(req, max_ops)?;
    check_duplicates(req)
}

fn check_txn_shape(req: &TxnRequest, max_ops: usize) -> Result<(), KvError> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops || req.too_deep {
        return Err(KvError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(request_op::Request::RequestPut(r)) => check_put(r)?,
            Some(request_op::Request::RequestDeleteRange(r)) => check_delete_range(r)?,
            Some(request_op::Request::RequestTxn(t)) => check_txn_shape(t, max_ops - ops)?,
            None => {}
        }
    }
    Ok(())
}

/// Rejects a transaction whose branches write a key twice: two puts of one key, or a put of a
/// key that a delete of the same branch (or of an enclosing one) covers. Puts in the two
/// branches of a nested transaction may share keys, since only one branch runs. As in etcd, a
/// delete whose `range_end` is `"\0"` is not counted as covering anything here.
pub(crate) fn check_duplicates(req: &TxnRequest) -> Result<(), KvError> {
    branch_writes(&req.success)?;
    branch_writes(&req.failure)?;
    Ok(())
}

/// Half-open key interval `[start, end)` of a delete; `end == None` is a single key.
struct Interval<'a> {
    start: &'a [u8],
    end: Option<&'a [u8]>,
}

impl Interval<'_> {
    fn contains(&self, key: &[u8]) -> bool {
        match self.end {
            None => key == self.start,
            Some(end) => self.start <= key && key < end,
        }
    }
}

/// The keys put and the intervals deleted by one branch, checked on the way.
fn branch_writes(ops: &[RequestOp]) -> Result<(Vec<&[u8]>, Vec<Interval<'_>>), KvError> {
    let mut dels: Vec<Interval<'_>> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => Some(Interval {
                start: &d.key,
                end: if d.range_end.is_empty() { None } else { Some(&d.range_end) },
            }),
            _ => None,
        })
        .collect();
    let mut puts: Vec<&[u8]> = Vec::new();
    let covered = |dels: &[Interval<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = branch_writes(&t.success)?;
        let (puts_else, dels_else) = branch_writes(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || covered(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
        }
        let before_then = puts.len();
        puts.extend_from_slice(&puts_then);
        for k in &puts_else {
            let clash_outside_then = puts[..before_then].contains(k);
            if clash_outside_then || covered(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            if !puts_then.contains(k) {
                puts.push(k);
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else { continue };
        let k = p.key.as_slice();
        if puts.contains(&k) || covered(&dels, k) {
            return Err(KvError::DuplicateKey);
        }
        puts.push(k);
    }
    Ok((puts, dels))
}

/// Whether any branch of a transaction (nested ones included) puts a key: what a space quota
/// must refuse.
pub fn txn_puts(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match &op.request {
        Some(request_op::Request::RequestPut(_)) => true,
        Some(request_op::Request::RequestTxn(t)) => txn_puts(t),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{Compare, RequestOp};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: false,
            })),
        }
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest::new(vec![], success, failure)
    }
    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(request_op::Request::RequestTxn(txn(success, failure))) }
    }

    #[test]
    fn duplicate_puts_in_one_branch_are_refused() {
        assert!(matches!(check_txn(&txn(vec![put("a"), put("a")], vec![]), 128), Err(KvError::DuplicateKey)));
        // The same key in success and failure is fine: only one runs.
        check_txn(&txn(vec![put("a")], vec![put("a")]), 128).unwrap();
    }

    #[test]
    fn put_inside_a_deleted_range_is_refused() {
        assert!(matches!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![]), 128),
            Err(KvError::DuplicateKey)
        ));
        assert!(matches!(
            check_txn(&txn(vec![put("a"), del("a", "")], vec![]), 128),
            Err(KvError::DuplicateKey)
        ));
        check_txn(&txn(vec![del("a", "c"), put("c")], vec![]), 128).unwrap();
        // Overlapping deletes are allowed.
        check_txn(&txn(vec![del("a", "c"), del("b", "d")], vec![]), 128).unwrap();
        // etcd does not treat "\0" as covering keys in this check.
        check_txn(&txn(vec![del("a", "\0"), put("b")], vec![]), 128).unwrap();
    }

    #[test]
    fn nested_transactions_are_checked_against_the_enclosing_branch() {
        let t = txn(vec![put("a"), nested(vec![put("a")], vec![])], vec![]);
        assert!(matches!(check_txn(&t, 128), Err(KvError::DuplicateKey)));
        let t = txn(vec![del("a", "z"), nested(vec![], vec![put("m")])], vec![]);
        assert!(matches!(check_txn(&t, 128), Err(KvError::DuplicateKey)));
        // A nested delete covering an outer put is a duplicate too.
        let t = txn(vec![put("m"), nested(vec![del("a", "z")], vec![])], vec![]);
        assert!(matches!(check_txn(&t, 128), Err(KvError::DuplicateKey)));
        // Then/else of one nested txn may share a key.
        let t = txn(vec![nested(vec![put("a")], vec![put("a")])], vec![]);
        check_txn(&t, 128).unwrap();
        // Two nested txns may not both put the same key.
        let t = txn(vec![nested(vec![put("a")], vec![]), nested(vec![], vec![put("a")])], vec![]);
        assert!(matches!(check_txn(&t, 128), Err(KvError::DuplicateKey)));
    }

    #[test]
    fn limits_and_shapes() {
        let many = txn((0..3).map(|i| put(&format!("k{i}"))).collect(), vec![]);
        assert!(matches!(check_txn(&many, 2), Err(KvError::TooManyOps)));
        check_txn(&many, 3).unwrap();
        let empty_cmp = TxnRequest::new(vec![Compare::default()], vec![], vec![]);
        assert!(matches!(check_txn(&empty_cmp, 8), Err(KvError::EmptyKey)));
        let bad_put = txn(
            vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ignore_value: true,
                    ..Default::default()
                })),
            }],
            vec![],
        );
        assert!(matches!(check_txn(&bad_put, 8), Err(KvError::ValueProvided)));
        let bad_sort = RangeRequest { key: b"k".to_vec(), sort_order: 9, ..Default::default() };
        assert!(matches!(check_range(&bad_sort), Err(KvError::InvalidSortOption)));
    }

    /// `levels` transactions, each holding the next, the innermost a put.
    fn chain(levels: usize) -> TxnRequest {
        let mut t = txn(vec![put("k")], vec![]);
        for _ in 1..levels {
            t = txn(vec![nested(t.success, t.failure)], vec![]);
        }
        t
    }

    #[test]
    fn nesting_spends_the_parent_s_operation_budget_as_in_etcd() {
        // Each level uses one operation of the 128: 128 levels fit, 129 do not.
        check_txn(&chain(128), 128).unwrap();
        assert!(matches!(check_txn(&chain(129), 128), Err(KvError::TooManyOps)));
        // A wider parent leaves less for what it holds.
        let wide = txn(vec![put("a"), put("b"), nested(vec![put("c")], vec![])], vec![]);
        check_txn(&wide, 4).unwrap();
        let deeper =
            txn(vec![put("a"), put("b"), nested(vec![nested(vec![put("c")], vec![])], vec![])], vec![]);
        assert!(matches!(check_txn(&deeper, 4), Err(KvError::TooManyOps)));
        let marked = TxnRequest { too_deep: true, ..txn(vec![], vec![]) };
        assert!(matches!(check_txn(&marked, 128), Err(KvError::TooManyOps)));
    }
}
