//! Compiles requests and responses into small integer forms for the search.
//!
//! Keys become indices into the sorted list of every key the history mentions, so a range is an
//! index interval and the store is a vector. Values become indices in string order, so ordered
//! value comparisons compare indices. Values that no response returns and no comparison names can
//! be told apart by no operation; unless a comparison orders values, they all become
//! [`UNOBSERVED`], which makes unknown-outcome writes of such values interchangeable (the search
//! then tries one of them where it would otherwise try each).

use std::collections::{BTreeSet, HashMap};

use crate::db::history::{DbHistory, DbOutcome};
use crate::db::types::{CompareResult, CompareTarget, DbOp, KeyRange, KeyValue, Response, Revision};

/// Index of a key in [`Universe::keys`].
pub(crate) type KeyId = u32;
/// Index of a value in [`Universe::values`], or [`UNOBSERVED`].
pub(crate) type ValueId = u32;
/// Every value nobody can observe.
pub(crate) const UNOBSERVED: ValueId = ValueId::MAX;

/// The keys in `[lo, hi)` of the sorted key list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Span {
    pub(crate) lo: KeyId,
    pub(crate) hi: KeyId,
}

/// A transaction guard on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Guard {
    pub(crate) key: KeyId,
    pub(crate) target: Target,
    pub(crate) result: CompareResult,
}

/// What a guard compares, with its operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Value(ValueId),
    Version(i64),
    Create(Revision),
    Mod(Revision),
}

/// A compiled [`DbOp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Request {
    Range(Span),
    Put { key: KeyId, value: ValueId, prev_kv: bool },
    Delete(Span),
    Txn { compare: Vec<Guard>, success: Vec<Request>, failure: Vec<Request> },
}

/// A compiled [`KeyValue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Kv {
    pub(crate) key: KeyId,
    pub(crate) value: ValueId,
    pub(crate) create: Revision,
    pub(crate) modified: Revision,
    pub(crate) version: i64,
}

/// A compiled [`Response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Range { kvs: Vec<Kv>, count: u64 },
    Put { prev_kv: Option<Kv> },
    Delete { deleted: u64 },
    Txn { succeeded: bool, replies: Vec<Reply> },
}

/// The key and value tables of one history.
#[derive(Debug, Clone)]
pub(crate) struct Universe {
    pub(crate) keys: Vec<String>,
    pub(crate) values: Vec<String>,
    key_ids: HashMap<String, KeyId>,
    value_ids: HashMap<String, ValueId>,
}

/// Calls `visit` for every request nested in `op`, `op` included.
fn each_request(op: &DbOp, visit: &mut impl FnMut(&DbOp)) {
    visit(op);
    if let DbOp::Txn { success, failure, .. } = op {
        for nested in success.iter().chain(failure) {
            each_request(nested, visit);
        }
    }
}

/// Calls `visit` for every key-value a response returns.
fn each_kv(response: &Response, visit: &mut impl FnMut(&KeyValue)) {
    match response {
        Response::Range { kvs, .. } => kvs.iter().for_each(&mut *visit),
        Response::Put { prev_kv: Some(kv) } => visit(kv),
        Response::Txn { responses, .. } => responses.iter().for_each(|nested| each_kv(nested, visit)),
        Response::Put { prev_kv: None } | Response::DeleteRange { .. } => {}
    }
}

impl Universe {
    /// Collects the keys and values of `history`; with `merge`, values nobody observes become
    /// [`UNOBSERVED`] (unless some comparison orders values, which would tell them apart).
    pub(crate) fn new(history: &DbHistory, merge: bool) -> Self {
        let mut keys = BTreeSet::new();
        let mut observed = BTreeSet::new();
        let mut written = BTreeSet::new();
        let mut ordered_compare = false;
        for operation in history.operations() {
            each_request(&operation.op, &mut |op| match op {
                DbOp::Range { range } | DbOp::DeleteRange { range } => {
                    keys.insert(range.key.clone());
                }
                DbOp::Put { key, value, .. } => {
                    keys.insert(key.clone());
                    written.insert(value.clone());
                }
                DbOp::Txn { compare, .. } => {
                    for guard in compare {
                        keys.insert(guard.key.clone());
                        if let CompareTarget::Value(value) = &guard.target {
                            observed.insert(value.clone());
                            ordered_compare |=
                                matches!(guard.result, CompareResult::Less | CompareResult::Greater);
                        }
                    }
                }
            });
            if let DbOutcome::Ok(output) = &operation.outcome {
                each_kv(&output.response, &mut |kv| {
                    keys.insert(kv.key.clone());
                    observed.insert(kv.value.clone());
                });
            }
        }
        if !merge || ordered_compare {
            observed.extend(written);
        }
        let keys: Vec<String> = keys.into_iter().collect();
        let values: Vec<String> = observed.into_iter().collect();
        let key_ids = keys.iter().enumerate().map(|(id, key)| (key.clone(), id as KeyId)).collect();
        let value_ids = values.iter().enumerate().map(|(id, value)| (value.clone(), id as ValueId)).collect();
        Universe { keys, values, key_ids, value_ids }
    }

