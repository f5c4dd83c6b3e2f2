//! `kv-operator`: the Kubernetes operator of raftkv.
//!
//! It reconciles `KVCluster` resources ([`crd`]) into a StatefulSet and its companions
//! ([`resources`]) and changes Raft membership through the cluster's own etcd-compatible API
//! ([`membership`]), one safe step at a time ([`plan`]), recording progress in the status so
//! that a restarted operator resumes where it stopped ([`reconcile`]).

pub mod crd;
pub mod election;
pub mod membership;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod resources;
pub mod run;
pub mod state;
pub mod status;
pub mod storage;

/// Lets the unit tests name this crate `kv_operator`, as the shared test fixtures do.
#[cfg(test)]
extern crate self as kv_operator;

/// The example objects of the unit tests: the file the integration tests include as
/// `mod fixtures`, compiled into test builds only.
#[cfg(test)]
#[path = "../tests/fixtures/mod.rs"]
pub(crate) mod fixtures;
