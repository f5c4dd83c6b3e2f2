//! Turns the search's compact failure into a [`DbAnomaly`] and the operations a reader needs to
//! see it.

use crate::db::anomaly::{DbAnomaly, ResponseMismatch};
use crate::db::compile::{KeyId, Kv, Universe};
use crate::db::history::DbHistory;
use crate::db::plan::Plan;
use crate::db::search::{Fail, Failure};
use crate::db::store::Mismatch;
use crate::db::types::{KeyValue, Revision};
use crate::history::OpId;

/// How many acknowledged writes of the key in question are shown before the failing revision.
const KEY_WRITES_SHOWN: usize = 3;

/// Resolves planned indices to operation ids of the checked history.
pub(crate) struct Explainer<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) history: &'a DbHistory,
}

fn kv_of(universe: &Universe, kv: Kv) -> KeyValue {
    KeyValue {
        key: universe.key_text(kv.key).to_owned(),
        value: universe.value_text(kv.value).to_owned(),
        create_revision: kv.create,
        mod_revision: kv.modified,
        version: kv.version,
    }
}

impl Explainer<'_> {
    pub(crate) fn id(&self, planned: usize) -> OpId {
        self.plan
            .ops
            .get(planned)
            .and_then(|op| self.history.operations().get(op.source))
            .map_or(0, |op| op.id)
    }

    fn revision_of(&self, planned: usize) -> Revision {
        self.plan.ops.get(planned).map_or(0, |op| op.revision)
    }

    fn mismatch(&self, mismatch: &Mismatch) -> ResponseMismatch {
        let universe = &self.plan.universe;
        match *mismatch {
            Mismatch::Key { key, model, reported } => ResponseMismatch::Key {
                key: universe.key_text(key).to_owned(),
                model: model.map(|kv| kv_of(universe, kv)),
                reported: reported.map(|kv| kv_of(universe, kv)),
            },
            Mismatch::Count { model, reported } => ResponseMismatch::Count { model, reported },
            Mismatch::Succeeded { model } => ResponseMismatch::Succeeded { model },
            Mismatch::Deleted { model, reported } => ResponseMismatch::Deleted { model, reported },
            Mismatch::Shape => ResponseMismatch::Changed { model: false },
        }
    }

    /// The anomaly and the operations involved (besides those it names, the latest acknowledged
    /// writes of the key it concerns).
    pub(crate) fn explain(&self, failure: &Failure) -> (DbAnomaly, Vec<OpId>) {
        let revision = failure.revision;
        let mut involved = Vec::new();
        let mut key: Option<KeyId> = None;
        let anomaly = match &failure.fail {
            Fail::Response { op, mismatch } => {
                involved.push(self.id(*op));
                if let Mismatch::Key { key: which, .. } = mismatch {
                    key = Some(*which);
                }
                DbAnomaly::WrongResponse { op: self.id(*op), revision, mismatch: self.mismatch(mismatch) }
            }
            Fail::Changed { op, model } => {
                involved.push(self.id(*op));
                DbAnomaly::WrongResponse {
                    op: self.id(*op),
                    revision,
                    mismatch: ResponseMismatch::Changed { model: *model },
                }
            }
            Fail::Time { op, after } => {
                involved.extend([self.id(*after), self.id(*op)]);
                DbAnomaly::RealTime {
                    op: self.id(*op),
                    revision,
                    after: self.id(*after),
                    after_revision: self.revision_of(*after),
                }
            }
            Fail::Expected { expected, writer, model } => {
                key = Some(expected.kv.key);
                involved.push(self.id(expected.seen_by));
                involved.extend(writer.map(|writer| self.id(writer)));
                DbAnomaly::WrongWriteObserved {
                    revision,
                    read: self.id(expected.seen_by),
                    writer: writer.map(|writer| self.id(writer)),
                    reported: kv_of(&self.plan.universe, expected.kv),
                    model: model.map(|kv| kv_of(&self.plan.universe, kv)),
                }
            }
            Fail::Gap { candidates } => DbAnomaly::UnfillableGap { revision, candidates: *candidates },
        };
        if let Some(key) = key {
            involved.extend(self.latest_writes_of(key, revision));
        }
        for neighbour in [revision - 1, revision, revision + 1] {
            involved.extend(self.plan.claimed(neighbour).map(|op| self.id(op)));
        }
        involved.sort_unstable();
        involved.dedup();
        (anomaly, involved)
    }

    /// The last acknowledged writes of `key` at or before `revision`.
    fn latest_writes_of(&self, key: KeyId, revision: Revision) -> Vec<OpId> {
        let mut writes: Vec<(Revision, OpId)> = self
            .plan
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.claims && op.revision <= revision && op.request.touches(key))
            .map(|(index, op)| (op.revision, self.id(index)))
            .collect();
        writes.sort_unstable();
        writes.into_iter().rev().take(KEY_WRITES_SHOWN).map(|(_, id)| id).collect()
    }
}

/// Explains an anomaly found before the search, which names its operations itself.
pub(crate) fn involved_in(anomaly: &DbAnomaly) -> Vec<OpId> {
    match anomaly {
        DbAnomaly::Malformed { op, .. } | DbAnomaly::ImpossibleRevision { op, .. } => vec![*op],
        DbAnomaly::DuplicateRevision { first, second, .. } => vec![*first, *second],
        DbAnomaly::WrongResponse { op, .. } => vec![*op],
        DbAnomaly::ReadMissesWrite { read, write, .. } => vec![*write, *read],
        DbAnomaly::WrongWriteObserved { read, writer, .. } => {
            [Some(*read), *writer].into_iter().flatten().collect()
        }
        DbAnomaly::RealTime { op, after, .. } => vec![*after, *op],
        DbAnomaly::UnfillableGap { .. } => Vec::new(),
    }
}
