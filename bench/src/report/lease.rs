//! The lease runs' table, and the lease targets against it.

use std::fmt::Write;

use super::{
    Memory, Pair, Systems, Targets, first_seen, median_by, median_of_known, micros, ms, ratio, ratio_of,
    ratio_or_pending, verdict,
};
use crate::conn::Target;
use crate::lease::LeaseWorkload;
use crate::record::{LeaseRecord, Record, StepLatencies};
use crate::stats::LatencySummary;

/// The throughput target for keep-alives and cycles: raftkv over etcd.
const THROUGHPUT_TARGET: f64 = 1.5;

/// A lease run's shape: rows are grouped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseShape {
    workload: LeaseWorkload,
    clients: u64,
    connections: u64,
    target: Target,
    ttl: i64,
}

impl LeaseShape {
    fn of(r: &LeaseRecord) -> Self {
        Self {
            workload: r.workload,
            clients: r.clients,
            connections: r.connections,
            target: r.target,
            ttl: r.ttl,
        }
    }

    /// `system`'s runs of this shape, folded.
    fn folded(&self, runs: &[&LeaseRecord], system: &str) -> Option<LeaseFolded> {
        fold(&runs.iter().copied().filter(|r| Self::of(r) == *self && r.system == system).collect::<Vec<_>>())
    }

    /// The run's name as `scripts/bench.sh --only` takes it: the workload, with `@leader` when
    /// every request went to the leader (the lease runs spread over every member otherwise).
    fn name(&self) -> String {
        match self.target {
            Target::Leader => format!("{}@leader", self.workload.name()),
            Target::All | Target::RoundRobin => self.workload.name().to_string(),
        }
    }
}

/// One system's folded figures for one lease shape.
#[derive(Debug, Clone, Copy)]
struct LeaseFolded {
    rounds: usize,
    ops_per_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// Per step of a cycle (grant, put, revoke): the medians of p50 and p99 over the rounds.
    steps: Option<[(f64, f64); 3]>,
    errors: u64,
    memory: Memory,
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
}

fn fold(runs: &[&LeaseRecord]) -> Option<LeaseFolded> {
    if runs.is_empty() {
        return None;
    }
    let med = |f: fn(&LeaseRecord) -> f64| median_by(runs, f);
    let with_steps: Vec<&StepLatencies> = runs.iter().filter_map(|r| r.steps.as_ref()).collect();
    let steps = (!with_steps.is_empty()).then(|| {
        let step = |pick: fn(&StepLatencies) -> &LatencySummary| {
            (median_by(&with_steps, |s| pick(s).p50_ms), median_by(&with_steps, |s| pick(s).p99_ms))
        };
        [step(|s| &s.grant), step(|s| &s.put), step(|s| &s.revoke)]
    });
    Some(LeaseFolded {
        rounds: runs.len(),
        ops_per_s: med(|r| r.ops_per_s),
        p50: med(|r| r.latency.p50_ms),
        p99: med(|r| r.latency.p99_ms),
        p999: med(|r| r.latency.p999_ms),
        steps,
        errors: runs.iter().map(|r| r.errors).sum(),
        memory: Memory::fold(runs, |r| (r.server_rss_before_kib, r.server_peak_rss_kib)),
        server_cpu_us: median_of_known(runs.iter().map(|r| r.server_cpu_us_per_op)),
        client_cpu_us: median_of_known(runs.iter().map(|r| r.client_cpu_us_per_op)),
    })
}

