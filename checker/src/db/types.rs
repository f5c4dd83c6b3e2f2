//! The requests and responses of the whole-database model, shaped like etcd's KV API.
//!
//! They mirror etcd's `RangeRequest`, `PutRequest`, `DeleteRangeRequest` and `TxnRequest` and their
//! responses closely enough that a test client can fill them from what it sent and received
//! without interpretation; everything the checker needs to judge a response (header revision,
//! create/mod revision, version, counts, the `succeeded` flag) is a field here.

use serde::{Deserialize, Serialize};

/// An etcd revision: the store's logical clock, 1 for an empty store.
pub type Revision = i64;

/// A key or an interval of keys, as etcd encodes it: `range_end` absent means the single `key`,
/// `"\0"` means every key from `key` on, anything else the half-open interval `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// The single key, or the first key of the interval.
    pub key: String,
    /// The end of the interval (exclusive), `"\0"` for no end, `None` for a single key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
}

impl KeyRange {
    /// The range holding only `key`.
    pub fn single(key: impl Into<String>) -> Self {
        KeyRange { key: key.into(), range_end: None }
    }

    /// The keys in `[key, end)`.
    pub fn between(key: impl Into<String>, end: impl Into<String>) -> Self {
        KeyRange { key: key.into(), range_end: Some(end.into()) }
    }

    /// Every key from `key` on (etcd's `range_end = "\0"`).
    pub fn from_key(key: impl Into<String>) -> Self {
        KeyRange { key: key.into(), range_end: Some("\0".into()) }
    }

    /// True if `candidate` lies in the range.
    pub fn contains(&self, candidate: &str) -> bool {
        match self.range_end.as_deref() {
            None => candidate == self.key,
            Some("\0") => candidate >= self.key.as_str(),
            Some(end) => candidate >= self.key.as_str() && candidate < end,
        }
    }
}

/// What a [`Compare`] looks at, with the operand it is compared against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "target", content = "operand", rename_all = "snake_case")]
pub enum CompareTarget {
    /// The key's value (false for every comparison when the key does not exist, as in etcd).
    Value(String),
    /// The key's version (0 when it does not exist).
    Version(i64),
    /// The key's create revision (0 when it does not exist).
    CreateRevision(Revision),
    /// The key's mod revision (0 when it does not exist).
    ModRevision(Revision),
}

/// How the key's attribute must relate to the operand: `attribute <op> operand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareResult {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `<`
    Less,
    /// `>`
    Greater,
}

/// One guard of a transaction (etcd `Compare` on a single key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// The attribute and operand.
    #[serde(flatten)]
    pub target: CompareTarget,
    /// The relation that must hold.
    pub result: CompareResult,
}

/// A request against the whole store; transactions nest requests as etcd's `RequestOp` does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DbOp {
    /// Read the keys of a range (etcd `Range`, no limit, at the current revision).
    Range {
        /// The keys read.
        range: KeyRange,
    },
    /// Write one key (etcd `Put`).
    Put {
        /// The key written.
        key: String,
        /// The value written.
        value: String,
        /// Whether the response is to carry the previous key-value (checked only when asked).
        #[serde(default)]
        prev_kv: bool,
    },
    /// Remove the keys of a range (etcd `DeleteRange`).
    DeleteRange {
        /// The keys removed.
        range: KeyRange,
    },
    /// If every comparison holds, run `success`, otherwise `failure`, atomically (etcd `Txn`).
    Txn {
        /// The guards.
        compare: Vec<Compare>,
        /// Run when every guard holds.
        success: Vec<DbOp>,
        /// Run otherwise.
        failure: Vec<DbOp>,
    },
}

/// A key's full state as a read returns it (etcd `mvccpb.KeyValue` without the lease).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The revision that created the key (since it was last deleted).
    pub create_revision: Revision,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// 1 at creation, +1 per put since.
    pub version: i64,
}

/// The body of a response, one variant per [`DbOp`] kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Result of [`DbOp::Range`]: the keys of the range in key order, and how many there are.
    Range {
        /// The key-values, in key order.
        kvs: Vec<KeyValue>,
        /// etcd's `count` (the number of keys in the range).
        count: u64,
    },
    /// Result of [`DbOp::Put`]: the previous key-value when it was asked for and existed.
    Put {
        /// The key as it was before the put.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev_kv: Option<KeyValue>,
    },
    /// Result of [`DbOp::DeleteRange`]: how many keys were deleted.
    DeleteRange {
        /// etcd's `deleted`.
        deleted: u64,
    },
    /// Result of [`DbOp::Txn`]: which branch ran, and one response per request of that branch.
    Txn {
        /// True when every comparison held and `success` ran.
        succeeded: bool,
        /// The responses of the branch that ran, in order.
        responses: Vec<Response>,
    },
}

/// What a client observed from a request that completed successfully: the header revision and the
/// response body.
///
/// For a write that changed the store the revision is the one the write created; for a read, or a
/// write that changed nothing (a delete of nothing, a transaction whose branch wrote nothing), it
/// is the store's revision when the request was served.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DbOutput {
    /// The response header's revision.
    pub revision: Revision,
    /// The response body.
    pub response: Response,
}
