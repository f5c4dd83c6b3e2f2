//! Reduces a failing whole-database history to a smaller one that still fails.
//!
//! Two reductions keep the failure real (a part of the original failure, not an artifact of
//! cutting):
//!
//! 1. **Shortest failing prefix.** As for the per-key check: the history up to time `t`, with
//!    operations in flight at `t` turned into unknown outcomes, fails if any prefix of a
//!    linearization would; a binary search over completion times finds the earliest such `t`.
//!    Revisions stay sound: every revision up to one a completed operation reports was written
//!    by an operation invoked before that completion, so it is in the prefix.
//! 2. **Reads removed.** Reads (and acknowledged writes that changed nothing) only constrain, so
//!    removing them never makes a history fail that passed; groups of them are removed while the
//!    rest still fails (delta debugging: halves, quarters, ... single reads). Writes stay: each
//!    pins a revision, and removing one would open a gap.
//!
//! Failed operations are dropped first (the check ignores them). Each candidate is a full check
//! bounded by a deadline; when time runs out the smallest failing history so far is returned.

use std::time::{Duration, Instant};

use crate::budget::{Budget, Checker};
use crate::db::compile::claims_revision;
use crate::db::history::{DbHistory, DbOperation, DbOutcome};
use crate::db::plan::Plan;
use crate::db::search::{SearchOutcome, search};

/// A failing sub-history, operations as recorded (or weakened to unknown by the prefix cut).
pub(crate) struct Shrunk {
    pub(crate) ops: Vec<DbOperation>,
    /// False when the deadline (or a check that timed out) stopped the reduction early.
    pub(crate) complete: bool,
}

/// Whether a candidate is proven not linearizable by `deadline`.
fn db_fails(ops: &[DbOperation], deadline: Instant) -> Option<bool> {
    let history = DbHistory::from_trusted(ops.to_vec());
    let Ok(plan) = Plan::new(&history, true) else { return Some(true) };
    match search(&plan, deadline) {
        SearchOutcome::Violation(_) => Some(true),
        SearchOutcome::Linearizable(_) => Some(false),
        SearchOutcome::TimedOut(_) => None,
    }
}

/// The checker the reductions use.
type DbChecker = Checker<fn(&[DbOperation], Instant) -> Option<bool>>;

/// The history as it stood at time `cut`.
fn prefix(ops: &[DbOperation], cut: u64) -> Vec<DbOperation> {
    ops.iter()
        .filter(|op| op.invoke <= cut)
        .map(|op| match op.outcome {
            DbOutcome::Ok(_) if op.complete > cut => {
                DbOperation { outcome: DbOutcome::Unknown, ..op.clone() }
            }
            _ => op.clone(),
        })
        .collect()
}

fn shortest_failing_prefix(ops: Vec<DbOperation>, checker: &mut DbChecker) -> Vec<DbOperation> {
    let mut cuts: Vec<u64> =
        ops.iter().filter(|op| matches!(op.outcome, DbOutcome::Ok(_))).map(|op| op.complete).collect();
    cuts.sort_unstable();
    cuts.dedup();
    checker.earliest_failing(&cuts, |cut| prefix(&ops, cut)).unwrap_or(ops)
}

fn is_read(op: &DbOperation) -> bool {
    match &op.outcome {
        DbOutcome::Ok(output) => !claims_revision(&output.response),
        DbOutcome::Failed | DbOutcome::Unknown => false,
    }
}

/// Delta debugging over the reads of `base`.
fn remove_reads(base: Vec<DbOperation>, checker: &mut DbChecker) -> Vec<DbOperation> {
    let mut kept = vec![true; base.len()];
    let reads: Vec<usize> = (0..base.len()).filter(|&index| is_read(&base[index])).collect();
    let mut chunk = (reads.len() / 2).max(1);
    'passes: loop {
        let alive: Vec<usize> = reads.iter().copied().filter(|&index| kept[index]).collect();
        let mut removed_any = false;
        for group in alive.chunks(chunk) {
            if checker.out_of_time() {
                break 'passes;
            }
            for &index in group {
                kept[index] = false;
            }
            let candidate: Vec<DbOperation> =
                (0..base.len()).filter(|index| kept[*index]).map(|index| base[index].clone()).collect();
            if checker.fails(&candidate) {
                removed_any = true;
            } else {
                for &index in group {
                    kept[index] = true;
                }
            }
        }
        if chunk > 1 {
            chunk /= 2;
        } else if !removed_any {
            break;
        }
    }
    base.into_iter().zip(kept).filter_map(|(op, keep)| keep.then_some(op)).collect()
}

/// Shrinks a failing history within `budget`.
pub(crate) fn shrink(history: &DbHistory, budget: Duration) -> Shrunk {
    let mut checker = DbChecker::new(Budget::new(budget, Instant::now() + budget), db_fails);
    let ops: Vec<DbOperation> =
        history.operations().iter().filter(|op| op.outcome != DbOutcome::Failed).cloned().collect();
    let failing_prefix = shortest_failing_prefix(ops, &mut checker);
    let mut reduced = remove_reads(failing_prefix, &mut checker);
    reduced.sort_by_key(|op| (op.invoke, op.id));
    Shrunk { ops: reduced, complete: checker.complete() }
}
