//! The whole-database history seen one key at a time: a second, independent verdict (the
//! per-key register check, which trusts no revision the server reports) and the lost-write check.
//!
//! The projection is sound: a linearizable whole-database history projects to linearizable
//! per-key histories. Every write is kept (a dropped write could explain a later read, and
//! dropping it would raise a false alarm); a read can be dropped, and so are compares, which only
//! decide which branch of a transaction ran (known for an acknowledged transaction; for one with
//! an unknown outcome the writes of both branches are kept as unknown: each may or may not have
//! happened). Every key a write touches takes effect at the transaction's single instant, which
//! the per-key check does not demand to be the same: weaker, never stronger.
//!
//! Ids: projected operation `16 * db_id + j` comes from whole-database operation `db_id`.

use std::collections::HashMap;

use kvcheck::{
    CompareResult, CompareTarget, DbHistory, DbOp, DbOperation, DbOutcome, History, Op, Operation, Outcome,
    Output, Response,
};

use super::requests::{KEYS, key};

/// The projected id of the `j`-th per-key operation of whole-database operation `id`.
fn projected_id(id: u64, j: usize) -> u64 {
    id * 16 + j as u64
}

/// The whole-database operation a projected one came from.
pub fn source_id(projected: u64) -> u64 {
    projected / 16
}

/// What a response showed of each workload key in `range`: its value, or absent.
fn read_keys(range: &kvcheck::KeyRange, response: &Response) -> Vec<(String, Option<String>)> {
    let Response::Range { kvs, .. } = response else { return Vec::new() };
    (0..KEYS)
        .map(key)
        .filter(|k| range.contains(k))
        .map(|k| {
            let value = kvs.iter().find(|kv| kv.key == k).map(|kv| kv.value.clone());
            (k, value)
        })
        .collect()
}

/// The per-key operations of one request (writes with `outcome`; reads only when answered).
fn project_op(op: &DbOp, response: Option<&Response>, outcome: &Outcome, out: &mut Vec<(Op, Outcome)>) {
    match (op, response) {
        (DbOp::Range { range }, Some(r)) => {
            for (key, value) in read_keys(range, r) {
                out.push((Op::Get { key }, Outcome::Ok(Output::Get { value })));
            }
        }
        (DbOp::Range { .. }, None) => {}
        (DbOp::Put { key, value, .. }, _) => {
            let o = ok_or(outcome, Output::Put);
            out.push((Op::Put { key: key.clone(), value: value.clone() }, o));
        }
        (DbOp::DeleteRange { range }, r) => {
            let keys: Vec<String> = (0..KEYS).map(key).filter(|k| range.contains(k)).collect();
            // A single key's `deleted` count says whether it existed.
            let existed = match r {
                Some(Response::DeleteRange { deleted }) if range.range_end.is_none() => Some(*deleted > 0),
                _ => None,
            };
            for key in keys {
                out.push((Op::Delete { key }, ok_or(outcome, Output::Delete { existed })));
            }
        }
        (DbOp::Txn { success, failure, .. }, r) => {
            if let Some(cas) = as_cas(op, r, outcome) {
                out.extend(cas);
                return;
            }
            match r {
                Some(Response::Txn { succeeded, responses }) => {
                    let branch = if *succeeded { success } else { failure };
                    for (op, r) in branch.iter().zip(responses) {
                        project_op(op, Some(r), outcome, out);
                    }
                }
                _ => {
                    for op in success.iter().chain(failure) {
                        project_op(op, None, outcome, out);
                    }
                }
            }
        }
    }
}

/// `outcome` with `output` in place of whatever an acknowledged one carried.
fn ok_or(outcome: &Outcome, output: Output) -> Outcome {
    match outcome {
        Outcome::Ok(_) => Outcome::Ok(output),
        other => other.clone(),
    }
}

