//! raftkv clusters as Docker containers, laid out the way the operator lays them out on
//! Kubernetes: containers named like StatefulSet pods (`NAME-N`), each reachable under the
//! stable DNS name a headless Service gives (`NAME-N.NAME-peer.NS.svc.cluster.local`, a network
//! alias on a user-defined network), each with its own named volume, peer URLs using those names.
//!
//! Faults: `docker kill` / `docker start` (same container, same volume), `docker pause` /
//! `unpause`, `docker network disconnect` / `connect` (isolates one container, host included),
//! and partial partitions with iptables rules in a container's network namespace, entered from
//! the host with `nsenter` (the image has neither a shell nor iptables). Every container has a
//! fixed IP so that a restart or reconnect does not move it.
//!
//! Everything created is removed when the [`DockerCluster`] is dropped, also on panic.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The image the suites run, built by `scripts/build-images.sh`.
pub fn image() -> String {
    std::env::var("RAFTKV_IMAGE").unwrap_or_else(|_| "raftkv/kvnode:dev".to_string())
}

/// Runs `docker ARGS`; its stdout, or a description of the failure.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("docker {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program} {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Why the container suite cannot run here, if it cannot: no Docker engine, no image, or no
/// way to enter a container's network namespace (root, `nsenter`, `iptables`).
pub fn unavailable() -> Option<String> {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        return Some(format!("no Docker engine ({e})"));
    }
    if docker(&["image", "inspect", "--format", "{{.Id}}", &image()]).is_err() {
        return Some(format!("no image {} (build it with scripts/build-images.sh)", image()));
    }
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false);
    if !root {
        return Some("partitions need root (nsenter into container network namespaces)".into());
    }
    for tool in ["nsenter", "iptables"] {
        if run(tool, &["--version"]).is_err() {
            return Some(format!("no {tool} on the host"));
        }
    }
    None
}

/// One member: a container, its volume and its fixed address.
pub struct Member {
    /// Container name and member name, like a StatefulSet pod: `NAME-N`.
    pub name: String,
    /// The headless-Service style DNS name the peers use.
    pub dns: String,
    pub ip: String,
    pub volume: String,
    pub paused: bool,
    pub disconnected: bool,
}

impl Member {
    pub fn client_endpoint(&self) -> String {
        format!("http://{}:2379", self.ip)
    }
}

/// A cluster of kvnode containers on its own network.
pub struct DockerCluster {
    /// StatefulSet-like name; also the cluster token.
    pub name: String,
    pub network: String,
    pub members: Vec<Member>,
}

const NAMESPACE: &str = "faults";

