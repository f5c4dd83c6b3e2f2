//! The workloads: what one operation of each sends through the etcd v3 API.
//!
//! Every read checks that it got the preloaded data back, so a server that answers "not
//! found" quickly cannot look fast; a missing key counts as an error.

use clap::ValueEnum;
use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::conn::Turns;
use crate::error::BenchError;
use crate::keys::{self, KeyOrder, KeySource};
use crate::runner::{Outcome, Worker};

/// One kind of operation a run repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Put a key of the key space: a random one, or the next one with `--key-order sequential`.
    Put,
    /// Linearizable get of a random preloaded key (the leader confirms it still leads).
    GetLinear,
    /// Serializable get of a random preloaded key (served from the member's local state).
    GetSerial,
    /// 50 % puts, 50 % linearizable gets, chosen at random per operation.
    Mixed,
    /// Compare-and-swap: a linearizable get learns the key's mod_revision, then a txn puts a
    /// new value only if mod_revision is unchanged (else reads the current value back).
    TxnCas,
    /// Linearizable range over `--range-len` consecutive preloaded keys.
    Range,
}

impl Workload {
    /// The name used on the command line and in results.
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// Parameters every client of a run shares.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The workload.
    pub workload: Workload,
    /// Keys are drawn from `0..key_space`.
    pub key_space: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Keys per range read.
    pub range_len: u64,
    /// The order in which puts visit the key space.
    pub key_order: KeyOrder,
}

impl Shape {
    /// Rejects shapes that cannot run (an empty key space, a range longer than the key space).
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.key_space == 0 {
            return Err(BenchError::Config("--key-space must be at least 1".into()));
        }
        if self.workload == Workload::Range && (self.range_len == 0 || self.range_len > self.key_space) {
            return Err(BenchError::Config(format!(
                "--range-len {} must be between 1 and --key-space {}",
                self.range_len, self.key_space
            )));
        }
        if self.key_order == KeyOrder::Sequential && self.workload != Workload::Put {
            return Err(BenchError::Config(format!(
                "--key-order sequential applies to the put workload only, not {}",
                self.workload.name()
            )));
        }
        Ok(())
    }
}

/// One client running a workload over a shared connection; each request goes to the member
/// whose turn it is (always the same one unless the run's target is `round-robin`).
pub struct EtcdWorker {
    kv: Turns<KvClient>,
    shape: Shape,
    keys: KeySource,
    rng: StdRng,
    value: Vec<u8>,
}

impl EtcdWorker {
    /// A client seeded from `seed` and its index, so a run's random key sequence is
    /// reproducible; its puts take their keys from `keys`, which the run's clients share.
    pub fn new(kv: Turns<KvClient>, shape: Shape, keys: KeySource, seed: u64, index: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let value = keys::random_value(&mut rng, shape.value_size);
        Self { kv, shape, keys, rng, value }
    }

    async fn put(&mut self) -> Result<Outcome, BenchError> {
        let key = keys::key(self.keys.next(&mut self.rng, self.shape.key_space));
        self.kv.turn().put(key, self.value.clone(), None).await?;
        Ok(Outcome::Done)
    }

    async fn get(&mut self, serializable: bool) -> Result<Outcome, BenchError> {
        let key = keys::key(keys::pick(&mut self.rng, self.shape.key_space));
        let options = serializable.then(|| GetOptions::new().with_serializable());
        let resp = self.kv.turn().get(key.clone(), options).await?;
        expect_count(resp.kvs().len() as u64, 1, &key)?;
        Ok(Outcome::Done)
    }

    async fn range(&mut self) -> Result<Outcome, BenchError> {
        let len = self.shape.range_len;
        let start = keys::pick(&mut self.rng, self.shape.key_space - len + 1);
        let (from, to) = (keys::key(start), keys::key(start + len));
        let resp = self.kv.turn().get(from.clone(), Some(GetOptions::new().with_range(to))).await?;
        expect_count(resp.kvs().len() as u64, len, &from)?;
        Ok(Outcome::Done)
    }

    async fn cas(&mut self) -> Result<Outcome, BenchError> {
        let key = keys::key(keys::pick(&mut self.rng, self.shape.key_space));
        let current = self.kv.turn().get(key.clone(), None).await?;
        let revision = match current.kvs() {
            [kv] => kv.mod_revision(),
            other => return Err(missing(&key, other.len() as u64, 1)),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key.clone(), self.value.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.kv.turn().txn(txn).await?;
        if resp.succeeded() {
            return Ok(Outcome::Done);
        }
        // Lost the race: the else branch must show the newer revision that beat us.
        match resp.op_responses().as_slice() {
            [TxnOpResponse::Get(g)] if g.kvs().first().is_some_and(|kv| kv.mod_revision() != revision) => {
                Ok(Outcome::Conflict)
            }
            _ => Err(BenchError::Unexpected(format!(
                "txn on {} failed its compare but the else branch shows no newer revision",
                String::from_utf8_lossy(&key)
            ))),
        }
    }
}

impl Worker for EtcdWorker {
    async fn op(&mut self) -> Result<Outcome, BenchError> {
        match self.shape.workload {
            Workload::Put => self.put().await,
            Workload::GetLinear => self.get(false).await,
            Workload::GetSerial => self.get(true).await,
            Workload::Mixed => {
                if rand::Rng::random_bool(&mut self.rng, 0.5) {
                    self.put().await
                } else {
                    self.get(false).await
                }
            }
            Workload::TxnCas => self.cas().await,
            Workload::Range => self.range().await,
        }
    }
}

fn expect_count(got: u64, want: u64, key: &[u8]) -> Result<(), BenchError> {
    if got == want { Ok(()) } else { Err(missing(key, got, want)) }
}

fn missing(key: &[u8], got: u64, want: u64) -> BenchError {
    BenchError::Unexpected(format!(
        "read at {} returned {got} keys, expected {want} (were the keys preloaded with `kvbench load`?)",
        String::from_utf8_lossy(key)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_command_line() {
        assert_eq!(Workload::GetLinear.name(), "get-linear");
        assert_eq!(Workload::TxnCas.name(), "txn-cas");
        assert_eq!(Workload::from_str("range", false), Ok(Workload::Range));
        assert_eq!(serde_json::to_string(&Workload::GetSerial).unwrap(), "\"get-serial\"");
    }

    #[test]
    fn range_longer_than_key_space_is_rejected() {
        let shape = Shape {
            workload: Workload::Range,
            key_space: 10,
            value_size: 1,
            range_len: 11,
            key_order: KeyOrder::Random,
        };
        assert!(shape.validate().is_err());
        assert!(Shape { range_len: 10, ..shape }.validate().is_ok());
        assert!(Shape { key_space: 0, workload: Workload::Put, ..shape }.validate().is_err());
    }

    #[test]
    fn sequential_keys_are_for_puts_only() {
        let put = Shape {
            workload: Workload::Put,
            key_space: 10,
            value_size: 1,
            range_len: 1,
            key_order: KeyOrder::Sequential,
        };
        assert!(put.validate().is_ok());
        assert!(matches!(Shape { workload: Workload::Mixed, ..put }.validate(), Err(BenchError::Config(_))));
    }

    #[test]
    fn missing_keys_are_errors() {
        assert!(expect_count(1, 1, b"k").is_ok());
        assert!(matches!(expect_count(0, 1, b"k"), Err(BenchError::Unexpected(_))));
    }
}