/// A compare-and-set transaction (one guard on the value, or on absence, of the key it puts;
/// the failure branch at most reads that key) as the register model's `Cas`, with the read of a
/// failed comparison as a `Get`.
fn as_cas(op: &DbOp, response: Option<&Response>, outcome: &Outcome) -> Option<Vec<(Op, Outcome)>> {
    let DbOp::Txn { compare, success, failure } = op else { return None };
    let [guard] = compare.as_slice() else { return None };
    let [DbOp::Put { key, value, .. }] = success.as_slice() else { return None };
    if guard.key != *key || guard.result != CompareResult::Equal {
        return None;
    }
    let expected = match &guard.target {
        CompareTarget::Value(v) => Some(v.clone()),
        CompareTarget::Version(0) => None,
        _ => return None,
    };
    let reads_key =
        |op: &DbOp| matches!(op, DbOp::Range { range } if range.range_end.is_none() && range.key == *key);
    if !failure.iter().all(reads_key) {
        return None;
    }
    let cas = Op::Cas { key: key.clone(), expected, value: value.clone() };
    let mut ops = Vec::new();
    match response {
        Some(Response::Txn { succeeded, responses }) => {
            ops.push((cas, Outcome::Ok(Output::Cas { succeeded: *succeeded })));
            if !*succeeded {
                for (op, r) in failure.iter().zip(responses) {
                    project_op(op, Some(r), outcome, &mut ops);
                }
            }
        }
        _ => ops.push((cas, outcome.clone())),
    }
    Some(ops)
}

/// The per-key projection of `history` (failed requests left out: they changed nothing).
pub fn per_key(history: &DbHistory) -> History {
    let mut ops = Vec::new();
    for o in history.operations() {
        let DbOperation { id, client, op, invoke, complete, outcome } = o;
        let (response, outcome) = match outcome {
            DbOutcome::Failed => continue,
            DbOutcome::Unknown => (None, Outcome::Unknown),
            // The output is filled per projected operation.
            DbOutcome::Ok(out) => (Some(&out.response), Outcome::Ok(Output::Put)),
        };
        let mut projected = Vec::new();
        project_op(op, response, &outcome, &mut projected);
        for (j, (op, outcome)) in projected.into_iter().enumerate() {
            let id = projected_id(*id, j);
            ops.push(Operation { id, client: *client, op, invoke: *invoke, complete: *complete, outcome });
        }
    }
    History::new(ops).expect("the projection keeps ids unique and intervals intact")
}

/// The value each write leaves in the key, if it takes effect.
fn written_value(op: &Op) -> Option<Option<&str>> {
    match op {
        Op::Put { value, .. } | Op::Cas { value, .. } => Some(Some(value)),
        Op::Delete { .. } => Some(None),
        Op::Get { .. } => None,
    }
}

/// Every acknowledged write is either what the final read returns or superseded by a write that
/// was not known to finish before it started. Returns the offending keys' descriptions.
pub fn lost_writes(history: &History, finals: &HashMap<String, Option<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, final_value) in finals {
        let ops: Vec<_> = history.operations().iter().filter(|o| o.op.key() == key).collect();
        // Writes that may have produced the final value.
        let producers: Vec<_> = ops
            .iter()
            .filter(|o| {
                let applied = match (&o.op, &o.outcome) {
                    (_, Outcome::Failed) => false,
                    (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                    (_, Outcome::Unknown) | (_, Outcome::Ok(_)) => true,
                };
                applied && written_value(&o.op).is_some_and(|v| v == final_value.as_deref())
            })
            .collect();
        let acked_writes: Vec<_> = ops
            .iter()
            .filter(|o| match (&o.op, &o.outcome) {
                (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                (Op::Put { .. } | Op::Delete { .. }, Outcome::Ok(_)) => true,
                _ => false,
            })
            .collect();
        if final_value.is_none() && producers.is_empty() {
            if let Some(w) = acked_writes.first() {
                problems.push(format!(
                    "{key}: absent at the end, but write #{} (request #{}) was acknowledged",
                    w.id,
                    source_id(w.id)
                ));
            }
            continue;
        }
        // Some producer must not have completed before an acknowledged write was invoked.
        let latest_acked_invoke = acked_writes.iter().map(|o| o.invoke).max();
        let ok = match latest_acked_invoke {
            None => !producers.is_empty() || final_value.is_none(),
            Some(t) => producers.iter().any(|p| matches!(p.outcome, Outcome::Unknown) || p.complete >= t),
        };
        if !ok {
            problems.push(format!(
                "{key}: final value {final_value:?} was overwritten by an acknowledged write invoked at {t:?}",
                t = latest_acked_invoke
            ));
        }
    }
    problems
}
