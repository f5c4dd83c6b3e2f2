//! Builders of the objects a KVCluster owns. Each is a pure function of the KVCluster (and, for
//! the StatefulSet's replica count and the membership ConfigMap, of the decision the planner
//! made), so they are unit-tested without an API server and applied by server-side apply.

pub mod config_map;
pub mod pdb;
pub mod services;
pub mod statefulset;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::KVCluster;
use crate::names::ClusterNames;

/// Names of `kvc`'s objects (namespace `default` when unset, as the API server would default it).
pub fn names(kvc: &KVCluster) -> ClusterNames {
    ClusterNames::new(kvc.name_any(), kvc.namespace().unwrap_or_else(|| "default".to_string()))
}

/// Metadata of an owned object: name, namespace, common labels and the controller reference
/// that lets Kubernetes garbage-collect it with the KVCluster.
pub fn owned_meta(kvc: &KVCluster, name: String) -> ObjectMeta {
    let names = names(kvc);
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: kvc.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// 64-bit FNV-1a: a stable hash (unlike `DefaultHasher`, whose output may change between Rust
/// releases) for naming pod template revisions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}
