//! Injectors of anomalies no correct store produces, each applied to a random eligible operation of
//! a simulated history. Those marked *certain with unknowns* stay violations whatever unknown-outcome
//! writes did; the others are certain only in histories without unknown outcomes (a lost write
//! could otherwise explain them), and the tests inject them there.

use kvcheck::{CompareTarget, DbHistory, DbOp, DbOperation, DbOutcome, KeyValue, Response, Revision};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Simulation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// A read served at an older revision, with that revision's contents, although a write at a
    /// newer revision was acknowledged before the read began. Certain with unknowns.
    StaleRead,
    /// A read at revision `R` shows a key as it was before an acknowledged put at `w <= R`, the
    /// put completed before the read began. Certain with unknowns.
    LostWrite,
    /// An acknowledged write claims the revision of another. Certain with unknowns.
    DuplicateRevision,
    /// All revisions from some `w` on shifted up by one: nothing fills `w`.
    UnfillableGap,
    /// A returned key-value's version is one too high.
    WrongVersion,
    /// A returned key-value's create revision is one too low.
    WrongCreateRevision,
    /// A returned key-value's mod revision is one too low.
    WrongModRevision,
    /// A read's header revision is below the mod revision of a key it returns. Certain with unknowns.
    HeaderContradictsContents,
    /// A read-only transaction reports the other branch than its comparison selects.
    WrongSucceeded,
    /// A range leaves out a key it holds.
    RangeMissesKey,
    /// A range returns a key deleted before its revision, as it was before the delete.
    RangeHasDeletedKey,
    /// A read returns a key at a later mod revision with the value an earlier acknowledged put
    /// wrote: that put applied again. Certain with unknowns.
    AppliedTwice,
}

pub const WITH_UNKNOWNS: [Anomaly; 5] = [
    Anomaly::StaleRead,
    Anomaly::LostWrite,
    Anomaly::DuplicateRevision,
    Anomaly::HeaderContradictsContents,
    Anomaly::AppliedTwice,
];

pub const WITHOUT_UNKNOWNS: [Anomaly; 7] = [
    Anomaly::UnfillableGap,
    Anomaly::WrongVersion,
    Anomaly::WrongCreateRevision,
    Anomaly::WrongModRevision,
    Anomaly::WrongSucceeded,
    Anomaly::RangeMissesKey,
    Anomaly::RangeHasDeletedKey,
];

fn output(op: &DbOperation) -> Option<(Revision, &Response)> {
    match &op.outcome {
        DbOutcome::Ok(output) => Some((output.revision, &output.response)),
        DbOutcome::Failed | DbOutcome::Unknown => None,
    }
}

fn set_output(op: &mut DbOperation, revision: Revision, response: Response) {
    op.outcome = DbOutcome::Ok(kvcheck::DbOutput { revision, response });
}

fn range_kvs(response: &Response) -> Option<&Vec<KeyValue>> {
    match response {
        Response::Range { kvs, .. } => Some(kvs),
        _ => None,
    }
}

fn claims(response: &Response) -> bool {
    match response {
        Response::Range { .. } => false,
        Response::Put { .. } => true,
        Response::DeleteRange { deleted } => *deleted > 0,
        Response::Txn { responses, .. } => responses.iter().any(claims),
    }
}

/// The acknowledged top-level ranges: (index, revision, range).
fn reads(ops: &[DbOperation]) -> Vec<(usize, Revision, kvcheck::KeyRange)> {
    ops.iter()
        .enumerate()
        .filter_map(|(index, op)| match (&op.op, output(op)) {
            (DbOp::Range { range }, Some((revision, _))) => Some((index, revision, range.clone())),
            _ => None,
        })
        .collect()
}

fn range_response(kvs: Vec<KeyValue>) -> Response {
    Response::Range { count: kvs.len() as u64, kvs }
}

/// Shifts every revision at or above `from` up by one, in responses and in compared revisions.
fn shift(op: &mut DbOperation, from: Revision) {
    let bump = |revision: &mut Revision| {
        if *revision >= from {
            *revision += 1;
        }
    };
    fn requests(op: &mut DbOp, bump: &dyn Fn(&mut Revision)) {
        if let DbOp::Txn { compare, success, failure } = op {
            for guard in compare {
                if let CompareTarget::CreateRevision(r) | CompareTarget::ModRevision(r) = &mut guard.target {
                    bump(r);
                }
            }
            success.iter_mut().chain(failure.iter_mut()).for_each(|nested| requests(nested, bump));
        }
    }
    fn responses(response: &mut Response, bump: &dyn Fn(&mut Revision)) {
        match response {
            Response::Range { kvs, .. } => kvs.iter_mut().for_each(|kv| {
                bump(&mut kv.create_revision);
                bump(&mut kv.mod_revision);
            }),
            Response::Put { prev_kv: Some(kv) } => {
                bump(&mut kv.create_revision);
                bump(&mut kv.mod_revision);
            }
            Response::Txn { responses: nested, .. } => nested.iter_mut().for_each(|r| responses(r, bump)),
            Response::Put { prev_kv: None } | Response::DeleteRange { .. } => {}
        }
    }
    requests(&mut op.op, &bump);
    if let DbOutcome::Ok(output) = &mut op.outcome {
        bump(&mut output.revision);
        responses(&mut output.response, &bump);
    }
}

