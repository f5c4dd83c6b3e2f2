//! The JSON lines kvbench prints with `--json`, one record per line, and the report reads.
//!
//! Each subcommand that measures something emits one record; `scripts/bench.sh` appends them
//! to a results file and `kvbench report` turns that file into the markdown tables. The `kind`
//! field tells records apart, so one file holds a whole benchmark session.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::conn::Target;
use crate::error::BenchError;
use crate::keys::KeyOrder;
use crate::lease::LeaseWorkload;
use crate::maintenance::DefragStall;
#[cfg(test)]
use crate::maintenance::WritersSeen;
use crate::stats::LatencySummary;
use crate::watch::{Placement, WatchWorkload};
use crate::workload::Workload;

/// Any record in a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// One workload run against one system.
    Run(RunRecord),
    /// One watch workload run against one system.
    Watch(WatchRecord),
    /// One lease workload run against one system.
    Lease(LeaseRecord),
    /// One preload.
    Load(LoadRecord),
    /// The data disk's fdatasync latency.
    Fsync(FloorRecord),
    /// The loopback gRPC round trip.
    Ping(FloorRecord),
    /// Time for a killed member to come back and serve.
    Restart(RestartRecord),
    /// A member's data directory size.
    Disk(DiskRecord),
    /// Time to save a snapshot of a member.
    SnapshotSave(SnapshotRecord),
    /// A member's defragmentation, seen by its writers.
    Defrag(DefragRecord),
}

/// Result of one workload run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The system under test (`etcd`, `raftkv`), as given by `--label`.
    pub system: String,
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: u64,
    /// Connections shared by the clients.
    pub connections: u64,
    /// Which members the clients talked to.
    pub target: Target,
    /// Keys drawn from `0..key_space`.
    pub key_space: u64,
    /// The order of the put workload's keys; records of older kvbench versions were all
    /// `random`.
    #[serde(default)]
    pub key_order: KeyOrder,
    /// Bytes per written value.
    pub value_size: u64,
    /// Keys per range (range workload only).
    pub range_len: u64,
    /// Repetition number given by `--round`, so a report can aggregate alternating rounds.
    pub round: u32,
    /// Seed of the client random generators.
    pub seed: u64,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// CAS operations that lost a race (txn-cas only).
    pub conflicts: u64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of successful operations.
    pub latency: LatencySummary,
    /// Sum of the servers' peak resident set (VmHWM), KiB, sampled right after the run.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU seconds (user + system) the server processes used during the measured phase.
    /// Absent in records of older kvbench versions and when no server PIDs were given.
    #[serde(default)]
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per successful operation, microseconds.
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU seconds kvbench itself used during the measured phase: the client shares the cores
    /// with the servers, so what it costs is taken from them.
    #[serde(default)]
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per successful operation, microseconds.
    #[serde(default)]
    pub client_cpu_us_per_op: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// Result of one watch workload run (`kvbench watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// The system under test, as given by `--label`.
    pub system: String,
    /// The workload.
    pub workload: WatchWorkload,
    /// Watchers of the run's prefix.
    pub watchers: u64,
    /// Watch streams opened (one gRPC connection each).
    pub streams: u64,
    /// The members the watchers were on.
    pub watch_on: Placement,
    /// Puts in flight at most.
    pub writers: u64,
    /// Puts per second asked for.
    pub rate: f64,
    /// Bytes per value.
    pub value_size: u64,
    /// Repetition number given by `--round`.
    pub round: u32,
    /// Wall time of the measured window, seconds.
    pub elapsed_s: f64,
    /// Puts sent in the window and acknowledged.
    pub puts: u64,
    /// `puts` per second.
    pub puts_per_s: f64,
    /// Acknowledgement latency of those puts.
    pub put_latency: LatencySummary,
    /// Events received in the window, over all watchers.
    pub events: u64,
    /// `events` per second.
    pub events_per_s: f64,
    /// What the watchers would receive per second if every event arrived at once: watchers ×
    /// `puts_per_s`.
    pub offered_events_per_s: f64,
    /// Put sent → event received, for the puts sent in the window.
    pub latency: LatencySummary,
    /// Acknowledged puts that a watcher never received (by the end of the drain), summed over
    /// the watchers.
    pub missing: u64,
    /// Events a watcher received again, summed over the watchers.
    pub duplicates: u64,
    /// Failed puts, broken or canceled watches and foreign events.
    pub errors: u64,
    /// The servers' summed `VmRSS` before the watchers were created, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// The highest summed `VmRSS` read (every 100 ms) from the watchers' creation to the end of
    /// the drain, KiB: not the session's high-water mark, which earlier workloads set.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU seconds the server processes used during the window.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per event received in the window, microseconds.
    pub server_cpu_us_per_event: Option<f64>,
    /// CPU seconds kvbench used during the window.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per event received in the window, microseconds.
    pub client_cpu_us_per_event: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl WatchRecord {
    /// Events received over events offered (watchers × puts acknowledged) in the window; 0
    /// without puts.
    pub fn delivered_share(&self) -> f64 {
        if self.offered_events_per_s > 0.0 { self.events_per_s / self.offered_events_per_s } else { 0.0 }
    }
}

