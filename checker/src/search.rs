//! The linearizability search for one key (Wing & Gong's algorithm with Lowe's memoization, in
//! the shape Porcupine popularized).
//!
//! Every operation contributes a call entry and a return entry to a doubly linked list sorted by
//! time. The search walks the list: at a call it tries to linearize that operation next (apply its
//! step to the model); if that works and the pair (set of linearized operations, model state) was
//! never seen before, the operation's two entries are unlinked ("lifted") and the walk restarts at
//! the head. Reaching a return entry means an operation that already completed was not linearized
//! in time, so the last choice is undone ("unlifted") and the next candidate is tried. The cache of
//! seen pairs is what makes the search practical: two interleavings that linearized the same
//! operations into the same state have the same future, so only one is explored.

use std::collections::HashMap;
use std::time::Instant;

use crate::model::{ABSENT, SearchOp, State};

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

/// A fixed-size set of operation indices.
#[derive(Clone, PartialEq, Eq)]
struct BitSet {
    words: Box<[u64]>,
}

impl BitSet {
    fn new(len: usize) -> Self {
        BitSet { words: vec![0; len.div_ceil(64)].into_boxed_slice() }
    }

    fn set(&mut self, index: usize, on: bool) {
        if let Some(word) = self.words.get_mut(index / 64) {
            let bit = 1u64 << (index % 64);
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn hash_with(&self, state: State) -> u64 {
        self.words.iter().fold(u64::from(state).wrapping_mul(0x9e37_79b9_7f4a_7c15), |hash, &word| {
            (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
        })
    }
}

/// The set of (linearized operations, state) configurations already explored.
///
/// Keyed by a hash with explicit collision lists so that a lookup that hits allocates nothing.
#[derive(Default)]
struct SeenConfigurations {
    buckets: HashMap<u64, Vec<(BitSet, State)>>,
}

impl SeenConfigurations {
    /// Records the configuration; false if it was already there.
    fn insert(&mut self, linearized: &BitSet, state: State) -> bool {
        let bucket = self.buckets.entry(linearized.hash_with(state)).or_default();
        if bucket.iter().any(|(bits, seen)| *seen == state && bits == linearized) {
            return false;
        }
        bucket.push((linearized.clone(), state));
        true
    }
}

/// Node 0 is the head sentinel; the entries follow in time order; the last node is the tail.
struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: the operation and whether it is the call (true) or the return entry.
    entry: Vec<(usize, bool)>,
    /// For each operation: its call and return nodes.
    nodes_of: Vec<(usize, usize)>,
}

const HEAD: usize = 0;

impl EntryList {
    fn new(ops: &[SearchOp]) -> Self {
        // Sort key: time, with +infinity last; at equal times calls come first, so operations that
        // touch at one instant count as concurrent (the safe reading of a coarse clock).
        let mut events: Vec<((bool, u64), bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push(((false, op.invoke), false, index));
            let end = op.deadline.map_or((true, 0), |time| (false, time));
            events.push((end, true, index));
        }
        events.sort_unstable();
        let tail = events.len() + 1;
        let mut entry = vec![(usize::MAX, false); tail + 1];
        let mut nodes_of = vec![(0, 0); ops.len()];
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let node = position + 1;
            if let Some(slot) = entry.get_mut(node) {
                *slot = (op, !is_return);
            }
            if let Some(nodes) = nodes_of.get_mut(op) {
                if is_return {
                    nodes.1 = node;
                } else {
                    nodes.0 = node;
                }
            }
        }
        EntryList {
            next: (1..=tail + 1).map(|node| node.min(tail)).collect(),
            prev: (0..=tail).map(|node| node.saturating_sub(1)).collect(),
            entry,
            nodes_of,
        }
    }

    fn next(&self, node: usize) -> usize {
        self.next.get(node).copied().unwrap_or(HEAD)
    }

    fn entry(&self, node: usize) -> Option<(usize, bool)> {
        self.entry.get(node).copied().filter(|&(op, _)| op != usize::MAX)
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    /// Removes an operation's call and return entries (it has been linearized).
    fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Restores them, in the reverse order of [`EntryList::lift`] so the links line up again.
    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.relink(ret);
        self.relink(call);
    }
}

/// Searches for a linearization of one key's operations, starting from an absent key.
pub(crate) fn search(ops: &[SearchOp], deadline: Instant) -> SearchOutcome {
    let mut list = EntryList::new(ops);
    let mut seen = SeenConfigurations::default();
    let mut linearized = BitSet::new(ops.len());
    let mut state = ABSENT;
    // Operations with a known completion still to linearize; the unknown ones may stay out.
    let mut remaining = ops.iter().filter(|op| op.deadline.is_some()).count();
    // The choices made so far: the operation linearized and the state before it.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut best: Option<(Vec<usize>, Option<usize>)> = None;
    let mut node = list.next(HEAD);
    let mut until_clock = DEADLINE_CHECK_INTERVAL;

    while remaining > 0 {
        until_clock -= 1;
        if until_clock == 0 {
            if Instant::now() >= deadline {
                return SearchOutcome::TimedOut;
            }
            until_clock = DEADLINE_CHECK_INTERVAL;
        }
        match list.entry(node) {
            Some((index, true)) => {
                let op = &ops[index];
                if let Some(after) = op.step.apply(state) {
                    linearized.set(index, true);
                    if seen.insert(&linearized, after) {
                        stack.push((index, state));
                        state = after;
                        list.lift(index);
                        if op.deadline.is_some() {
                            remaining -= 1;
                        }
                        node = list.next(HEAD);
                        continue;
                    }
                    linearized.set(index, false);
                }
                node = list.next(node);
            }
            // A return entry (or the tail): an operation that had to be linearized by now was not.
            returned => {
                if best.as_ref().is_none_or(|(longest, _)| stack.len() > longest.len()) {
                    let prefix = stack.iter().map(|&(index, _)| ops[index].source).collect();
                    best = Some((prefix, returned.map(|(index, _)| ops[index].source)));
                }
                let Some((index, before)) = stack.pop() else {
                    let (linearized, stuck) = best.unwrap_or_default();
                    return SearchOutcome::Violation { linearized, stuck };
                };
                list.unlift(index);
                linearized.set(index, false);
                state = before;
                if ops[index].deadline.is_some() {
                    remaining += 1;
                }
                node = list.next(list.nodes_of[index].0);
            }
        }
    }
    SearchOutcome::Linearizable
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