    /// The id of a key the history mentions; keys are collected from every place a key appears.
    pub(crate) fn key(&self, key: &str) -> KeyId {
        self.key_ids.get(key).copied().unwrap_or(KeyId::MAX)
    }

    /// The id of a value, [`UNOBSERVED`] for one nobody observes.
    pub(crate) fn value(&self, value: &str) -> ValueId {
        self.value_ids.get(value).copied().unwrap_or(UNOBSERVED)
    }

    /// The first key id at or after `key` in key order.
    fn lower_bound(&self, key: &str) -> KeyId {
        self.keys.partition_point(|known| known.as_str() < key) as KeyId
    }

    pub(crate) fn span(&self, range: &KeyRange) -> Span {
        let lo = self.lower_bound(&range.key);
        let hi = match range.range_end.as_deref() {
            None => self.lower_bound(&range.key) + u32::from(self.key_ids.contains_key(&range.key)),
            Some("\0") => self.keys.len() as KeyId,
            Some(end) => self.lower_bound(end).max(lo),
        };
        Span { lo, hi }
    }

    pub(crate) fn request(&self, op: &DbOp) -> Request {
        match op {
            DbOp::Range { range } => Request::Range(self.span(range)),
            DbOp::DeleteRange { range } => Request::Delete(self.span(range)),
            DbOp::Put { key, value, prev_kv } => {
                Request::Put { key: self.key(key), value: self.value(value), prev_kv: *prev_kv }
            }
            DbOp::Txn { compare, success, failure } => Request::Txn {
                compare: compare
                    .iter()
                    .map(|guard| Guard {
                        key: self.key(&guard.key),
                        target: match &guard.target {
                            CompareTarget::Value(value) => Target::Value(self.value(value)),
                            CompareTarget::Version(version) => Target::Version(*version),
                            CompareTarget::CreateRevision(revision) => Target::Create(*revision),
                            CompareTarget::ModRevision(revision) => Target::Mod(*revision),
                        },
                        result: guard.result,
                    })
                    .collect(),
                success: success.iter().map(|nested| self.request(nested)).collect(),
                failure: failure.iter().map(|nested| self.request(nested)).collect(),
            },
        }
    }

    pub(crate) fn kv(&self, kv: &KeyValue) -> Kv {
        Kv {
            key: self.key(&kv.key),
            value: self.value(&kv.value),
            create: kv.create_revision,
            modified: kv.mod_revision,
            version: kv.version,
        }
    }

    pub(crate) fn reply(&self, response: &Response) -> Reply {
        match response {
            Response::Range { kvs, count } => {
                Reply::Range { kvs: kvs.iter().map(|kv| self.kv(kv)).collect(), count: *count }
            }
            Response::Put { prev_kv } => Reply::Put { prev_kv: prev_kv.as_ref().map(|kv| self.kv(kv)) },
            Response::DeleteRange { deleted } => Reply::Delete { deleted: *deleted },
            Response::Txn { succeeded, responses } => Reply::Txn {
                succeeded: *succeeded,
                replies: responses.iter().map(|nested| self.reply(nested)).collect(),
            },
        }
    }

    /// The string of a value id ("<unobserved>" for merged ones).
    pub(crate) fn value_text(&self, value: ValueId) -> &str {
        self.values.get(value as usize).map_or("<unobserved>", String::as_str)
    }

    /// The string of a key id.
    pub(crate) fn key_text(&self, key: KeyId) -> &str {
        self.keys.get(key as usize).map_or("<unknown key>", String::as_str)
    }
}

