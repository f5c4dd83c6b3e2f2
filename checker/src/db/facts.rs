//! What acknowledged reads prove about when keys did *not* change, used to prune the search.
//!
//! A read at revision `R` that returns key `k` with mod revision `m` proves that no write changed
//! `k` at a revision in `(m, R]`; with create revision `c`, that nothing deleted `k` in `(c, R]`.
//! Every linearization satisfies every acknowledged read, so an unknown-outcome write that would
//! break such a fact can be ruled out where it is tried, instead of when the read is reached.

use crate::db::compile::Kv;
use crate::db::types::Revision;

/// A union of revision intervals `(lo, hi]`, sorted and merged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Intervals {
    spans: Vec<(Revision, Revision)>,
}

impl Intervals {
    fn from_unsorted(mut spans: Vec<(Revision, Revision)>) -> Self {
        spans.retain(|(lo, hi)| lo < hi);
        spans.sort_unstable();
        let mut merged: Vec<(Revision, Revision)> = Vec::with_capacity(spans.len());
        for (lo, hi) in spans {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Intervals { spans: merged }
    }

    /// True if `revision` lies in some `(lo, hi]`.
    pub(crate) fn contains(&self, revision: Revision) -> bool {
        let after = self.spans.partition_point(|&(lo, _)| lo < revision);
        after > 0 && self.spans.get(after - 1).is_some_and(|&(_, hi)| revision <= hi)
    }
}

/// Per key: the revisions at which it cannot have changed, and those at which it cannot have been
/// deleted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    unchanged: Vec<Intervals>,
    not_deleted: Vec<Intervals>,
}

impl Facts {
    /// Builds the facts from every key-value acknowledged reads returned, with the revision each
    /// read was served at.
    pub(crate) fn new(keys: usize, observations: impl Iterator<Item = (Revision, Kv)>) -> Self {
        let mut unchanged = vec![Vec::new(); keys];
        let mut not_deleted = vec![Vec::new(); keys];
        for (read_at, kv) in observations {
            if let Some(spans) = unchanged.get_mut(kv.key as usize) {
                spans.push((kv.modified, read_at));
            }
            if let Some(spans) = not_deleted.get_mut(kv.key as usize) {
                spans.push((kv.create, read_at));
            }
        }
        Facts {
            unchanged: unchanged.into_iter().map(Intervals::from_unsorted).collect(),
            not_deleted: not_deleted.into_iter().map(Intervals::from_unsorted).collect(),
        }
    }

    /// True if the facts allow `key` to change at `revision` to a state that exists (`deleted`
    /// false) or not.
    pub(crate) fn allow_change(&self, key: u32, revision: Revision, deleted: bool) -> bool {
        let blocked =
            |intervals: &[Intervals]| intervals.get(key as usize).is_some_and(|i| i.contains(revision));
        !(blocked(&self.unchanged) || (deleted && blocked(&self.not_deleted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_are_open_below() {
        let intervals = Intervals::from_unsorted(vec![(5, 7), (2, 3), (3, 4), (9, 9)]);
        assert!(!intervals.contains(2));
        assert!(intervals.contains(3) && intervals.contains(4));
        assert!(!intervals.contains(5));
        assert!(intervals.contains(6) && intervals.contains(7));
        assert!(!intervals.contains(8) && !intervals.contains(9));
    }

    #[test]
    fn a_read_forbids_changes_since_the_mod_revision_and_deletes_since_creation() {
        let kv = Kv { key: 0, value: 1, create: 3, modified: 6, version: 2 };
        let facts = Facts::new(1, [(10, kv)].into_iter());
        assert!(facts.allow_change(0, 6, false));
        assert!(!facts.allow_change(0, 7, false) && !facts.allow_change(0, 10, false));
        assert!(facts.allow_change(0, 11, true));
        assert!(facts.allow_change(0, 5, false) && !facts.allow_change(0, 5, true));
    }
}
