//! [`ClientTlsSource`] backed by the API server: a cluster's client credentials are the Secret
//! its `spec.tls.clientSecretName` names, the same one its members mount, so the operator
//! trusts (and, with `clientCertAuth`, authenticates to) exactly what the members serve.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::MembershipError;
use super::etcd::{ClientTls, ClientTlsSource};
use crate::crd::KVCluster;
use crate::names::ClusterNames;

/// Secret keys (the `kubernetes.io/tls` layout plus the CA).
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const PRIVATE_KEY_KEY: &str = "tls.key";

/// Reads the KVCluster an endpoint belongs to, then its client Secret, on every call (calls
/// are rare, and a rotated Secret is picked up at once).
#[derive(Clone)]
pub struct SecretTlsSource {
    client: Client,
}

impl SecretTlsSource {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The cluster a member client URL (`scheme://NAME-N.NAME-peer.NS.svc:PORT`, as
/// [`ClusterNames::client_url`] builds it) belongs to.
pub fn cluster_of_endpoint(url: &str) -> Option<ClusterNames> {
    let host = url.split_once("://").map_or(url, |(_, rest)| rest).split([':', '/']).next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let [member, peer_service, namespace, "svc", ..] = labels.as_slice() else { return None };
    let names = ClusterNames::new(peer_service.strip_suffix("-peer")?, *namespace);
    names.ordinal_of(member)?;
    Some(names)
}

/// The credentials in a client Secret: `ca.crt` is required, `tls.crt` and `tls.key` are
/// presented as client certificate when both are there.
pub fn client_tls_from_secret(secret: &Secret) -> Result<ClientTls, String> {
    let data = secret.data.as_ref();
    let get = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    let ca_pem = get(CA_KEY).ok_or_else(|| format!("Secret has no {CA_KEY}"))?;
    let identity = match (get(CERT_KEY), get(PRIVATE_KEY_KEY)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    Ok(ClientTls { ca_pem, identity })
}

#[async_trait]
impl ClientTlsSource for SecretTlsSource {
    async fn client_tls(&self, endpoints: &[String]) -> Result<Option<ClientTls>, MembershipError> {
        let failed =
            |message: String| MembershipError::Unreachable { endpoints: endpoints.to_vec(), message };
        let names = endpoints
            .iter()
            .find_map(|e| cluster_of_endpoint(e))
            .ok_or_else(|| failed("no member URL of a KVCluster among the endpoints".to_string()))?;
        let kvcs: Api<KVCluster> = Api::namespaced(self.client.clone(), &names.namespace);
        let kvc = kvcs
            .get(&names.name)
            .await
            .map_err(|e| failed(format!("reading KVCluster {}: {e}", names.name)))?;
        let Some(secret_name) = kvc.spec.tls.and_then(|t| t.client_secret_name) else { return Ok(None) };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &names.namespace);
        let secret = secrets
            .get(&secret_name)
            .await
            .map_err(|e| failed(format!("reading Secret {secret_name}: {e}")))?;
        client_tls_from_secret(&secret).map(Some).map_err(|e| failed(format!("Secret {secret_name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn endpoints_name_their_cluster() {
        let names = ClusterNames::new("kv", "prod");
        let found = cluster_of_endpoint(&names.client_url(2, true)).expect("a member URL");
        assert_eq!(found, names);
        let dashed = ClusterNames::new("my-kv", "ns-1");
        assert_eq!(cluster_of_endpoint(&dashed.client_url(0, true)), Some(dashed));
        assert_eq!(cluster_of_endpoint("https://127.0.0.1:2379"), None);
        assert_eq!(
            cluster_of_endpoint("https://kv.prod.svc:2379"),
            None,
            "the client Service is not a member"
        );
        assert_eq!(cluster_of_endpoint("https://other-0.kv-peer.prod.svc:2379"), None);
    }

    #[test]
    fn secrets_need_a_ca_and_give_an_identity_when_complete() {
        let secret = |keys: &[&str]| Secret {
            data: Some(
                keys.iter()
                    .map(|k| (k.to_string(), ByteString(format!("pem of {k}").into_bytes())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        };
        let full = client_tls_from_secret(&secret(&[CA_KEY, CERT_KEY, PRIVATE_KEY_KEY])).expect("complete");
        assert_eq!(full.ca_pem, b"pem of ca.crt");
        assert_eq!(full.identity, Some((b"pem of tls.crt".to_vec(), b"pem of tls.key".to_vec())));
        assert_eq!(client_tls_from_secret(&secret(&[CA_KEY, CERT_KEY])).expect("ca only").identity, None);
        assert!(
            client_tls_from_secret(&secret(&[CERT_KEY, PRIVATE_KEY_KEY])).unwrap_err().contains("ca.crt")
        );
    }
}