/// Applies `anomaly` to a random eligible operation; returns the corrupted history and the id of
/// the operation changed (`None` when nothing is eligible).
pub fn inject(sim: &Simulation, anomaly: Anomaly, rng: &mut ChaCha8Rng) -> Option<(DbHistory, u64)> {
    let mut ops = sim.history.operations().to_vec();
    let reads = reads(&ops);
    let writes: Vec<(usize, Revision)> = ops
        .iter()
        .enumerate()
        .filter_map(|(index, op)| {
            output(op).filter(|(_, response)| claims(response)).map(|(r, _)| (index, r))
        })
        .collect();
    let pick = |rng: &mut ChaCha8Rng, len: usize| (len > 0).then(|| rng.random_range(0..len));
    let target = match anomaly {
        Anomaly::StaleRead => {
            // The highest revision acknowledged before each read began, by completion time.
            let mut by_completion: Vec<(u64, Revision)> =
                writes.iter().map(|&(w, r)| (ops[w].complete, r)).collect();
            by_completion.sort_unstable();
            let mut highest = Vec::with_capacity(by_completion.len());
            let mut max = 0;
            for &(_, revision) in &by_completion {
                max = max.max(revision);
                highest.push(max);
            }
            let eligible: Vec<(usize, Revision)> = reads
                .iter()
                .filter_map(|(index, _, _)| {
                    let before =
                        by_completion.partition_point(|&(complete, _)| complete < ops[*index].invoke);
                    before.checked_sub(1).map(|at| (*index, highest[at]))
                })
                .collect();
            let (index, w) = eligible[pick(rng, eligible.len())?];
            let DbOp::Range { range } = &ops[index].op else { return None };
            let old = sim.state_at(w - 1);
            let kvs = old.kvs.values().filter(|kv| range.contains(&kv.key)).cloned().collect();
            set_output(&mut ops[index], w - 1, range_response(kvs));
            index
        }
        Anomaly::LostWrite => {
            // A few random acknowledged puts of keys that existed before them, each with the reads
            // of the key that began after the put completed.
            let mut eligible = Vec::new();
            for _ in 0..50 {
                let (w_index, w) = writes[pick(rng, writes.len())?];
                let DbOp::Put { key, .. } = &ops[w_index].op else { continue };
                if !sim.state_at(w - 1).kvs.contains_key(key) {
                    continue;
                }
                for (index, r, range) in &reads {
                    if *r >= w && range.contains(key) && ops[*index].invoke > ops[w_index].complete {
                        eligible.push((*index, w, range.clone()));
                    }
                }
                if !eligible.is_empty() {
                    break;
                }
            }
            let (index, w, range) = eligible.swap_remove(pick(rng, eligible.len())?);
            let old = sim.state_at(w - 1);
            let kvs = old.kvs.values().filter(|kv| range.contains(&kv.key)).cloned().collect();
            let revision = output(&ops[index])?.0;
            set_output(&mut ops[index], revision, range_response(kvs));
            index
        }
        Anomaly::DuplicateRevision => {
            let (a, b) = (pick(rng, writes.len())?, pick(rng, writes.len())?);
            let ((first, r1), (second, r2)) = (writes[a.min(b)], writes[a.max(b)]);
            if r1 == r2 {
                return None;
            }
            if let DbOutcome::Ok(output) = &mut ops[second].outcome {
                output.revision = r1;
            }
            let _ = first;
            second
        }
        Anomaly::UnfillableGap => {
            let (index, w) = writes[pick(rng, writes.len())?];
            ops.iter_mut().for_each(|op| shift(op, w));
            index
        }
        Anomaly::WrongVersion | Anomaly::WrongCreateRevision | Anomaly::WrongModRevision => {
            let eligible: Vec<(usize, usize)> = reads
                .iter()
                .flat_map(|(index, _, _)| {
                    let kvs = output(&ops[*index])
                        .and_then(|(_, response)| range_kvs(response))
                        .cloned()
                        .unwrap_or_default();
                    kvs.into_iter()
                        .enumerate()
                        .filter(|(_, kv)| match anomaly {
                            Anomaly::WrongVersion => kv.version >= 2,
                            Anomaly::WrongCreateRevision => kv.version >= 2 && kv.create_revision >= 3,
                            _ => kv.version >= 2 && kv.mod_revision - 1 > kv.create_revision,
                        })
                        .map(|(at, _)| (*index, at))
                        .collect::<Vec<_>>()
                })
                .collect();
            let (index, at) = eligible[pick(rng, eligible.len())?];
            if let DbOutcome::Ok(kvcheck::DbOutput { response: Response::Range { kvs, .. }, .. }) =
                &mut ops[index].outcome
            {
                let kv = &mut kvs[at];
                match anomaly {
                    Anomaly::WrongVersion => kv.version += 1,
                    Anomaly::WrongCreateRevision => kv.create_revision -= 1,
                    _ => kv.mod_revision -= 1,
                }
            }
            index
        }
        Anomaly::HeaderContradictsContents => {
            let eligible: Vec<(usize, Revision)> = reads
                .iter()
                .filter_map(|(index, _, _)| {
                    let kvs = range_kvs(output(&ops[*index])?.1)?;
                    kvs.iter().map(|kv| kv.mod_revision).max().filter(|&m| m >= 3).map(|m| (*index, m - 1))
                })
                .collect();
            let (index, revision) = eligible[pick(rng, eligible.len())?];
            if let DbOutcome::Ok(output) = &mut ops[index].outcome {
                output.revision = revision;
            }
            index
        }
        Anomaly::WrongSucceeded => {
            let eligible: Vec<usize> = (0..ops.len())
                .filter(|&index| {
                    matches!(&ops[index].op, DbOp::Txn { success, failure, .. }
                        if success.iter().chain(failure).all(|op| matches!(op, DbOp::Range { .. })))
                        && output(&ops[index]).is_some()
                })
                .collect();
            let index = eligible[pick(rng, eligible.len())?];
            if let DbOutcome::Ok(kvcheck::DbOutput { response: Response::Txn { succeeded, .. }, .. }) =
                &mut ops[index].outcome
            {
                *succeeded = !*succeeded;
            }
            index
        }
        Anomaly::RangeMissesKey => {
            let eligible: Vec<usize> = reads
                .iter()
                .filter(|(index, _, _)| {
                    output(&ops[*index]).and_then(|(_, r)| range_kvs(r)).is_some_and(|kvs| !kvs.is_empty())
                })
                .map(|(index, _, _)| *index)
                .collect();
            let index = eligible[pick(rng, eligible.len())?];
            let (revision, response) = output(&ops[index])?;
            let mut kvs = range_kvs(response)?.clone();
            kvs.remove(rng.random_range(0..kvs.len()));
            set_output(&mut ops[index], revision, range_response(kvs));
            index
        }
        Anomaly::RangeHasDeletedKey => {
            // A key absent at the read's revision that existed at some earlier revision.
            let mut eligible = Vec::new();
            for (index, r, range) in &reads {
                let now = sim.state_at(*r);
                let earlier = sim.state_at(rng.random_range(1..=*r));
                for (key, kv) in &earlier.kvs {
                    if range.contains(key) && !now.kvs.contains_key(key) {
                        eligible.push((*index, kv.clone()));
                    }
                }
                if eligible.len() > 20 {
                    break;
                }
            }
            let (index, ghost) = eligible.swap_remove(pick(rng, eligible.len())?);
            let (revision, response) = output(&ops[index])?;
            let mut kvs = range_kvs(response)?.clone();
            kvs.push(ghost);
            kvs.sort_by(|a, b| a.key.cmp(&b.key));
            set_output(&mut ops[index], revision, range_response(kvs));
            index
        }
        Anomaly::AppliedTwice => {
            // A read's key with mod revision m gets the value of an acknowledged put of that key at
            // an earlier revision w < m.
            let mut eligible = Vec::new();
            for (index, _, _) in &reads {
                let Some(kvs) = output(&ops[*index]).and_then(|(_, r)| range_kvs(r)) else { continue };
                for (at, kv) in kvs.iter().enumerate() {
                    let earlier = writes.iter().find_map(|(w_index, w)| match &ops[*w_index].op {
                        DbOp::Put { key, value, .. }
                            if *key == kv.key && *w < kv.mod_revision && *value != kv.value =>
                        {
                            Some(value.clone())
                        }
                        _ => None,
                    });
                    if let Some(value) = earlier {
                        eligible.push((*index, at, value));
                    }
                }
            }
            let (index, at, value) = eligible.swap_remove(pick(rng, eligible.len())?);
            if let DbOutcome::Ok(kvcheck::DbOutput { response: Response::Range { kvs, .. }, .. }) =
                &mut ops[index].outcome
            {
                kvs[at].value = value;
            }
            index
        }
    };
    let id = ops[target].id;
    Some((DbHistory::new(ops).unwrap(), id))
}
