//! Recording client histories against raftkv and checking them for linearizability.
//!
//! raftkv promises etcd's guarantee: every request appears to take effect atomically at one
//! instant between its invocation and its response. Unit tests cannot show that a replicated store
//! keeps this promise under leader changes, partitions and crashes; checking the histories that
//! concurrent clients actually observed can. This crate has the two halves of that check:
//!
//! - [`HistoryRecorder`]: shared by test clients (tokio tasks or threads) to record each operation's
//!   invocation, completion and [`Outcome`] with a single real-time-ordered clock.
//! - [`check`]: decides whether a [`History`] is linearizable for a key-value store whose keys are
//!   independent registers (get, put, delete, compare-and-set), within a time budget. On a
//!   violation it shrinks the offending key's operations to a small failing sub-history, writes it
//!   to a JSON file and renders it as a table (see [`Violation`]).
//! - [`check_db`]: the whole-database model ([`db`]): etcd's global revision, per-key create/mod
//!   revision and version, ranges and multi-key transactions, recorded with a [`DbRecorder`] as a
//!   [`DbHistory`]. A linearizable history yields its [`RevisionLog`] (the committed changes by
//!   revision), against which [`check_watch_events`] checks a watcher's events.
//!
//! # What the model covers
//!
//! For [`check`], each key is an independent register that starts absent. Operations touch one key:
//! [`Op::Get`], [`Op::Put`], [`Op::Delete`] and [`Op::Cas`] (an etcd `Txn` comparing the value, or
//! absence, then putting). Range reads, multi-key transactions and revisions are not modelled
//! there (they are in [`db`]; leases in neither); record only single-key operations. Outcomes:
//!
//! - [`Outcome::Ok`]: took effect once, between invocation and completion, with that output;
//! - [`Outcome::Failed`]: definitely not applied (ignored by the check);
//! - [`Outcome::Unknown`]: timeout or lost connection: may take effect at any point after
//!   invocation, or never. Record these honestly; calling them failed produces false alarms.
//!
//! # Cost
//!
//! Checking linearizability is NP-complete in general; what makes it expensive here is many
//! operations in flight on the *same key* at once, and unknown outcomes whose values are later
//! observed (each may have taken effect anywhere after its invocation). Proving a violation costs
//! more than accepting a correct history, since every alternative order must be ruled out. As a
//! guide, measured on a shared 2-core machine: 5,000 operations from 8 clients over 10 keys with
//! 5% unknown outcomes check in well under a second in a debug build, and a planted stale read is
//! found and shrunk in about a second. 8 clients hammering a *single* key with the same fault rate
//! are much harder to refute: in a release build, 600 operations took under a second, 1,200 a few
//! seconds and 2,000 about a minute. So spread a workload over several keys and keep per-key
//! histories to a few hundred operations under high concurrency; [`CheckOptions::time_budget`]
//! bounds the rest and yields [`CheckResult::Timeout`] instead of a verdict.
//!
//! # Reading a violation
//!
//! [`Violation`]'s `Display` names the key and the file holding the minimal failing sub-history
//! (a [`History`] in JSON, reloadable with [`History::read_json_file`]) and prints a table: one row
//! per operation with id, client, invoke and complete times (relative), a timeline bar, the request
//! and what the client was told. Rows marked `L1`, `L2`, ... are the longest order the search could
//! linearize; `!!` marks the operation that could not be placed after it.
//!
//! ```
//! use std::time::Duration;
//! use kvcheck::{CheckOptions, HistoryRecorder, Op, Outcome, Output, check};
//!
//! let rec = HistoryRecorder::new();
//! let put = rec.invoke(1, Op::Put { key: "k".into(), value: "v".into() });
//! rec.complete(put, Outcome::Ok(Output::Put));
//! let get = rec.invoke(2, Op::Get { key: "k".into() });
//! rec.complete(get, Outcome::Ok(Output::Get { value: Some("v".into()) }));
//!
//! let report = check(&rec.history(), CheckOptions::default().with_time_budget(Duration::from_secs(5)));
//! assert!(report.is_linearizable(), "{report}");
//! ```

mod artifact;
mod budget;
mod check;
mod configs;
pub mod db;
mod entries;
mod history;
mod model;
mod recorder;
mod render;
mod search;
mod shrink;

pub use check::{CheckError, CheckOptions, CheckReport, CheckResult, Violation, check};
pub use db::{
    Acquisition, Change, ChangeKind, Committed, Compare, CompareResult, CompareTarget, DbAnomaly,
    DbCheckError, DbCheckReport, DbCheckResult, DbHistory, DbOp, DbOperation, DbOutcome, DbOutput,
    DbRecorder, DbViolation, EventFilter, KeyRange, KeyValue, LockError, Response, ResponseMismatch,
    Revision, RevisionLog, StreamError, StreamItem, StreamSpec, StreamSummary, WatchError, WatchEvent,
    WatchSpec, check_db, check_lock_fencing, check_members_agree, check_watch_events, check_watch_stream,
    release_revision, render_db_history,
};
pub use history::{
    ClientId, History, HistoryEntry, HistoryError, HistoryOf, Op, OpId, Operation, Outcome, Output, Stamp,
};
pub use recorder::{HistoryRecorder, PendingOp, Recorder};
pub use render::render_history;
