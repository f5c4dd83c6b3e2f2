//! The entry point of the whole-database check: plan, search, and on a violation explain, shrink
//! and save it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::artifact::write_json_artifact;
use crate::check::CheckOptions;
use crate::db::anomaly::DbAnomaly;
use crate::db::explain::{Explainer, involved_in};
use crate::db::history::{DbHistory, DbOutcome};
use crate::db::log::RevisionLog;
use crate::db::plan::Plan;
use crate::db::render::render_db_marked;
use crate::db::search::{SearchOutcome, search};
use crate::db::shrink::shrink;
use crate::db::types::Revision;
use crate::history::{HistoryError, OpId};

/// The verdict of [`check_db`].
#[derive(Debug)]
pub enum DbCheckResult {
    /// Linearizable; the committed writes, revision by revision, in the order the check found.
    Ok(RevisionLog),
    /// Not linearizable.
    Violation(Box<DbViolation>),
    /// The time budget ran out; the furthest contradiction seen so far, which is not a proof.
    Timeout {
        /// The deepest point the search got stuck at, if it got stuck anywhere.
        furthest: Option<Box<DbAnomaly>>,
    },
}

/// A proven violation: what is wrong, the operations involved, and a smaller failing history.
#[derive(Debug)]
pub struct DbViolation {
    /// The contradiction at the furthest revision any candidate order reached.
    pub anomaly: DbAnomaly,
    /// The operations the anomaly is about (with the latest writes of the key concerned and the
    /// writes of neighbouring revisions), by id.
    pub involved: Vec<OpId>,
    /// A sub-history that still fails on its own: the shortest failing prefix with the reads that
    /// do not matter removed (see the shrinking notes in the module docs).
    pub minimal: DbHistory,
    /// False when the shrink budget ran out before `minimal` was as small as it could get.
    pub shrink_complete: bool,
    /// Where `minimal` was written as JSON (loadable with [`DbHistory::read_json_file`]), or why
    /// it could not be.
    pub artifact: Result<PathBuf, HistoryError>,
    /// Operations in the checked history.
    pub operations: usize,
}

impl DbViolation {
    /// The violation file, if it was written.
    pub fn artifact_path(&self) -> Option<&Path> {
        self.artifact.as_ref().ok().map(PathBuf::as_path)
    }

    /// A table of the involved operations (`!!` marks those the anomaly names).
    pub fn render(&self) -> String {
        let named = involved_in(&self.anomaly);
        let rows = self.minimal.operations().iter().filter(|op| self.involved.contains(&op.id));
        render_db_marked(rows, &named)
    }
}

impl fmt::Display for DbViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "not linearizable: {}", self.anomaly)?;
        write!(
            f,
            "failing sub-history: {} of {} operations{}",
            self.minimal.len(),
            self.operations,
            if self.shrink_complete { "" } else { " (shrinking ran out of time)" }
        )?;
        match &self.artifact {
            Ok(path) => writeln!(f, ", written to {}", path.display())?,
            Err(error) => writeln!(f, ", could not be written: {error}")?,
        }
        writeln!(f, "operations involved:")?;
        f.write_str(&self.render())
    }
}

/// The outcome of [`check_db`] with what was checked and how long it took.
#[derive(Debug)]
pub struct DbCheckReport {
    /// The verdict.
    pub result: DbCheckResult,
    /// Operations in the history.
    pub operations: usize,
    /// The highest revision the history reports.
    pub last_revision: Revision,
    /// Revisions no acknowledged write claims (filled by unknown-outcome writes).
    pub gaps: usize,
    /// Time spent, shrinking included.
    pub elapsed: Duration,
}

/// A failed whole-database check as an error, for tests that propagate with `?`.
#[derive(Debug, thiserror::Error)]
pub enum DbCheckError {
    /// The history is not linearizable.
    #[error("{0}")]
    Violation(Box<DbViolation>),
    /// The check could not decide in time.
    #[error("whole-database check timed out{}", furthest.as_ref().map(|a| format!("; furthest contradiction: {a}")).unwrap_or_default())]
    Timeout {
        /// The deepest contradiction seen.
        furthest: Option<Box<DbAnomaly>>,
    },
}

impl DbCheckReport {
    /// True when the history is proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self.result, DbCheckResult::Ok(_))
    }

    /// The committed writes by revision, for a linearizable history.
    pub fn revision_log(&self) -> Option<&RevisionLog> {
        match &self.result {
            DbCheckResult::Ok(log) => Some(log),
            DbCheckResult::Violation(_) | DbCheckResult::Timeout { .. } => None,
        }
    }

    /// The revision log for a linearizable history, otherwise the violation or timeout as an error.
    pub fn into_result(self) -> Result<RevisionLog, DbCheckError> {
        match self.result {
            DbCheckResult::Ok(log) => Ok(log),
            DbCheckResult::Violation(violation) => Err(DbCheckError::Violation(violation)),
            DbCheckResult::Timeout { furthest } => Err(DbCheckError::Timeout { furthest }),
        }
    }
}

