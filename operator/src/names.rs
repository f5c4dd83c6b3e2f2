//! Names, labels and URLs derived from a KVCluster.
//!
//! Everything here is a pure function of the cluster's name and namespace, so that the operator,
//! the pods (through `$(KVNODE_NAME)` expansion) and the tests agree on every DNS name without
//! talking to each other.

use std::collections::BTreeMap;

/// Label keys and values shared by every object the operator owns.
pub mod label {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const APP: &str = "kvnode";
    pub const MANAGER: &str = "kv-operator";
}

/// Annotation on the pod template naming its revision (a hash of the template itself); a pod
/// whose annotation differs from the desired revision is outdated and gets restarted.
pub const REVISION_ANNOTATION: &str = "raftkv.dev/revision";
/// Annotation on the pod template naming the version it runs (for people and `kubectl`).
pub const VERSION_ANNOTATION: &str = "raftkv.dev/version";
/// Finalizer that lets the operator delete claims on KVCluster deletion.
pub const FINALIZER: &str = "raftkv.dev/cleanup";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "kv-operator";

/// Ports of a kvnode member.
pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;

/// Name of the volume claim template; claims are `data-NAME-<ordinal>`.
pub const DATA_VOLUME: &str = "data";

/// Names of one cluster's objects and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    pub name: String,
    pub namespace: String,
}

impl ClusterNames {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self { name: name.into(), namespace: namespace.into() }
    }

    /// Headless Service giving every member a stable DNS name.
    pub fn peer_service(&self) -> String {
        format!("{}-peer", self.name)
    }

    /// Client Service, load-balancing over ready members.
    pub fn client_service(&self) -> String {
        self.name.clone()
    }

    /// ConfigMap carrying the membership a starting member uses.
    pub fn config_map(&self) -> String {
        format!("{}-members", self.name)
    }

    pub fn statefulset(&self) -> String {
        self.name.clone()
    }

    pub fn service_account(&self) -> String {
        format!("{}-kvnode", self.name)
    }

    pub fn pdb(&self) -> String {
        self.name.clone()
    }

    /// Pod and member name of an ordinal.
    pub fn member(&self, ordinal: i32) -> String {
        format!("{}-{}", self.name, ordinal)
    }

    /// Claim of an ordinal, as the StatefulSet controller names it.
    pub fn pvc(&self, ordinal: i32) -> String {
        format!("{DATA_VOLUME}-{}-{}", self.name, ordinal)
    }

    /// DNS suffix shared by the members: `NAME-peer.NS.svc`.
    pub fn peer_domain(&self) -> String {
        format!("{}.{}.svc", self.peer_service(), self.namespace)
    }

    /// Host name of an ordinal's pod.
    pub fn member_host(&self, ordinal: i32) -> String {
        format!("{}.{}", self.member(ordinal), self.peer_domain())
    }

    pub fn peer_url(&self, ordinal: i32, tls: bool) -> String {
        format!("{}://{}:{PEER_PORT}", scheme(tls), self.member_host(ordinal))
    }

    pub fn client_url(&self, ordinal: i32, tls: bool) -> String {
        format!("{}://{}:{CLIENT_PORT}", scheme(tls), self.member_host(ordinal))
    }

    /// The ordinal of a member name or pod name `NAME-<n>`.
    pub fn ordinal_of(&self, member_name: &str) -> Option<i32> {
        member_name
            .strip_prefix(self.name.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
            .filter(|n: &i32| *n >= 0)
    }

    /// The ordinal a peer URL points at (`scheme://NAME-<n>.NAME-peer...`): learners that have
    /// not started have no name yet, only their peer URL.
    pub fn ordinal_of_peer_url(&self, url: &str) -> Option<i32> {
        let host = url.split_once("://").map_or(url, |(_, rest)| rest);
        let first_label = host.split(['.', ':', '/']).next()?;
        self.ordinal_of(first_label)
    }

    /// Labels selecting this cluster's member pods (and claims).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (label::NAME.to_string(), label::APP.to_string()),
            (label::INSTANCE.to_string(), self.name.clone()),
        ])
    }

    /// Labels on every owned object.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(label::MANAGED_BY.to_string(), label::MANAGER.to_string());
        labels.insert(label::COMPONENT.to_string(), "kvstore".to_string());
        labels
    }

    /// `selector_labels` as a label selector string (`k=v,k=v`).
    pub fn selector_string(&self) -> String {
        self.selector_labels().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_dns_and_ordinals_round_trip() {
        let n = ClusterNames::new("kv", "prod");
        assert_eq!(n.peer_url(2, false), "http://kv-2.kv-peer.prod.svc:2380");
        assert_eq!(n.client_url(0, true), "https://kv-0.kv-peer.prod.svc:2379");
        assert_eq!(n.ordinal_of("kv-7"), Some(7));
        assert_eq!(n.ordinal_of("kvx-7"), None);
        assert_eq!(n.ordinal_of("kv-a"), None);
        assert_eq!(n.ordinal_of_peer_url(&n.peer_url(4, false)), Some(4));
        assert_eq!(n.ordinal_of_peer_url("http://other-1.other-peer.prod.svc:2380"), None);
        assert_eq!(n.pvc(3), "data-kv-3");
        assert_eq!(n.selector_string(), "app.kubernetes.io/instance=kv,app.kubernetes.io/name=kvnode");
    }

    #[test]
    fn cluster_name_with_dashes_and_digits_keeps_its_ordinals() {
        let n = ClusterNames::new("kv-1", "ns");
        assert_eq!(n.ordinal_of("kv-1-0"), Some(0));
        assert_eq!(n.ordinal_of("kv-1"), None);
    }
}
