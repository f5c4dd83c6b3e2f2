//! The entry point: split a history by key, search each key, explain the first violation.
//!
//! Splitting by key is sound because linearizability is compositional (Herlihy & Wing's locality;
//! Porcupine's "P-compositionality"): a history of independent registers is linearizable exactly
//! when each register's sub-history is. It turns one search exponential in the total concurrency
//! into many small ones, which also run on separate threads.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::artifact::write_violation;
use crate::history::{History, HistoryError, OpId, Operation};
use crate::render::render_marked;
use crate::search::{SearchOutcome, check_key};
use crate::shrink::shrink;

/// How long the check may run and where a violation's sub-history goes.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Upper bound for searching all keys; keys not decided by then make the result
    /// [`CheckResult::Timeout`] (unless another key already proved a violation).
    pub time_budget: Duration,
    /// Extra time allowed for explaining a violation: shrinking it to a minimal sub-history and
    /// finding that sub-history's longest partial linearization. When it runs out, the smallest
    /// failing sub-history found so far is reported. The whole check takes at most about
    /// `time_budget + shrink_budget`.
    pub shrink_budget: Duration,
    /// Directory for violation files; [`std::env::temp_dir`] when `None`.
    pub artifact_dir: Option<PathBuf>,
    /// Worker threads for checking keys in parallel; 0 means the machine's available parallelism.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            time_budget: Duration::from_secs(60),
            shrink_budget: Duration::from_secs(10),
            artifact_dir: None,
            threads: 0,
        }
    }
}

impl CheckOptions {
    /// Sets [`CheckOptions::time_budget`].
    pub fn with_time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = budget;
        self
    }

    /// Sets [`CheckOptions::shrink_budget`].
    pub fn with_shrink_budget(mut self, budget: Duration) -> Self {
        self.shrink_budget = budget;
        self
    }

    /// Sets [`CheckOptions::artifact_dir`].
    pub fn with_artifact_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.artifact_dir = Some(dir.into());
        self
    }

    /// Sets [`CheckOptions::threads`].
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }
}

/// The verdict of [`check`].
#[derive(Debug)]
pub enum CheckResult {
    /// Every key's sub-history is linearizable.
    Ok,
    /// Some key's sub-history is not; the details explain the first such key (in key order).
    Violation(Box<Violation>),
    /// The time budget ran out before these keys were decided, and no key was proven wrong.
    Timeout {
        /// The undecided keys, in order.
        keys: Vec<String>,
    },
}

/// A proven violation: a minimal failing sub-history of one key, saved to a file.
#[derive(Debug)]
pub struct Violation {
    /// The key whose operations cannot be linearized.
    pub key: String,
    /// How many operations the history had on this key.
    pub key_operations: usize,
    /// A small sub-history of the key that still cannot be linearized, operations as recorded
    /// (plus failed writes whose values it observes, for context), sorted by invocation.
    pub minimal: History,
    /// False when the shrink budget ran out, so `minimal` may not be as small as it could be.
    pub shrink_complete: bool,
    /// The longest sequence of `minimal`'s operations the search could linearize.
    pub linearized: Vec<OpId>,
    /// The operation that could not be placed after that sequence, if the search got that far.
    pub stuck: Option<OpId>,
    /// Where `minimal` was written as JSON (loadable with [`History::read_json_file`]), or why it
    /// could not be.
    pub artifact: Result<PathBuf, HistoryError>,
    /// Other keys that are not linearizable either (not shrunk, to bound the time spent).
    pub other_keys: Vec<String>,
}

impl Violation {
    /// The violation file, if it was written.
    pub fn artifact_path(&self) -> Option<&Path> {
        self.artifact.as_ref().ok().map(PathBuf::as_path)
    }

    /// A table of the minimal sub-history for a human: times, clients, operations, outcomes, and
    /// which operations the search could and could not place.
    pub fn render(&self) -> String {
        render_marked(&self.minimal, &self.linearized, self.stuck)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not linearizable: key {:?}: {} of its {} operations cannot be linearized{}",
            self.key,
            self.minimal.len(),
            self.key_operations,
            if self.shrink_complete { "" } else { " (shrinking ran out of time)" }
        )?;
        match &self.artifact {
            Ok(path) => writeln!(f, "; sub-history written to {}", path.display())?,
            Err(error) => writeln!(f, "; sub-history could not be written: {error}")?,
        }
        if !self.other_keys.is_empty() {
            writeln!(f, "other keys not linearizable: {:?}", self.other_keys)?;
        }
        f.write_str(&self.render())
    }
}

/// The outcome of [`check`] with what was checked and how long it took.
#[derive(Debug)]
pub struct CheckReport {
    /// The verdict.
    pub result: CheckResult,
    /// Number of distinct keys (independent registers) checked.
    pub keys: usize,
    /// Number of operations in the history.
    pub operations: usize,
    /// Time spent, shrinking included.
    pub elapsed: Duration,
}