impl DockerCluster {
    /// Creates the network (with a free /24 subnet), one volume per member, and starts `n`
    /// founding members.
    pub fn start(n: usize, name: &str) -> Result<Self, String> {
        let network = format!("{name}-net");
        let mut cluster =
            DockerCluster { name: name.to_string(), network: network.clone(), members: Vec::new() };
        // A /24 no other network uses: try a few, the engine refuses overlaps.
        let base = std::process::id() as usize;
        let mut subnet = None;
        for attempt in 0..64 {
            let third = (base + attempt * 7) % 250;
            let net = format!("10.213.{third}");
            let cidr = format!("{net}.0/24");
            if docker(&["network", "create", "--driver", "bridge", "--subnet", &cidr, &network]).is_ok() {
                subnet = Some(net);
                break;
            }
        }
        let subnet = subnet.ok_or("no free subnet for the test network")?;
        for i in 0..n {
            let pod = format!("{name}-{i}");
            cluster.members.push(Member {
                dns: format!("{pod}.{name}-peer.{NAMESPACE}.svc.cluster.local"),
                ip: format!("{subnet}.{}", 10 + i),
                volume: format!("{pod}-data"),
                name: pod,
                paused: false,
                disconnected: false,
            });
        }
        let initial = cluster
            .members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.dns))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..n {
            cluster.create_member(i, &initial)?;
        }
        Ok(cluster)
    }

    fn create_member(&self, i: usize, initial_cluster: &str) -> Result<(), String> {
        let m = &self.members[i];
        docker(&["volume", "create", &m.volume])?;
        let volume = format!("{}:/var/lib/kvnode", m.volume);
        let advertise_client = format!("http://{}:2379", m.dns);
        let advertise_peer = format!("http://{}:2380", m.dns);
        let image = image();
        docker(&[
            "run",
            "-d",
            "--name",
            &m.name,
            "--hostname",
            &m.name,
            "--network",
            &self.network,
            "--ip",
            &m.ip,
            "--network-alias",
            &m.dns,
            "--read-only",
            "-v",
            &volume,
            "-e",
            "RUST_LOG=info",
            &image,
            "--name",
            &m.name,
            "--data-dir",
            "/var/lib/kvnode/data",
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            &advertise_client,
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            &advertise_peer,
            "--listen-metrics-urls",
            "http://0.0.0.0:2381",
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &self.name,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--experimental-watch-progress-notify-interval",
            "300ms",
            "--experimental-lease-checkpoint-interval",
            "1s",
        ])?;
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_endpoint).collect()
    }

    /// Whether member `i` can serve: running, not paused, attached to the network.
    pub fn up(&self, i: usize) -> bool {
        let m = &self.members[i];
        !m.paused && !m.disconnected && self.running(i)
    }

    pub fn running(&self, i: usize) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.members[i].name]).is_ok_and(|s| s == "true")
    }

    /// SIGKILL, as a node crash (the container and its volume stay).
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        docker(&["kill", &self.members[i].name])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running(i) {
            if Instant::now() > deadline {
                return Err(format!("{} still running after docker kill", self.members[i].name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts a stopped container again: same arguments, same volume, same address.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        docker(&["start", &self.members[i].name]).map(|_| ())
    }

    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        docker(&["pause", &self.members[i].name])?;
        self.members[i].paused = true;
        Ok(())
    }

    pub fn unpause(&mut self, i: usize) -> Result<(), String> {
        docker(&["unpause", &self.members[i].name])?;
        self.members[i].paused = false;
        Ok(())
    }

    /// Detaches member `i` from the network: nobody, the host included, reaches it.
    pub fn disconnect(&mut self, i: usize) -> Result<(), String> {
        docker(&["network", "disconnect", &self.network, &self.members[i].name])?;
        self.members[i].disconnected = true;
        Ok(())
    }

    /// Attaches member `i` again with its address and DNS alias.
    pub fn connect(&mut self, i: usize) -> Result<(), String> {
        let m = &self.members[i];
        docker(&["network", "connect", "--ip", &m.ip, "--alias", &m.dns, &self.network, &m.name])?;
        self.members[i].disconnected = false;
        Ok(())
    }

    fn pid(&self, i: usize) -> Result<String, String> {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.members[i].name])
    }

    /// Runs iptables in member `i`'s network namespace.
    fn iptables(&self, i: usize, args: &[&str]) -> Result<(), String> {
        let pid = self.pid(i)?;
        let mut full = vec!["-t", pid.as_str(), "-n", "iptables"];
        full.extend_from_slice(args);
        run("nsenter", &full)
    }

    /// Drops all traffic between members `a` and `b` (both directions; the host still reaches
    /// both, as clients on another network would).
    pub fn cut(&self, a: usize, b: usize) -> Result<(), String> {
        self.iptables(a, &["-I", "INPUT", "-s", &self.members[b].ip, "-j", "DROP"])?;
        self.iptables(b, &["-I", "INPUT", "-s", &self.members[a].ip, "-j", "DROP"])
    }

    /// Cuts every link between the two sides.
    pub fn partition(&self, side_a: &[usize], side_b: &[usize]) -> Result<(), String> {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Removes every iptables cut (a stopped container has lost its rules with its namespace).
    pub fn heal_partitions(&self) -> Result<(), String> {
        for i in 0..self.members.len() {
            if self.running(i) {
                self.iptables(i, &["-F", "INPUT"])?;
            }
        }
        Ok(())
    }

    /// Undoes every fault: unpause, reconnect, drop the iptables cuts, start what was killed.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.unpause(i)?;
            }
            if self.members[i].disconnected {
                self.connect(i)?;
            }
            if !self.running(i) {
                self.restart(i)?;
            }
        }
        self.heal_partitions()
    }

    /// Copies every container's log into a directory that outlives the cluster; returns it.
    pub fn keep_logs(&mut self) -> PathBuf {
        let dir = tempfile::tempdir().unwrap().keep();
        for m in &self.members {
            let out = Command::new("docker").args(["logs", &m.name]).output();
            if let Ok(out) = out {
                let _ =
                    std::fs::write(dir.join(format!("{}.log", m.name)), [out.stdout, out.stderr].concat());
            }
        }
        dir
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for m in &self.members {
            let _ = docker(&["rm", "-f", "-v", &m.name]);
            let _ = docker(&["volume", "rm", "-f", &m.volume]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}