impl fmt::Display for DbCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = format!(
            "{} operations, revisions 1..={} ({} filled by unknown-outcome writes), in {:?}",
            self.operations, self.last_revision, self.gaps, self.elapsed
        );
        match &self.result {
            DbCheckResult::Ok(_) => write!(f, "linearizable: {summary}"),
            DbCheckResult::Violation(violation) => write!(f, "{summary}: {violation}"),
            DbCheckResult::Timeout { furthest: Some(anomaly) } => {
                write!(f, "{summary}: timed out; furthest contradiction: {anomaly}")
            }
            DbCheckResult::Timeout { furthest: None } => write!(f, "{summary}: timed out"),
        }
    }
}

/// Checks a whole-database history for linearizability against etcd's KV semantics.
///
/// See the [module docs](crate::db) for the model and the real-time rules. The search stops at
/// `options.time_budget`; a violation is shrunk for up to `options.shrink_budget` and written to a
/// JSON file in `options.artifact_dir` (the temporary directory when unset).
pub fn check_db(history: &DbHistory, options: CheckOptions) -> DbCheckReport {
    let started = Instant::now();
    let (result, last_revision, gaps) = match Plan::new(history, true) {
        Err(anomaly) => {
            let involved = involved_in(&anomaly);
            (DbCheckResult::Violation(Box::new(violation(history, *anomaly, involved, &options))), 0, 0)
        }
        Ok(plan) => {
            let gaps = (2..=plan.last).filter(|&revision| plan.claimed(revision).is_none()).count();
            let result = match search(&plan, started + options.time_budget) {
                SearchOutcome::Linearizable(writers) => {
                    DbCheckResult::Ok(revision_log(history, &plan, &writers))
                }
                SearchOutcome::Violation(failure) => {
                    let (anomaly, involved) = Explainer { plan: &plan, history }.explain(&failure);
                    DbCheckResult::Violation(Box::new(violation(history, anomaly, involved, &options)))
                }
                SearchOutcome::TimedOut(furthest) => DbCheckResult::Timeout {
                    furthest: furthest
                        .map(|failure| Box::new(Explainer { plan: &plan, history }.explain(&failure).0)),
                },
            };
            (result, plan.last, gaps)
        }
    };
    DbCheckReport { result, operations: history.len(), last_revision, gaps, elapsed: started.elapsed() }
}

/// The log with real values: the writers are replayed on a plan without merged values (the same
/// operations in the same order, so the planned indices carry over).
fn revision_log(history: &DbHistory, merged: &Plan, writers: &[usize]) -> RevisionLog {
    let id = |source: usize| history.operations().get(source).map_or(0, |op| op.id);
    match Plan::new(history, false) {
        Ok(plan) => RevisionLog::replay(&plan, writers, id),
        // Cannot happen (planning does not depend on merging); the merged plan's log still has
        // every revision, with unread values shown as "<unobserved>".
        Err(_) => RevisionLog::replay(merged, writers, id),
    }
}

fn violation(
    history: &DbHistory,
    anomaly: DbAnomaly,
    involved: Vec<OpId>,
    options: &CheckOptions,
) -> DbViolation {
    let shrunk = shrink(history, options.shrink_budget);
    let mut minimal = DbHistory::from_trusted(shrunk.ops);
    // The involved operations are shown from `minimal`; put back the acknowledged ones the
    // shrinking removed: more constraints keep it failing.
    let missing: Vec<_> = history
        .operations()
        .iter()
        .filter(|op| matches!(op.outcome, DbOutcome::Ok(_)))
        .filter(|op| involved.contains(&op.id) && !minimal.operations().iter().any(|kept| kept.id == op.id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let mut ops = minimal.operations().to_vec();
        ops.extend(missing);
        ops.sort_by_key(|op| (op.invoke, op.id));
        minimal = DbHistory::from_trusted(ops);
    }
    let dir = options.artifact_dir.clone().unwrap_or_else(std::env::temp_dir);
    let artifact = write_json_artifact(&dir, &minimal);
    tracing::warn!(%anomaly, operations = minimal.len(), path = ?artifact.as_ref().ok(), "linearizability violation");
    DbViolation {
        anomaly,
        involved,
        minimal,
        shrink_complete: shrunk.complete,
        artifact,
        operations: history.len(),
    }
}