/// The lease runs: one row per shape and system, then the targets against the ratios.
pub(super) fn section(out: &mut String, records: &[Record], systems: &Systems) {
    let runs: Vec<&LeaseRecord> =
        records.iter().filter_map(|r| if let Record::Lease(l) = r { Some(l) } else { None }).collect();
    if runs.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "Lease: an operation is one keep-alive sent and answered (`lease-keepalive`: over a stream each client \
         keeps open; `lease-keepalive-once`: a new stream per keep-alive, as etcd's benchmark tool) or one \
         grant → put of a key attached → revoke cycle (`lease-cycle`, each step's p50/p99 shown); one \
         operation in flight per client; RSS the servers' summed VmRSS before the run → its peak during it.\n"
    );
    let _ = writeln!(
        out,
        "| workload | clients/conns | target | TTL s | system | rounds | ops/s | p50 ms | p99 ms | p99.9 ms | \
         grant p50/p99 ms | put p50/p99 ms | revoke p50/p99 ms | errors | servers' RSS MiB before → peak | \
         servers' CPU µs/op | client CPU µs/op | {c}/{b} ops/s | {c}/{b} p99 | {c}/{b} peak RSS |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(20));
    let shapes = first_seen(&runs, |r| LeaseShape::of(r));
    for shape in &shapes {
        let (base, cand) = (shape.folded(&runs, b), shape.folded(&runs, c));
        let lead = format!(
            "| {} | {}/{} | {} | {} ",
            shape.name(),
            shape.clients,
            shape.connections,
            shape.target.name(),
            shape.ttl
        );
        let cells = |f: &LeaseFolded| {
            let steps = match f.steps {
                Some(steps) => steps.map(|(p50, p99)| format!("{} / {}", ms(p50), ms(p99))).join(" | "),
                None => "– | – | –".to_string(),
            };
            format!(
                "| {} | {:.0} | {} | {} | {} | {steps} | {} | {} | {} | {} ",
                f.rounds,
                f.ops_per_s,
                ms(f.p50),
                ms(f.p99),
                ms(f.p999),
                f.errors,
                f.memory.cell(),
                micros(f.server_cpu_us),
                micros(f.client_cpu_us),
            )
        };
        let pending = format!("| 0 {}| – | – → – | pending | pending ", "| pending ".repeat(7));
        let ratios = |f: &LeaseFolded, base: &LeaseFolded| {
            vec![
                ratio(f.ops_per_s, base.ops_per_s),
                ratio(f.p99, base.p99),
                ratio_or_pending(f.memory.peak(), base.memory.peak()),
            ]
        };
        let pair = Pair { systems, base: base.as_ref(), cand: cand.as_ref() };
        pair.write_rows(out, &lead, cells, &pending, 3, ratios);
    }
    out.push('\n');
    lease_targets(out, &runs, &shapes, systems);
}

