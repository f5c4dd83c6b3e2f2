//! Turns a history into what the search walks: operations placed by revision, the gaps between
//! them, and the time bounds of each revision.
//!
//! Acknowledged responses pin their operations: a response that claims a revision (see
//! [`claims_revision`]) puts its write at that revision, any other acknowledged response is a read
//! of the store at its header revision. Revisions no acknowledged write claims are *gaps*, to be
//! filled by unknown-outcome writes. Failed operations and unknown-outcome reads are dropped. Checks
//! that need no search (malformed responses, two writes on one revision, revisions out of reach)
//! are done here.

use std::collections::HashSet;

use crate::db::anomaly::DbAnomaly;
use crate::db::classes::Classes;
use crate::db::compile::{Kv, Reply, Request, Universe, claims_revision, shape_error};
use crate::db::facts::Facts;
use crate::db::history::{DbHistory, DbOutcome};
pub(crate) use crate::db::planned::{Expected, Planned};
use crate::db::types::{DbOp, Revision};

/// Everything the search needs, indexed by revision.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) universe: Universe,
    pub(crate) ops: Vec<Planned>,
    /// The highest revision any response reports (1 if none).
    pub(crate) last: Revision,
    /// For revisions `2..=last`: the acknowledged write claiming it.
    claimed: Vec<Option<usize>>,
    /// For revisions `1..=last`: the reads served at it.
    reads: Vec<Vec<usize>>,
    /// For revisions `2..=last`: key-values reads attribute to it.
    expected: Vec<Vec<Expected>>,
    /// For revisions `2..=last`: the earliest completion of an operation pinned at it or later;
    /// the write at the revision must take effect by then.
    deadline: Vec<u64>,
    pub(crate) classes: Classes,
    pub(crate) facts: Facts,
}

fn at<T>(items: &[T], offset: Revision) -> Option<&T> {
    usize::try_from(offset).ok().and_then(|index| items.get(index))
}

/// True if some branch of the request may write (only those can fill a gap).
fn may_write(op: &DbOp) -> bool {
    match op {
        DbOp::Range { .. } => false,
        DbOp::Put { .. } | DbOp::DeleteRange { .. } => true,
        DbOp::Txn { success, failure, .. } => success.iter().chain(failure).any(may_write),
    }
}

impl Plan {
    /// Plans `history`; values nobody observes are merged when `merge` is set (see
    /// [`Universe::new`]).
    pub(crate) fn new(history: &DbHistory, merge: bool) -> Result<Plan, Box<DbAnomaly>> {
        let universe = Universe::new(history, merge);
        let mut ops = Vec::new();
        let mut claims: Vec<(Revision, usize)> = Vec::new();
        let mut reads_at: Vec<(Revision, usize)> = Vec::new();
        for (source, operation) in history.operations().iter().enumerate() {
            let output = match &operation.outcome {
                DbOutcome::Failed => continue,
                DbOutcome::Unknown if !may_write(&operation.op) => continue,
                DbOutcome::Unknown => None,
                DbOutcome::Ok(output) => Some(output),
            };
            if let Some(output) = output {
                if let Some(reason) = shape_error(&operation.op, &output.response) {
                    return Err(Box::new(DbAnomaly::Malformed { op: operation.id, reason }));
                }
                let (minimum, list) =
                    if claims_revision(&output.response) { (2, &mut claims) } else { (1, &mut reads_at) };
                if output.revision < minimum {
                    let reason = format!("the lowest possible is {minimum}");
                    let revision = output.revision;
                    return Err(Box::new(DbAnomaly::ImpossibleRevision {
                        op: operation.id,
                        revision,
                        reason,
                    }));
                }
                list.push((output.revision, ops.len()));
            }
            let request = universe.request(&operation.op);
            let reply = output.map(|output| requested_only(&request, universe.reply(&output.response)));
            ops.push(Planned {
                source,
                invoke: operation.invoke,
                complete: operation.complete,
                request,
                reply,
                revision: output.map_or(0, |output| output.revision),
                claims: output.is_some_and(|output| claims_revision(&output.response)),
            });
        }
        let writes = claims.len() + ops.iter().filter(|op| op.reply.is_none()).count();
        let reach = 1 + writes as Revision;
        let id = |planned: usize| {
            ops.get(planned).and_then(|op| history.operations().get(op.source)).map_or(0, |op| op.id)
        };
        if let Some(&(revision, op)) = claims.iter().chain(&reads_at).find(|(revision, _)| *revision > reach)
        {
            let reason = format!("the history has only {writes} writes that may have taken effect");
            return Err(Box::new(DbAnomaly::ImpossibleRevision { op: id(op), revision, reason }));
        }
        let last = claims.iter().chain(&reads_at).map(|(revision, _)| *revision).max().unwrap_or(1).max(1);
        let span = (last - 1) as usize;
        let mut claimed: Vec<Option<usize>> = vec![None; span];
        for &(revision, op) in &claims {
            let slot = usize::try_from(revision - 2).ok().and_then(|index| claimed.get_mut(index));
            if let Some(first) = slot.and_then(|slot| slot.replace(op)) {
                return Err(Box::new(DbAnomaly::DuplicateRevision {
                    revision,
                    first: id(first),
                    second: id(op),
                }));
            }
        }
        let mut reads = vec![Vec::new(); span + 1];
        for &(revision, op) in &reads_at {
            if let Some(list) = usize::try_from(revision - 1).ok().and_then(|index| reads.get_mut(index)) {
                list.push(op);
            }
        }

        // Observations: every key-value an acknowledged response returned, with the revision of
        // the state it was read from (the one before the write, for key-values inside a write).
        let mut observations = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if let Some(reply) = &op.reply {
                let read_at = if op.claims { op.revision - 1 } else { op.revision };
                each_kv(reply, &mut |kv| observations.push((read_at, kv, index)));
            }
        }
        let mut expected: Vec<Vec<Expected>> = vec![Vec::new(); span];
        let mut unique: HashSet<Kv> = HashSet::new();
        for &(_, kv, seen_by) in &observations {
            let slot = usize::try_from(kv.modified - 2).ok().and_then(|index| expected.get_mut(index));
            if let (Some(list), true) = (slot, unique.insert(kv)) {
                list.push(Expected { kv, seen_by });
            }
        }
        let facts =
            Facts::new(universe.keys.len(), observations.iter().map(|&(read_at, kv, _)| (read_at, kv)));
        if let Some(anomaly) = missed_write(history, &universe, &ops, &facts, &observations) {
            return Err(Box::new(anomaly));
        }

