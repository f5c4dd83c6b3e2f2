//! TLS through the real path: members with etcd's TLS flags serve the etcd API over TLS and talk
//! to each other over mutual TLS (Raft messages, forwarded writes, ReadIndex, joining), driven
//! by etcd-client with certificates generated at test time. Clients without the right
//! certificate are refused, and every inconsistent TLS setting is a start error.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, MemberAddOptions, TlsOptions};
use kvnode::config::NodeFlags;
use kvnode::member::{self, Listeners};
use kvnode::proto::peerpb::MembersRequest;
use kvnode::proto::peerpb::peer_client::PeerClient;
use support::pki::{TestPki, TlsMode, use_tls};
use support::{TestCluster, eventually, test_flags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MUTUAL: TlsMode = TlsMode { client: true, client_cert_auth: true, peer: true };

fn options(tls: TlsOptions) -> ConnectOptions {
    ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10))
}

async fn connect(endpoints: &[String], tls: TlsOptions) -> Client {
    Client::connect(endpoints, Some(options(tls))).await.expect("client connects")
}

/// Tries a put; returns why it failed, and panics if it succeeded.
async fn put_refused(endpoints: &[String], options: Option<ConnectOptions>) -> String {
    let attempt = async {
        let mut client = Client::connect(endpoints, options).await?;
        client.put("must-not-exist", "x", None).await
    };
    match tokio::time::timeout(Duration::from_secs(15), attempt).await {
        Ok(Ok(_)) => panic!("a put through {endpoints:?} succeeded; it must be refused"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 15 s".to_string(),
    }
}

async fn value(client: &mut Client, key: &str, serializable: bool) -> Option<String> {
    let options = serializable.then(|| GetOptions::new().with_serializable());
    let resp = client.get(key, options).await.expect("get");
    resp.kvs().first().map(|kv| kv.value_str().expect("utf-8").to_string())
}

/// A plain HTTP/1.1 GET, answering the status line.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_cluster_serves_certified_clients_only() {
    let pki = TestPki::generate();
    let cluster = TestCluster::start_with(3, |f| use_tls(f, &pki, MUTUAL)).await;
    let leader = cluster.wait_leader().await;
    let endpoints = cluster.endpoints();
    assert!(endpoints.iter().all(|e| e.starts_with("https://")), "{endpoints:?}");

    // A certified client writes through every member: followers forward to the leader's
    // peer URL over mutual TLS.
    let mut all = connect(&endpoints, pki.client_tls(Some(&pki.client))).await;
    all.put("greeting", "hello", None).await.expect("put over TLS");
    for i in 0..3 {
        let mut one = connect(&[cluster.endpoint(i)], pki.client_tls(Some(&pki.client))).await;
        one.put(format!("from-{i}"), format!("v{i}"), None).await.expect("put through one member");
        // Linearizable reads on followers ask the leader for a read index over the peer port.
        assert_eq!(value(&mut one, "greeting", false).await.as_deref(), Some("hello"), "member {i}");
    }
    for i in 0..3 {
        let mut one = connect(&[cluster.endpoint(i)], pki.client_tls(Some(&pki.client))).await;
        for j in 0..3 {
            let expected = format!("v{j}");
            assert_eq!(
                value(&mut one, &format!("from-{j}"), false).await.as_deref(),
                Some(expected.as_str()),
                "member {i} key from-{j}"
            );
        }
    }

    // Refused: plaintext to a TLS port, TLS without a client certificate, a certificate from
    // another CA.
    let plain: Vec<String> = endpoints.iter().map(|e| e.replacen("https://", "http://", 1)).collect();
    let why = put_refused(&plain, None).await;
    eprintln!("plaintext client refused: {why}");
    let why = put_refused(&endpoints, Some(options(pki.client_tls(None)))).await;
    eprintln!("client without certificate refused: {why}");
    let why = put_refused(&endpoints, Some(options(pki.client_tls(Some(&pki.stranger))))).await;
    eprintln!("client with a foreign certificate refused: {why}");

    // The peer port only admits member certificates signed by the peer CA.
    let peer_url = cluster.slots[leader].flags.initial_advertise_peer_urls[0].clone();
    assert!(peer_url.starts_with("https://"), "{peer_url}");
    let why = put_refused(std::slice::from_ref(&peer_url), Some(options(pki.client_tls(None)))).await;
    eprintln!("peer port without certificate refused: {why}");
    let plain_peer = peer_url.replacen("https://", "http://", 1);
    let why = put_refused(&[plain_peer], None).await;
    eprintln!("plaintext to the peer port refused: {why}");
    // A member's own peer client (what a joining member uses) is served the member list.
    let member_tls = kvnode::tls::NodeTls::from_flags(&cluster.slots[leader].flags).expect("member TLS");
    let channel =
        member_tls.peer_client.endpoint(&peer_url).expect("endpoint").connect().await.expect("connect");
    let members =
        PeerClient::new(channel).members(MembersRequest {}).await.expect("member list over the peer port");
    assert_eq!(members.into_inner().members.len(), 3);

    // Refused handshakes leave the listeners serving, and nothing refused was written.
    all.put("after", "refusals", None).await.expect("put after refusals");
    assert_eq!(value(&mut all, "must-not-exist", false).await, None);
    assert_eq!(value(&mut all, "after", false).await.as_deref(), Some("refusals"));

    // The metrics and health listener stays plain HTTP.
    let status = http_get(cluster.member(leader).metrics_addr, "/health").await;
    assert!(status.contains(" 200"), "{status}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_without_client_cert_auth_admits_any_tls_client() {
    let pki = TestPki::generate();
    let mode = TlsMode { client: true, client_cert_auth: false, peer: true };
    let cluster = TestCluster::start_with(3, |f| use_tls(f, &pki, mode)).await;
    cluster.wait_leader().await;
    let endpoints = cluster.endpoints();
    let mut anonymous = connect(&endpoints, pki.client_tls(None)).await;
    anonymous.put("k", "v", None).await.expect("TLS client without a certificate may write");
    assert_eq!(value(&mut anonymous, "k", false).await.as_deref(), Some("v"));
    let plain: Vec<String> = endpoints.iter().map(|e| e.replacen("https://", "http://", 1)).collect();
    let why = put_refused(&plain, None).await;
    eprintln!("plaintext client refused: {why}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_and_restart_over_peer_tls() {
    let pki = TestPki::generate();
    let mut cluster = TestCluster::start_with(3, |f| use_tls(f, &pki, MUTUAL)).await;
    let leader = cluster.wait_leader().await;
    let mut client = connect(&cluster.endpoints(), pki.client_tls(Some(&pki.client))).await;
    client.put("before-join", "1", None).await.expect("put");

    // A new member learns its identity from the cluster over the peer port (TLS) and is caught
    // up by the leader's Raft transport (TLS).
    let (slot, http_peer) = cluster.new_joiner_slot().await;
    {
        let flags = &mut cluster.slots[slot].flags;
        use_tls(flags, &pki, MUTUAL);
        let https_peer = flags.initial_advertise_peer_urls[0].clone();
        flags.initial_cluster = flags.initial_cluster.replace(&http_peer, &https_peer);
    }
    let peer_url = cluster.slots[slot].flags.initial_advertise_peer_urls[0].clone();
    client.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())).await.expect("member add");
    cluster.start_member(slot).await;
    let mut joiner = connect(&[cluster.endpoint(slot)], pki.client_tls(Some(&pki.client))).await;
    eventually("the joiner has the data", || {
        let mut joiner = joiner.clone();
        async move { value(&mut joiner, "before-join", true).await.as_deref() == Some("1") }
    })
    .await;

    // A restarted follower asks its peers (over TLS) whether it is still a member and catches
    // up on what it missed.
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    // Through the leader only: a client balancing over every endpoint may pick the dead one.
    let mut via_leader = connect(&[cluster.endpoint(leader)], pki.client_tls(Some(&pki.client))).await;
    via_leader.put("while-down", "2", None).await.expect("put while a follower is down");
    cluster.start_member(follower).await;
    let mut restarted = connect(&[cluster.endpoint(follower)], pki.client_tls(Some(&pki.client))).await;
    eventually("the restarted follower catches up", || {
        let mut restarted = restarted.clone();
        async move { value(&mut restarted, "while-down", true).await.as_deref() == Some("2") }
    })
    .await;
    assert_eq!(value(&mut restarted, "while-down", false).await.as_deref(), Some("2"));
    assert_eq!(value(&mut joiner, "while-down", false).await.as_deref(), Some("2"));
    cluster.shutdown().await;
}

