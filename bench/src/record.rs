//! The JSON lines kvbench prints with `--json`, one record per line, and the report reads.
//!
//! Each subcommand that measures something emits one record; `scripts/bench.sh` appends them
//! to a results file and `kvbench report` turns that file into the markdown tables. The `kind`
//! field tells records apart, so one file holds a whole benchmark session.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::conn::Target;
use crate::error::BenchError;
use crate::stats::LatencySummary;
use crate::workload::Workload;

/// Any record in a results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    /// One workload run against one system.
    Run(RunRecord),
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
            Record::Restart(RestartRecord { system: "etcd".into(), keys: 10, ready_ms: 12.5 }),
            Record::Fsync(FloorRecord {
                subject: "/tmp".into(),
                samples: 3,
                latency: LatencySummary::default(),
            }),
        ];
        let text: String = records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n\n").collect();
        assert!(text.starts_with("{\"kind\":\"restart\""), "{text}");
        assert_eq!(read_all(text.as_bytes()).unwrap(), records);
    }

    #[test]
    fn run_records_of_older_versions_still_read() {
        // A run record as kvbench wrote it before CPU time was recorded.
        let old = r#"{"kind":"run","system":"etcd","workload":"put","clients":1,"connections":1,"target":"leader","key_space":10,"value_size":1,"range_len":1,"round":1,"seed":1,"elapsed_s":1.0,"ops":5,"errors":0,"conflicts":0,"throughput":5.0,"latency":{"p50_ms":1.0,"p99_ms":1.0,"p999_ms":1.0,"mean_ms":1.0,"max_ms":1.0},"server_peak_rss_kib":null,"first_error":null}"#;
        let records = read_all(old.as_bytes()).unwrap();
        let [Record::Run(run)] = records.as_slice() else { panic!("{records:?}") };
        assert_eq!((run.target, run.server_cpu_us_per_op, run.client_cpu_s), (Target::Leader, None, None));
    }

    #[test]
    fn garbage_names_its_line() {
        let err = read_all("\n{\"kind\":\"nope\"}\n".as_bytes()).unwrap_err();
        assert!(matches!(err, BenchError::Parse { line: 2, .. }), "{err}");
    }
}
