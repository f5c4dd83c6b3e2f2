//! The recorded history: what each client asked, when, and what it was told.
//!
//! A history is the only evidence a linearizability checker gets, so its types say exactly what a
//! client can know: the interval during which an operation was in flight and one of three
//! outcomes. The distinction between [`Outcome::Failed`] and [`Outcome::Unknown`] matters most:
//! a request that timed out may still have been applied, and treating it as failed would make the
//! checker report violations a correct store produces all the time.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Identifies the client (one logical thread of requests) that issued an operation.
///
/// Linearizability needs no client identity, but a human reading a violation does: it shows which
/// requests were sequential in one task and which were concurrent.
pub type ClientId = u64;

/// Identifies one operation inside a history; stable across sub-histories so a minimal failing
/// sub-history can be matched back to the full run.
pub type OpId = u64;

/// A request against the key-value store, as far as the register model cares.
///
/// Keys and values are strings so a history stays readable as JSON; test clients of an etcd-style
/// API encode their keys and values as UTF-8 anyway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// Read one key (etcd `Range` on a single key).
    Get {
        /// The key read.
        key: String,
    },
    /// Unconditionally write one key (etcd `Put`).
    Put {
        /// The key written.
        key: String,
        /// The value written.
        value: String,
    },
    /// Remove one key (etcd `DeleteRange` on a single key).
    Delete {
        /// The key removed.
        key: String,
    },
    /// Compare-and-set as an etcd `Txn`: if the key's value equals `expected` (or, with `None`, the
    /// key does not exist), put `value`; the response says whether the comparison succeeded.
    Cas {
        /// The key compared and written.
        key: String,
        /// The value the key must hold, or `None` for "the key must be absent".
        expected: Option<String>,
        /// The value written when the comparison succeeds.
        value: String,
    },
}

impl Op {
    /// The single key the operation touches; histories are checked one key at a time.
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// True for operations that may change the key's value when applied.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What a client observed from an operation that completed successfully.
///
/// Each variant belongs to one [`Op`] kind; an output of the wrong kind can never be produced by the
/// model, so the checker reports it as a violation rather than ignoring it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// Result of [`Op::Get`]: the value read, or `None` when the key was absent.
    Get {
        /// The value read.
        value: Option<String>,
    },
    /// Result of [`Op::Put`]: an acknowledgement and nothing else.
    Put,
    /// Result of [`Op::Delete`]: whether the key existed, when the client looked (etcd's `deleted`
    /// count); `None` checks nothing beyond the write itself.
    Delete {
        /// Whether a key was deleted.
        existed: Option<bool>,
    },
    /// Result of [`Op::Cas`]: whether the comparison held and the value was written.
    Cas {
        /// Whether the transaction's `success` branch ran.
        succeeded: bool,
    },
}

/// How an operation ended, from the client's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "output", rename_all = "snake_case")]
pub enum Outcome {
    /// The store answered; the operation took effect exactly once, between invocation and
    /// completion.
    Ok(Output),
    /// The store answered with an error that guarantees the operation was not applied.
    Failed,
    /// No answer (timeout, connection loss, cancelled task): the operation may have taken effect at
    /// any moment after its invocation, or never.
    Unknown,
}

/// One operation of a history: who, what, when and with which outcome.
///
/// Times are in one clock shared by all clients (nanoseconds of a monotonic clock, or a logical
/// clock); only their order matters. For an [`Outcome::Unknown`] operation `complete` is when the
/// client gave up; the checker treats its completion as +infinity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique within the history.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// What was requested.
    pub op: Op,
    /// When the request was about to be sent.
    pub invoke: u64,
    /// When the response (or the decision to give up) was seen.
    pub complete: u64,
    /// What the client learned.
    pub outcome: Outcome,
}

impl Operation {
    /// The completion time that bounds where the operation can be linearized: `None` (+infinity)
    /// for an operation whose outcome is unknown.
    pub fn deadline(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Unknown => None,
            Outcome::Ok(_) | Outcome::Failed => Some(self.complete),
        }
    }
}

/// One recorded operation of some kind of history: what the recorder, the history container and
/// the tables need to know about it, whatever its request and outcome types are.
///
/// Implemented by [`Operation`] (per-key registers) and [`crate::DbOperation`] (whole database).
pub trait HistoryEntry: Clone + std::fmt::Debug {
    /// What was requested.
    type Request: Clone + std::fmt::Debug;
    /// How it ended.
    type Outcome: Clone + std::fmt::Debug;
    /// The outcome of an operation still in flight when a history is taken: unknown.
    fn in_flight() -> Self::Outcome;
    /// Assembles an operation from what the recorder stamped.
    fn assemble(stamp: Stamp, request: Self::Request, outcome: Self::Outcome) -> Self;
    /// The operation's id, client and times.
    fn stamp(&self) -> Stamp;
}

/// Who issued an operation and when: what every kind of operation has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Unique within the history.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// When the request was about to be sent.
    pub invoke: u64,
    /// When the response (or the decision to give up) was seen.
    pub complete: u64,
}

impl HistoryEntry for Operation {
    type Request = Op;
    type Outcome = Outcome;

    fn in_flight() -> Outcome {
        Outcome::Unknown
    }

    fn assemble(stamp: Stamp, op: Op, outcome: Outcome) -> Self {
        Operation {
            id: stamp.id,
            client: stamp.client,
            op,
            invoke: stamp.invoke,
            complete: stamp.complete,
            outcome,
        }
    }

