//! `kvnode dev`: a whole cluster on loopback in one process, for trying raftkv out.

use std::path::Path;

use tracing::info;

use crate::config::{DevFlags, InitialClusterState, NodeFlags};
use crate::member::{self, ConfigError, Listeners, RunningMember, StartError};

/// The flags of dev member `i` (0-based) of a cluster of `members`, with data under `dir`.
pub fn member_flags(i: u16, members: u16, base_port: u16, dir: &Path, template: &NodeFlags) -> NodeFlags {
    let port = |m: u16, off: u16| base_port + 10 * m + off;
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let initial_cluster =
        (0..members).map(|m| format!("node{}={}", m + 1, url(port(m, 1)))).collect::<Vec<_>>().join(",");
    NodeFlags {
        name: format!("node{}", i + 1),
        data_dir: dir.join(format!("node{}", i + 1)),
        listen_client_urls: vec![url(port(i, 0))],
        advertise_client_urls: vec![url(port(i, 0))],
        listen_peer_urls: vec![url(port(i, 1))],
        initial_advertise_peer_urls: vec![url(port(i, 1))],
        listen_metrics_urls: vec![url(port(i, 2))],
        initial_cluster,
        initial_cluster_state: InitialClusterState::New,
        initial_cluster_token: "raftkv-dev".to_string(),
        ..template.clone()
    }
}

/// Starts the members, prints how to reach them, and stops them cleanly on Ctrl-C.
pub async fn run(flags: DevFlags, template: NodeFlags) -> Result<(), StartError> {
    if flags.members == 0 || flags.members > 9 {
        return Err(ConfigError::DevMembers.into());
    }
    let mut running: Vec<RunningMember> = Vec::new();
    for i in 0..flags.members {
        let f = member_flags(i, flags.members, flags.base_port, &flags.dir, &template);
        let listeners = Listeners::bind(&f).await?;
        running.push(member::start(f, listeners).await?);
    }
    let endpoints: Vec<String> = running.iter().map(|m| format!("{}", m.client_addr)).collect();
    println!("raftkv dev cluster: {} members, data in {}", running.len(), flags.dir.display());
    for m in &running {
        println!(
            "  {:<6} id={:016x} client=http://{} peer=http://{} metrics=http://{}/metrics",
            m.name, m.id, m.client_addr, m.peer_addr, m.metrics_addr
        );
    }
    println!("try:  etcdctl --endpoints={} put hello world", endpoints.join(","));
    println!("      etcdctl --endpoints={} get hello", endpoints.join(","));
    println!("      etcdctl --endpoints={} endpoint status -w table", endpoints.join(","));
    println!("Ctrl-C stops the cluster (data stays in {}).", flags.dir.display());
    let _ = tokio::signal::ctrl_c().await;
    info!("stopping dev cluster");
    for m in running {
        m.stop().await;
    }
    Ok(())
}
