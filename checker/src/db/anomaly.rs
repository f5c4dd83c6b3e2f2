//! What a whole-database check can find wrong, in terms a developer can act on.

use std::fmt;

use crate::db::types::{KeyValue, Revision};
use crate::history::OpId;

/// Where a response disagrees with the store as the checker reconstructed it at that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseMismatch {
    /// A key of a range (or a put's previous key-value): as the store had it, and as reported.
    /// `model: None` with a reported key is a deleted (or never written) key returned; the reverse
    /// is a key missing from the range; both present but different is a wrong value, create or
    /// mod revision, or version.
    Key {
        /// The key.
        key: String,
        /// What the store held at the revision.
        model: Option<KeyValue>,
        /// What the response said.
        reported: Option<KeyValue>,
    },
    /// A range's `count`.
    Count {
        /// Keys in the range at the revision.
        model: u64,
        /// The reported count.
        reported: u64,
    },
    /// A transaction's `succeeded` flag contradicts its comparisons at that revision.
    Succeeded {
        /// Whether the comparisons held.
        model: bool,
    },
    /// A delete's `deleted` count.
    Deleted {
        /// Keys the delete would remove at that revision.
        model: u64,
        /// The reported count.
        reported: u64,
    },
    /// The response claims a new revision but the request changed nothing at that point, or the
    /// response claims no change but the request would have changed the store.
    Changed {
        /// Whether the request changes the store at that point.
        model: bool,
    },
}

/// The reason a whole-database history is not linearizable (or, after a timeout, the furthest
/// point the search reached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbAnomaly {
    /// A response no store could produce, whatever it held (wrong kind, keys out of order or out
    /// of range, a key-value whose revisions and version contradict each other).
    Malformed {
        /// The operation.
        op: OpId,
        /// What is impossible about it.
        reason: String,
    },
    /// Two acknowledged writes claim the same revision.
    DuplicateRevision {
        /// The revision.
        revision: Revision,
        /// One write.
        first: OpId,
        /// The other.
        second: OpId,
    },
    /// A header revision no store could report: a write at revision 1 or below, a read below 1,
    /// or a revision higher than all the history's writes together could reach.
    ImpossibleRevision {
        /// The operation.
        op: OpId,
        /// Its header revision.
        revision: Revision,
        /// Why it is impossible.
        reason: String,
    },
    /// The response contradicts the store at its revision (a stale or future read, a lost write,
    /// a wrong version or create/mod revision, a range missing a key or returning a deleted one,
    /// a wrong `succeeded` flag or `deleted` count, a header revision that does not match the
    /// contents).
    WrongResponse {
        /// The operation.
        op: OpId,
        /// The revision it was checked at.
        revision: Revision,
        /// What disagrees.
        mismatch: ResponseMismatch,
    },
    /// A read returned a key with mod revision `revision`, but the write at `revision` did not
    /// leave the key that way (e.g. a write applied twice, or a key changed by a write that did
    /// not touch it).
    WrongWriteObserved {
        /// The revision the read attributes the key-value to.
        revision: Revision,
        /// The read.
        read: OpId,
        /// The write placed at that revision (acknowledged, or an unknown-outcome write tried
        /// there), if any.
        writer: Option<OpId>,
        /// What the read returned.
        reported: KeyValue,
        /// The key after that write, as the model has it.
        model: Option<KeyValue>,
    },
    /// A read returned a key unchanged since revision `since` (its mod revision, or for a
    /// deletion its create revision), but an acknowledged write changed (or deleted) that key at
    /// `write_revision`, after `since` and no later than the read's revision: the read lost the
    /// write.
    ReadMissesWrite {
        /// The read.
        read: OpId,
        /// The revision it was served at.
        revision: Revision,
        /// What it returned for the key.
        reported: KeyValue,
        /// The acknowledged write.
        write: OpId,
        /// Its revision.
        write_revision: Revision,
    },
    /// The operation's revision orders it after `after`, but it completed before `after` was
    /// invoked (e.g. a read served at a revision older than a write acknowledged before the read
    /// began, or acknowledged writes whose revisions contradict their real-time order).
    RealTime {
        /// The operation that cannot take effect in time.
        op: OpId,
        /// Its revision.
        revision: Revision,
        /// The operation that must precede it but started after it completed.
        after: OpId,
        /// That operation's revision.
        after_revision: Revision,
    },
    /// No acknowledged write claims this revision, and no unknown-outcome write can fill it (none
    /// left that was invoked in time and would change the store consistently with what reads saw).
    UnfillableGap {
        /// The revision.
        revision: Revision,
        /// How many unknown-outcome writes were tried there.
        candidates: usize,
    },
}

impl fmt::Display for ResponseMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |kv: &Option<KeyValue>| match kv {
            Some(kv) => format!(
                "{:?} (create {}, mod {}, version {})",
                kv.value, kv.create_revision, kv.mod_revision, kv.version
            ),
            None => "absent".to_owned(),
        };
        match self {
            ResponseMismatch::Key { key, model, reported } => {
                write!(f, "key {key:?} is {} but was reported as {}", show(model), show(reported))
            }
            ResponseMismatch::Count { model, reported } => write!(f, "count is {model}, reported {reported}"),
            ResponseMismatch::Succeeded { model } => {
                write!(
                    f,
                    "the comparisons {}, but succeeded = {}",
                    if *model { "hold" } else { "fail" },
                    !model
                )
            }
            ResponseMismatch::Deleted { model, reported } => {
                write!(f, "deletes {model} keys, reported deleted = {reported}")
            }
            ResponseMismatch::Changed { model: true } => {
                f.write_str("changes the store, but claims no revision")
            }
            ResponseMismatch::Changed { model: false } => {
                f.write_str("changes nothing, but claims a revision")
            }
        }
    }
}

impl fmt::Display for DbAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbAnomaly::Malformed { op, reason } => write!(f, "#{op}: impossible response: {reason}"),
            DbAnomaly::DuplicateRevision { revision, first, second } => {
                write!(f, "acknowledged writes #{first} and #{second} both claim revision {revision}")
            }
            DbAnomaly::ImpossibleRevision { op, revision, reason } => {
                write!(f, "#{op}: impossible revision {revision}: {reason}")
            }
            DbAnomaly::WrongResponse { op, revision, mismatch } => {
                write!(f, "#{op} at revision {revision}: {mismatch}")
            }
            DbAnomaly::WrongWriteObserved { revision, read, writer, reported, model } => {
                let writer = writer.map_or_else(|| "nothing".to_owned(), |id| format!("#{id}"));
                let model = model.as_ref().map_or_else(|| "absent".to_owned(), |kv| format!("{kv:?}"));
                write!(
                    f,
                    "read #{read} saw {reported:?} written at revision {revision}, \
                     but the write there ({writer}) leaves the key {model}"
                )
            }
            DbAnomaly::ReadMissesWrite { read, revision, reported, write, write_revision } => write!(
                f,
                "read #{read} at revision {revision} returned {reported:?}, missing acknowledged write \
                 #{write} of that key at revision {write_revision}"
            ),
            DbAnomaly::RealTime { op, revision, after, after_revision } => write!(
                f,
                "#{op} at revision {revision} completed before #{after} (revision {after_revision}), \
                 which the store ordered before it, was invoked"
            ),
            DbAnomaly::UnfillableGap { revision, candidates } => write!(
                f,
                "no acknowledged write claims revision {revision} and none of the {candidates} \
                 unknown-outcome writes tried there can fill it"
            ),
        }
    }
}