/// Why a response cannot belong to its request whatever the store held.
pub(crate) fn shape_error(op: &DbOp, response: &Response) -> Option<String> {
    match (op, response) {
        (DbOp::Range { range }, Response::Range { kvs, count }) => {
            if let Some(outside) = kvs.iter().find(|kv| !range.contains(&kv.key)) {
                return Some(format!("range returned key {:?} outside the range", outside.key));
            }
            if kvs.windows(2).any(|pair| pair[0].key >= pair[1].key) {
                return Some("range returned keys out of order or twice".into());
            }
            if *count != kvs.len() as u64 {
                return Some(format!("range count {count} but {} key-values", kvs.len()));
            }
            kvs.iter().find_map(kv_error)
        }
        (DbOp::Put { .. }, Response::Put { prev_kv }) => prev_kv.as_ref().and_then(kv_error),
        (DbOp::DeleteRange { .. }, Response::DeleteRange { .. }) => None,
        (DbOp::Txn { success, failure, .. }, Response::Txn { succeeded, responses }) => {
            let branch = if *succeeded { success } else { failure };
            if branch.len() != responses.len() {
                return Some(format!(
                    "{} responses for a branch of {} requests",
                    responses.len(),
                    branch.len()
                ));
            }
            branch.iter().zip(responses).find_map(|(op, response)| shape_error(op, response))
        }
        _ => Some("response of another kind of request".into()),
    }
}

/// Why a returned key-value is impossible in itself.
fn kv_error(kv: &KeyValue) -> Option<String> {
    // A key exists from its first version on, was created by a write (revision 2 at the earliest),
    // and has been modified after its creation exactly when it has been put more than once.
    let valid = kv.version >= 1
        && kv.create_revision >= 2
        && kv.mod_revision >= kv.create_revision
        && (kv.version == 1) == (kv.mod_revision == kv.create_revision);
    (!valid).then(|| {
        format!(
            "key {:?} returned with create revision {}, mod revision {}, version {}",
            kv.key, kv.create_revision, kv.mod_revision, kv.version
        )
    })
}

/// True if the response says the request changed the store (so it claims a revision): a put, a
/// delete that deleted something, a transaction whose branch did either.
pub(crate) fn claims_revision(response: &Response) -> bool {
    match response {
        Response::Range { .. } => false,
        Response::Put { .. } => true,
        Response::DeleteRange { deleted } => *deleted > 0,
        Response::Txn { responses, .. } => responses.iter().any(claims_revision),
    }
}

impl Request {
    /// Adds the keys the request may change (in any branch) to `into`.
    pub(crate) fn written_keys(&self, into: &mut Vec<KeyId>) {
        match self {
            Request::Range(_) => {}
            Request::Put { key, .. } => into.push(*key),
            Request::Delete(span) => into.extend(span.lo..span.hi),
            Request::Txn { success, failure, .. } => {
                success.iter().chain(failure).for_each(|nested| nested.written_keys(into));
            }
        }
    }

    /// Adds every key the request reads or changes (guards, ranges, puts, deletes) to `into`.
    pub(crate) fn all_keys(&self, into: &mut Vec<KeyId>) {
        match self {
            Request::Range(span) | Request::Delete(span) => into.extend(span.lo..span.hi),
            Request::Put { key, .. } => into.push(*key),
            Request::Txn { compare, success, failure } => {
                into.extend(compare.iter().map(|guard| guard.key));
                success.iter().chain(failure).for_each(|nested| nested.all_keys(into));
            }
        }
    }

    /// Adds the keys an acknowledged request certainly changed, given its reply: `(key, deleted)`
    /// for each put (`false`) and each key of a delete's range (`true`: absent afterwards), in the
    /// branches the reply says ran.
    pub(crate) fn certain_writes(&self, reply: &Reply, into: &mut Vec<(KeyId, bool)>) {
        match (self, reply) {
            (Request::Put { key, .. }, _) => into.push((*key, false)),
            (Request::Delete(span), _) => into.extend((span.lo..span.hi).map(|key| (key, true))),
            (Request::Txn { success, failure, .. }, Reply::Txn { succeeded, replies }) => {
                let branch = if *succeeded { success } else { failure };
                for (nested, reply) in branch.iter().zip(replies) {
                    nested.certain_writes(reply, into);
                }
            }
            (Request::Range(_) | Request::Txn { .. }, _) => {}
        }
    }

    /// True if the request may write `key` (in any branch).
    pub(crate) fn touches(&self, key: KeyId) -> bool {
        match self {
            Request::Range(_) => false,
            Request::Put { key: written, .. } => *written == key,
            Request::Delete(span) => span.lo <= key && key < span.hi,
            Request::Txn { success, failure, .. } => {
                success.iter().chain(failure).any(|nested| nested.touches(key))
            }
        }
    }
}
