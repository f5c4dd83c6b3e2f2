//! The `kvbench` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::conn::Target;
use crate::keys::KeyOrder;
use crate::lease::LeaseWorkload;
use crate::record::StopSignal;
use crate::watch::{Placement, WatchWorkload};
use crate::workload::Workload;

/// Parses a duration given in seconds, fractions allowed (`2`, `0.5`).
fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?} is not a number of seconds: {e}"))?;
    Duration::try_from_secs_f64(v).map_err(|e| format!("{s:?} is not a valid duration: {e}"))
}

/// Benchmark harness for etcd-v3-API servers (etcd and raftkv), driven by the same client code.
#[derive(Debug, Parser)]
#[command(name = "kvbench", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kvbench's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one workload and report throughput, latency percentiles and errors.
    Run(RunArgs),
    /// Run a watch workload: put → event latency, or events delivered to many watchers.
    Watch(WatchArgs),
    /// Run a lease workload: keep-alives answered per second, or grant → put → revoke cycles.
    Lease(LeaseArgs),
    /// Preload keys 0..N (batched txns) so reads find data.
    Load(LoadArgs),
    /// Print the endpoint of the current leader.
    Leader(EndpointArgs),
    /// Wait until every endpoint answers a get (optionally of a key that must exist).
    WaitReady(WaitReadyArgs),
    /// Measure the fdatasync latency of a directory's disk (4 KiB overwrite + fdatasync).
    FsyncProbe(FsyncProbeArgs),
    /// Measure the loopback round trip of a unary gRPC call against an in-process echo server.
    Ping(PingArgs),
    /// Report the on-disk size of a data directory.
    DiskUsage(DiskUsageArgs),
    /// Save a member's snapshot to a file (as `etcdctl snapshot save`) and time it.
    SnapshotSave(SnapshotSaveArgs),
    /// Defragment a member while writers put to it; report the call's time and the writes' stall.
    DefragStall(DefragStallArgs),
    /// Print N distinct free TCP ports on 127.0.0.1.
    FreePorts {
        /// How many ports.
        count: usize,
    },
    /// Render a results file (JSON lines) as markdown tables.
    Report(ReportArgs),
    /// Draw a results file's runs as SVG plots: throughput against clients and the latency
    /// distribution of each workload, the systems side by side.
    Plot(PlotArgs),
}

/// Where the cluster is.
#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Client endpoints, comma-separated (`http://127.0.0.1:2379` or `127.0.0.1:2379`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Longest a single request may take before it counts as an error, in seconds.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub request_timeout: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print one JSON record on stdout (the human summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Name of the system under test, stored in the record (e.g. `etcd`, `raftkv`).
    #[arg(long, default_value = "unnamed")]
    pub label: String,
}

/// `kvbench run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// The workload.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: u64,
    /// gRPC connections shared by the clients (client i uses connection i mod M); with
    /// `--target round-robin` each connection holds one channel per member.
    #[arg(long, default_value_t = 1)]
    pub connections: u64,
    /// Which members to talk to: `leader`, `all` (each connection to one member, in turn) or
    /// `round-robin` (each request to the next member, as clientv3 balances).
    #[arg(long, value_enum, default_value = "all")]
    pub target: Target,
    /// Stop after this many operations in total.
    #[arg(long, conflicts_with = "duration")]
    pub ops: Option<u64>,
    /// Stop after this many seconds (default 10 when --ops is not given).
    #[arg(long, value_parser = seconds)]
    pub duration: Option<Duration>,
    /// Run the workload this many seconds before measuring.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub warmup: Duration,
    /// Hard cap on an --ops run, in seconds.
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub max_duration: Duration,
    /// Keys are drawn uniformly from 0..key-space.
    #[arg(long, default_value_t = 100_000)]
    pub key_space: u64,
    /// Order of the put workload's keys: `random` (uniform over the key space) or `sequential`
    /// (each put takes the next key, shared by all clients and wrapping at --key-space, as
    /// etcd's `benchmark put --sequential-keys`).
    #[arg(long, value_enum, default_value = "random")]
    pub key_order: KeyOrder,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Keys per read of the range workload.
    #[arg(long, default_value_t = 1000)]
    pub range_len: u64,
    /// Seed of the clients' random generators.
    #[arg(long, default_value_t = 0x6b76_6265_6e63_68)]
    pub seed: u64,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// What a benchmark session tells a measured run, shared by `run`, `watch` and `lease`.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Round number, recorded so a report can fold alternating repetitions.
    #[arg(long, default_value_t = 1)]
    pub round: u32,
    /// PIDs of the server processes, comma-separated: their memory (`run`: peak RSS after the
    /// run; `watch`, `lease`: RSS before the set-up and its peak during the run) and the CPU
    /// time they use during the measured phase are summed into the record.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Exit non-zero if the run had any error or no successful operation (`watch`: also any
    /// missing or duplicated event, or no event delivered; `lease`: also a lease of the run
    /// not revoked at its end).
    #[arg(long)]
    pub check: bool,
}