    fn stamp(&self) -> Stamp {
        Stamp { id: self.id, client: self.client, invoke: self.invoke, complete: self.complete }
    }
}

/// A well-formed history: unique operation ids and no operation that completes before it starts.
///
/// The invariants are checked on construction and on deserialization, so the checker never has to
/// defend against a history that cannot have been recorded. Generic over the kind of operation:
/// [`History`] for per-key registers, [`crate::DbHistory`] for the whole database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "HistoryRepr<T>",
    into = "HistoryRepr<T>",
    bound(serialize = "T: HistoryEntry + Serialize", deserialize = "T: HistoryEntry + Deserialize<'de>")
)]
pub struct HistoryOf<T> {
    ops: Vec<T>,
}

/// A per-key register history.
pub type History = HistoryOf<Operation>;

/// The serialized form of a history: an object so fields can be added without breaking files.
#[derive(Serialize, Deserialize)]
struct HistoryRepr<T> {
    operations: Vec<T>,
}

impl<T: HistoryEntry> TryFrom<HistoryRepr<T>> for HistoryOf<T> {
    type Error = HistoryError;

    fn try_from(repr: HistoryRepr<T>) -> Result<Self, Self::Error> {
        HistoryOf::new(repr.operations)
    }
}

impl<T> From<HistoryOf<T>> for HistoryRepr<T> {
    fn from(history: HistoryOf<T>) -> Self {
        HistoryRepr { operations: history.ops }
    }
}

impl<T> Default for HistoryOf<T> {
    fn default() -> Self {
        HistoryOf { ops: Vec::new() }
    }
}

/// Why a history was rejected as malformed, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Two operations share an id, so sub-histories could not be matched to the original.
    #[error("operation id {0} appears more than once")]
    DuplicateId(OpId),
    /// An operation completes before it is invoked: the clock or the recorder is broken.
    #[error("operation {id} completes at {complete}, before its invocation at {invoke}")]
    CompletesBeforeInvoke {
        /// The offending operation.
        id: OpId,
        /// Its invocation time.
        invoke: u64,
        /// Its completion time.
        complete: u64,
    },
    /// The JSON text is not a history.
    #[error("history JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The history file could not be read or written.
    #[error("history file: {0}")]
    Io(#[from] std::io::Error),
}

impl<T: HistoryEntry> HistoryOf<T> {
    /// Builds a history after checking its invariants.
    pub fn new(ops: Vec<T>) -> Result<Self, HistoryError> {
        let mut ids = HashSet::with_capacity(ops.len());
        for stamp in ops.iter().map(HistoryEntry::stamp) {
            if !ids.insert(stamp.id) {
                return Err(HistoryError::DuplicateId(stamp.id));
            }
            if stamp.complete < stamp.invoke {
                let Stamp { id, invoke, complete, .. } = stamp;
                return Err(HistoryError::CompletesBeforeInvoke { id, invoke, complete });
            }
        }
        Ok(HistoryOf { ops })
    }

    /// Wraps operations already known to satisfy the invariants (from the recorder, or a subset of a
    /// validated history).
    pub(crate) fn from_trusted(ops: Vec<T>) -> Self {
        HistoryOf { ops }
    }

    /// The operations, in recording order.
    pub fn operations(&self) -> &[T] {
        &self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl<T: HistoryEntry + Serialize + DeserializeOwned> HistoryOf<T> {
    /// Pretty JSON, the format of violation files.
    pub fn to_json(&self) -> Result<String, HistoryError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parses and validates a history written by [`HistoryOf::to_json`].
    pub fn from_json(text: &str) -> Result<Self, HistoryError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads a history file, e.g. a violation file to re-check after a fix.
    pub fn read_json_file(path: &Path) -> Result<Self, HistoryError> {
        let text = std::fs::read_to_string(path)?;
        Self::from_json(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: OpId, invoke: u64, complete: u64) -> Operation {
        Operation {
            id,
            client: 1,
            op: Op::Get { key: "k".into() },
            invoke,
            complete,
            outcome: Outcome::Ok(Output::Get { value: None }),
        }
    }

    #[test]
    fn rejects_duplicate_ids() {
        let err = History::new(vec![op(1, 0, 1), op(1, 2, 3)]).unwrap_err();
        assert!(matches!(err, HistoryError::DuplicateId(1)), "{err}");
    }

    #[test]
    fn rejects_completion_before_invocation() {
        let err = History::new(vec![op(1, 5, 4)]).unwrap_err();
        assert!(matches!(err, HistoryError::CompletesBeforeInvoke { id: 1, .. }), "{err}");
    }

    #[test]
    fn json_round_trip_validates() {
        let history = History::new(vec![
            op(1, 0, 1),
            Operation {
                id: 2,
                client: 7,
                op: Op::Cas { key: "k".into(), expected: None, value: "v".into() },
                invoke: 2,
                complete: 9,
                outcome: Outcome::Unknown,
            },
            Operation {
                id: 3,
                client: 8,
                op: Op::Delete { key: "k".into() },
                invoke: 3,
                complete: 4,
                outcome: Outcome::Failed,
            },
        ])
        .unwrap();
        let text = history.to_json().unwrap();
        assert!(text.contains("\"operations\""), "{text}");
        assert!(text.contains("\"status\": \"unknown\""), "{text}");
        assert_eq!(History::from_json(&text).unwrap(), history);

        let broken = text.replace("\"id\": 2", "\"id\": 1");
        assert!(matches!(History::from_json(&broken), Err(HistoryError::Json(_))));
    }
}
