//! The linearizability search for one key (Wing & Gong's algorithm with Lowe's memoization, in
//! the shape Porcupine popularized).
//!
//! Every operation contributes a call entry and a return entry to a doubly linked list sorted by
//! time ([`EntryList`]). The search walks the list: at a call it tries to linearize that operation
//! next (apply its step to the model); if that works and the resulting configuration is new, the
//! operation's two entries are lifted out and the walk restarts at the head. Reaching a return
//! entry means an operation that already completed was not linearized in time, so the last choice
//! is undone and the next candidate is tried.
//!
//! Unknown-outcome operations (return at +infinity) never force anything and may stay out for
//! good, which makes them the expensive part: each one could be linearized at any later point. The
//! search only considers *useful* placements, which loses no linearization:
//!
//! - an unknown-outcome operation is tried only after every known-outcome candidate failed at that
//!   point, and only if it changes the state (one that changes nothing can be left out);
//! - of several unknown-outcome operations with the same effect (e.g. timed-out deletes), the
//!   earlier-invoked one is always used first: swapping two of them changes nothing;
//! - right after one, only an operation that depends on the state may follow (a read, a
//!   compare-and-set, a delete that reports existence): if a blind write followed instead, the
//!   unknown-outcome operation could be left out with the same result.
//!
//! Any linearization can be turned into one of this shape by leaving such operations out, so the
//! restriction keeps the verdict; with [`Refuted`] it keeps unknown outcomes from multiplying the
//! configurations.

use std::collections::HashMap;
use std::time::Instant;

use crate::configs::{Linearized, Refuted, Seen, Situation, Slot};
use crate::entries::{EntryList, HEAD};
use crate::history::Operation;
use crate::model::{ABSENT, SearchOp, Step, compile};

/// How often (in loop iterations) the clock is read; reading it every step would dominate.
const DEADLINE_CHECK_INTERVAL: u32 = 1 << 12;

/// What the search concluded about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// None exists. `linearized` is the longest sequence of operations the search managed to
    /// linearize and `stuck` the operation whose completion then could not be honoured (both as
    /// [`SearchOp::source`] positions): a human starts reading there.
    Violation { linearized: Vec<usize>, stuck: Option<usize> },
    /// The deadline passed first.
    TimedOut,
}

/// Which candidates a walk over the list tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Operations with a known outcome.
    Known,
    /// Operations with an unknown outcome, once no known one could go next.
    Unknown,
}

/// A linearization choice on the search stack.
struct Choice {
    op: usize,
    /// The situation before the operation was applied.
    before: Situation,
    phase: Phase,
}

/// For each unknown-outcome operation, the latest unknown-outcome operation invoked before it with
/// the same step: it must be used before this one.
fn prerequisites(ops: &[SearchOp]) -> Vec<Option<usize>> {
    let mut unknown: Vec<usize> = (0..ops.len()).filter(|&index| ops[index].deadline.is_none()).collect();
    unknown.sort_by_key(|&index| (ops[index].invoke, index));
    let mut last_with_step: HashMap<Step, usize> = HashMap::new();
    let mut prerequisite = vec![None; ops.len()];
    for index in unknown {
        prerequisite[index] = last_with_step.insert(ops[index].step, index);
    }
    prerequisite
}