/// `kvbench watch`. The defaults of several flags depend on `--workload`; where they do, the
/// help gives both.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// `watch-latency`: put on the leader → event at a watcher on a follower. `watch-fanout`:
    /// many watchers of one prefix over every member; events delivered per second.
    #[arg(long, value_enum)]
    pub workload: WatchWorkload,
    /// Watchers of the run's prefix (watch-latency 1, watch-fanout 1000).
    #[arg(long, default_value = "1", default_value_ifs = [("workload", "watch-fanout", "1000")])]
    pub watchers: u64,
    /// Watch streams, each on its own gRPC connection: stream j on watch member j mod n, watcher
    /// i on stream i mod S (watch-latency 1, watch-fanout 30: 10 per member of 3).
    #[arg(long, default_value = "1", default_value_ifs = [("workload", "watch-fanout", "30")])]
    pub streams: u64,
    /// Members the watchers are on: `followers` (every member but the leader) or `all`
    /// (watch-latency followers, watch-fanout all). The writer always puts to the leader.
    #[arg(
        long,
        value_enum,
        default_value = "followers",
        default_value_ifs = [("workload", "watch-fanout", "all")]
    )]
    pub watch_on: Placement,
    /// Puts per second the writer aims at (watch-latency 100, watch-fanout 200).
    #[arg(long, default_value = "100", default_value_ifs = [("workload", "watch-fanout", "200")])]
    pub rate: f64,
    /// Puts in flight at most; a put due while all are in flight waits for one to finish
    /// (watch-latency 1: sequential puts; watch-fanout 4).
    #[arg(long, default_value = "1", default_value_ifs = [("workload", "watch-fanout", "4")])]
    pub writers: u64,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// Seconds of puts before the measured window (their events are checked, not measured).
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub warmup: Duration,
    /// Longest wait after the last put for the events still on their way; an event that has
    /// not arrived by then counts as missing.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub drain_timeout: Duration,
    /// Bytes per value (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Seed of the values' filler bytes and of the run's key prefix.
    #[arg(long, default_value_t = 0x6b76_6265_6e63_68)]
    pub seed: u64,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `kvbench lease`. The TTL's default depends on `--workload`.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// `lease-keepalive`: one lease per client, renewed over a stream the client keeps open.
    /// `lease-keepalive-once`: the same, a new stream per keep-alive (etcd's benchmark tool).
    /// `lease-cycle`: grant a lease, put a key attached to it, revoke it.
    #[arg(long, value_enum)]
    pub workload: LeaseWorkload,
    /// Concurrent clients, each with one keep-alive or cycle in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: u64,
    /// gRPC connections shared by the clients (client i uses connection i mod M); with
    /// `--target round-robin` each connection holds one channel per member.
    #[arg(long, default_value_t = 1)]
    pub connections: u64,
    /// Which members to talk to: `round-robin` (client i starts on member i mod n and turns
    /// over every member; a keep-alive client's stream stays on one member), `leader` or `all`
    /// (each connection to one member, in turn).
    #[arg(long, value_enum, default_value = "round-robin")]
    pub target: Target,
    /// TTL of the leases granted, seconds (the keep-alive workloads 100, as etcd's benchmark
    /// tool grants; lease-cycle 60).
    #[arg(long, default_value = "100", default_value_ifs = [("workload", "lease-cycle", "60")])]
    pub ttl: i64,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,
    /// Seconds of the workload before the measured window.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub warmup: Duration,
    /// Bytes of the value a cycle puts.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Seed of the values and of the run's key prefix.
    #[arg(long, default_value_t = 0x6b76_6265_6e63_68)]
    pub seed: u64,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// `kvbench load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Keys 0..keys are written.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Puts per txn (etcd's default limit is 128 operations per txn).
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Concurrent loading clients.
    #[arg(long, default_value_t = 32)]
    pub clients: u64,
    /// Connections shared by the loading clients.
    #[arg(long, default_value_t = 4)]
    pub connections: u64,
    /// Which members to send the writes to.
    #[arg(long, value_enum, default_value = "leader")]
    pub target: Target,
}

