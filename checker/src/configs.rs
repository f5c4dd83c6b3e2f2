//! Search configurations (which operations are linearized, and the register's state) and the two
//! memories the search keeps of them.
//!
//! - [`Seen`]: every configuration ever reached. Two interleavings that linearized the same
//!   operations into the same state have the same future, so only the first is explored (Lowe's
//!   memoization of Wing & Gong's search).
//! - [`Refuted`]: configurations whose whole future was explored without success. A configuration
//!   with the same linearized known-outcome operations and the same state, but with *more*
//!   unknown-outcome operations already used, can do nothing the refuted one could not (the refuted
//!   one could skip those operations forever), so it is refuted too. Without this, every subset of
//!   in-flight unknown-outcome operations is a separate configuration and the search is exponential
//!   in the number of timeouts.
//!
//! Besides the register's state, a configuration records whether the last operation linearized had
//! an unknown outcome ([`Situation`]): the search then only lets an operation that depends on the
//! state follow (see [`crate::search`]), so such a configuration has fewer futures than the same one
//! reached otherwise.

use std::collections::HashMap;

use crate::model::State;

/// The register's state and whether an unknown-outcome operation was linearized last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Situation {
    pub(crate) state: State,
    pub(crate) after_unknown: bool,
}

impl Situation {
    fn seed(self) -> u64 {
        u64::from(self.state).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// True if every future open to `other` is open to `self`.
    fn has_futures_of(self, other: Situation) -> bool {
        self.state == other.state && (!self.after_unknown || other.after_unknown)
    }
}

/// A fixed-size set of small indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BitSet {
    words: Box<[u64]>,
}

impl BitSet {
    pub(crate) fn new(len: usize) -> Self {
        BitSet { words: vec![0; len.div_ceil(64)].into_boxed_slice() }
    }

    pub(crate) fn set(&mut self, index: usize, on: bool) {
        if let Some(word) = self.words.get_mut(index / 64) {
            let bit = 1u64 << (index % 64);
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    fn is_subset_of(&self, other: &BitSet) -> bool {
        self.words.iter().zip(other.words.iter()).all(|(mine, theirs)| mine & !theirs == 0)
    }

    fn mix(&self, seed: u64) -> u64 {
        self.words
            .iter()
            .fold(seed, |hash, &word| (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95))
    }
}

/// Where an operation's bit lives: known-outcome and unknown-outcome operations are kept apart
/// because [`Refuted`] treats them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Known(usize),
    Unknown(usize),
}

/// The set of operations linearized so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Linearized {
    known: BitSet,
    unknown: BitSet,
}

impl Linearized {
    pub(crate) fn new(known: usize, unknown: usize) -> Self {
        Linearized { known: BitSet::new(known), unknown: BitSet::new(unknown) }
    }

    pub(crate) fn set(&mut self, slot: Slot, on: bool) {
        match slot {
            Slot::Known(index) => self.known.set(index, on),
            Slot::Unknown(index) => self.unknown.set(index, on),
        }
    }

    fn known_hash(&self, situation: Situation) -> u64 {
        self.known.mix(situation.seed())
    }

    fn full_hash(&self, situation: Situation) -> u64 {
        self.unknown.mix(self.known_hash(situation)) ^ u64::from(situation.after_unknown)
    }
}

/// Every configuration reached so far. Buckets keyed by hash so a hit allocates nothing.
#[derive(Default)]
pub(crate) struct Seen {
    buckets: HashMap<u64, Vec<(Linearized, Situation)>>,
}

impl Seen {
    /// Records the configuration; false if it was reached before.
    pub(crate) fn insert(&mut self, linearized: &Linearized, situation: Situation) -> bool {
        let bucket = self.buckets.entry(linearized.full_hash(situation)).or_default();
        if bucket.iter().any(|(seen, seen_situation)| *seen_situation == situation && seen == linearized) {
            return false;
        }
        bucket.push((linearized.clone(), situation));
        true
    }
}

/// Configurations whose future was fully explored and holds no linearization.
///
/// Only completed explorations are recorded: a configuration still being explored (an ancestor of
/// the current one) proves nothing yet.
#[derive(Default)]
pub(crate) struct Refuted {
    buckets: HashMap<u64, Vec<(BitSet, BitSet, Situation)>>,
}

impl Refuted {
    pub(crate) fn insert(&mut self, linearized: &Linearized, situation: Situation) {
        self.buckets.entry(linearized.known_hash(situation)).or_default().push((
            linearized.known.clone(),
            linearized.unknown.clone(),
            situation,
        ));
    }

    /// True if a refuted configuration has the same known operations, a situation with at least
    /// the same futures, and used no unknown-outcome operation that this one has not used.
    pub(crate) fn covers(&self, linearized: &Linearized, situation: Situation) -> bool {
        self.buckets.get(&linearized.known_hash(situation)).is_some_and(|bucket| {
            bucket.iter().any(|(known, unknown, refuted)| {
                refuted.has_futures_of(situation)
                    && *known == linearized.known
                    && unknown.is_subset_of(&linearized.unknown)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: State) -> Situation {
        Situation { state, after_unknown: false }
    }

    fn after_unknown(state: State) -> Situation {
        Situation { state, after_unknown: true }
    }

    #[test]
    fn seen_is_exact() {
        let mut seen = Seen::default();
        let mut config = Linearized::new(70, 3);
        config.set(Slot::Known(65), true);
        assert!(seen.insert(&config, at(1)));
        assert!(!seen.insert(&config, at(1)));
        assert!(seen.insert(&config, at(2)));
        assert!(seen.insert(&config, after_unknown(1)));
        config.set(Slot::Unknown(0), true);
        assert!(seen.insert(&config, at(1)));
    }

    #[test]
    fn refuted_covers_configurations_that_used_more_unknown_operations() {
        let mut refuted = Refuted::default();
        let mut config = Linearized::new(4, 4);
        config.set(Slot::Known(1), true);
        config.set(Slot::Unknown(2), true);
        refuted.insert(&config, at(7));

        let mut more = config.clone();
        more.set(Slot::Unknown(3), true);
        assert!(refuted.covers(&config, at(7)));
        assert!(refuted.covers(&more, at(7)));
        assert!(refuted.covers(&more, after_unknown(7)), "fewer futures after an unknown operation");
        assert!(!refuted.covers(&more, at(8)), "other state");

        let mut fewer = config.clone();
        fewer.set(Slot::Unknown(2), false);
        assert!(!refuted.covers(&fewer, at(7)), "fewer unknown operations used can do more");

        let mut other_known = more.clone();
        other_known.set(Slot::Known(0), true);
        assert!(!refuted.covers(&other_known, at(7)));

        let mut restricted = Refuted::default();
        restricted.insert(&config, after_unknown(7));
        assert!(restricted.covers(&config, after_unknown(7)));
        assert!(!restricted.covers(&config, at(7)), "more futures when not right after an unknown operation");
    }
}
