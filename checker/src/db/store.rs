//! The sequential specification: etcd's key space at one revision, over compiled keys and values.
//!
//! [`Store::execute`] applies a request the way etcd applies it (all changes of one request share
//! the next revision; a request that changes nothing does not advance the revision) and, given the
//! response a client recorded, says where that response disagrees with the model. Changes are
//! undoable so the search can backtrack cheaply.

use crate::db::compile::{Guard, KeyId, Kv, Reply, Request, Span, Target};
use crate::db::types::{CompareResult, Revision};

/// One key's state; `version == 0` means the key does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct KeyState {
    pub(crate) value: u32,
    pub(crate) create: Revision,
    pub(crate) modified: Revision,
    pub(crate) version: i64,
}

impl KeyState {
    pub(crate) fn exists(self) -> bool {
        self.version > 0
    }

    /// The state as a read would return it, if the key exists.
    pub(crate) fn as_kv(self, key: KeyId) -> Option<Kv> {
        self.exists().then_some(Kv {
            key,
            value: self.value,
            create: self.create,
            modified: self.modified,
            version: self.version,
        })
    }
}

/// Where a recorded response disagrees with the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// A key of a range (or a previous key-value) as the model has it and as it was reported.
    Key { key: KeyId, model: Option<Kv>, reported: Option<Kv> },
    /// A range's count.
    Count { model: u64, reported: u64 },
    /// A transaction's `succeeded` flag.
    Succeeded { model: bool },
    /// A delete's `deleted` count.
    Deleted { model: u64, reported: u64 },
    /// The response is of another kind than the request (caught before the search; kept for
    /// completeness).
    Shape,
}

/// The key space at the current revision, with an undo log.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    keys: Vec<KeyState>,
    revision: Revision,
    hash: u64,
    undo: Vec<(KeyId, KeyState)>,
}

/// A point to undo back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    undo: usize,
    revision: Revision,
}

