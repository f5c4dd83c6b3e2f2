//! The key space every workload shares.
//!
//! Keys are `k` followed by a zero-padded 10-digit index, so byte order equals numeric order
//! and a range `[key(i), key(i + n))` holds exactly `n` keys once `0..key_space` is loaded.
//! Both systems therefore serve byte-for-byte the same requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Width of the numeric part; 10 digits hold any `u32` index and more than any run loads.
const DIGITS: usize = 10;

/// The key of index `i`.
pub fn key(i: u64) -> Vec<u8> {
    format!("k{i:0DIGITS$}").into_bytes()
}

/// A value of `size` random bytes. Random so that no layer (disk, page cache compression)
/// gets an unrealistically easy time with repeated patterns.
pub fn random_value(rng: &mut impl RngCore, size: usize) -> Vec<u8> {
    let mut value = vec![0u8; size];
    rng.fill_bytes(&mut value);
    value
}

/// A prefix `TAG/<16 hex digits>/` no earlier run wrote under (the clock mixed with `seed`),
/// for the workloads that must see or own their keys alone: watchers that must receive this
/// run's puts only, leases whose keys no other run deletes.
pub fn run_prefix(tag: &str, seed: u64) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{tag}/{:016x}/", now ^ seed.rotate_left(17)).into_bytes()
}

/// A uniformly chosen key index below `key_space` (which must be > 0).
pub fn pick(rng: &mut impl Rng, key_space: u64) -> u64 {
    rng.random_range(0..key_space)
}

/// The order in which a run's puts visit the key space.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum KeyOrder {
    /// Each put draws a key uniformly from the key space.
    #[default]
    Random,
    /// Each put takes the next key index, shared by every client of the run and wrapping at
    /// the key space, as etcd's `benchmark put --sequential-keys` does: the writes append to
    /// the end of the key range (until they wrap), which a B+tree store handles differently
    /// from writes scattered over it.
    Sequential,
}

impl KeyOrder {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Sequential => "sequential",
        }
    }
}

/// Hands out the key indices of a run's puts in the run's [`KeyOrder`]. Clones share one
/// sequence, so the clients of a sequential run together write keys in increasing order.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Uniform draws from each client's own generator.
    Random,
    /// The next index of one counter shared by every clone.
    Sequential(Arc<AtomicU64>),
}

impl KeySource {
    /// A source in `order`; a sequential one starts at key 0.
    pub fn new(order: KeyOrder) -> Self {
        match order {
            KeyOrder::Random => Self::Random,
            KeyOrder::Sequential => Self::Sequential(Arc::default()),
        }
    }

    /// The next key index below `key_space` (which must be > 0).
    pub fn next(&self, rng: &mut impl Rng, key_space: u64) -> u64 {
        match self {
            Self::Random => pick(rng, key_space),
            // Relaxed: the counter only has to hand out each value once; no other memory is
            // published through it.
            Self::Sequential(next) => next.fetch_add(1, Ordering::Relaxed) % key_space,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn keys_sort_like_their_indices() {
        let mut indices = [0u64, 9, 10, 99, 100, 12_345, 999_999, 1_000_000];
        let mut keys: Vec<Vec<u8>> = indices.iter().map(|&i| key(i)).collect();
        keys.sort();
        indices.sort();
        assert_eq!(keys, indices.iter().map(|&i| key(i)).collect::<Vec<_>>());
        assert_eq!(key(42), b"k0000000042".to_vec());
    }

    #[test]
    fn values_have_the_requested_size_and_differ() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = random_value(&mut rng, 256);
        let b = random_value(&mut rng, 256);
        assert_eq!(a.len(), 256);
        assert_ne!(a, b);
    }

    #[test]
    fn run_prefixes_carry_their_tag_and_stay_apart_from_the_key_space() {
        let prefix = run_prefix("w", 1);
        assert!(prefix.starts_with(b"w/") && prefix.ends_with(b"/"), "{prefix:?}");
        assert_eq!(prefix.len(), "w/".len() + 16 + 1);
        assert!(!prefix.starts_with(b"k"), "preloaded keys start with k");
    }

    #[test]
    fn sequential_sources_share_one_increasing_sequence_that_wraps() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = KeySource::new(KeyOrder::Sequential);
        let b = a.clone();
        let drawn: Vec<u64> = (0..7).map(|i| if i % 2 == 0 { &a } else { &b }.next(&mut rng, 5)).collect();
        assert_eq!(drawn, [0, 1, 2, 3, 4, 0, 1]);
        let random = KeySource::new(KeyOrder::Random);
        assert!((0..1000).map(|_| random.next(&mut rng, 5)).all(|i| i < 5));
    }

    #[test]
    fn key_orders_are_named_as_on_the_command_line() {
        assert_eq!(KeyOrder::default(), KeyOrder::Random);
        assert_eq!(serde_json::to_string(&KeyOrder::Sequential).unwrap(), "\"sequential\"");
        assert_eq!(KeyOrder::from_str("sequential", false), Ok(KeyOrder::Sequential));
        assert_eq!(KeyOrder::Random.name(), "random");
    }

    #[test]
    fn picks_stay_in_the_key_space() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..10_000).map(|_| pick(&mut rng, 17)).all(|i| i < 17));
    }
}
