//! The time-ordered list of call and return entries the search walks, with O(1) removal and
//! restoration of an operation's two entries ("lift" and "unlift", as in dancing links).

use crate::model::SearchOp;

/// Node 0 is the head sentinel, the entries follow in time order, the last node is the tail.
pub(crate) struct EntryList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: the operation and whether it is the call (true) or the return entry.
    entry: Vec<Option<(usize, bool)>>,
    /// For each operation: its call and return nodes.
    nodes_of: Vec<(usize, usize)>,
}

pub(crate) const HEAD: usize = 0;

impl EntryList {
    pub(crate) fn new(ops: &[SearchOp]) -> Self {
        // Sort key: time, with +infinity last; at equal times calls come first, so operations that
        // touch at one instant count as concurrent (the safe reading of a coarse clock).
        let mut events: Vec<((bool, u64), bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push(((false, op.invoke), false, index));
            events.push((op.deadline.map_or((true, 0), |time| (false, time)), true, index));
        }
        events.sort_unstable();
        let tail = events.len() + 1;
        let mut entry = vec![None; tail + 1];
        let mut nodes_of = vec![(0, 0); ops.len()];
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let node = position + 1;
            entry[node] = Some((op, !is_return));
            if is_return {
                nodes_of[op].1 = node;
            } else {
                nodes_of[op].0 = node;
            }
        }
        EntryList {
            next: (1..=tail + 1).map(|node| node.min(tail)).collect(),
            prev: (0..=tail).map(|node| node.saturating_sub(1)).collect(),
            entry,
            nodes_of,
        }
    }

    pub(crate) fn next(&self, node: usize) -> usize {
        self.next[node]
    }

    /// The operation at `node` and whether this is its call; `None` for the sentinels.
    pub(crate) fn entry(&self, node: usize) -> Option<(usize, bool)> {
        self.entry[node]
    }

    /// The node of an operation's call entry.
    pub(crate) fn call_node(&self, op: usize) -> usize {
        self.nodes_of[op].0
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
    pub(crate) fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Restores them, in the reverse order of [`EntryList::lift`] so the links line up again.
    pub(crate) fn unlift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of[op];
        self.relink(ret);
        self.relink(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Step;

    fn walk(list: &EntryList) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut node = list.next(HEAD);
        while let Some(entry) = list.entry(node) {
            out.push(entry);
            node = list.next(node);
        }
        out
    }

    #[test]
    fn orders_by_time_with_calls_first_and_unknown_returns_last() {
        let op = |invoke, deadline| SearchOp { source: 0, invoke, deadline, step: Step::Write(1) };
        let list = EntryList::new(&[op(0, None), op(1, Some(5)), op(5, Some(6))]);
        let expected = vec![(0, true), (1, true), (2, true), (1, false), (2, false), (0, false)];
        assert_eq!(walk(&list), expected);
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        let op = |invoke, deadline| SearchOp { source: 0, invoke, deadline, step: Step::Write(1) };
        let mut list = EntryList::new(&[op(0, Some(1)), op(2, Some(3)), op(1, Some(4))]);
        let before = walk(&list);
        list.lift(1);
        list.lift(0);
        assert_eq!(walk(&list), vec![(2, true), (2, false)]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(walk(&list), before);
    }
}
