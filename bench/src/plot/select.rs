//! Which run records become which line of a plot, and the figure each point shows.
//!
//! A line ([`Series`]) is one system's runs of one workload with one target and one key order:
//! `etcd put@all` and `etcd put-seq@all` are two lines, as they are two rows of the report. A
//! point folds the rounds of one client count by their median, as the report does, so a plot
//! and the table beside it show the same figures. If a file holds runs of one line at one
//! client count with different connection counts, the point uses the connection count that
//! appears first and leaves the others out: two figures at one x would not be one curve.

use std::cmp::Ordering;

use crate::conn::Target;
use crate::keys::KeyOrder;
use crate::record::RunRecord;
use crate::report::{self, Systems, median};
use crate::workload::Workload;

/// What tells the lines of one workload's plot apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesKey {
    /// The system, as the runs' `--label` named it.
    pub system: String,
    /// The members the clients talked to.
    pub target: Target,
    /// The order of the puts' keys.
    pub key_order: KeyOrder,
}

impl SeriesKey {
    fn of(run: &RunRecord) -> Self {
        Self { system: run.system.clone(), target: run.target, key_order: run.key_order }
    }

    /// The legend's name of the line: the system and the run's name in `scripts/bench.sh`
    /// (and the report), with the target spelt out (`etcd put-seq@all (round-robin)`).
    pub fn label(&self, workload: Workload) -> String {
        let run = report::run_name(workload, self.key_order, self.target);
        format!("{} {run} ({})", self.system, self.target.name())
    }
}

/// One line of a plot: its key and its points, in increasing x.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Whose runs these are.
    pub key: SeriesKey,
    /// The position of `key.system` among the systems of the file: the baseline 0, the
    /// candidate 1, any other system after them in the order it first appears. The drawing
    /// gives each position its own colour family.
    pub system_rank: usize,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

/// The workloads of `runs`, each once, in the order each first appears.
pub fn workloads(runs: &[&RunRecord]) -> Vec<Workload> {
    let mut seen = Vec::new();
    for run in runs {
        if !seen.contains(&run.workload) {
            seen.push(run.workload);
        }
    }
    seen
}

/// Throughput (ops/s, the median of the rounds) against clients, one series per line of
/// `workload`'s runs.
pub fn throughput(runs: &[&RunRecord], workload: Workload, systems: &Systems) -> Vec<Series> {
    lines(runs, workload, systems)
        .into_iter()
        .map(|(key, runs)| {
            let points = client_counts(&runs)
                .into_iter()
                .map(|clients| {
                    let rounds = at_clients(&runs, clients);
                    (clients as f64, median(rounds.iter().map(|r| r.throughput).collect()))
                })
                .collect();
            (key, points)
        })
        .map(|(key, points)| series(key, points, systems, runs))
        .collect()
}

/// The latency distribution of `workload`'s runs at `clients` clients: (percentile, ms) for
/// every percentile from 50 up to, not including, 100 (the slowest sample has no place on a
/// scale of nines), each the median of the rounds' figures at that percentile. Lines without
/// a run at `clients`, or without a latency figure, are left out.
pub fn latency(runs: &[&RunRecord], workload: Workload, clients: u64, systems: &Systems) -> Vec<Series> {
    lines(runs, workload, systems)
        .into_iter()
        .filter_map(|(key, runs)| {
            let rounds = at_clients(&runs, clients);
            let distributions: Vec<_> = rounds.iter().map(|r| r.latency.points()).collect();
            let percentiles: Vec<f64> = distributions
                .first()?
                .iter()
                .map(|p| p.percentile)
                .filter(|p| (50.0..100.0).contains(p))
                .collect();
            let points: Vec<(f64, f64)> = percentiles
                .into_iter()
                .map(|percentile| {
                    let at: Vec<f64> = distributions
                        .iter()
                        .filter_map(|d| d.iter().find(|p| p.percentile == percentile).map(|p| p.ms))
                        .collect();
                    (percentile, median(at))
                })
                .filter(|&(_, ms)| ms > 0.0)
                .collect();
            (!points.is_empty()).then_some((key, points))
        })
        .map(|(key, points)| series(key, points, systems, runs))
        .collect()
}

fn series(key: SeriesKey, points: Vec<(f64, f64)>, systems: &Systems, runs: &[&RunRecord]) -> Series {
    let system_rank = system_rank(&key.system, systems, runs);
    Series { key, system_rank, points }
}