/// The search's working state for one key.
struct Search<'a> {
    ops: &'a [SearchOp],
    slots: Vec<Slot>,
    prerequisite: Vec<Option<usize>>,
    /// Whether each operation is currently linearized (on the stack).
    applied: Vec<bool>,
    unknown: usize,
    list: EntryList,
    seen: Seen,
    refuted: Refuted,
    linearized: Linearized,
    situation: Situation,
    /// Operations with a known completion still to linearize; the unknown ones may stay out.
    remaining: usize,
    stack: Vec<Choice>,
    /// The longest linearized sequence seen and the operation that stopped it.
    best: Option<(Vec<usize>, Option<usize>)>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp]) -> Self {
        let mut slots = Vec::with_capacity(ops.len());
        let (mut known, mut unknown) = (0, 0);
        for op in ops {
            if op.deadline.is_some() {
                slots.push(Slot::Known(known));
                known += 1;
            } else {
                slots.push(Slot::Unknown(unknown));
                unknown += 1;
            }
        }
        Search {
            ops,
            slots,
            prerequisite: prerequisites(ops),
            applied: vec![false; ops.len()],
            unknown,
            list: EntryList::new(ops),
            seen: Seen::default(),
            refuted: Refuted::default(),
            linearized: Linearized::new(known, unknown),
            situation: Situation { state: ABSENT, after_unknown: false },
            remaining: known,
            stack: Vec::new(),
            best: None,
        }
    }

    /// Linearizes operation `index` next if the rules allow it, its output fits the state and the
    /// resulting configuration is new.
    fn try_linearize(&mut self, index: usize, phase: Phase) -> bool {
        let op = &self.ops[index];
        let op_phase = if op.deadline.is_some() { Phase::Known } else { Phase::Unknown };
        let allowed = op_phase == phase
            && !(self.situation.after_unknown && op.step.is_blind_write())
            && self.prerequisite[index].is_none_or(|earlier| self.applied[earlier]);
        let before = self.situation;
        let Some(after) = op
            .step
            .apply(before.state)
            .filter(|&after| allowed && (phase == Phase::Known || after != before.state))
        else {
            return false;
        };
        let next = Situation { state: after, after_unknown: phase == Phase::Unknown };
        self.linearized.set(self.slots[index], true);
        if self.refuted.covers(&self.linearized, next) || !self.seen.insert(&self.linearized, next) {
            self.linearized.set(self.slots[index], false);
            return false;
        }
        self.stack.push(Choice { op: index, before, phase });
        self.situation = next;
        self.list.lift(index);
        self.applied[index] = true;
        if phase == Phase::Known {
            self.remaining -= 1;
        }
        true
    }

    /// Undoes the last choice after its configuration led nowhere; returns it, or `None` when there
    /// is nothing left to undo (no linearization exists).
    fn backtrack(&mut self, blocked_by: Option<usize>) -> Option<Choice> {
        if self.best.as_ref().is_none_or(|(longest, _)| self.stack.len() > longest.len()) {
            let prefix = self.stack.iter().map(|choice| self.ops[choice.op].source).collect();
            self.best = Some((prefix, blocked_by.map(|index| self.ops[index].source)));
        }
        let choice = self.stack.pop()?;
        if self.unknown > 0 {
            self.refuted.insert(&self.linearized, self.situation);
        }
        self.list.unlift(choice.op);
        self.applied[choice.op] = false;
        self.linearized.set(self.slots[choice.op], false);
        self.situation = choice.before;
        if choice.phase == Phase::Known {
            self.remaining += 1;
        }
        Some(choice)
    }

    fn run(mut self, deadline: Instant) -> SearchOutcome {
        let mut node = self.list.next(HEAD);
        let mut phase = Phase::Known;
        let mut until_clock = DEADLINE_CHECK_INTERVAL;
        while self.remaining > 0 {
            until_clock -= 1;
            if until_clock == 0 {
                if Instant::now() >= deadline {
                    return SearchOutcome::TimedOut;
                }
                until_clock = DEADLINE_CHECK_INTERVAL;
            }
            match self.list.entry(node) {
                Some((index, true)) => {
                    if self.try_linearize(index, phase) {
                        node = self.list.next(HEAD);
                        phase = Phase::Known;
                    } else {
                        node = self.list.next(node);
                    }
                }
                // A return entry (or the tail): an operation that had to be linearized by now was
                // not. Try the unknown-outcome candidates, then give up on the last choice.
                returned => {
                    if phase == Phase::Known && self.unknown > 0 {
                        node = self.list.next(HEAD);
                        phase = Phase::Unknown;
                        continue;
                    }
                    let Some(choice) = self.backtrack(returned.map(|(index, _)| index)) else {
                        let (linearized, stuck) = self.best.unwrap_or_default();
                        return SearchOutcome::Violation { linearized, stuck };
                    };
                    phase = choice.phase;
                    node = self.list.next(self.list.call_node(choice.op));
                }
            }
        }
        SearchOutcome::Linearizable
    }
}

