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
pub mod testing;

#[cfg(test)]
pub(crate) mod test_support {
    pub use crate::testing::example;
}