/// A failed check as an error, for tests that propagate with `?`.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The history is not linearizable.
    #[error("{0}")]
    Violation(Box<Violation>),
    /// The check could not decide these keys in time.
    #[error("linearizability check timed out; undecided keys: {keys:?}")]
    Timeout {
        /// The undecided keys.
        keys: Vec<String>,
    },
}

impl CheckReport {
    /// True when the history is proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self.result, CheckResult::Ok)
    }

    /// `Ok(())` for a linearizable history, otherwise the violation or timeout as an error.
    pub fn into_result(self) -> Result<(), CheckError> {
        match self.result {
            CheckResult::Ok => Ok(()),
            CheckResult::Violation(violation) => Err(CheckError::Violation(violation)),
            CheckResult::Timeout { keys } => Err(CheckError::Timeout { keys }),
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = format!("{} operations on {} keys in {:?}", self.operations, self.keys, self.elapsed);
        match &self.result {
            CheckResult::Ok => write!(f, "linearizable: {summary}"),
            CheckResult::Violation(violation) => write!(f, "{summary}: {violation}"),
            CheckResult::Timeout { keys } => write!(f, "{summary}: timed out; undecided keys: {keys:?}"),
        }
    }
}

fn partition(history: &History) -> Vec<(&str, Vec<&Operation>)> {
    let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history.operations() {
        keys.entry(op.op.key()).or_default().push(op);
    }
    keys.into_iter().collect()
}

/// Checks every key on a pool of scoped threads; the outcomes are in key order.
fn check_keys(keys: &[(&str, Vec<&Operation>)], deadline: Instant, threads: usize) -> Vec<SearchOutcome> {
    let threads = if threads == 0 { thread::available_parallelism().map_or(1, usize::from) } else { threads };
    let next = AtomicUsize::new(0);
    // A key no worker got to (impossible unless a worker died) stays undecided.
    let mut outcomes = vec![SearchOutcome::TimedOut; keys.len()];
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(keys.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some((_, ops)) = keys.get(index) else { break };
                        done.push((index, check_key(ops, deadline)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => {
                    for (index, outcome) in done {
                        if let Some(slot) = outcomes.get_mut(index) {
                            *slot = outcome;
                        }
                    }
                }
                // A panic in the search is a bug in this crate: surface it, don't report a verdict.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    outcomes
}

/// Checks a history for linearizability against a key-value register per key.
///
/// Every key starts absent. Failed operations are ignored; operations with unknown outcomes may
/// take effect at any point after their invocation or not at all. The search stops at
/// `options.time_budget`; a violation is then shrunk for up to `options.shrink_budget` and written
/// to a JSON file in `options.artifact_dir`.
pub fn check(history: &History, options: CheckOptions) -> CheckReport {
    let started = Instant::now();
    let keys = partition(history);
    let outcomes = check_keys(&keys, started + options.time_budget, options.threads);
    let mut violating = Vec::new();
    let mut undecided = Vec::new();
    for ((key, ops), outcome) in keys.iter().zip(&outcomes) {
        match outcome {
            SearchOutcome::Linearizable => tracing::debug!(key, ops = ops.len(), "key is linearizable"),
            SearchOutcome::Violation { .. } => violating.push((*key, ops)),
            SearchOutcome::TimedOut => undecided.push((*key).to_owned()),
        }
    }
    let result = match violating.split_first() {
        None if undecided.is_empty() => CheckResult::Ok,
        None => CheckResult::Timeout { keys: undecided },
        Some(((key, ops), others)) => {
            let other_keys = others.iter().map(|(key, _)| (*key).to_owned()).collect();
            CheckResult::Violation(Box::new(explain(key, ops, other_keys, &options)))
        }
    };
    CheckReport { result, keys: keys.len(), operations: history.len(), elapsed: started.elapsed() }
}

/// Shrinks, re-checks and saves the violation on `key`.
fn explain(key: &str, ops: &[&Operation], other_keys: Vec<String>, options: &CheckOptions) -> Violation {
    let deadline = Instant::now() + options.shrink_budget;
    let shrunk = shrink(ops, options.shrink_budget, deadline);
    let refs: Vec<&Operation> = shrunk.ops.iter().collect();
    let (linearized, stuck) = match check_key(&refs, deadline) {
        SearchOutcome::Violation { linearized, stuck } => (
            linearized.into_iter().filter_map(|index| refs.get(index).map(|op| op.id)).collect(),
            stuck.and_then(|index| refs.get(index).map(|op| op.id)),
        ),
        SearchOutcome::Linearizable | SearchOutcome::TimedOut => (Vec::new(), None),
    };
    let minimal = History::from_trusted(shrunk.ops);
    let dir = options.artifact_dir.clone().unwrap_or_else(std::env::temp_dir);
    let artifact = write_violation(&dir, &minimal);
    let violation = Violation {
        key: key.to_owned(),
        key_operations: ops.len(),
        minimal,
        shrink_complete: shrunk.complete,
        linearized,
        stuck,
        artifact,
        other_keys,
    };
    tracing::warn!(key, operations = violation.minimal.len(), path = ?violation.artifact_path(), "linearizability violation");
    violation
}
