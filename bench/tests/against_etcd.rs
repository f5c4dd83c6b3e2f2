//! End-to-end: the kvbench binary against a real single-member etcd on loopback.
//!
//! Needs the `etcd` binary (Debian's `etcd-server`; `scripts/bench.sh` installs it). Without
//! it the test says plainly that it skipped. Each workload runs a bounded number of operations
//! with `--check`, so a workload that errors or measures nothing fails the test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const KVBENCH: &str = env!("CARGO_BIN_EXE_kvbench");

/// Kills the etcd process when the test ends, however it ends.
struct Etcd {
    child: Child,
    client: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn start_etcd(bin: &Path) -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let (client, peer, metrics) = (
        format!("http://127.0.0.1:{}", ports[0]),
        format!("http://127.0.0.1:{}", ports[1]),
        format!("http://127.0.0.1:{}", ports[2]),
    );
    let child = Command::new(bin)
        .args(["--name", "solo", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("solo={peer}"), "--listen-metrics-urls", &metrics])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Etcd { child, client, _dir: dir }
}

fn kvbench(args: &[&str]) -> Output {
    let out = Command::new(KVBENCH).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kvbench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kvbench run --check --json` of `ops` operations of `workload` over the preloaded 1,500 keys;
/// the JSON line and its parsed record, whose operation count is checked here.
fn run_json(endpoints: &str, workload: &str, ops: u64, extra: &[&str]) -> (String, serde_json::Value) {
    let ops_arg = ops.to_string();
    let mut args = vec!["run", "--endpoints", endpoints, "--workload", workload, "--ops", &ops_arg];
    args.extend(["--key-space", "1500", "--check", "--json", "--label", "etcd"]);
    args.extend(extra);
    let line = String::from_utf8(kvbench(&args).stdout).unwrap();
    let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(record["ops"], ops, "{record}");
    (line, record)
}

#[test]
fn every_workload_runs_against_etcd_and_reports() {
    let Some(bin) = etcd_binary() else {
        eprintln!("SKIPPED: no `etcd` on PATH (apt-get install etcd-server)");
        return;
    };
    let etcd = start_etcd(&bin);
    let ep = etcd.client.as_str();
    kvbench(&["wait-ready", "--endpoints", ep, "--linearizable", "--timeout", "30"]);
    assert_eq!(String::from_utf8_lossy(&kvbench(&["leader", "--endpoints", ep]).stdout).trim(), ep);

    let results = tempfile::NamedTempFile::new().unwrap();
    let mut lines = Vec::new();
    let load =
        kvbench(&["load", "--endpoints", ep, "--keys", "1500", "--batch", "64", "--json", "--label", "etcd"]);
    lines.push(String::from_utf8(load.stdout).unwrap());
    for workload in ["put", "get-linear", "get-serial", "mixed", "txn-cas", "range"] {
        let (line, record) =
            run_json(ep, workload, 40, &["--clients", "4", "--connections", "2", "--range-len", "1000"]);
        assert_eq!(record["kind"], "run");
        assert_eq!(record["workload"], workload);
        assert_eq!(record["errors"], 0, "{record}");
        assert!(record["latency"]["p50_ms"].as_f64().unwrap() > 0.0, "{record}");
        lines.push(line);
    }
    // Round-robin over every endpoint (the one member, named twice), with the server's CPU
    // time recorded: the record names the policy and carries CPU per operation.
    let pid = etcd.child.id().to_string();
    let both = format!("{ep},{ep}");
    let (line, record) = run_json(
        &both,
        "put",
        30,
        &["--target", "round-robin", "--clients", "3", "--connections", "2", "--server-pids", &pid],
    );
    assert_eq!(record["target"], "round-robin", "{record}");
    assert!(record["server_cpu_us_per_op"].as_f64().is_some_and(|us| us >= 0.0), "{record}");
    assert!(record["client_cpu_us_per_op"].as_f64().is_some_and(|us| us >= 0.0), "{record}");
    lines.push(line);
    // Sequential keys: recorded as such, with the latency distribution the plots draw.
    let (line, record) =
        run_json(ep, "put", 30, &["--key-order", "sequential", "--clients", "3", "--connections", "2"]);
    assert_eq!(record["key_order"], "sequential", "{record}");
    assert_eq!(record["latency"]["distribution"].as_array().map(Vec::len), Some(14), "{record}");
    lines.push(line);
    // The watch workloads: the one member watches too (there is no follower), the fan-out's
    // watchers over 4 streams. --check fails on any missing or duplicated event.
    for (workload, extra) in [
        ("watch-latency", ["--watch-on", "all", "--rate", "200"]),
        ("watch-fanout", ["--watchers", "20", "--streams", "4"]),
    ] {
        let mut args = vec!["watch", "--endpoints", &both, "--workload", workload, "--duration", "0.5"];
        args.extend(["--warmup", "0.1", "--drain-timeout", "10", "--server-pids", &pid]);
        args.extend(["--check", "--json", "--label", "etcd"]);
        args.extend(extra);
        let line = String::from_utf8(kvbench(&args).stdout).unwrap();
        let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!((record["kind"].as_str(), record["workload"].as_str()), (Some("watch"), Some(workload)));
        assert_eq!(
            (record["missing"].as_u64(), record["duplicates"].as_u64()),
            (Some(0), Some(0)),
            "{record}"
        );
        assert!(record["events"].as_u64().is_some_and(|n| n > 0), "{record}");
        assert!(record["latency"]["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{record}");
        assert!(record["server_peak_rss_kib"].as_u64().is_some_and(|kib| kib > 0), "{record}");
        lines.push(line);
    }
    let record: serde_json::Value = serde_json::from_str(lines.last().unwrap().trim()).unwrap();
    assert_eq!((record["watchers"].as_u64(), record["streams"].as_u64()), (Some(20), Some(4)), "{record}");
    let no_follower = Command::new(KVBENCH)
        .args(["watch", "--endpoints", ep, "--workload", "watch-latency", "--duration", "0.2"])
        .output()
        .unwrap();
    assert!(!no_follower.status.success());
    assert!(String::from_utf8_lossy(&no_follower.stderr).contains("no member to watch on"));
    // The lease workloads over the one member named twice (so round-robin turns between two
    // channels), with the server's memory and CPU time: --check fails on any error, a lease
    // the run could not revoke at its end included.
    for (workload, clients) in [("lease-keepalive", "4"), ("lease-keepalive-once", "3"), ("lease-cycle", "3")]
    {
        let mut args = vec!["lease", "--endpoints", &both, "--workload", workload, "--clients", clients];
        args.extend(["--connections", "2", "--duration", "0.5", "--warmup", "0.1", "--server-pids", &pid]);
        args.extend(["--check", "--json", "--label", "etcd"]);
        let line = String::from_utf8(kvbench(&args).stdout).unwrap();
        let record: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!((record["kind"].as_str(), record["workload"].as_str()), (Some("lease"), Some(workload)));
        assert_eq!(record["errors"], 0, "{record}");
        assert!(record["ops"].as_u64().is_some_and(|n| n > 0), "{record}");
        assert!(record["latency"]["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{record}");
        assert!(record["server_peak_rss_kib"].as_u64().is_some_and(|kib| kib > 0), "{record}");
        assert!(record["server_cpu_us_per_op"].as_f64().is_some(), "{record}");
        let cycle = workload == "lease-cycle";
        assert_eq!(record["steps"]["revoke"]["p50_ms"].as_f64().is_some(), cycle, "{record}");
        assert_eq!(record["ttl"].as_i64(), Some(if cycle { 60 } else { 100 }), "{record}");
        lines.push(line);
    }
    // Leases the server refuses stop a keep-alive run before it measures anything.
    let refused = Command::new(KVBENCH)
        .args(["lease", "--endpoints", ep, "--workload", "lease-keepalive", "--clients", "2"])
        .args(["--ttl", "99999999999", "--duration", "0.2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("too large lease TTL"), "{refused:?}");
    // A restart-style probe of a loaded key, and one of a key that was never written.
    let ready =
        kvbench(&["wait-ready", "--endpoints", ep, "--key-index", "1499", "--json", "--label", "etcd"]);
    lines.push(String::from_utf8(ready.stdout).unwrap());
    let missing = Command::new(KVBENCH)
        .args(["wait-ready", "--endpoints", ep, "--key-index", "999999", "--timeout", "0.3"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    // The maintenance measurements: a snapshot saved to a synced file, a defragmentation under
    // writers.
    let snapshot_dir = tempfile::tempdir().unwrap();
    let snapshot = snapshot_dir.path().join("snap.db");
    let saved = kvbench(&[
        "snapshot-save",
        "--endpoint",
        ep,
        "--out",
        snapshot.to_str().unwrap(),
        "--keys",
        "1500",
        "--json",
        "--label",
        "etcd",
    ]);
    let record: serde_json::Value = serde_json::from_slice(&saved.stdout).unwrap();
    assert_eq!(record["kind"], "snapshot-save");
    let size = std::fs::metadata(&snapshot).unwrap().len();
    assert_eq!(record["bytes"].as_u64(), Some(size));
    assert!(size > 1500 * 256, "a snapshot of 1,500 keys of 256 B holds them: {size} bytes");
    lines.push(String::from_utf8(saved.stdout).unwrap());
    let defrag = kvbench(&[
        "defrag-stall",
        "--endpoint",
        ep,
        "--keys",
        "1500",
        "--writers",
        "2",
        "--settle",
        "0.2",
        "--check",
        "--json",
        "--label",
        "etcd",
    ]);
    let record: serde_json::Value = serde_json::from_slice(&defrag.stdout).unwrap();
    assert_eq!(record["kind"], "defrag");
    assert!(record["member"]["puts_per_s_before"].as_f64().unwrap() > 0.0, "{record}");
    assert!(record["others"].is_null(), "no other member given: {record}");
    assert!(record["db_size_before"].as_u64().unwrap() > 0, "{record}");
    lines.push(String::from_utf8(defrag.stdout).unwrap());

    std::fs::write(results.path(), lines.concat()).unwrap();
    let report = kvbench(&["report", "--input", results.path().to_str().unwrap()]);
    let text = String::from_utf8(report.stdout).unwrap();
    let etcd_rows = text.lines().filter(|l| l.contains("| etcd |") && l.starts_with("| ")).count();
    // Six workloads, put@all, put-seq, three lease runs, two watch runs + the restart, snapshot
    // and defrag rows.
    assert_eq!(etcd_rows, 16, "{text}");
    assert!(text.lines().any(|l| l.starts_with("| put-seq | 3/2 | all | etcd | 1 |")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("| put@all | 3/2 | round-robin | etcd | 1 |")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("| watch-fanout | 20/4 | all | 200 | etcd | 1 |")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("| watch-latency | 1/1 | all | 200 | raftkv | 0 | pending")),
        "{text}"
    );
    assert!(
        text.contains("| event latency p99 ≤ etcd's | watch-latency 1/1 at 200 puts/s | pending | pending |"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("| range | 4/2 | all | raftkv | 0 | pending")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("| lease-keepalive | 4/2 | round-robin | 100 | etcd | 1 |")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("| lease-cycle | 3/2 | round-robin | 60 | etcd | 1 |")),
        "{text}"
    );
    assert!(text.contains("| cycles/s ≥ 1.5× etcd's | lease-cycle 3/2 | pending | pending |"), "{text}");

    // The plots of the same file: each run workload's throughput, and its latency at 4 clients
    // where it ran with 4.
    let plots = tempfile::tempdir().unwrap();
    let out_dir = plots.path().join("plots");
    let plot = kvbench(&[
        "plot",
        "--input",
        results.path().to_str().unwrap(),
        "--out-dir",
        out_dir.to_str().unwrap(),
        "--latency-clients",
        "4",
    ]);
    let written = String::from_utf8(plot.stdout).unwrap();
    for name in ["put-throughput.svg", "put-latency.svg", "range-throughput.svg", "range-latency.svg"] {
        let path = out_dir.join(name);
        assert!(written.lines().any(|l| l == path.to_str().unwrap()), "{name} in {written}");
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    }
}

#[test]
fn run_check_fails_when_the_server_is_gone() {
    let port = free_ports(1)[0];
    let out = Command::new(KVBENCH)
        .args(["run", "--endpoints", &format!("127.0.0.1:{port}"), "--workload", "put", "--ops", "3"])
        .args(["--request-timeout", "0.5", "--check", "--json"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = BufReader::new(out.stderr.as_slice()).lines().map_while(Result::ok).collect::<Vec<_>>();
    assert!(stderr.iter().any(|l| l.contains("check failed") && l.contains("3 errors")), "{stderr:?}");
}
