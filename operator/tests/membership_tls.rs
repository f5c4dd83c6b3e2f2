//! The operator's membership client against a real kvnode member serving its client port over
//! TLS with client-certificate authentication: it gets through with the cluster's credentials
//! and is refused without them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use kv_operator::membership::etcd::{ClientTls, ClientTlsSource, EtcdMembership};
use kv_operator::membership::{MembershipClient, MembershipError};
use kvnode::config::Cli;
use kvnode::member::{self, Listeners, RunningMember};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::net::TcpListener;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &ca).unwrap().pem(), key.serialize_pem())
    };
    Pki {
        server: leaf(vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca.pem(),
    }
}

/// Hands out fixed credentials, as the Secret-backed source would for this cluster.
struct Fixed(Option<ClientTls>);

#[async_trait]
impl ClientTlsSource for Fixed {
    async fn client_tls(&self, _: &[String]) -> Result<Option<ClientTls>, MembershipError> {
        Ok(self.0.clone())
    }
}

/// One kvnode member whose client port requires certificates signed by the test CA.
async fn tls_member(dir: &std::path::Path, pki: &Pki) -> (RunningMember, String) {
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        client: bind().await.unwrap(),
        peer: bind().await.unwrap(),
        metrics: bind().await.unwrap(),
    };
    let client_url = format!("https://{}", listeners.client.local_addr().unwrap());
    let peer_url = format!("http://{}", listeners.peer.local_addr().unwrap());
    let mut flags = Cli::try_parse_from(["kvnode"]).unwrap().node;
    flags.name = "m0".into();
    flags.data_dir = dir.join("data");
    flags.listen_client_urls = vec![client_url.clone()];
    flags.advertise_client_urls = vec![client_url.clone()];
    flags.listen_peer_urls = vec![peer_url.clone()];
    flags.initial_advertise_peer_urls = vec![peer_url.clone()];
    flags.listen_metrics_urls = vec![format!("http://{}", listeners.metrics.local_addr().unwrap())];
    flags.initial_cluster = format!("m0={peer_url}");
    flags.heartbeat_interval = 20;
    flags.election_timeout = 200;
    flags.cert_file = Some(write("server.crt", &pki.server.0));
    flags.key_file = Some(write("server.key", &pki.server.1));
    flags.trusted_ca_file = Some(write("ca.crt", &pki.ca));
    flags.client_cert_auth = true;
    (member::start(flags, listeners).await.expect("TLS member starts"), client_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_calls_use_the_clusters_client_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let (member, endpoint) = tls_member(dir.path(), &pki).await;
    let endpoints = vec![endpoint.clone()];
    let timeout = Duration::from_secs(3);
    let full = ClientTls {
        ca_pem: pki.ca.clone().into_bytes(),
        identity: Some((pki.client.0.clone().into_bytes(), pki.client.1.clone().into_bytes())),
    };
    let membership = EtcdMembership::new(timeout).with_tls_source(Arc::new(Fixed(Some(full))));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        match membership.status(&endpoint).await {
            Ok(s) if s.leader != 0 => break s,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "no leader over TLS: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(status.member_id, member.id);
    let members = membership.member_list(&endpoints).await.expect("member list over TLS");
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), vec![member.id]);

    // No credentials for an https:// cluster: a clear error, no plaintext attempt.
    let error = EtcdMembership::new(timeout).member_list(&endpoints).await.unwrap_err();
    assert!(error.to_string().contains("no client TLS credentials"), "{error}");
    // The CA alone: the member requires a client certificate.
    let ca_only = ClientTls { ca_pem: pki.ca.clone().into_bytes(), identity: None };
    let anonymous = EtcdMembership::new(timeout).with_tls_source(Arc::new(Fixed(Some(ca_only))));
    let error = anonymous.member_list(&endpoints).await.unwrap_err();
    // (The TLS 1.3 handshake completes before the server checks the certificate, so the
    // refusal shows up as an alert or a closed connection, depending on timing.)
    assert!(matches!(error, MembershipError::Unreachable { .. }), "refused without a certificate: {error}");
    member.stop().await;
}