#[cfg(test)]
impl WatchRecord {
    /// A record of a clean run of `workload` against `system`, for tests to vary.
    pub fn example(system: &str, workload: WatchWorkload) -> Self {
        let (watchers, streams, watch_on) = match workload {
            WatchWorkload::WatchLatency => (1, 1, Placement::Followers),
            WatchWorkload::WatchFanout => (1000, 30, Placement::All),
        };
        let latency = LatencySummary::example();
        WatchRecord {
            system: system.into(),
            workload,
            watchers,
            streams,
            watch_on,
            writers: 1,
            rate: 200.0,
            value_size: 256,
            round: 1,
            elapsed_s: 10.0,
            puts: 2000,
            puts_per_s: 200.0,
            put_latency: latency.clone(),
            events: 2000 * watchers,
            events_per_s: 200.0 * watchers as f64,
            offered_events_per_s: 200.0 * watchers as f64,
            latency,
            missing: 0,
            duplicates: 0,
            errors: 0,
            server_rss_before_kib: Some(100 * 1024),
            server_peak_rss_kib: Some(150 * 1024),
            server_cpu_s: Some(2.0),
            server_cpu_us_per_event: Some(10.0),
            client_cpu_s: Some(1.0),
            client_cpu_us_per_event: Some(5.0),
            first_error: None,
        }
    }
}

/// Result of one lease workload run (`kvbench lease`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The system under test, as given by `--label`.
    pub system: String,
    /// The workload.
    pub workload: LeaseWorkload,
    /// Concurrent clients.
    pub clients: u64,
    /// Connections shared by the clients.
    pub connections: u64,
    /// Which members the clients talked to.
    pub target: Target,
    /// TTL of the leases granted, seconds.
    pub ttl: i64,
    /// Bytes of the value a cycle puts.
    pub value_size: u64,
    /// Repetition number given by `--round`.
    pub round: u32,
    /// Wall time of the measured window, seconds.
    pub elapsed_s: f64,
    /// Keep-alives answered, or cycles completed, in the window.
    pub ops: u64,
    /// `ops` per second.
    pub ops_per_s: f64,
    /// One keep-alive sent → its answer read, or one whole cycle.
    pub latency: LatencySummary,
    /// Each step of the cycles completed (lease-cycle only).
    pub steps: Option<StepLatencies>,
    /// Failed or timed-out operations in the window, and revocations of the run's leases that
    /// failed at its end.
    pub errors: u64,
    /// The servers' summed `VmRSS` before the run connected, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// The highest summed `VmRSS` read (every 100 ms) from then to the end of the window, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU seconds the server processes used during the window.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per operation, microseconds.
    pub server_cpu_us_per_op: Option<f64>,
    /// CPU seconds kvbench used during the window.
    pub client_cpu_s: Option<f64>,
    /// `client_cpu_s` per operation, microseconds.
    pub client_cpu_us_per_op: Option<f64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// The latency of each step of a lease cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLatencies {
    /// LeaseGrant.
    pub grant: LatencySummary,
    /// Put of the key attached to the lease.
    pub put: LatencySummary,
    /// LeaseRevoke.
    pub revoke: LatencySummary,
}

