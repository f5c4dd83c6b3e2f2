//! The membership ConfigMap `NAME-members`.
//!
//! How a member learns whether to bootstrap or to join: a StatefulSet has one pod template for
//! every ordinal, so per-pod startup mode cannot live in the template. Instead the container
//! takes `KVNODE_INITIAL_CLUSTER`, `KVNODE_INITIAL_CLUSTER_STATE` and
//! `KVNODE_INITIAL_CLUSTER_TOKEN` from this ConfigMap (environment resolved by the kubelet each
//! time the container starts):
//!
//! - Before the cluster has ever answered, it holds the bootstrap membership (ordinals
//!   `0..spec.replicas`) with state `new`; all those pods start together and form the cluster.
//! - As soon as the member list is known, it holds the current member list (learners included)
//!   with state `existing`. The operator updates it after every MemberAdd and before raising the
//!   StatefulSet's replicas, so a pod added by a scale-up always starts `existing` with a
//!   membership that includes itself, as etcd requires of a joining member.
//! - A member whose data directory is already initialized ignores all three values (etcd
//!   semantics), so restarts of existing members are unaffected by later changes here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{names, owned_meta};
use crate::crd::KVCluster;

/// Keys of the ConfigMap, read by the pod through `configMapKeyRef`.
pub const KEY_INITIAL_CLUSTER: &str = "initial-cluster";
pub const KEY_INITIAL_CLUSTER_STATE: &str = "initial-cluster-state";
pub const KEY_INITIAL_CLUSTER_TOKEN: &str = "initial-cluster-token";

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialState {
    New,
    Existing,
}

impl InitialState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }
}

/// What the ConfigMap says: member ordinals and the startup mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    pub ordinals: Vec<i32>,
    pub state: InitialState,
}

impl MembershipConfig {
    /// The bootstrap membership of a cluster that has never run.
    pub fn bootstrap(replicas: i32) -> Self {
        Self { ordinals: (0..replicas).collect(), state: InitialState::New }
    }

    /// The membership of a running cluster.
    pub fn existing(mut ordinals: Vec<i32>) -> Self {
        ordinals.sort_unstable();
        ordinals.dedup();
        Self { ordinals, state: InitialState::Existing }
    }
}

/// `--initial-cluster-token`: the KVCluster's uid makes a re-created cluster of the same name a
/// different cluster, so stale members of the old one are never accepted as peers.
pub fn cluster_token(kvc: &KVCluster) -> String {
    format!("{}-{}", kvc.name_any(), kvc.uid().unwrap_or_default())
}

/// `name=peer-url,...` for the ordinals.
pub fn initial_cluster(kvc: &KVCluster, ordinals: &[i32]) -> String {
    let names = names(kvc);
    let tls = kvc.spec.tls.as_ref().is_some_and(|t| t.peer_secret_name.is_some());
    ordinals
        .iter()
        .map(|o| format!("{}={}", names.member(*o), names.peer_url(*o, tls)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn config_map(kvc: &KVCluster, config: &MembershipConfig) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(kvc, names(kvc).config_map()),
        data: Some(BTreeMap::from([
            (KEY_INITIAL_CLUSTER.to_string(), initial_cluster(kvc, &config.ordinals)),
            (KEY_INITIAL_CLUSTER_STATE.to_string(), config.state.as_str().to_string()),
            (KEY_INITIAL_CLUSTER_TOKEN.to_string(), cluster_token(kvc)),
        ])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example;

    #[test]
    fn bootstrap_lists_every_initial_ordinal_as_new() {
        let kvc = example(3);
        let cm = config_map(&kvc, &MembershipConfig::bootstrap(3));
        let data = cm.data.unwrap();
        assert_eq!(
            data[KEY_INITIAL_CLUSTER],
            "kv-0=http://kv-0.kv-peer.ns.svc:2380,kv-1=http://kv-1.kv-peer.ns.svc:2380,kv-2=http://kv-2.kv-peer.ns.svc:2380"
        );
        assert_eq!(data[KEY_INITIAL_CLUSTER_STATE], "new");
        assert_eq!(data[KEY_INITIAL_CLUSTER_TOKEN], "kv-uid-kv");
        assert_eq!(cm.metadata.name.as_deref(), Some("kv-members"));
    }

    #[test]
    fn existing_membership_is_sorted_and_parses_with_kvnode_rules() {
        let kvc = example(3);
        let cm = config_map(&kvc, &MembershipConfig::existing(vec![3, 0, 1, 2, 1]));
        let data = cm.data.unwrap();
        assert_eq!(data[KEY_INITIAL_CLUSTER_STATE], "existing");
        let entries: Vec<&str> = data[KEY_INITIAL_CLUSTER].split(',').collect();
        assert_eq!(entries.len(), 4);
        assert!(entries[3].starts_with("kv-3=http://kv-3."));
    }

    #[test]
    fn peer_tls_switches_urls_to_https() {
        let mut kvc = example(1);
        kvc.spec.tls =
            Some(crate::crd::TlsSpec { peer_secret_name: Some("peer".into()), ..Default::default() });
        assert_eq!(initial_cluster(&kvc, &[0]), "kv-0=https://kv-0.kv-peer.ns.svc:2380");
    }
}
