//! The whole-database model: etcd's key space with its global revision, checked across keys.
//!
//! The per-key check ([`crate::check`]) treats keys as independent registers. etcd promises more:
//! one revision counter for the whole store, create/mod revisions and versions per key, ranges
//! over many keys and transactions over several, all linearizable together. [`check_db`] checks a
//! [`DbHistory`] of [`DbOp`]s against that model and, for a linearizable history, returns the
//! [`RevisionLog`]: the committed changes revision by revision, what a Watch must stream.
//!
//! # The model (etcd's semantics)
//!
//! - The store starts empty at revision 1. A request that changes something (a put; a delete that
//!   deleted at least one key; a transaction whose executed branch did either) advances the
//!   revision by exactly 1, and all its changes carry the new revision. A delete of nothing and a
//!   read-only transaction leave it alone.
//! - Per key: `create_revision` (the revision that created it, anew after a delete), `mod_revision`
//!   (its last change), `version` (1 at creation, +1 per put; a deleted key does not exist) and
//!   the value.
//! - A response's header revision is, for a write that changed something, the revision it created;
//!   otherwise the store's revision when it was served. A range returns the keys of
//!   `[key, range_end)` in key order with their full state, and their `count`.
//! - A transaction runs `success` if every comparison holds, `failure` otherwise, with requests
//!   run in order (a later one sees the changes of earlier ones). Comparisons on a missing key see
//!   version, create and mod revision 0, and every value comparison on it is false.
//! - A put's `prev_kv` is checked when the request asked for it; a delete's `deleted` count always.
//!
//! # How a history is checked
//!
//! An acknowledged response pins its operation: a write that changed something *is* the write of
//! its header revision (two claiming one revision is a violation at once); any other acknowledged
//! response is a read of the store at its header revision. Revisions below the highest reported one
//! that no acknowledged write claims are *gaps*: each must be filled by exactly one unknown-outcome
//! write (timeout, lost connection) that changes the store there; unknown writes not needed for a
//! gap may have been applied later or never, which nothing in the history can tell apart. So the
//! only search is over which unknown write fills which gap; everything else is determined, and the
//! check replays revisions in order:
//!
//! 1. apply the write of revision `r` (acknowledged, or a candidate for the gap) to the state of
//!    `r - 1` and check its response against that state (the `succeeded` flag, `deleted` counts,
//!    ranges and `prev_kv` inside it);
//! 2. check every key-value that any response attributes to `r` (returned with mod revision `r`):
//!    the write of `r` must leave the key exactly so (this catches a write applied twice, or
//!    attributed to the wrong write, the moment it is placed);
//! 3. check every read served at `r` against the state of `r`: each key of its range present with
//!    the same value, create/mod revision and version, no other key, the right count.
//!
//! # Real-time rules
//!
//! Each operation takes effect at one instant between its invocation and completion (unknown
//! outcomes: any time after invocation), and the instants follow the revisions: the write of `r`,
//! then the reads served at `r` (in any order among themselves), then the write of `r + 1`. Equal
//! timestamps count as concurrent. So, for acknowledged operations:
//!
//! - a write at revision `r` must not complete before a write at a lower revision is invoked;
//! - a read at revision `R` must not complete before the invocation of any write at a revision up
//!   to `R` (it would have to see a write that had not started), and must be invoked before the
//!   write of `R + 1` completes (else it missed an acknowledged write: a stale read); in
//!   particular `R` is at least the highest revision acknowledged before the read was invoked;
//! - reads at different revisions keep their order too: a read at `R2 > R1` that completed before a
//!   read at `R1` was invoked is a violation, as is a gap whose filler was invoked after an
//!   operation at a higher revision completed.
//!
//! The check places operations greedily at the earliest allowed instant, which decides these
//! rules exactly in one pass ([`crate::db`]'s search keeps that clock as part of its state).
//!
//! # Cost
//!
//! With every acknowledged write pinned, checking is a linear replay; the search only branches at
//! gaps. Four things keep that cheap: unknown writes with the same effect on unread values are
//! interchangeable (the earliest-invoked is used first); reads that return a key with mod revision
//! `m` say which write filled `m`, and where that key cannot have changed since, so most gaps have
//! one viable candidate; gap states whose every choice failed are remembered; and a failure names
//! what it depends on (the keys whose state contradicts a response, or the time bound an operation
//! missed), so the search jumps straight back to the latest gap whose candidates could change that,
//! and a failure no gap can change is a proven violation at once. Reads that miss an acknowledged
//! write of a key are found while planning, without search.
//!
//! Measured on the shared 2-core machine in the dev profile (this crate is built at opt-level 2):
//! 90,000 operations of 4–8 clients over 5–20 keys with 5–10% unknown outcomes check in about
//! 0.5 s; 15,000 operations (a default CI run) in under 0.1 s; a stale read or lost write planted
//! in the 90,000 is found at once, and shrinking it takes the shrink budget (see
//! `tests/db_randomized.rs`, run with `--nocapture`). A violation whose explanation depends on
//! many gap choices (a failing gap itself depends on all earlier choices) can still exhaust the
//! time budget: the result is then [`DbCheckResult::Timeout`] with the furthest contradiction seen.
//!
//! # On a violation
//!
//! The [`DbViolation`] names the [`DbAnomaly`] (for a search failure, the one at the furthest
//! revision any candidate order reached), the operations involved (shown as a table), and a
//! failing sub-history written to a JSON file ([`DbHistory::read_json_file`]): the shortest
//! failing prefix in real time, with the reads that do not matter removed. Writes are kept, since
//! each pins a revision, so for a violation late in a long run the file is large; the table of the
//! involved operations is the small counterexample to read.
//!
//! # Watch
//!
//! [`RevisionLog`] holds, for a linearizable history, every revision from 2 to the highest one
//! observed with the changes it made (etcd watch events: puts with the key's new state, deletes
//! with the deleting revision); [`check_watch_events`] checks a watcher's responses against it.

mod anomaly;
mod check;
mod classes;
mod compile;
mod explain;
mod facts;
mod history;
mod locks;
mod log;
mod plan;
mod planned;
mod render;
mod search;
mod shrink;
mod store;
mod types;
mod watch;
mod watch_stream;

pub use anomaly::{DbAnomaly, ResponseMismatch};
pub use check::{DbCheckError, DbCheckReport, DbCheckResult, DbViolation, check_db};
pub use history::{DbHistory, DbOperation, DbOutcome};
pub use locks::{Acquisition, LockError, check_lock_fencing, release_revision};
pub use log::{Change, ChangeKind, Committed, RevisionLog};
/// Records whole-database requests into a [`DbHistory`].
pub type DbRecorder = crate::recorder::Recorder<DbOperation>;
pub use render::render_db_history;
pub use types::{
    Compare, CompareResult, CompareTarget, DbOp, DbOutput, KeyRange, KeyValue, Response, Revision,
};
pub use watch::{WatchError, WatchSpec, check_watch_events};
pub use watch_stream::{
    EventFilter, StreamError, StreamItem, StreamSpec, StreamSummary, WatchEvent, check_members_agree,
    check_watch_stream,
};