/// The lease targets — keep-alives/s and cycles/s ≥ 1.5× etcd's, the servers' memory no
/// more than etcd's — each against the candidate/baseline ratio of every run it is about.
fn lease_targets(out: &mut String, runs: &[&LeaseRecord], shapes: &[LeaseShape], systems: &Systems) {
    let b = &systems.baseline;
    let mut table = Targets::start(out, "Lease targets", systems);
    for shape in shapes {
        let (base, cand) = (shape.folded(runs, b), shape.folded(runs, &systems.candidate));
        let of = |figure: fn(&LeaseFolded) -> Option<f64>| ratio_of(cand.as_ref(), base.as_ref(), figure);
        let run = format!("{} {}/{}", shape.name(), shape.clients, shape.connections);
        let ops = of(|f| Some(f.ops_per_s));
        let what = format!("{}/s ≥ {THROUGHPUT_TARGET}× {b}'s", shape.workload.ops());
        table.row(&what, &run, ops, &verdict(ops, |r| r >= THROUGHPUT_TARGET));
        let rss = of(|f| f.memory.peak());
        table.row(&format!("servers' peak RSS ≤ {b}'s"), &run, rss, &verdict(rss, |r| r <= 1.0));
    }
    table.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render;
    use crate::report::tests::systems;

    fn lease(system: &str, workload: LeaseWorkload, target: Target, ops_per_s: f64, rss_mib: u64) -> Record {
        let mut r = LeaseRecord::example(system, workload);
        r.target = target;
        r.ops_per_s = ops_per_s;
        r.server_peak_rss_kib = Some(rss_mib * 1024);
        Record::Lease(r)
    }

    #[test]
    fn lease_runs_have_rows_ratios_and_targets() {
        let records = vec![
            lease("etcd", LeaseWorkload::Keepalive, Target::RoundRobin, 10_000.0, 200),
            lease("raftkv", LeaseWorkload::Keepalive, Target::RoundRobin, 16_000.0, 150),
            lease("etcd", LeaseWorkload::Cycle, Target::RoundRobin, 1_000.0, 200),
            lease("raftkv", LeaseWorkload::Cycle, Target::RoundRobin, 1_200.0, 250),
            lease("etcd", LeaseWorkload::Keepalive, Target::Leader, 12_000.0, 200),
        ];
        let text = render(&records, &systems());
        let row =
            |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{text}"));
        let etcd = row("| lease-keepalive | 64/8 | round-robin | 60 | etcd |");
        assert!(
            etcd.ends_with(
                "| 1 | 10000 | 1.000 | 2.000 | 3.000 | – | – | – | 0 | 100 → 200 | 50 | 20 | | | |"
            ),
            "{etcd}"
        );
        let raftkv = row("| lease-keepalive | 64/8 | round-robin | 60 | raftkv |");
        assert!(raftkv.ends_with("| 1.60 | 1.00 | 0.75 |"), "{raftkv}");
        let cycle = row("| lease-cycle | 64/8 | round-robin | 60 | raftkv |");
        assert!(cycle.contains("| 1.000 / 2.000 | 1.000 / 2.000 | 1.000 / 2.000 | 0 |"), "{cycle}");
        assert!(cycle.ends_with("| 1.20 | 1.00 | 1.25 |"), "{cycle}");
        let leader = row("| lease-keepalive@leader | 64/8 | leader | 60 | raftkv |");
        assert!(
            leader.ends_with("| – | – → – | pending | pending | pending | pending | pending |"),
            "{leader}"
        );
        assert_eq!(leader.matches('|').count(), 21, "20 columns: {leader}");

        let targets = text.split("Lease targets:").nth(1).unwrap();
        for expected in [
            "| keep-alives/s ≥ 1.5× etcd's | lease-keepalive 64/8 | 1.60 | met |",
            "| servers' peak RSS ≤ etcd's | lease-keepalive 64/8 | 0.75 | met |",
            "| cycles/s ≥ 1.5× etcd's | lease-cycle 64/8 | 1.20 | **not met** |",
            "| servers' peak RSS ≤ etcd's | lease-cycle 64/8 | 1.25 | **not met** |",
            "| keep-alives/s ≥ 1.5× etcd's | lease-keepalive@leader 64/8 | pending | pending |",
        ] {
            assert!(targets.contains(expected), "{expected} in {targets}");
        }
        // Lease records are neither workload runs nor watch runs.
        assert!(!text.contains("| workload | clients/conns | target | system |"), "{text}");
        assert!(!text.contains("Watch"), "{text}");
    }

    #[test]
    fn rounds_fold_by_median_steps_included() {
        let mut rounds = Vec::new();
        for (round, p99) in [(1, 2.0), (2, 6.0), (3, 4.0)] {
            let mut r = LeaseRecord::example("etcd", LeaseWorkload::Cycle);
            r.round = round;
            if let Some(steps) = r.steps.as_mut() {
                steps.put.p99_ms = p99;
            }
            rounds.push(r);
        }
        let refs: Vec<&LeaseRecord> = rounds.iter().collect();
        let folded = fold(&refs).unwrap();
        assert_eq!(folded.rounds, 3);
        assert_eq!(folded.steps.map(|s| s[1]), Some((1.0, 4.0)), "put p50 and the median p99");
        assert!(fold(&[]).is_none());
    }
}