#[cfg(test)]
impl LeaseRecord {
    /// A record of a clean run of `workload` against `system` at 64 clients, for tests to vary.
    pub fn example(system: &str, workload: LeaseWorkload) -> Self {
        let latency = LatencySummary::example();
        let steps = (workload == LeaseWorkload::Cycle).then(|| StepLatencies {
            grant: latency.clone(),
            put: latency.clone(),
            revoke: latency.clone(),
        });
        LeaseRecord {
            system: system.into(),
            workload,
            clients: 64,
            connections: 8,
            target: Target::RoundRobin,
            ttl: 60,
            value_size: 256,
            round: 1,
            elapsed_s: 10.0,
            ops: 100_000,
            ops_per_s: 10_000.0,
            latency,
            steps,
            errors: 0,
            server_rss_before_kib: Some(100 * 1024),
            server_peak_rss_kib: Some(120 * 1024),
            server_cpu_s: Some(5.0),
            server_cpu_us_per_op: Some(50.0),
            client_cpu_s: Some(2.0),
            client_cpu_us_per_op: Some(20.0),
            first_error: None,
        }
    }
}

/// Result of `kvbench load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// The system loaded.
    pub system: String,
    /// Keys written.
    pub keys: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Failed transactions.
    pub errors: u64,
}

/// A machine floor: the best latency any system can reach for a step it cannot skip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorRecord {
    /// What was probed (a directory for fsync, an address for ping).
    pub subject: String,
    /// Samples taken.
    pub samples: u64,
    /// Latency figures.
    pub latency: LatencySummary,
}

/// Result of a restart measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// The system.
    pub system: String,
    /// Keys the member held.
    pub keys: u64,
    /// Milliseconds from starting the process to its first successful serializable get.
    pub ready_ms: f64,
    /// How the member was stopped before the restart (records of older kvbench versions
    /// were all `kill`).
    #[serde(default)]
    pub stopped_by: StopSignal,
}

/// How a member was stopped before a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StopSignal {
    /// SIGKILL: the member recovers from whatever it had synced.
    #[default]
    Kill,
    /// SIGTERM: the member shut down cleanly.
    Term,
}

impl StopSignal {
    /// As the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Kill => "kill -9",
            Self::Term => "SIGTERM",
        }
    }
}

/// Result of `kvbench snapshot-save`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The system.
    pub system: String,
    /// Keys the member held.
    pub keys: u64,
    /// Bytes of the saved file.
    pub bytes: u64,
    /// Seconds from the request to the file synced.
    pub elapsed_s: f64,
    /// The serving member's resident memory before the save, KiB (absent in older records and
    /// without `--server-pids`).
    #[serde(default)]
    pub server_rss_before_kib: Option<u64>,
    /// Its highest resident memory read during the save, KiB.
    #[serde(default)]
    pub server_peak_rss_kib: Option<u64>,
}

/// Result of `kvbench defrag-stall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefragRecord {
    /// The system.
    pub system: String,
    /// Keys the member held.
    pub keys: u64,
    /// Concurrent writers on the member.
    pub writers: u64,
    /// What the writers saw.
    #[serde(flatten)]
    pub stall: DefragStall,
}

/// Size of a member's data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// The system.
    pub system: String,
    /// Keys the member held.
    pub keys: u64,
    /// Bytes allocated on disk (blocks, as `du` counts them).
    pub allocated_bytes: u64,
    /// Sum of file lengths (as `du --apparent-size` counts them).
    pub apparent_bytes: u64,
}

/// Writes `record` as one JSON line on stdout.
pub fn emit(record: &Record) -> Result<(), BenchError> {
    println!("{}", serde_json::to_string(record)?);
    Ok(())
}

