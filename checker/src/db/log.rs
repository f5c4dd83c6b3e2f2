//! The committed writes of a linearizable history, revision by revision.
//!
//! etcd's Watch streams exactly these changes (one event per changed key, in revision order, the
//! changes of one revision together), so a watcher's events can be checked against this log (see
//! [`crate::check_watch_events`]).

use serde::{Deserialize, Serialize};

use crate::db::compile::Universe;
use crate::db::plan::Plan;
use crate::db::store::Store;
use crate::db::types::{KeyRange, KeyValue, Revision};
use crate::history::OpId;

/// Whether a change wrote or removed the key (etcd's `Event.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One key's change at one revision, shaped like an etcd watch event.
///
/// For a put, `kv` is the key as it is after the write. For a delete, as in etcd, `kv` has the
/// key and `mod_revision` set to the deleting revision, an empty value, and zero create revision
/// and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Change {
    /// Put or delete.
    pub kind: ChangeKind,
    /// The key after the change.
    pub kv: KeyValue,
}

/// The changes of one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The revision.
    pub revision: Revision,
    /// The operation that took effect at it.
    pub op: OpId,
    /// False for an unknown-outcome write the check found applied here.
    pub acknowledged: bool,
    /// One change per key changed, in the order the write changed them.
    pub changes: Vec<Change>,
}

/// Every revision after 1 up to the highest one the history observed, with its changes.
///
/// Where unknown-outcome writes leave a choice no read can tell apart (say, which of two lost puts
/// of unread values to a key took effect), this is one of the orders the check accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionLog {
    revisions: Vec<Committed>,
}

impl RevisionLog {
    /// Replays the writers the search chose (planned indices for revisions `2..`) on a plan whose
    /// values are not merged, so every change carries its real value.
    pub(crate) fn replay(plan: &Plan, writers: &[usize], ids: impl Fn(usize) -> OpId) -> Self {
        let mut store = Store::new(plan.universe.keys.len());
        let mut revisions = Vec::with_capacity(writers.len());
        for &writer in writers {
            let Some(planned) = plan.ops.get(writer) else { continue };
            let mark = store.mark();
            // The search applied this write here, so it changes the store; nothing to verify.
            let _changed = store.execute(&planned.request, None);
            let revision = store.revision();
            let changes = store
                .changes_since(mark)
                .into_iter()
                .map(|(key, state)| change(&plan.universe, key, state, revision))
                .collect();
            store.forget_undo();
            revisions.push(Committed {
                revision,
                op: ids(planned.source),
                acknowledged: planned.reply.is_some(),
                changes,
            });
        }
        RevisionLog { revisions }
    }

    /// Builds a log from its revisions, e.g. to test a watch check; they must be consecutive from 2.
    pub fn from_revisions(revisions: Vec<Committed>) -> Self {
        RevisionLog { revisions }
    }

    /// The revisions, from 2 up.
    pub fn revisions(&self) -> &[Committed] {
        &self.revisions
    }

    /// The changes of `revision`.
    pub fn get(&self, revision: Revision) -> Option<&Committed> {
        let index = usize::try_from(revision - 2).ok()?;
        self.revisions.get(index).filter(|committed| committed.revision == revision)
    }

    /// The highest revision in the log (1 when nothing was written).
    pub fn last_revision(&self) -> Revision {
        self.revisions.last().map_or(1, |committed| committed.revision)
    }

    /// The changes to keys of `range` at revisions `start..`, in order: what a watch from `start`
    /// on that range must deliver.
    pub fn changes_from<'a>(
        &'a self,
        start: Revision,
        range: &'a KeyRange,
    ) -> impl Iterator<Item = (Revision, &'a Change)> + 'a {
        self.revisions.iter().filter(move |committed| committed.revision >= start).flat_map(
            move |committed| {
                committed
                    .changes
                    .iter()
                    .filter(|change| range.contains(&change.kv.key))
                    .map(move |change| (committed.revision, change))
            },
        )
    }

    /// The store's key-values at `revision`, in key order.
    pub fn state_at(&self, revision: Revision) -> Vec<KeyValue> {
        let mut keys: std::collections::BTreeMap<&str, &KeyValue> = std::collections::BTreeMap::new();
        for committed in self.revisions.iter().take_while(|committed| committed.revision <= revision) {
            for change in &committed.changes {
                match change.kind {
                    ChangeKind::Put => keys.insert(&change.kv.key, &change.kv),
                    ChangeKind::Delete => keys.remove(change.kv.key.as_str()),
                };
            }
        }
        keys.into_values().cloned().collect()
    }
}

fn change(universe: &Universe, key: u32, state: crate::db::store::KeyState, revision: Revision) -> Change {
    let key_text = universe.key_text(key).to_owned();
    if state.exists() {
        let kv = KeyValue {
            key: key_text,
            value: universe.value_text(state.value).to_owned(),
            create_revision: state.create,
            mod_revision: state.modified,
            version: state.version,
        };
        Change { kind: ChangeKind::Put, kv }
    } else {
        let kv = KeyValue {
            key: key_text,
            value: String::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
        };
        Change { kind: ChangeKind::Delete, kv }
    }
}
