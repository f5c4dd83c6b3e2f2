//! The watch runs' table, and the watch targets against it.

use std::fmt::Write;

use super::{
    Memory, Pair, Systems, Targets, first_seen, median_by, median_of_known, micros, ms, ratio, ratio_of,
    ratio_or_pending, verdict,
};
use crate::record::{Record, WatchRecord};
use crate::watch::{Placement, WatchWorkload};

/// The fan-out target: events delivered per second, raftkv over etcd.
const FANOUT_TARGET: f64 = 1.5;
/// A system that delivered this share of the offered events kept up with the writer.
const KEPT_UP: f64 = 0.99;

/// A watch run's shape: rows are grouped by it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WatchShape {
    workload: WatchWorkload,
    watchers: u64,
    streams: u64,
    watch_on: Placement,
    rate: f64,
}

impl WatchShape {
    fn of(r: &WatchRecord) -> Self {
        Self {
            workload: r.workload,
            watchers: r.watchers,
            streams: r.streams,
            watch_on: r.watch_on,
            rate: r.rate,
        }
    }

    /// `system`'s runs of this shape, folded.
    fn folded(&self, runs: &[&WatchRecord], system: &str) -> Option<WatchFolded> {
        fold_watch(
            &runs
                .iter()
                .copied()
                .filter(|r| WatchShape::of(r) == *self && r.system == system)
                .collect::<Vec<_>>(),
        )
    }

    /// How the targets table names the run.
    fn name(&self) -> String {
        format!("{} {}/{} at {} puts/s", self.workload.name(), self.watchers, self.streams, self.rate)
    }
}

/// One system's folded figures for one watch shape.
#[derive(Debug, Clone, Copy)]
struct WatchFolded {
    rounds: usize,
    puts_per_s: f64,
    events_per_s: f64,
    delivered: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    missing: u64,
    duplicates: u64,
    errors: u64,
    memory: Memory,
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
}

fn fold_watch(runs: &[&WatchRecord]) -> Option<WatchFolded> {
    if runs.is_empty() {
        return None;
    }
    let med = |f: fn(&WatchRecord) -> f64| median_by(runs, f);
    Some(WatchFolded {
        rounds: runs.len(),
        puts_per_s: med(|r| r.puts_per_s),
        events_per_s: med(|r| r.events_per_s),
        delivered: med(WatchRecord::delivered_share),
        p50: med(|r| r.latency.p50_ms),
        p99: med(|r| r.latency.p99_ms),
        p999: med(|r| r.latency.p999_ms),
        missing: runs.iter().map(|r| r.missing).sum(),
        duplicates: runs.iter().map(|r| r.duplicates).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        memory: Memory::fold(runs, |r| (r.server_rss_before_kib, r.server_peak_rss_kib)),
        server_cpu_us: median_of_known(runs.iter().map(|r| r.server_cpu_us_per_event)),
        client_cpu_us: median_of_known(runs.iter().map(|r| r.client_cpu_us_per_event)),
    })
}

/// The watch runs: one row per shape and system, then the targets against the ratios.
pub(super) fn section(out: &mut String, records: &[Record], systems: &Systems) {
    let runs: Vec<&WatchRecord> =
        records.iter().filter_map(|r| if let Record::Watch(w) = r { Some(w) } else { None }).collect();
    if runs.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "Watch: puts to the leader at a fixed rate; event latency from the put leaving the writer to the event \
         reaching a watcher; events/s received over all watchers in the window, *delivered* their share of \
         watchers × puts/s; RSS the servers' summed VmRSS before the watchers were created → its peak during \
         the run; CPU per event received.\n"
    );
    let _ = writeln!(
        out,
        "| workload | watchers/streams | watchers on | puts/s asked | system | rounds | puts/s | events/s | \
         delivered | event p50 ms | event p99 ms | event p99.9 ms | missing | duplicates | errors | \
         servers' RSS MiB before → peak | servers' CPU µs/event | client CPU µs/event | \
         {c}/{b} events/s | {c}/{b} event p99 | {c}/{b} peak RSS |"
    );
    let _ = writeln!(out, "|{}", "---|".repeat(21));
    let shapes = first_seen(&runs, |r| WatchShape::of(r));
    for shape in &shapes {
        let (base, cand) = (shape.folded(&runs, b), shape.folded(&runs, c));
        let lead = format!(
            "| {} | {}/{} | {} | {} ",
            shape.workload.name(),
            shape.watchers,
            shape.streams,
            shape.watch_on.name(),
            shape.rate
        );
        let cells = |f: &WatchFolded| {
            format!(
                "| {} | {:.0} | {:.0} | {:.1} % | {} | {} | {} | {} | {} | {} | {} | {} | {} ",
                f.rounds,
                f.puts_per_s,
                f.events_per_s,
                100.0 * f.delivered,
                ms(f.p50),
                ms(f.p99),
                ms(f.p999),
                f.missing,
                f.duplicates,
                f.errors,
                f.memory.cell(),
                micros(f.server_cpu_us),
                micros(f.client_cpu_us),
            )
        };
        let pending = format!("| 0 {}| – | – | – | – → – | pending | pending ", "| pending ".repeat(6));
        let ratios = |f: &WatchFolded, base: &WatchFolded| {
            vec![
                ratio(f.events_per_s, base.events_per_s),
                ratio(f.p99, base.p99),
                ratio_or_pending(f.memory.peak(), base.memory.peak()),
            ]
        };
        let pair = Pair { systems, base: base.as_ref(), cand: cand.as_ref() };
        pair.write_rows(out, &lead, cells, &pending, 3, ratios);
    }
    out.push('\n');
    watch_targets(out, &runs, &shapes, systems);
}