/// Reads every record of a results file; blank lines are skipped.
pub fn read_all(reader: impl BufRead) -> Result<Vec<Record>, BenchError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|source| BenchError::Parse { line: i + 1, source })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_lines() {
        let records = vec![
            Record::Restart(RestartRecord {
                system: "etcd".into(),
                keys: 10,
                ready_ms: 12.5,
                stopped_by: StopSignal::Term,
            }),
            Record::Watch(WatchRecord::example("raftkv", WatchWorkload::WatchFanout)),
            Record::Lease(LeaseRecord::example("etcd", LeaseWorkload::Cycle)),
            Record::Lease(LeaseRecord::example("raftkv", LeaseWorkload::Keepalive)),
            Record::Fsync(FloorRecord {
                subject: "/tmp".into(),
                samples: 3,
                latency: LatencySummary::default(),
            }),
        ];
        let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n\n").collect();
        assert!(text.starts_with("{\"kind\":\"restart\""), "{text}");
        assert!(
            text.contains("{\"kind\":\"watch\",\"system\":\"raftkv\",\"workload\":\"watch-fanout\""),
            "{text}"
        );
        assert!(text.contains("\"watch_on\":\"all\""), "{text}");
        assert!(
            text.contains("{\"kind\":\"lease\",\"system\":\"etcd\",\"workload\":\"lease-cycle\""),
            "{text}"
        );
        assert!(text.contains("\"steps\":{\"grant\":{\"p50_ms\":1.0"), "{text}");
        assert!(text.contains("\"workload\":\"lease-keepalive\",\"clients\":64"), "{text}");
        assert_eq!(read_all(text.as_bytes()).unwrap(), records);
    }

    #[test]
    fn run_records_of_older_versions_still_read() {
        // A run record as kvbench wrote it before CPU time was recorded.
        let old = r#"{"kind":"run","system":"etcd","workload":"put","clients":1,"connections":1,"target":"leader","key_space":10,"value_size":1,"range_len":1,"round":1,"seed":1,"elapsed_s":1.0,"ops":5,"errors":0,"conflicts":0,"throughput":5.0,"latency":{"p50_ms":1.0,"p99_ms":1.0,"p999_ms":1.0,"mean_ms":1.0,"max_ms":1.0},"server_peak_rss_kib":null,"first_error":null}"#;
        let records = read_all(old.as_bytes()).unwrap();
        let [Record::Run(run)] = records.as_slice() else { panic!("{records:?}") };
        assert_eq!((run.target, run.server_cpu_us_per_op, run.client_cpu_s), (Target::Leader, None, None));
        assert_eq!(run.key_order, KeyOrder::Random);
        assert!(run.latency.distribution.is_empty(), "{:?}", run.latency);
    }

    #[test]
    fn maintenance_records_round_trip_and_old_restarts_were_kills() {
        let records = vec![
            Record::SnapshotSave(SnapshotRecord {
                system: "raftkv".into(),
                keys: 7,
                bytes: 4096,
                elapsed_s: 0.5,
                server_rss_before_kib: Some(100 * 1024),
                server_peak_rss_kib: Some(120 * 1024),
            }),
            Record::Defrag(DefragRecord {
                system: "etcd".into(),
                keys: 7,
                writers: 4,
                stall: DefragStall {
                    defrag_ms: 900.0,
                    db_size_before: 1 << 30,
                    db_size_after: 1 << 29,
                    member: WritersSeen {
                        puts_per_s_before: 1000.0,
                        puts_per_s_during: 10.0,
                        during: LatencySummary { max_ms: 880.0, ..LatencySummary::default() },
                        ..WritersSeen::default()
                    },
                    others: Some(WritersSeen { errors: 2, ..WritersSeen::default() }),
                },
            }),
        ];
        let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        assert!(text.starts_with("{\"kind\":\"snapshot-save\""), "{text}");
        assert!(text.contains("{\"kind\":\"defrag\""), "{text}");
        assert_eq!(read_all(text.as_bytes()).unwrap(), records);
        let old = r#"{"kind":"restart","system":"etcd","keys":1,"ready_ms":3.0}"#;
        let read = read_all(old.as_bytes()).unwrap();
        let [Record::Restart(r)] = read.as_slice() else { panic!("{read:?}") };
        assert_eq!(r.stopped_by, StopSignal::Kill);
    }

    #[test]
    fn garbage_names_its_line() {
        let err = read_all("\n{\"kind\":\"nope\"}\n".as_bytes()).unwrap_err();
        assert!(matches!(err, BenchError::Parse { line: 2, .. }), "{err}");
    }
}