/// `kvbench wait-ready`.
#[derive(Debug, Clone, Args)]
pub struct WaitReadyArgs {
    /// Endpoints that must all answer, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Index of a preloaded key the read must find (key `k<index, 10 digits>`).
    #[arg(long)]
    pub key_index: Option<u64>,
    /// Read linearizably (requires a leader) instead of serializably.
    #[arg(long)]
    pub linearizable: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub timeout: Duration,
    /// Milliseconds between attempts.
    #[arg(long, default_value_t = 10)]
    pub interval_ms: u64,
    /// Unix time (ns) the server process was started: the record's time is measured from it.
    /// Without it, from kvbench's own start.
    #[arg(long)]
    pub started_at_ns: Option<u128>,
    /// Keys the member holds, stored in the record.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// How the member was stopped before this restart, stored in the record.
    #[arg(long, value_enum, default_value = "kill")]
    pub stopped_by: StopSignal,
}

/// `kvbench snapshot-save`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotSaveArgs {
    /// The member whose snapshot is saved.
    #[arg(long)]
    pub endpoint: String,
    /// The file written.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Keys the member holds, stored in the record.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Longest the whole transfer may take, in seconds.
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub timeout: Duration,
    /// PID of the serving member's process (comma-separated if it is several): its RSS before
    /// the save and its peak during it go into the record, to show whether a save's memory
    /// grows with the database or stays bounded.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,
}

/// `kvbench defrag-stall`.
#[derive(Debug, Clone, Args)]
pub struct DefragStallArgs {
    /// The member defragmented and written to.
    #[arg(long)]
    pub endpoint: String,
    /// The other members, comma-separated: as many writers again put to them, to show whether
    /// the cluster keeps serving writes while one member defragments.
    #[arg(long, value_delimiter = ',')]
    pub others: Vec<String>,
    /// Exit non-zero if any put failed (timed out or was refused).
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Keys the member holds, stored in the record; the writers overwrite keys `0..keys`.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Concurrent writers on the defragmented member (and as many on the others).
    #[arg(long, default_value_t = 8)]
    pub writers: u64,
    /// Seconds of steady writes before the call, and again after it.
    #[arg(long, default_value = "2", value_parser = seconds)]
    pub settle: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Longest one put or the Defragment call may take, in seconds.
    #[arg(long, default_value = "600", value_parser = seconds)]
    pub request_timeout: Duration,
}

