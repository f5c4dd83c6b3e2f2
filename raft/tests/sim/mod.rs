//! A deterministic simulator for the Raft core: a seeded network that loses, duplicates,
//! delays and reorders messages, partitions, crashes and restarts from persisted state only,
//! membership changes, leadership transfers, compactions, ReadIndex and hostile messages,
//! with Raft's safety properties checked after every input and liveness checked at the end.

pub mod checker;
pub mod cluster;
pub mod hostile;
pub mod network;
pub mod node;
pub mod state_machine;

pub use cluster::{Outcome, SimOptions, run_seed};