/// `workload`'s runs split into lines, ordered by system (baseline, candidate, others), then
/// key order (random first), then target (leader, all, round-robin).
fn lines<'a>(
    runs: &[&'a RunRecord],
    workload: Workload,
    systems: &Systems,
) -> Vec<(SeriesKey, Vec<&'a RunRecord>)> {
    let mut lines: Vec<(SeriesKey, Vec<&RunRecord>)> = Vec::new();
    for run in runs.iter().copied().filter(|r| r.workload == workload) {
        let key = SeriesKey::of(run);
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, line)) => line.push(run),
            None => lines.push((key, vec![run])),
        }
    }
    lines.sort_by(|(a, _), (b, _)| line_order(a, b, systems, runs));
    lines
}

fn line_order(a: &SeriesKey, b: &SeriesKey, systems: &Systems, runs: &[&RunRecord]) -> Ordering {
    let target_rank = |t: Target| match t {
        Target::Leader => 0,
        Target::All => 1,
        Target::RoundRobin => 2,
    };
    system_rank(&a.system, systems, runs)
        .cmp(&system_rank(&b.system, systems, runs))
        .then(a.key_order.cmp(&b.key_order))
        .then(target_rank(a.target).cmp(&target_rank(b.target)))
}

/// The baseline 0, the candidate 1, every other system of `runs` 2, 3, ... in the order it
/// first appears.
fn system_rank(system: &str, systems: &Systems, runs: &[&RunRecord]) -> usize {
    if system == systems.baseline {
        return 0;
    }
    if system == systems.candidate {
        return 1;
    }
    let mut others: Vec<&str> = Vec::new();
    for run in runs {
        let s = run.system.as_str();
        if s != systems.baseline && s != systems.candidate && !others.contains(&s) {
            others.push(s);
        }
    }
    2 + others.iter().position(|s| *s == system).unwrap_or(others.len())
}