/// The watch targets, each against the candidate/baseline ratio of the runs it is about.
fn watch_targets(out: &mut String, runs: &[&WatchRecord], shapes: &[WatchShape], systems: &Systems) {
    let b = &systems.baseline;
    let mut table = Targets::start(out, "Watch targets", systems);
    for shape in shapes {
        let (base, cand) = (shape.folded(runs, b), shape.folded(runs, &systems.candidate));
        let of = |figure: fn(&WatchFolded) -> Option<f64>| ratio_of(cand.as_ref(), base.as_ref(), figure);
        let run = shape.name();
        match shape.workload {
            WatchWorkload::WatchLatency => {
                let p99 = of(|f| Some(f.p99));
                table.row(&format!("event latency p99 ≤ {b}'s"), &run, p99, &verdict(p99, |r| r <= 1.0));
            }
            WatchWorkload::WatchFanout => {
                let events = of(|f| Some(f.events_per_s));
                let both_kept_up = [&base, &cand].iter().all(|f| f.is_some_and(|f| f.delivered >= KEPT_UP));
                let events_verdict = if both_kept_up {
                    format!(
                        "inconclusive: both delivered ≥ {:.0} % of the offered events; raise the put rate",
                        100.0 * KEPT_UP
                    )
                } else {
                    verdict(events, |r| r >= FANOUT_TARGET)
                };
                table.row(
                    &format!("events delivered/s ≥ {FANOUT_TARGET}× {b}'s"),
                    &run,
                    events,
                    &events_verdict,
                );
                let rss = of(|f| f.memory.peak());
                table.row(&format!("servers' peak RSS ≤ {b}'s"), &run, rss, &verdict(rss, |r| r <= 1.0));
            }
        }
    }
    table.end();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render;
    use crate::report::tests::systems;

    fn watch(system: &str, workload: WatchWorkload, events_per_s: f64, p99: f64, rss_mib: u64) -> Record {
        let mut r = WatchRecord::example(system, workload);
        r.events_per_s = events_per_s;
        r.latency.p99_ms = p99;
        r.server_peak_rss_kib = Some(rss_mib * 1024);
        Record::Watch(r)
    }

    #[test]
    fn watch_runs_have_rows_ratios_and_targets() {
        let records = vec![
            watch("etcd", WatchWorkload::WatchLatency, 200.0, 2.0, 500),
            watch("raftkv", WatchWorkload::WatchLatency, 200.0, 1.5, 300),
            watch("etcd", WatchWorkload::WatchFanout, 150_000.0, 40.0, 600),
            watch("raftkv", WatchWorkload::WatchFanout, 200_000.0, 20.0, 400),
        ];
        let text = render(&records, &systems());
        let row =
            |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{text}"));
        let etcd = row("| watch-fanout | 1000/30 | all | 200 | etcd |");
        assert!(etcd.contains("| 1 | 200 | 150000 | 75.0 % | 1.000 | 40.000 | 3.000 | 0 | 0 | 0 | 100 → 600 | 10 | 5 | | | |"), "{etcd}");
        let raftkv = row("| watch-fanout | 1000/30 | all | 200 | raftkv |");
        assert!(raftkv.ends_with("| 1.33 | 0.50 | 0.67 |"), "{raftkv}");
        assert!(
            row("| watch-latency | 1/1 | followers | 200 | raftkv |").ends_with("| 1.00 | 0.75 | 0.60 |")
        );
        let targets = text.split("Watch targets:").nth(1).unwrap();
        assert!(
            targets.contains("| event latency p99 ≤ etcd's | watch-latency 1/1 at 200 puts/s | 0.75 | met |"),
            "{targets}"
        );
        assert!(targets.contains("| events delivered/s ≥ 1.5× etcd's | watch-fanout 1000/30 at 200 puts/s | 1.33 | **not met** |"), "{targets}");
        assert!(
            targets
                .contains("| servers' peak RSS ≤ etcd's | watch-fanout 1000/30 at 200 puts/s | 0.67 | met |"),
            "{targets}"
        );
        // Watch records are not workload runs.
        assert!(!text.contains("| workload | clients/conns |"), "{text}");
    }

    #[test]
    fn fanout_that_both_keep_up_with_is_inconclusive_and_a_missing_system_pending() {
        let both = vec![
            watch("etcd", WatchWorkload::WatchFanout, 200_000.0, 40.0, 600),
            watch("raftkv", WatchWorkload::WatchFanout, 200_000.0, 20.0, 400),
        ];
        let text = render(&both, &systems());
        assert!(
            text.contains("| 1.00 | inconclusive: both delivered ≥ 99 % of the offered events"),
            "{text}"
        );
        let alone = render(&both[..1], &systems());
        let raftkv = alone.lines().find(|l| l.contains("| raftkv |")).unwrap();
        assert!(raftkv.ends_with("| – → – | pending | pending | pending | pending | pending |"), "{raftkv}");
        assert_eq!(raftkv.matches('|').count(), 22, "21 columns: {raftkv}");
        assert!(alone.contains("| events delivered/s ≥ 1.5× etcd's | watch-fanout 1000/30 at 200 puts/s | pending | pending |"), "{alone}");
    }
}