/// Searches for a linearization of one key's operations, starting from an absent key.
pub(crate) fn search(ops: &[SearchOp], deadline: Instant) -> SearchOutcome {
    Search::new(ops).run(deadline)
}

/// Checks one key's operations; [`SearchOutcome`] positions refer to `ops`.
pub(crate) fn check_key(ops: &[&Operation], deadline: Instant) -> SearchOutcome {
    let compiled = compile(ops);
    match search(&compiled, deadline) {
        // Compilation keeps `source` as the position in `ops`; map the search's indices back.
        SearchOutcome::Violation { linearized, stuck } => SearchOutcome::Violation {
            linearized: linearized
                .into_iter()
                .filter_map(|index| compiled.get(index).map(|op| op.source))
                .collect(),
            stuck: stuck.and_then(|index| compiled.get(index).map(|op| op.source)),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::Step;

    fn op(source: usize, invoke: u64, deadline: Option<u64>, step: Step) -> SearchOp {
        SearchOp { source, invoke, deadline, step }
    }

    fn run(ops: &[SearchOp]) -> SearchOutcome {
        search(ops, Instant::now() + Duration::from_secs(10))
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(run(&[]), SearchOutcome::Linearizable);
    }

    #[test]
    fn concurrent_write_and_read_in_either_order() {
        let write = op(0, 0, Some(10), Step::Write(1));
        assert_eq!(run(&[write, op(1, 1, Some(5), Step::Read(1))]), SearchOutcome::Linearizable);
        assert_eq!(run(&[write, op(1, 1, Some(5), Step::Read(ABSENT))]), SearchOutcome::Linearizable);
    }

    #[test]
    fn stale_read_reports_longest_prefix_and_stuck_op() {
        let ops = [
            op(0, 0, Some(1), Step::Write(1)),
            op(1, 2, Some(3), Step::Write(2)),
            op(2, 4, Some(5), Step::Read(1)),
        ];
        assert_eq!(run(&ops), SearchOutcome::Violation { linearized: vec![0, 1], stuck: Some(2) });
    }

    #[test]
    fn equal_times_count_as_concurrent() {
        // The read's call and the write's return share a timestamp: either order is allowed.
        let ops = [op(0, 0, Some(5), Step::Write(1)), op(1, 5, Some(6), Step::Read(ABSENT))];
        assert_eq!(run(&ops), SearchOutcome::Linearizable);
    }

    #[test]
    fn unknown_write_may_apply_late_or_never() {
        let unknown = op(0, 0, None, Step::Write(1));
        let later_write = op(1, 1, Some(2), Step::Write(2));
        let read_one = op(2, 3, Some(4), Step::Read(1));
        assert_eq!(run(&[unknown, later_write, read_one]), SearchOutcome::Linearizable);
        let read_two = op(2, 3, Some(4), Step::Read(2));
        assert_eq!(run(&[unknown, later_write, read_two]), SearchOutcome::Linearizable);
        // ...but never before its invocation.
        let early_read = op(3, 0, Some(1), Step::Read(1));
        let late_unknown = op(4, 2, None, Step::Write(1));
        assert!(matches!(run(&[early_read, late_unknown]), SearchOutcome::Violation { .. }));
    }

    #[test]
    fn past_deadline_times_out() {
        // Many concurrent writes and an impossible read: the search must give up, not finish.
        let mut ops: Vec<SearchOp> =
            (0..40).map(|i| op(i, 0, Some(100), Step::Write(i as u32 + 1))).collect();
        ops.push(op(40, 0, Some(100), Step::Read(999)));
        assert_eq!(search(&ops, Instant::now()), SearchOutcome::TimedOut);
    }
}