/// The client counts of `runs`, increasing, each once.
fn client_counts(runs: &[&RunRecord]) -> Vec<u64> {
    let mut counts: Vec<u64> = runs.iter().map(|r| r.clients).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// The rounds of `runs` at `clients` clients, with the connection count that appears first
/// for that client count.
fn at_clients<'a>(runs: &[&'a RunRecord], clients: u64) -> Vec<&'a RunRecord> {
    let Some(connections) = runs.iter().find(|r| r.clients == clients).map(|r| r.connections) else {
        return Vec::new();
    };
    runs.iter().copied().filter(|r| r.clients == clients && r.connections == connections).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::stats::{LatencySummary, PercentilePoint};

    /// A put run of `system` against `target` at `clients` clients, `throughput` ops/s, with
    /// a distribution whose every point is `ms_scale` × its percentile (so rounds tell apart).
    pub fn put(
        system: &str,
        target: Target,
        key_order: KeyOrder,
        clients: u64,
        round: u32,
        throughput: f64,
        ms_scale: f64,
    ) -> RunRecord {
        let distribution = [10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
            .into_iter()
            .map(|percentile| PercentilePoint { percentile, ms: percentile * ms_scale })
            .collect();
        RunRecord {
            system: system.into(),
            workload: Workload::Put,
            clients,
            connections: clients.div_ceil(8),
            target,
            key_space: 1000,
            key_order,
            value_size: 256,
            range_len: 1,
            round,
            seed: 1,
            elapsed_s: 1.0,
            ops: throughput as u64,
            errors: 0,
            conflicts: 0,
            throughput,
            latency: LatencySummary {
                p50_ms: 50.0 * ms_scale,
                p99_ms: 99.0 * ms_scale,
                p999_ms: 99.9 * ms_scale,
                mean_ms: 50.0 * ms_scale,
                max_ms: 100.0 * ms_scale,
                distribution,
            },
            server_peak_rss_kib: None,
            server_cpu_s: None,
            server_cpu_us_per_op: None,
            client_cpu_s: None,
            client_cpu_us_per_op: None,
            first_error: None,
        }
    }

    pub fn systems() -> Systems {
        Systems { baseline: "etcd".into(), candidate: "raftkv".into() }
    }

    fn labels(series: &[Series]) -> Vec<String> {
        series.iter().map(|s| s.key.label(Workload::Put)).collect()
    }

    #[test]
    fn each_system_target_and_key_order_is_a_line_in_a_fixed_order() {
        use KeyOrder::{Random, Sequential};
        use Target::{Leader, RoundRobin};
        let records = [
            put("raftkv", Leader, Random, 1, 1, 100.0, 0.01),
            put("etcd", RoundRobin, Sequential, 1, 1, 100.0, 0.01),
            put("etcd", Leader, Sequential, 1, 1, 100.0, 0.01),
            put("other", Leader, Random, 1, 1, 100.0, 0.01),
            put("etcd", RoundRobin, Random, 1, 1, 100.0, 0.01),
            put("etcd", Leader, Random, 1, 1, 100.0, 0.01),
            RunRecord { workload: Workload::GetSerial, ..put("etcd", Leader, Random, 1, 1, 9.0, 0.01) },
        ];
        let runs: Vec<&RunRecord> = records.iter().collect();
        let series = throughput(&runs, Workload::Put, &systems());
        assert_eq!(
            labels(&series),
            [
                "etcd put (leader)",
                "etcd put@all (round-robin)",
                "etcd put-seq (leader)",
                "etcd put-seq@all (round-robin)",
                "raftkv put (leader)",
                "other put (leader)",
            ]
        );
        assert_eq!(series.iter().map(|s| s.system_rank).collect::<Vec<_>>(), [0, 0, 0, 0, 1, 2]);
        assert_eq!(workloads(&runs), [Workload::Put, Workload::GetSerial]);
        let reads = throughput(&runs, Workload::GetSerial, &systems());
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].points, [(1.0, 9.0)]);
    }

    #[test]
    fn throughput_points_are_medians_of_rounds_in_increasing_clients() {
        use KeyOrder::Random;
        use Target::Leader;
        let records = [
            put("etcd", Leader, Random, 64, 1, 300.0, 0.01),
            put("etcd", Leader, Random, 1, 1, 10.0, 0.01),
            put("etcd", Leader, Random, 64, 2, 100.0, 0.01),
            put("etcd", Leader, Random, 64, 3, 200.0, 0.01),
            put("etcd", Leader, Random, 1, 2, 30.0, 0.01),
            // Same clients, other connections: left out, the first-seen 64/8 stands.
            RunRecord { connections: 64, ..put("etcd", Leader, Random, 64, 4, 9999.0, 0.01) },
        ];
        let runs: Vec<&RunRecord> = records.iter().collect();
        let series = throughput(&runs, Workload::Put, &systems());
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].points, [(1.0, 20.0), (64.0, 200.0)]);
    }

    #[test]
    fn latency_takes_the_chosen_clients_from_p50_below_max_by_median() {
        use KeyOrder::{Random, Sequential};
        use Target::Leader;
        let records = [
            put("etcd", Leader, Random, 64, 1, 1.0, 0.01),
            put("etcd", Leader, Random, 64, 2, 1.0, 0.03),
            put("etcd", Leader, Random, 16, 1, 1.0, 5.0),
            put("raftkv", Leader, Sequential, 16, 1, 1.0, 5.0),
        ];
        let runs: Vec<&RunRecord> = records.iter().collect();
        let series = latency(&runs, Workload::Put, 64, &systems());
        assert_eq!(labels(&series), ["etcd put (leader)"], "raftkv has no run at 64 clients");
        let expected: Vec<(f64, f64)> =
            [50.0, 90.0, 99.0, 99.9, 99.99].iter().map(|&p| (p, p * 0.02)).collect();
        let got = &series[0].points;
        assert_eq!(got.len(), expected.len());
        for ((p, ms), (want_p, want_ms)) in got.iter().zip(&expected) {
            assert_eq!(p, want_p);
            assert!((ms - want_ms).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn latency_of_older_records_uses_the_percentiles_they_kept() {
        let mut old = put("etcd", Target::Leader, KeyOrder::Random, 64, 1, 1.0, 0.01);
        old.latency.distribution.clear();
        let runs = [&old];
        let series = latency(&runs, Workload::Put, 64, &systems());
        let percentiles: Vec<f64> = series[0].points.iter().map(|p| p.0).collect();
        assert_eq!(percentiles, [50.0, 99.0, 99.9]);
        let mut empty = old.clone();
        empty.latency = LatencySummary::default();
        assert!(latency(&[&empty], Workload::Put, 64, &systems()).is_empty());
    }
}