/// `kvbench fsync-probe`.
#[derive(Debug, Clone, Args)]
pub struct FsyncProbeArgs {
    /// A directory on the disk to probe (the data directories' parent).
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of write+fdatasync samples.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 4096)]
    pub block_size: usize,
    /// Keep every CPU busy during the probe (see BENCHMARKS.md: idle vCPUs wake late).
    #[arg(long)]
    pub spin: bool,
    /// Print one JSON record on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `kvbench ping`.
#[derive(Debug, Clone, Args)]
pub struct PingArgs {
    /// Measured calls.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Unmeasured calls first.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Payload bytes per call (a small etcd get request is about this size).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Print one JSON record on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `kvbench disk-usage`.
#[derive(Debug, Clone, Args)]
pub struct DiskUsageArgs {
    /// The data directory.
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Keys the member holds, stored in the record.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
}

/// `kvbench report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Results file: JSON lines written by the other subcommands' --json.
    #[arg(long)]
    pub input: PathBuf,
    /// Reference system (the ratio's denominator).
    #[arg(long, default_value = "etcd")]
    pub baseline: String,
    /// Compared system (the ratio's numerator).
    #[arg(long, default_value = "raftkv")]
    pub candidate: String,
}

/// `kvbench plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Results file: JSON lines written by the other subcommands' --json.
    #[arg(long)]
    pub input: PathBuf,
    /// Directory the SVG files are written to (created if missing): WORKLOAD-throughput.svg
    /// and WORKLOAD-latency.svg for each workload of the file (put-throughput.svg, ...).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Client count whose latency distribution is drawn.
    #[arg(long, default_value_t = 64)]
    pub latency_clients: u64,
    /// Reference system, drawn in blues.
    #[arg(long, default_value = "etcd")]
    pub baseline: String,
    /// Compared system, drawn in reds.
    #[arg(long, default_value = "raftkv")]
    pub candidate: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "kvbench",
            "run",
            "--endpoints=127.0.0.1:1,127.0.0.1:2",
            "--workload=txn-cas",
            "--clients=64",
            "--connections=8",
            "--duration=1.5",
            "--server-pids=1,2,3",
            "--target=round-robin",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.endpoints.endpoints.len(), 2);
        assert_eq!(run.workload, Workload::TxnCas);
        assert_eq!(run.duration, Some(Duration::from_millis(1500)));
        assert_eq!(run.session.server_pids, vec![1, 2, 3]);
        assert_eq!(run.value_size, 256);
        assert_eq!(run.target, Target::RoundRobin);
        assert_eq!(run.key_order, KeyOrder::Random);
        let cli = Cli::try_parse_from([
            "kvbench",
            "run",
            "--endpoints=a:1",
            "--workload=put",
            "--key-order=sequential",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else { panic!("not run") };
        assert_eq!(run.key_order, KeyOrder::Sequential);
    }

    #[test]
    fn watch_defaults_follow_the_workload() {
        let parse = |workload: &str, extra: &[&str]| {
            let mut args = vec!["kvbench", "watch", "--endpoints=a:1", workload];
            args.extend(extra);
            let Command::Watch(w) = Cli::try_parse_from(args).unwrap().command else { panic!("not watch") };
            w
        };
        let latency = parse("--workload=watch-latency", &[]);
        assert_eq!((latency.watchers, latency.streams, latency.writers), (1, 1, 1));
        assert_eq!((latency.watch_on, latency.rate), (Placement::Followers, 100.0));
        let fanout = parse("--workload=watch-fanout", &[]);
        assert_eq!((fanout.watchers, fanout.streams, fanout.writers), (1000, 30, 4));
        assert_eq!((fanout.watch_on, fanout.rate), (Placement::All, 200.0));
        let small = parse("--workload=watch-fanout", &["--watchers=50", "--streams=6", "--rate=50"]);
        assert_eq!((small.watchers, small.streams, small.rate), (50, 6, 50.0));
        assert_eq!(small.drain_timeout, Duration::from_secs(60));
    }

    #[test]
    fn lease_defaults_follow_the_workload() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["kvbench", "lease", "--endpoints=a:1"];
            args.extend(extra);
            let Command::Lease(l) = Cli::try_parse_from(args).unwrap().command else { panic!("not lease") };
            l
        };
        let keepalive = parse(&["--workload=lease-keepalive", "--clients=64", "--connections=8"]);
        assert_eq!((keepalive.ttl, keepalive.target), (100, Target::RoundRobin));
        assert_eq!((keepalive.clients, keepalive.connections), (64, 8));
        assert_eq!(parse(&["--workload=lease-keepalive-once"]).ttl, 100);
        let cycle = parse(&["--workload=lease-cycle", "--target=leader", "--server-pids=4,5"]);
        assert_eq!((cycle.ttl, cycle.target, cycle.duration), (60, Target::Leader, Duration::from_secs(10)));
        assert_eq!(cycle.session.server_pids, vec![4, 5]);
        assert_eq!(parse(&["--workload=lease-cycle", "--ttl=5"]).ttl, 5);
    }

    #[test]
    fn maintenance_flags_parse() {
        let cli =
            Cli::try_parse_from(["kvbench", "wait-ready", "--endpoints=a:1", "--stopped-by=term"]).unwrap();
        let Command::WaitReady(w) = cli.command else { panic!("not wait-ready") };
        assert_eq!(w.stopped_by, StopSignal::Term);
        let cli = Cli::try_parse_from([
            "kvbench",
            "defrag-stall",
            "--endpoint=a:1",
            "--writers=2",
            "--settle=0.5",
            "--others=b:1,c:1",
        ])
        .unwrap();
        let Command::DefragStall(d) = cli.command else { panic!("not defrag-stall") };
        assert_eq!((d.writers, d.settle, d.keys), (2, Duration::from_millis(500), 1000));
        assert_eq!((d.others.len(), d.check), (2, false));
        let cli =
            Cli::try_parse_from(["kvbench", "snapshot-save", "--endpoint=a:1", "--out=/tmp/x"]).unwrap();
        let Command::SnapshotSave(s) = cli.command else { panic!("not snapshot-save") };
        assert_eq!((s.timeout, s.server_pids.len()), (Duration::from_secs(600), 0));
        let cli = Cli::try_parse_from([
            "kvbench",
            "snapshot-save",
            "--endpoint=a:1",
            "--out=x",
            "--server-pids=42",
        ])
        .unwrap();
        let Command::SnapshotSave(s) = cli.command else { panic!("not snapshot-save") };
        assert_eq!(s.server_pids, vec![42]);
    }

    #[test]
    fn plot_flags_parse() {
        let cli = Cli::try_parse_from(["kvbench", "plot", "--input=r.jsonl", "--out-dir=plots"]).unwrap();
        let Command::Plot(p) = cli.command else { panic!("not plot") };
        assert_eq!((p.input, p.out_dir), (PathBuf::from("r.jsonl"), PathBuf::from("plots")));
        assert_eq!((p.latency_clients, p.baseline.as_str(), p.candidate.as_str()), (64, "etcd", "raftkv"));
        let cli =
            Cli::try_parse_from(["kvbench", "plot", "--input=r", "--out-dir=d", "--latency-clients=1000"])
                .unwrap();
        let Command::Plot(p) = cli.command else { panic!("not plot") };
        assert_eq!(p.latency_clients, 1000);
        assert!(Cli::try_parse_from(["kvbench", "plot", "--input=r"]).is_err(), "--out-dir is required");
    }

    #[test]
    fn ops_and_duration_conflict() {
        let r = Cli::try_parse_from([
            "kvbench",
            "run",
            "--endpoints=a:1",
            "--workload=put",
            "--ops=5",
            "--duration=1",
        ]);
        assert!(r.is_err());
        assert!(seconds("-1").is_err());
        assert!(seconds("abc").is_err());
    }
}