        let mut deadline = vec![u64::MAX; span];
        let mut earliest = u64::MAX;
        for revision in (2..=last).rev() {
            let pinned = at(&claimed, revision - 2)
                .copied()
                .flatten()
                .into_iter()
                .chain(at(&reads, revision - 1).into_iter().flatten().copied());
            for op in pinned {
                earliest = earliest.min(ops.get(op).map_or(u64::MAX, |op| op.complete));
            }
            if let Some(slot) = usize::try_from(revision - 2).ok().and_then(|index| deadline.get_mut(index)) {
                *slot = earliest;
            }
        }
        let gaps: Vec<Revision> =
            (2..=last).filter(|&revision| at(&claimed, revision - 2) == Some(&None)).collect();
        let classes = Classes::new(&ops, &expected, &gaps);
        Ok(Plan { universe, ops, last, claimed, reads, expected, deadline, classes, facts })
    }

    /// The acknowledged write at `revision`, `None` for a gap.
    pub(crate) fn claimed(&self, revision: Revision) -> Option<usize> {
        at(&self.claimed, revision - 2).copied().flatten()
    }

    /// The reads served at `revision`.
    pub(crate) fn reads(&self, revision: Revision) -> &[usize] {
        at(&self.reads, revision - 1).map_or(&[], Vec::as_slice)
    }

    /// The key-values reads attribute to `revision`.
    pub(crate) fn expected(&self, revision: Revision) -> &[Expected] {
        at(&self.expected, revision - 2).map_or(&[], Vec::as_slice)
    }

    /// The latest time the write at `revision` can take effect.
    pub(crate) fn deadline(&self, revision: Revision) -> u64 {
        at(&self.deadline, revision - 2).copied().unwrap_or(u64::MAX)
    }
}

/// Calls `visit` for every key-value in a reply.
fn each_kv(reply: &Reply, visit: &mut impl FnMut(Kv)) {
    match reply {
        Reply::Range { kvs, .. } => kvs.iter().for_each(|kv| visit(*kv)),
        Reply::Put { prev_kv: Some(kv) } => visit(*kv),
        Reply::Txn { replies, .. } => replies.iter().for_each(|nested| each_kv(nested, visit)),
        Reply::Put { prev_kv: None } | Reply::Delete { .. } => {}
    }
}

/// The reply without previous key-values that were not asked for: the model checks only what the
/// client requested, so only that may serve as evidence.
fn requested_only(request: &Request, reply: Reply) -> Reply {
    match (request, reply) {
        (Request::Put { prev_kv: false, .. }, Reply::Put { .. }) => Reply::Put { prev_kv: None },
        (Request::Txn { success, failure, .. }, Reply::Txn { succeeded, replies }) => {
            let branch = if succeeded { success } else { failure };
            let replies =
                branch.iter().zip(replies).map(|(request, reply)| requested_only(request, reply)).collect();
            Reply::Txn { succeeded, replies }
        }
        (_, reply) => reply,
    }
}

/// A read that shows a key unchanged across a revision where an acknowledged write certainly
/// changed it (see [`DbAnomaly::ReadMissesWrite`]); needs no search, since acknowledged writes are
/// pinned.
fn missed_write(
    history: &DbHistory,
    universe: &Universe,
    ops: &[Planned],
    facts: &Facts,
    observations: &[(Revision, Kv, usize)],
) -> Option<DbAnomaly> {
    let mut written = Vec::new();
    for (index, op) in ops.iter().enumerate().filter(|(_, op)| op.claims) {
        let Some(reply) = &op.reply else { continue };
        written.clear();
        op.request.certain_writes(reply, &mut written);
        let Some(&(key, deleted)) =
            written.iter().find(|&&(key, deleted)| !facts.allow_change(key, op.revision, deleted))
        else {
            continue;
        };
        let w = op.revision;
        let (read_at, kv, read) = observations.iter().copied().find(|&(read_at, kv, _)| {
            let since = if deleted { kv.create } else { kv.modified };
            kv.key == key && since < w && w <= read_at
        })?;
        let id = |planned: usize| {
            ops.get(planned).and_then(|op| history.operations().get(op.source)).map_or(0, |op| op.id)
        };
        let reported = crate::db::types::KeyValue {
            key: universe.key_text(kv.key).to_owned(),
            value: universe.value_text(kv.value).to_owned(),
            create_revision: kv.create,
            mod_revision: kv.modified,
            version: kv.version,
        };
        let revision = ops.get(read).map_or(read_at, |op| op.revision);
        return Some(DbAnomaly::ReadMissesWrite {
            read: id(read),
            revision,
            reported,
            write: id(index),
            write_revision: w,
        });
    }
    None
}
