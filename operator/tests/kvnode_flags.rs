//! The command line the StatefulSet gives kvnode, resolved as a pod sees it, parsed by kvnode's
//! own flag parser: the operator can never pass a flag (or an environment variable) kvnode
//! does not accept.

mod fixtures;

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use fixtures::example;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use kv_operator::crd::TlsSpec;
use kv_operator::resources::config_map::{MembershipConfig, config_map};
use kv_operator::resources::statefulset::statefulset;
use kvnode::config::{Cli, InitialClusterState, parse_initial_cluster};
use kvnode::tls;

/// Environment values as the kubelet resolves them for `pod` (downward API and ConfigMap).
fn resolve_env(env: &[EnvVar], pod: &str, config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    env.iter()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        assert_eq!(field.field_path, "metadata.name", "unexpected field ref");
                        pod.to_string()
                    } else if let Some(key) = &from.config_map_key_ref {
                        config
                            .get(&key.key)
                            .unwrap_or_else(|| panic!("ConfigMap has no key {}", key.key))
                            .clone()
                    } else {
                        panic!("unsupported env source for {}", e.name)
                    }
                }
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// Kubernetes' `$(VAR)` expansion in arguments.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    env.iter().fold(arg.to_string(), |acc, (k, v)| acc.replace(&format!("$({k})"), v))
}

/// argv for kvnode: command + args expanded, then the `KVNODE_*` environment turned into the
/// flags it stands for (after checking kvnode declares exactly that environment variable).
fn argv(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let command = Cli::command();
    let declared: BTreeMap<String, String> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_str()?.to_string(), a.get_long()?.to_string())))
        .collect();
    let mut argv: Vec<String> = container.command.clone().unwrap();
    argv.extend(container.args.clone().unwrap().iter().map(|a| expand(a, env)));
    for (name, value) in env {
        let long =
            declared.get(name).unwrap_or_else(|| panic!("kvnode declares no environment variable {name}"));
        argv.push(format!("--{long}={value}"));
    }
    argv
}

fn container_of(kvc: &kv_operator::crd::KVCluster) -> Container {
    statefulset(kvc, 3, None).spec.template.spec.unwrap().containers[0].clone()
}

#[test]
fn bootstrap_member_command_line_parses_with_kvnode() {
    let kvc = example(3);
    let container = container_of(&kvc);
    let config = config_map(&kvc, &MembershipConfig::bootstrap(3)).data.unwrap();
    let env = resolve_env(container.env.as_ref().unwrap(), "kv-1", &config);
    let argv = argv(&container, &env);
    assert_eq!(argv[0], "kvnode");
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("kvnode rejects {argv:?}: {e}"));
    assert!(cli.command.is_none());
    let node = cli.node;
    assert_eq!(node.name, "kv-1");
    assert_eq!(node.initial_advertise_peer_urls, vec!["http://kv-1.kv-peer.ns.svc:2380".to_string()]);
    assert_eq!(node.advertise_client_urls, vec!["http://kv-1.kv-peer.ns.svc:2379".to_string()]);
    assert_eq!(node.listen_metrics_urls, vec!["http://0.0.0.0:2381".to_string()]);
    assert_eq!(node.data_dir.to_str(), Some("/var/lib/kvnode/data"));
    assert_eq!(node.initial_cluster_state, InitialClusterState::New);
    assert_eq!(node.initial_cluster_token, "kv-uid-kv");
    let cluster = parse_initial_cluster(&node.initial_cluster).unwrap();
    assert_eq!(cluster.len(), 3);
    // The member's own name and peer URL are in the initial cluster, as kvnode requires.
    assert!(cluster.contains(&(node.name.clone(), node.initial_advertise_peer_urls[0].clone())));
}

#[test]
fn member_added_by_scale_up_starts_existing_with_itself_in_the_membership() {
    let kvc = example(5);
    let container = container_of(&kvc);
    let config = config_map(&kvc, &MembershipConfig::existing(vec![0, 1, 2, 3])).data.unwrap();
    let env = resolve_env(container.env.as_ref().unwrap(), "kv-3", &config);
    let cli = Cli::try_parse_from(argv(&container, &env)).unwrap();
    assert_eq!(cli.node.initial_cluster_state, InitialClusterState::Existing);
    let cluster = parse_initial_cluster(&cli.node.initial_cluster).unwrap();
    assert_eq!(cluster.len(), 4);
    assert!(cluster.contains(&("kv-3".to_string(), "http://kv-3.kv-peer.ns.svc:2380".to_string())));
}

#[test]
fn tls_flags_parse_with_kvnode() {
    let mut kvc = example(3);
    kvc.spec.tls = Some(TlsSpec {
        client_secret_name: Some("c".into()),
        client_cert_auth: true,
        peer_secret_name: Some("p".into()),
    });
    let container = container_of(&kvc);
    let config = config_map(&kvc, &MembershipConfig::bootstrap(3)).data.unwrap();
    let env = resolve_env(container.env.as_ref().unwrap(), "kv-0", &config);
    let cli = Cli::try_parse_from(argv(&container, &env)).unwrap();
    tls::check_flags(&cli.node).expect("kvnode accepts the rendered TLS flags");
    assert!(cli.node.client_cert_auth && cli.node.peer_client_cert_auth);
    assert_eq!(cli.node.cert_file.unwrap().to_str(), Some("/etc/kvnode/tls/client/tls.crt"));
    assert_eq!(cli.node.peer_trusted_ca_file.unwrap().to_str(), Some("/etc/kvnode/tls/peer/ca.crt"));
    assert_eq!(cli.node.listen_peer_urls, vec!["https://0.0.0.0:2380".to_string()]);
    assert!(cli.node.initial_cluster.contains("https://kv-0.kv-peer.ns.svc:2380"));
}

#[test]
fn every_tls_combination_passes_kvnodes_tls_checks() {
    for client in [false, true] {
        for client_cert_auth in [false, true] {
            for peer in [false, true] {
                let what =
                    format!("client TLS {client}, client cert auth {client_cert_auth}, peer TLS {peer}");
                let mut kvc = example(3);
                kvc.spec.tls = Some(TlsSpec {
                    client_secret_name: client.then(|| "c".into()),
                    client_cert_auth,
                    peer_secret_name: peer.then(|| "p".into()),
                });
                let container = container_of(&kvc);
                let config = config_map(&kvc, &MembershipConfig::bootstrap(3)).data.unwrap();
                let env = resolve_env(container.env.as_ref().unwrap(), "kv-1", &config);
                let cli = Cli::try_parse_from(argv(&container, &env)).unwrap();
                if let Err(e) = tls::check_flags(&cli.node) {
                    panic!("{what}: kvnode would refuse to start: {e}");
                }
                // kvnode, like etcd, requires client certificates once a trusted CA is given.
                let requires_certs = client && client_cert_auth;
                assert_eq!(cli.node.trusted_ca_file.is_some(), requires_certs, "{what}");
                assert_eq!(cli.node.client_cert_auth, requires_certs, "{what}");
                assert_eq!(cli.node.cert_file.is_some(), client, "{what}");
                assert_eq!(cli.node.peer_cert_file.is_some(), peer, "{what}");
                let scheme = if peer { "https://" } else { "http://" };
                assert!(cli.node.initial_advertise_peer_urls.iter().all(|u| u.starts_with(scheme)), "{what}");
            }
        }
    }
}
