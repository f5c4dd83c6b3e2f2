//! Preloading the key space (`kvbench load`).
//!
//! Keys `0..keys` are written in transactions of `batch` puts (etcd and raftkv both accept up
//! to 128 operations per txn by default), batches handed out to concurrent clients through a
//! shared counter. Loading is setup, not a measurement, so it is made as fast as the API allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use etcd_client::{KvClient, Txn, TxnOp};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::conn::Turns;
use crate::error::BenchError;
use crate::keys;
use crate::runner::{Outcome, Worker};

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Keys `0..keys` are written.
    pub keys: u64,
    /// Puts per transaction.
    pub batch: u64,
    /// Bytes per value.
    pub value_size: usize,
}

impl LoadSpec {
    /// Number of transactions needed.
    pub fn batches(&self) -> u64 {
        self.keys.div_ceil(self.batch.max(1))
    }

    /// Key indices of batch `b`.
    pub fn batch_range(&self, b: u64) -> std::ops::Range<u64> {
        let batch = self.batch.max(1);
        let start = b.saturating_mul(batch).min(self.keys);
        start..start.saturating_add(batch).min(self.keys)
    }
}

/// A loading client: each operation writes the next unclaimed batch.
pub struct LoadWorker {
    kv: Turns<KvClient>,
    spec: LoadSpec,
    next: Arc<AtomicU64>,
    rng: StdRng,
}

impl LoadWorker {
    /// A loader sharing `next` (the next batch to write) with the other loaders.
    pub fn new(kv: Turns<KvClient>, spec: LoadSpec, next: Arc<AtomicU64>, seed: u64) -> Self {
        Self { kv, spec, next, rng: StdRng::seed_from_u64(seed) }
    }
}

impl Worker for LoadWorker {
    async fn op(&mut self) -> Result<Outcome, BenchError> {
        let b = self.next.fetch_add(1, Ordering::Relaxed);
        let puts: Vec<TxnOp> = self
            .spec
            .batch_range(b)
            .map(|i| TxnOp::put(keys::key(i), keys::random_value(&mut self.rng, self.spec.value_size), None))
            .collect();
        if puts.is_empty() {
            return Ok(Outcome::Done);
        }
        let resp = self.kv.turn().txn(Txn::new().and_then(puts)).await?;
        if resp.succeeded() {
            Ok(Outcome::Done)
        } else {
            Err(BenchError::Unexpected(format!("load txn for batch {b} did not succeed")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_key_once() {
        let spec = LoadSpec { keys: 1005, batch: 100, value_size: 8 };
        assert_eq!(spec.batches(), 11);
        let all: Vec<u64> = (0..spec.batches()).flat_map(|b| spec.batch_range(b)).collect();
        assert_eq!(all, (0..1005).collect::<Vec<_>>());
        assert!(spec.batch_range(11).is_empty());
        assert!(spec.batch_range(u64::MAX).is_empty());
    }
}
