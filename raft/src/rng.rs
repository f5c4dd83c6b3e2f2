//! A tiny deterministic PRNG (SplitMix64) for randomized election timeouts.
//!
//! The core must be reproducible from its inputs alone (the simulator replays a seed), so it
//! owns its randomness instead of reading an external source. Timeouts need spread, not
//! cryptographic quality, which SplitMix64 gives in a few lines.

/// SplitMix64: a 64-bit state advanced by a Weyl sequence and mixed by two multiplications.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`; `low` when the range is empty.
    pub(crate) fn range(&mut self, low: usize, high: usize) -> usize {
        let span = high.saturating_sub(low) as u64;
        if span == 0 {
            return low;
        }
        low + (self.next_u64() % span) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_values_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..20).contains(&x));
        }
        assert_eq!(SplitMix64::new(1).range(5, 5), 5);
    }

    #[test]
    fn covers_whole_range() {
        let mut r = SplitMix64::new(42);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[r.range(0, 10)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
