//! Reduces a non-linearizable key history to a small sub-history that still fails.
//!
//! A violation in a run of thousands of operations is unreadable; the few operations that
//! contradict each other are what a developer needs. Two reductions keep the result honest, i.e.
//! its failure is a real part of the original failure and not an artifact of cutting:
//!
//! 1. **Shortest failing prefix.** Linearizability is prefix-closed: if the history up to time `t`
//!    (with operations still in flight at `t` turned into unknown outcomes) cannot be linearized,
//!    neither can the whole. A binary search over completion times finds the earliest such `t`:
//!    the longest linearizable prefix plus the operation that cannot be placed.
//! 2. **Removal that cannot be undone by the removed operations.** Groups of operations are then
//!    removed (delta debugging: halves, quarters, ... single operations) while the rest still fails
//!    *with every removed write put back as an unknown-outcome write* — the weakest thing it could
//!    have been. So no write is dropped that could explain what the remaining reads saw, and the
//!    final sub-history fails whatever the removed operations did.
//!
//! Writes of values the remaining operations observe are then added back as recorded, so the
//! reader sees where each value came from.
//!
//! Each candidate is a full check, bounded by a deadline; when it runs out the best result so far
//! is returned and marked incomplete.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::budget::{Budget, Checker};
use crate::history::{Op, Operation, Outcome, Output};
use crate::search::{SearchOutcome, check_key};

/// A failing sub-history of one key, with the original operations (outcomes as recorded).
pub(crate) struct Shrunk {
    pub(crate) ops: Vec<Operation>,
    /// False when the deadline (or a check that timed out) stopped the reduction early.
    pub(crate) complete: bool,
}

/// Whether a candidate (one key's operations) is proven not linearizable by `deadline`.
fn key_fails(candidate: &[Operation], deadline: Instant) -> Option<bool> {
    let refs: Vec<&Operation> = candidate.iter().collect();
    match check_key(&refs, deadline) {
        SearchOutcome::Violation { .. } => Some(true),
        SearchOutcome::Linearizable => Some(false),
        SearchOutcome::TimedOut => None,
    }
}

/// The checker the reductions use.
type KeyChecker = Checker<fn(&[Operation], Instant) -> Option<bool>>;

fn with_outcome(op: &Operation, outcome: Outcome) -> Operation {
    Operation { outcome, ..op.clone() }
}

/// The weakest trace a removed operation leaves: writes that may have applied stay as
/// unknown-outcome writes; reads and failed operations vanish.
fn weakened(op: &Operation) -> Option<Operation> {
    (op.op.is_write() && op.outcome != Outcome::Failed).then(|| with_outcome(op, Outcome::Unknown))
}

/// The history as it stood at time `cut`: later invocations removed, operations in flight at
/// `cut` made unknown.
fn prefix(ops: &[&Operation], cut: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|op| op.invoke <= cut)
        .map(|op| match op.deadline() {
            Some(end) if end > cut && op.outcome != Outcome::Failed => with_outcome(op, Outcome::Unknown),
            _ => (*op).clone(),
        })
        .collect()
}

/// The shortest failing prefix, or all operations when none could be proven to fail.
fn shortest_failing_prefix(ops: &[&Operation], checker: &mut KeyChecker) -> Vec<Operation> {
    let mut cuts: Vec<u64> =
        ops.iter().filter(|op| matches!(op.outcome, Outcome::Ok(_))).map(|op| op.complete).collect();
    cuts.sort_unstable();
    cuts.dedup();
    checker
        .earliest_failing(&cuts, |cut| prefix(ops, cut))
        .unwrap_or_else(|| ops.iter().map(|op| (*op).clone()).collect())
}

/// Delta debugging over `base`, keeping the weakened forms of removed writes in every check.
fn remove_irrelevant(base: Vec<Operation>, checker: &mut KeyChecker) -> Vec<Operation> {
    let mut kept = vec![true; base.len()];
    let mut left_behind: Vec<Operation> = Vec::new();
    let mut chunk = (base.len() / 2).max(1);
    'passes: loop {
        let alive: Vec<usize> = (0..base.len()).filter(|&index| kept[index]).collect();
        let mut removed_any = false;
        for group in alive.chunks(chunk) {
            if checker.out_of_time() {
                break 'passes;
            }
            let removed: Vec<Operation> = group.iter().filter_map(|&index| weakened(&base[index])).collect();
            let candidate: Vec<Operation> = (0..base.len())
                .filter(|index| kept[*index] && !group.contains(index))
                .map(|index| base[index].clone())
                .chain(left_behind.iter().cloned())
                .chain(removed.iter().cloned())
                .collect();
            if checker.fails(&candidate) {
                for &index in group {
                    kept[index] = false;
                }
                left_behind.extend(removed);
                removed_any = true;
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

/// The value a write puts in place, whatever its outcome; `None` for reads and deletes.
fn written_value(op: &Operation) -> Option<&str> {
    match &op.op {
        Op::Put { value, .. } | Op::Cas { value, .. } => Some(value),
        Op::Get { .. } | Op::Delete { .. } => None,
    }
}

/// Writes worth showing next to the failing operations: for each value they observe (a read's
/// result, a compare-and-set's expected value) that none of them writes, the last write of that
/// value invoked before the observation ended, failed or not.
///
/// Adding recorded operations back never makes the failing sub-history pass (the checked form
/// already contained them as unknown-outcome writes, or they are failed and ignored), but without
/// them a reader sees values that seem to come from nowhere.
fn context(ops: &[&Operation], core: &[Operation]) -> Vec<Operation> {
    let written: HashSet<&str> = core.iter().filter_map(written_value).collect();
    let mut observed: HashMap<&str, u64> = HashMap::new();
    for op in core {
        let value = match (&op.op, &op.outcome) {
            (Op::Get { .. }, Outcome::Ok(Output::Get { value })) => value.as_deref(),
            (Op::Cas { expected, .. }, _) => expected.as_deref(),
            _ => None,
        };
        if let Some(value) = value.filter(|value| !written.contains(value)) {
            let until = observed.entry(value).or_default();
            *until = (*until).max(op.complete);
        }
    }
    let mut context: Vec<Operation> = Vec::new();
    for (value, until) in observed {
        let writer = ops
            .iter()
            .filter(|op| written_value(op) == Some(value) && op.invoke < until)
            .max_by_key(|op| (op.invoke, op.id));
        context.extend(writer.map(|op| (*op).clone()));
    }
    context
}

/// Shrinks the operations of one non-linearizable key.
///
/// `budget` sizes the time one candidate check may take; `deadline` ends the whole reduction.
pub(crate) fn shrink(ops: &[&Operation], budget: Duration, deadline: Instant) -> Shrunk {
    let mut checker: KeyChecker = Checker::new(Budget::new(budget, deadline), key_fails);
    let failing_prefix = shortest_failing_prefix(ops, &mut checker);
    let reduced = remove_irrelevant(failing_prefix, &mut checker);

    // Report the operations as recorded, not in the weakened form used while searching: the
    // recorded form is at least as constrained, so it fails too.
    let ids: HashSet<u64> = reduced.iter().map(|op| op.id).collect();
    let mut result: Vec<Operation> =
        ops.iter().filter(|op| ids.contains(&op.id)).map(|op| (*op).clone()).collect();
    let shown_with = context(ops, &result);
    result.extend(shown_with);
    result.sort_by_key(|op| (op.invoke, op.id));
    tracing::debug!(from = ops.len(), to = result.len(), complete = checker.complete(), "shrunk violation");
    Shrunk { ops: result, complete: checker.complete() }
}
