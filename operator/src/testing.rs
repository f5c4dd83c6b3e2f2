//! Example objects shared by the unit tests, the integration tests and the documentation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{KVCluster, KVClusterSpec, PvcRetentionPolicy, StorageSpec};

/// `ns/kv` (uid `uid-kv`, generation 1) running version 0.1.0 with `replicas` members on 1Gi of
/// the `fast` storage class.
pub fn example(replicas: i32) -> KVCluster {
    let mut kvc = KVCluster::new(
        "kv",
        KVClusterSpec {
            replicas,
            version: Some("0.1.0".to_string()),
            image: None,
            storage: StorageSpec { size: "1Gi".to_string(), storage_class_name: Some("fast".to_string()) },
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("100m".to_string())),
                    ("memory".to_string(), Quantity("128Mi".to_string())),
                ])),
                ..ResourceRequirements::default()
            }),
            scheduling: None,
            tls: None,
            pvc_retention_policy: PvcRetentionPolicy::default(),
        },
    );
    kvc.metadata.namespace = Some("ns".to_string());
    kvc.metadata.uid = Some("uid-kv".to_string());
    kvc.metadata.generation = Some(1);
    kvc
}
