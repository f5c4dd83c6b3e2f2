//! Unknown-outcome writes grouped by what they do, and where reads force them to be.
//!
//! Two unknown-outcome writes with the same compiled request (same keys, same observable values)
//! are interchangeable except for their invocation times. Of such a group the search only ever
//! applies the earliest-invoked one not yet used: if a linearization applies a later one at some
//! revision and the earlier one later (or never), swapping them gives a linearization too, since
//! the earlier one was invoked before the later one. So a group's used members are always a
//! prefix, and the search state needs one counter per group instead of a set of operations.
//!
//! A read that returns key `k` with value `v` and mod revision `m`, where no acknowledged write
//! claims `m`, says an unknown-outcome write of `v` to `k` took effect at `m`. When there are no
//! more such writes than revisions they are seen at, each must be at one of those revisions
//! ([`Class::allowed`]), and is never tried elsewhere.

use std::collections::{BTreeSet, HashMap};

use crate::db::compile::{KeyId, Request, ValueId};
use crate::db::planned::{Expected, Planned};
use crate::db::types::Revision;

/// Unknown-outcome writes with one compiled request.
#[derive(Debug, Clone)]
pub(crate) struct Class {
    pub(crate) request: Request,
    /// Planned operation indices, by invocation time.
    pub(crate) ops: Vec<usize>,
    /// The revisions the group's writes must be at, `None` when anywhere.
    pub(crate) allowed: Option<Vec<Revision>>,
    /// The keys the request may change, in any branch.
    pub(crate) touches: Vec<KeyId>,
}

/// Every group, and which groups write each observed (key, value) pair.
#[derive(Debug, Clone, Default)]
pub(crate) struct Classes {
    pub(crate) list: Vec<Class>,
    by_pair: HashMap<(KeyId, ValueId), Vec<u32>>,
}

/// The (key, value) pairs a request may write, in any branch.
fn writes(request: &Request, into: &mut BTreeSet<(KeyId, ValueId)>) {
    match request {
        Request::Put { key, value, .. } => {
            into.insert((*key, *value));
        }
        Request::Txn { success, failure, .. } => {
            for nested in success.iter().chain(failure) {
                writes(nested, into);
            }
        }
        Request::Range(_) | Request::Delete(_) => {}
    }
}

impl Classes {
    /// Groups the unknown-outcome writes of `ops`; `expected[r - 2]` are the key-values reads
    /// attribute to revision `r`, and `gaps` the revisions no acknowledged write claims.
    pub(crate) fn new(ops: &[Planned], expected: &[Vec<Expected>], gaps: &[Revision]) -> Self {
        let mut index: HashMap<&Request, u32> = HashMap::new();
        let mut list: Vec<Class> = Vec::new();
        let mut unknown: Vec<usize> = (0..ops.len()).filter(|&op| ops[op].reply.is_none()).collect();
        unknown.sort_by_key(|&op| (ops[op].invoke, op));
        for op in unknown {
            let request = &ops[op].request;
            let class = *index.entry(request).or_insert_with(|| {
                let mut touches = Vec::new();
                request.written_keys(&mut touches);
                touches.sort_unstable();
                touches.dedup();
                list.push(Class { request: request.clone(), ops: Vec::new(), allowed: None, touches });
                (list.len() - 1) as u32
            });
            if let Some(class) = list.get_mut(class as usize) {
                class.ops.push(op);
            }
        }

        // Where each observed pair must have been written, and how many unknown writes may write it.
        let mut needed: HashMap<(KeyId, ValueId), Vec<Revision>> = HashMap::new();
        for &gap in gaps {
            let seen = usize::try_from(gap - 2).ok().and_then(|index| expected.get(index));
            for expected in seen.into_iter().flatten() {
                needed.entry((expected.kv.key, expected.kv.value)).or_default().push(gap);
            }
        }
        let mut pairs_of: Vec<BTreeSet<(KeyId, ValueId)>> = Vec::with_capacity(list.len());
        let mut supply: HashMap<(KeyId, ValueId), usize> = HashMap::new();
        for class in &list {
            let mut pairs = BTreeSet::new();
            writes(&class.request, &mut pairs);
            for pair in &pairs {
                *supply.entry(*pair).or_default() += class.ops.len();
            }
            pairs_of.push(pairs);
        }
        let mut by_pair: HashMap<(KeyId, ValueId), Vec<u32>> = HashMap::new();
        for (id, (class, pairs)) in list.iter_mut().zip(&pairs_of).enumerate() {
            for pair in pairs {
                by_pair.entry(*pair).or_default().push(id as u32);
                let Some(revisions) = needed.get(pair) else { continue };
                if supply.get(pair).copied().unwrap_or(0) > revisions.len() {
                    continue;
                }
                class.allowed = Some(match class.allowed.take() {
                    None => revisions.clone(),
                    Some(before) => {
                        before.into_iter().filter(|revision| revisions.contains(revision)).collect()
                    }
                });
            }
            if let Some(allowed) = class.allowed.as_mut() {
                allowed.sort_unstable();
                allowed.dedup();
            }
        }
        Classes { list, by_pair }
    }

    /// The groups whose request may write `value` to `key`.
    pub(crate) fn writing(&self, key: KeyId, value: ValueId) -> &[u32] {
        self.by_pair.get(&(key, value)).map_or(&[], Vec::as_slice)
    }
}