/// A well-mixed hash of one key's state, XORed into the store's hash.
fn mix(key: KeyId, state: KeyState) -> u64 {
    if !state.exists() {
        return 0;
    }
    let mut hash = u64::from(key) ^ (u64::from(state.value) << 32);
    for word in [state.create as u64, state.modified as u64, state.version as u64] {
        hash = (hash ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        hash ^= hash >> 29;
    }
    hash
}

impl Store {
    /// An empty store at revision 1, over `keys` possible keys.
    pub(crate) fn new(keys: usize) -> Self {
        Store { keys: vec![KeyState::default(); keys], revision: 1, hash: 0, undo: Vec::new() }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn keys(&self) -> &[KeyState] {
        &self.keys
    }

    pub(crate) fn state(&self, key: KeyId) -> KeyState {
        self.keys.get(key as usize).copied().unwrap_or_default()
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark { undo: self.undo.len(), revision: self.revision }
    }

    /// The keys changed since `mark`, each with its state now, in the order of their first change.
    pub(crate) fn changes_since(&self, mark: Mark) -> Vec<(KeyId, KeyState)> {
        let mut changed: Vec<KeyId> = Vec::new();
        for &(key, _) in self.undo.get(mark.undo..).unwrap_or_default() {
            if !changed.contains(&key) {
                changed.push(key);
            }
        }
        changed.into_iter().map(|key| (key, self.state(key))).collect()
    }

    /// Undoes every change since `mark`.
    pub(crate) fn undo_to(&mut self, mark: Mark) {
        while self.undo.len() > mark.undo {
            if let Some((key, old)) = self.undo.pop() {
                self.set_raw(key, old);
            }
        }
        self.revision = mark.revision;
    }

    /// Forgets the undo log (nothing before this point will be undone).
    pub(crate) fn forget_undo(&mut self) {
        self.undo.clear();
    }

    fn set_raw(&mut self, key: KeyId, state: KeyState) {
        if let Some(slot) = self.keys.get_mut(key as usize) {
            self.hash ^= mix(key, *slot) ^ mix(key, state);
            *slot = state;
        }
    }

    fn set(&mut self, key: KeyId, state: KeyState) {
        self.undo.push((key, self.state(key)));
        self.set_raw(key, state);
    }

    /// Applies `request` as etcd does, checking it against `reply` when the client saw one.
    /// Returns whether the store changed; if so, its revision has advanced by one.
    pub(crate) fn execute(&mut self, request: &Request, reply: Option<&Reply>) -> Result<bool, Mismatch> {
        let next = self.revision + 1;
        let changed = self.run(request, reply, next)?;
        if changed {
            self.revision = next;
        }
        Ok(changed)
    }

    fn run(&mut self, request: &Request, reply: Option<&Reply>, next: Revision) -> Result<bool, Mismatch> {
        match (request, reply) {
            (Request::Range(span), Some(Reply::Range { kvs, count })) => {
                self.check_range(*span, kvs, *count)?;
                Ok(false)
            }
            (Request::Range(_), None) => Ok(false),
            (Request::Put { key, value, prev_kv }, reply) => {
                let before = self.state(*key);
                if let (true, Some(Reply::Put { prev_kv: reported })) = (*prev_kv, reply) {
                    let model = before.as_kv(*key);
                    if model != *reported {
                        return Err(Mismatch::Key { key: *key, model, reported: *reported });
                    }
                }
                let create = if before.exists() { before.create } else { next };
                self.set(
                    *key,
                    KeyState { value: *value, create, modified: next, version: before.version + 1 },
                );
                Ok(true)
            }
            (Request::Delete(span), reply) => {
                let mut deleted = 0;
                for key in span.lo..span.hi {
                    if self.state(key).exists() {
                        self.set(key, KeyState::default());
                        deleted += 1;
                    }
                }
                match reply {
                    Some(Reply::Delete { deleted: reported }) if *reported != deleted => {
                        Err(Mismatch::Deleted { model: deleted, reported: *reported })
                    }
                    _ => Ok(deleted > 0),
                }
            }
            (Request::Txn { compare, success, failure }, reply) => {
                let holds = compare.iter().all(|guard| self.holds(guard));
                let replies = match reply {
                    Some(Reply::Txn { succeeded, .. }) if *succeeded != holds => {
                        return Err(Mismatch::Succeeded { model: holds });
                    }
                    Some(Reply::Txn { replies, .. }) => Some(replies.as_slice()),
                    _ => None,
                };
                let branch = if holds { success } else { failure };
                let mut changed = false;
                for (index, nested) in branch.iter().enumerate() {
                    let nested_reply = replies.and_then(|replies| replies.get(index));
                    changed |= self.run(nested, nested_reply, next)?;
                }
                Ok(changed)
            }
            (Request::Range(_), Some(_)) => Err(Mismatch::Shape),
        }
    }

    fn check_range(&self, span: Span, kvs: &[Kv], count: u64) -> Result<(), Mismatch> {
        let mut reported = kvs.iter().peekable();
        let mut present = 0;
        for key in span.lo..span.hi {
            let model = self.state(key).as_kv(key);
            present += u64::from(model.is_some());
            let this = reported.next_if(|kv| kv.key == key).copied();
            if model != this {
                return Err(Mismatch::Key { key, model, reported: this });
            }
        }
        if let Some(extra) = reported.next() {
            // Only a key outside the span can be left (caught as a shape error before).
            return Err(Mismatch::Key { key: extra.key, model: None, reported: Some(*extra) });
        }
        if present != count {
            return Err(Mismatch::Count { model: present, reported: count });
        }
        Ok(())
    }

    /// Evaluates a guard as etcd does: a missing key has version, create and mod revision 0, and
    /// every value comparison on it is false.
    fn holds(&self, guard: &Guard) -> bool {
        let state = self.state(guard.key);
        let ordering = match guard.target {
            Target::Value(_) if !state.exists() => return false,
            Target::Value(value) => state.value.cmp(&value),
            Target::Version(version) => state.version.cmp(&version),
            Target::Create(revision) => state.create.cmp(&revision),
            Target::Mod(revision) => state.modified.cmp(&revision),
        };
        match guard.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Less => ordering.is_lt(),
            CompareResult::Greater => ordering.is_gt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: KeyId, value: u32) -> Request {
        Request::Put { key, value, prev_kv: false }
    }

    fn kv(key: KeyId, value: u32, create: Revision, modified: Revision, version: i64) -> Kv {
        Kv { key, value, create, modified, version }
    }

    #[test]
    fn revisions_versions_and_recreation_follow_etcd() {
        let mut store = Store::new(3);
        assert_eq!(store.revision(), 1);
        assert_eq!(store.execute(&put(0, 7), None), Ok(true));
        assert_eq!(store.execute(&put(0, 8), None), Ok(true));
        assert_eq!(store.revision(), 3);
        assert_eq!(store.state(0).as_kv(0), Some(kv(0, 8, 2, 3, 2)));
        // A delete of nothing changes nothing; a delete of something takes a revision.
        let delete_missing = Request::Delete(Span { lo: 1, hi: 3 });
        assert_eq!(store.execute(&delete_missing, Some(&Reply::Delete { deleted: 0 })), Ok(false));
        assert_eq!(store.revision(), 3);
        assert_eq!(store.execute(&Request::Delete(Span { lo: 0, hi: 3 }), None), Ok(true));
        assert_eq!(store.revision(), 4);
        assert!(!store.state(0).exists());
        // Put again: created anew.
        assert_eq!(store.execute(&put(0, 9), None), Ok(true));
        assert_eq!(store.state(0).as_kv(0), Some(kv(0, 9, 5, 5, 1)));
        let range = Request::Range(Span { lo: 0, hi: 3 });
        let good = Reply::Range { kvs: vec![kv(0, 9, 5, 5, 1)], count: 1 };
        assert_eq!(store.execute(&range, Some(&good)), Ok(false));
        let stale = Reply::Range { kvs: vec![kv(0, 8, 2, 3, 2)], count: 1 };
        assert!(matches!(store.execute(&range, Some(&stale)), Err(Mismatch::Key { key: 0, .. })));
    }

    #[test]
    fn txn_changes_share_one_revision_and_missing_keys_compare_as_zero() {
        let mut store = Store::new(2);
        let absent = Guard { key: 0, target: Target::Version(0), result: CompareResult::Equal };
        let txn =
            Request::Txn { compare: vec![absent], success: vec![put(0, 1), put(1, 2)], failure: vec![] };
        let reply = Reply::Txn { succeeded: true, replies: vec![Reply::Put { prev_kv: None }; 2] };
        assert_eq!(store.execute(&txn, Some(&reply)), Ok(true));
        assert_eq!(store.revision(), 2);
        assert_eq!(store.state(1).as_kv(1), Some(kv(1, 2, 2, 2, 1)));
        assert_eq!(store.execute(&txn, Some(&reply)), Err(Mismatch::Succeeded { model: false }));
        // A value comparison on a missing key is false even for "not equal".
        let mut fresh = Store::new(1);
        let not_equal = Guard { key: 0, target: Target::Value(5), result: CompareResult::NotEqual };
        let txn = Request::Txn { compare: vec![not_equal], success: vec![put(0, 1)], failure: vec![] };
        assert_eq!(fresh.execute(&txn, None), Ok(false));
        assert_eq!(fresh.revision(), 1);
    }

    #[test]
    fn undo_restores_state_revision_and_hash() {
        let mut store = Store::new(2);
        store.execute(&put(0, 1), None).unwrap();
        let (mark, hash, keys) = (store.mark(), store.hash(), store.keys().to_vec());
        store.execute(&put(0, 2), None).unwrap();
        store.execute(&put(1, 3), None).unwrap();
        assert_eq!(store.changes_since(mark).len(), 2);
        assert_ne!(store.hash(), hash);
        store.undo_to(mark);
        assert_eq!((store.hash(), store.keys(), store.revision()), (hash, keys.as_slice(), 2));
    }
}
