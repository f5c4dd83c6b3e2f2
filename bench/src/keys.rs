//! The key space every workload shares.
//!
//! Keys are `k` followed by a zero-padded 10-digit index, so byte order equals numeric order
//! and a range `[key(i), key(i + n))` holds exactly `n` keys once `0..key_space` is loaded.
//! Both systems therefore serve byte-for-byte the same requests.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, RngCore};

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
    fn picks_stay_in_the_key_space() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..10_000).map(|_| pick(&mut rng, 17)).all(|i| i < 17));
    }
}
