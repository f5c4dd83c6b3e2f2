//! The headless peer Service, the client Service and the members' ServiceAccount.

use k8s_openapi::api::core::v1::{Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, owned_meta};
use crate::crd::KVCluster;
use crate::names::{CLIENT_PORT, PEER_PORT};

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// Headless Service `NAME-peer`: gives each member the DNS name `NAME-N.NAME-peer.NS.svc`.
/// Not-ready addresses are published because members must find each other *before* they are
/// ready (a member is ready only once it has a leader, which needs its peers).
pub fn peer_service(kvc: &KVCluster) -> Service {
    let names = names(kvc);
    Service {
        metadata: owned_meta(kvc, names.peer_service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Client Service `NAME`: load-balances etcd clients over ready members.
pub fn client_service(kvc: &KVCluster) -> Service {
    let names = names(kvc);
    Service {
        metadata: owned_meta(kvc, names.client_service()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names.selector_labels()),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The members' ServiceAccount. kvnode never calls the Kubernetes API, so no token is mounted.
pub fn service_account(kvc: &KVCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(kvc, names(kvc).service_account()),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example;

    #[test]
    fn peer_service_is_headless_and_publishes_not_ready() {
        let svc = peer_service(&example(3));
        assert_eq!(svc.metadata.name.as_deref(), Some("kv-peer"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<i32> = spec.ports.unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, vec![2380, 2379]);
        assert_eq!(spec.selector.unwrap().get("app.kubernetes.io/instance").map(String::as_str), Some("kv"));
        let owner = &svc.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("KVCluster", Some(true)));
    }

    #[test]
    fn client_service_exposes_only_the_client_port() {
        let spec = client_service(&example(3)).spec.unwrap();
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.ports.unwrap().iter().map(|p| p.port).collect::<Vec<_>>(), vec![2379]);
    }

    #[test]
    fn service_account_mounts_no_token() {
        let sa = service_account(&example(1));
        assert_eq!(sa.metadata.name.as_deref(), Some("kv-kvnode"));
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}