/// Starts a member with `flags` and returns its start error (it must not start).
async fn start_error(flags: NodeFlags) -> String {
    let data_dir = flags.data_dir.clone();
    let listeners = Listeners::bind(&flags).await.expect("bind");
    let error = match member::start(flags, listeners).await {
        Ok(m) => {
            m.kill();
            panic!("the member started");
        }
        Err(e) => e.to_string(),
    };
    assert!(!data_dir.exists(), "TLS is checked before the data dir is touched: {error}");
    error
}

#[tokio::test]
async fn inconsistent_tls_settings_are_start_errors() {
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let base = || {
        let mut f = test_flags("m0", dir.path(), any, any, any);
        f.initial_cluster = format!("m0={}", f.initial_advertise_peer_urls[0]);
        f
    };
    let mutual = || {
        let mut f = base();
        use_tls(&mut f, &pki, MUTUAL);
        f.initial_cluster = format!("m0={}", f.initial_advertise_peer_urls[0]);
        f
    };
    let garbage = pki.write("garbage.pem", "not a certificate\n");
    let cert_text = std::fs::read_to_string(&pki.member.cert).expect("read cert");
    let cert_as_key = pki.write("cert-as-key.pem", &cert_text);

    let mut cases: Vec<(&str, NodeFlags, &str)> = Vec::new();
    let mut f = base();
    f.listen_client_urls = vec!["https://127.0.0.1:0".into()];
    cases.push((
        "https client URL without a certificate",
        f,
        "--listen-client-urls has https:// URLs, which need --cert-file and --key-file",
    ));
    let mut f = mutual();
    f.listen_client_urls = vec!["http://127.0.0.1:0".into()];
    cases.push((
        "certificate without an https client URL",
        f,
        "--cert-file is set but --listen-client-urls has no https:// URL",
    ));
    let mut f = mutual();
    f.key_file = None;
    cases.push(("certificate without its key", f, "--cert-file is set but --key-file is not"));
    let mut f = mutual();
    f.cert_file = Some(garbage.clone());
    cases.push(("garbage certificate", f, "--cert-file"));
    let mut f = mutual();
    f.peer_trusted_ca_file = Some(garbage.clone());
    cases.push(("garbage peer CA", f, "--peer-trusted-ca-file"));
    let mut f = mutual();
    f.key_file = Some(dir.path().join("no-such.key"));
    cases.push(("missing key file", f, "cannot read"));
    let mut f = mutual();
    f.peer_key_file = Some(cert_as_key.clone());
    cases.push(("a certificate given as key", f, "no PRIVATE KEY block"));
    let mut f = mutual();
    f.key_file = Some(pki.client.key.clone());
    cases.push(("key of another certificate", f, "client TLS: certificate or key refused"));
    let mut f = mutual();
    f.trusted_ca_file = None;
    cases.push(("client cert auth without a CA", f, "--client-cert-auth needs --trusted-ca-file"));
    let mut f = mutual();
    f.peer_trusted_ca_file = None;
    f.peer_client_cert_auth = false;
    cases.push(("https peers without a peer CA", f, "need --peer-trusted-ca-file"));
    let mut f = mutual();
    f.initial_advertise_peer_urls = vec![f.initial_advertise_peer_urls[0].replacen("https://", "http://", 1)];
    cases.push(("peer listener and advertised URL disagree", f, "must both be http:// or both https://"));
    let mut f = base();
    f.trusted_ca_file = Some(pki.ca.clone());
    cases.push(("a trusted CA without client TLS", f, "--trusted-ca-file needs --cert-file and --key-file"));
    let mut f = mutual();
    f.listen_metrics_urls = vec!["https://127.0.0.1:0".into()];
    cases.push(("https metrics URL", f, "serves plain HTTP only"));

    for (what, flags, expected) in cases {
        let error = start_error(flags).await;
        assert!(error.contains(expected), "{what}: {error:?} should mention {expected:?}");
        eprintln!("{what}: {error}");
    }
}
