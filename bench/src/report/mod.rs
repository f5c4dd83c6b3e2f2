//! `kvbench report`: turns a results file into the markdown tables of a benchmark session.
//!
//! Runs are grouped by workload shape (workload, key order, clients, connections, target) in
//! the order they first appear; each system's rounds are folded by the median, so one slow round of an
//! alternating sequence does not decide the comparison. A system with no runs for a shape is
//! shown as `pending`, never as a number. A workload sent to every member request by request
//! (target `round-robin`) is named `WORKLOAD@all`, as `scripts/bench.sh --only` names it, and
//! a summary compares it with the same workload sent to the leader only. Puts of sequential
//! keys are named `put-seq` (`put-seq@all`), again as the script names them, and never share a
//! row with puts of random keys.
//!
//! The workloads with a record kind of their own have their tables in a module each
//! ([`lease`], [`watch`], [`maintenance`]); what folding, ratios and verdicts mean is shared from here.

use std::fmt::Write;

use crate::conn::Target;
use crate::keys::KeyOrder;
use crate::record::{FloorRecord, Record, RunRecord};
use crate::workload::Workload;

mod lease;
mod maintenance;
mod watch;

/// The systems compared: ratios are `candidate / baseline`.
#[derive(Debug, Clone)]
pub struct Systems {
    /// The reference (etcd).
    pub baseline: String,
    /// The system measured against it (raftkv).
    pub candidate: String,
}

/// The markdown report of every record.
pub fn render(records: &[Record], systems: &Systems) -> String {
    let mut out = String::new();
    floor_section(&mut out, records);
    runs_section(&mut out, records, systems);
    all_members_section(&mut out, records, systems);
    lease::section(&mut out, records, systems);
    watch::section(&mut out, records, systems);
    maintenance::section(&mut out, records, systems);
    out
}

fn floor_section(out: &mut String, records: &[Record]) {
    let floors: Vec<(&str, &FloorRecord)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Fsync(f) => Some(("fdatasync of a 4 KiB overwrite", f)),
            Record::Ping(f) => Some(("loopback unary gRPC round trip (tonic echo)", f)),
            _ => None,
        })
        .collect();
    if floors.is_empty() {
        return;
    }
    let _ = writeln!(out, "Floor on this machine:\n");
    for (what, f) in floors {
        let l = &f.latency;
        let _ = writeln!(
            out,
            "- {what} ({}): p50 {} ms, p99 {} ms, p99.9 {} ms over {} samples",
            f.subject,
            ms(l.p50_ms),
            ms(l.p99_ms),
            ms(l.p999_ms),
            f.samples
        );
    }
    out.push('\n');
}

/// A run's shape: rows are grouped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    workload: Workload,
    key_order: KeyOrder,
    clients: u64,
    connections: u64,
    target: Target,
}

impl Shape {
    fn of(r: &RunRecord) -> Self {
        Self {
            workload: r.workload,
            key_order: r.key_order,
            clients: r.clients,
            connections: r.connections,
            target: r.target,
        }
    }

    /// The run's name: [`Shape::workload_name`], with `@all` when its requests go round-robin
    /// to every member (the name `scripts/bench.sh --only` takes).
    fn name(&self) -> String {
        run_name(self.workload, self.key_order, self.target)
    }

    /// The workload, `-seq` appended when its keys are sequential (`put-seq`).
    fn workload_name(&self) -> String {
        workload_name(self.workload, self.key_order)
    }

    /// Every run shape in `runs`, in the order each first appears.
    fn all_in(runs: &[&RunRecord]) -> Vec<Shape> {
        first_seen(runs, |r| Shape::of(r))
    }

    /// `system`'s runs of this shape, folded.
    fn folded(&self, runs: &[&RunRecord], system: &str) -> Option<Folded> {
        fold(
            &runs.iter().copied().filter(|r| Shape::of(r) == *self && r.system == system).collect::<Vec<_>>(),
        )
    }
}

/// One system's folded figures for one shape.
#[derive(Debug, Clone, Copy)]
struct Folded {
    rounds: usize,
    throughput: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    rss_kib: Option<u64>,
    server_cpu_us: Option<f64>,
    client_cpu_us: Option<f64>,
}

fn fold(runs: &[&RunRecord]) -> Option<Folded> {
    if runs.is_empty() {
        return None;
    }
    let med = |f: fn(&RunRecord) -> f64| median_by(runs, f);
    Some(Folded {
        rounds: runs.len(),
        throughput: med(|r| r.throughput),
        p50: med(|r| r.latency.p50_ms),
        p99: med(|r| r.latency.p99_ms),
        p999: med(|r| r.latency.p999_ms),
        errors: runs.iter().map(|r| r.errors).sum(),
        rss_kib: runs.iter().filter_map(|r| r.server_peak_rss_kib).max(),
        server_cpu_us: median_of_known(runs.iter().map(|r| r.server_cpu_us_per_op)),
        client_cpu_us: median_of_known(runs.iter().map(|r| r.client_cpu_us_per_op)),
    })
}

/// The keys of `items`, each once, in the order each first appears.
fn first_seen<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<K> {
    let mut keys: Vec<K> = Vec::new();
    for item in items {
        let k = key(item);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// The median of the values present, or `None` if no round has one.
fn median_of_known(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let known: Vec<f64> = values.flatten().collect();
    (!known.is_empty()).then(|| median(known))
}

/// The median of `f` over `runs`.
fn median_by<T>(runs: &[&T], f: impl Fn(&T) -> f64) -> f64 {
    median(runs.iter().map(|r| f(r)).collect())
}

/// The median of `values`; 0 for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match (values.len() % 2, mid.checked_sub(1).and_then(|i| values.get(i)), values.get(mid)) {
        (1, _, Some(m)) => *m,
        (0, Some(a), Some(b)) => (a + b) / 2.0,
        _ => 0.0,
    }
}

/// Every run record, in file order.
fn runs_of(records: &[Record]) -> Vec<&RunRecord> {
    records.iter().filter_map(|r| if let Record::Run(r) = r { Some(r) } else { None }).collect()
}

fn runs_section(out: &mut String, records: &[Record], systems: &Systems) {
    let runs = runs_of(records);
    if runs.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "| workload | clients/conns | target | system | rounds | ops/s | p50 ms | p99 ms | p99.9 ms | errors | \
         servers' peak RSS MiB (VmHWM) | servers' CPU µs/op | client CPU µs/op | {c}/{b} ops/s | {c}/{b} p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in Shape::all_in(&runs) {
        let (base, cand) = (shape.folded(&runs, b), shape.folded(&runs, c));
        let lead = format!(
            "| {} | {}/{} | {} ",
            shape.name(),
            shape.clients,
            shape.connections,
            shape.target.name()
        );
        let cells = |f: &Folded| {
            format!(
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} ",
                f.rounds,
                f.throughput,
                ms(f.p50),
                ms(f.p99),
                ms(f.p999),
                f.errors,
                f.rss_kib.map_or("–".to_string(), mib_of_kib),
                micros(f.server_cpu_us),
                micros(f.client_cpu_us),
            )
        };
        let pair = Pair { systems, base: base.as_ref(), cand: cand.as_ref() };
        let pending = "| 0 | pending | pending | pending | pending | – | – | pending | pending ";
        let ratios =
            |f: &Folded, base: &Folded| vec![ratio(f.throughput, base.throughput), ratio(f.p99, base.p99)];
        pair.write_rows(out, &lead, cells, pending, 2, ratios);
    }
    out.push('\n');
}

/// One shape's folded figures for the two systems compared.
struct Pair<'a, F> {
    systems: &'a Systems,
    base: Option<&'a F>,
    cand: Option<&'a F>,
}

impl<F> Pair<'_, F> {
    /// Writes the baseline's row, then the candidate's: each `lead`, the system, its `cells`
    /// (`pending` where it did not run), then the `width` candidate/baseline `ratios` on the
    /// candidate's row only (`pending` where either system did not run).
    fn write_rows(
        &self,
        out: &mut String,
        lead: &str,
        cells: impl Fn(&F) -> String,
        pending: &str,
        width: usize,
        ratios: impl Fn(&F, &F) -> Vec<String>,
    ) {
        let columns = match (self.base, self.cand) {
            (Some(base), Some(cand)) => Some(ratios(cand, base)),
            _ => None,
        };
        for (system, folded, candidate) in
            [(&self.systems.baseline, self.base, false), (&self.systems.candidate, self.cand, true)]
        {
            let _ = write!(out, "{lead}| {system} ");
            out.push_str(&folded.map_or(pending.to_string(), &cells));
            let ratio_cells = match (candidate, &columns) {
                (true, Some(c)) => c.iter().map(|r| format!("| {r} ")).collect(),
                (true, None) => "| pending ".repeat(width),
                (false, _) => "| ".repeat(width),
            };
            let _ = writeln!(out, "{ratio_cells}|");
        }
    }
}

/// For each workload run both ways, each system's throughput sent to every member
/// (round-robin) over its throughput sent to the leader only: how much a client that balances
/// like clientv3 loses to followers forwarding its writes.
fn all_members_section(out: &mut String, records: &[Record], systems: &Systems) {
    let runs = runs_of(records);
    let pairs: Vec<(Shape, Shape)> = Shape::all_in(&runs)
        .into_iter()
        .filter(|s| s.target == Target::RoundRobin)
        .filter_map(|all| {
            let leader = Shape { target: Target::Leader, ..all };
            runs.iter().any(|r| Shape::of(r) == leader).then_some((all, leader))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "All members against the leader only (ops/s of `WORKLOAD@all`, each request to the next member as \
         clientv3 balances, over ops/s of `WORKLOAD`, every request to the leader):\n"
    );
    let _ = writeln!(out, "| workload | clients/conns | {b} all/leader | {c} all/leader | {c} all/{b} all |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (all, leader) in pairs {
        let ops = |shape: Shape, system: &str| shape.folded(&runs, system).map(|f| f.throughput);
        let share = |system: &str| ratio_or_pending(ops(all, system), ops(leader, system));
        let _ = writeln!(
            out,
            "| {} | {}/{} | {} | {} | {} |",
            all.workload_name(),
            all.clients,
            all.connections,
            share(b),
            share(c),
            ratio_or_pending(ops(all, c), ops(all, b)),
        );
    }
    out.push('\n');
}

/// The workload's name, `-seq` appended when its keys are sequential (`put-seq`): the run name
/// of `scripts/bench.sh` without the target.
pub fn workload_name(workload: Workload, key_order: KeyOrder) -> String {
    match key_order {
        KeyOrder::Random => workload.name(),
        KeyOrder::Sequential => format!("{}-seq", workload.name()),
    }
}

/// The name `scripts/bench.sh --only` gives a run: [`workload_name`], `@all` appended when its
/// requests go round-robin to every member (`put-seq@all`).
pub fn run_name(workload: Workload, key_order: KeyOrder, target: Target) -> String {
    let name = workload_name(workload, key_order);
    match target {
        Target::RoundRobin => format!("{name}@all"),
        Target::All | Target::Leader => name,
    }
}

/// `met`, `**not met**`, or `pending` without a ratio.
fn verdict(ratio: Option<f64>, met: impl Fn(f64) -> bool) -> String {
    match ratio {
        None => "pending".to_string(),
        Some(r) if met(r) => "met".to_string(),
        Some(_) => "**not met**".to_string(),
    }
}

/// The candidate's `figure` over the baseline's, where both systems ran and have it.
fn ratio_of<F>(cand: Option<&F>, base: Option<&F>, figure: impl Fn(&F) -> Option<f64>) -> Option<f64> {
    match (cand.and_then(&figure), base.and_then(&figure)) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    }
}

/// A table of the targets, one row per target and run: the ratio each is judged on
/// and the verdict.
struct Targets<'a> {
    out: &'a mut String,
}

impl<'a> Targets<'a> {
    /// Writes the title and the head of the table.
    fn start(out: &'a mut String, title: &str, systems: &Systems) -> Self {
        let (b, c) = (&systems.baseline, &systems.candidate);
        let _ = writeln!(out, "{title}:\n");
        let _ = writeln!(out, "| target | run | {c}/{b} | verdict |");
        let _ = writeln!(out, "|---|---|---|---|");
        Self { out }
    }

    /// One target of one run: its ratio (`pending` without one) and the verdict.
    fn row(&mut self, target: &str, run: &str, ratio: Option<f64>, verdict: &str) {
        let ratio = ratio.map_or("pending".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(self.out, "| {target} | {run} | {ratio} | {verdict} |");
    }

    /// Closes the table with a blank line.
    fn end(self) {
        self.out.push('\n');
    }
}

/// The servers' memory over the rounds of one run shape, read as [`crate::rss`] does: the
/// median of the readings before the runs, the highest peak of any round.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Memory {
    before_kib: Option<f64>,
    peak_kib: Option<u64>,
}

impl Memory {
    /// Folds the (before, peak) readings of `runs`.
    fn fold<R>(runs: &[&R], reading: impl Fn(&R) -> (Option<u64>, Option<u64>)) -> Self {
        Self {
            before_kib: median_of_known(runs.iter().map(|r| reading(r).0.map(|k| k as f64))),
            peak_kib: runs.iter().filter_map(|r| reading(r).1).max(),
        }
    }

    /// `before → peak` in MiB, `–` where a reading is missing.
    fn cell(&self) -> String {
        format!(
            "{} → {}",
            self.before_kib.map_or("–".to_string(), |k| mib_of_kib(k as u64)),
            self.peak_kib.map_or("–".to_string(), mib_of_kib)
        )
    }

    /// The peak, for ratios.
    fn peak(&self) -> Option<f64> {
        self.peak_kib.map(|k| k as f64)
    }
}

/// KiB as whole MiB.
fn mib_of_kib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// Milliseconds with three decimals (microsecond resolution, as recorded).
fn ms(v: f64) -> String {
    format!("{v:.3}")
}

/// Microseconds per operation, whole, or `–` without a reading.
fn micros(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |us| format!("{us:.0}"))
}

fn ratio(candidate: f64, baseline: f64) -> String {
    if baseline > 0.0 { format!("{:.2}", candidate / baseline) } else { "–".to_string() }
}

/// [`ratio`] when both figures exist, else `pending`: a missing system is never a number.
fn ratio_or_pending(candidate: Option<f64>, baseline: Option<f64>) -> String {
    match (candidate, baseline) {
        (Some(x), Some(y)) => ratio(x, y),
        _ => "pending".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;

    fn run(system: &str, workload: Workload, round: u32, throughput: f64, p99: f64) -> Record {
        run_to(Target::All, system, workload, round, throughput, p99)
    }

    fn run_to(
        target: Target,
        system: &str,
        workload: Workload,
        round: u32,
        throughput: f64,
        p99: f64,
    ) -> Record {
        Record::Run(RunRecord {
            system: system.into(),
            workload,
            clients: 64,
            connections: 8,
            target,
            key_space: 100_000,
            key_order: KeyOrder::Random,
            value_size: 256,
            range_len: 1000,
            round,
            seed: 1,
            elapsed_s: 10.0,
            ops: (throughput * 10.0) as u64,
            errors: 0,
            conflicts: 0,
            throughput,
            latency: LatencySummary {
                p50_ms: 1.0,
                p99_ms: p99,
                p999_ms: 9.0,
                mean_ms: 1.0,
                max_ms: 10.0,
                ..LatencySummary::default()
            },
            server_peak_rss_kib: Some(1024 * round as u64 * 100),
            server_cpu_s: Some(throughput * 10.0 * 150e-6 * round as f64),
            server_cpu_us_per_op: Some(150.0 * round as f64),
            client_cpu_s: None,
            client_cpu_us_per_op: (round == 1).then_some(40.0),
            first_error: None,
        })
    }

    pub(super) fn systems() -> Systems {
        Systems { baseline: "etcd".into(), candidate: "raftkv".into() }
    }

    #[test]
    fn rounds_fold_by_median_and_ratio_compares_systems() {
        let records = vec![
            run("etcd", Workload::Put, 1, 1000.0, 4.0),
            run("raftkv", Workload::Put, 1, 1500.0, 2.0),
            run("etcd", Workload::Put, 2, 3000.0, 8.0),
            run("raftkv", Workload::Put, 2, 2500.0, 6.0),
        ];
        let text = render(&records, &systems());
        let etcd = text.lines().find(|l| l.contains("| etcd |")).unwrap();
        let raftkv = text.lines().find(|l| l.contains("| raftkv |")).unwrap();
        assert!(
            etcd.starts_with("| put | 64/8 | all | etcd | 2 | 2000 | 1.000 | 6.000 | 9.000 | 0 | 200 |"),
            "{etcd}"
        );
        assert!(raftkv.contains("| 2 | 2000 | 1.000 | 4.000 |"), "{raftkv}");
        // CPU per op: the median of rounds 1 and 2 (150, 300); the client's of the one round
        // that has it.
        assert!(etcd.contains("| 200 | 225 | 40 | | |"), "{etcd}");
        assert!(raftkv.ends_with("| 1.00 | 0.67 |"), "{raftkv}");
    }

    #[test]
    fn missing_candidate_is_pending_not_a_number() {
        let records = vec![run("etcd", Workload::Range, 1, 800.0, 4.0)];
        let text = render(&records, &systems());
        let raftkv = text.lines().find(|l| l.contains("| raftkv |")).unwrap();
        assert!(raftkv.contains("pending"), "{raftkv}");
        assert!(raftkv.ends_with("| pending | pending |"), "{raftkv}");
    }

    #[test]
    fn all_member_runs_are_named_and_compared_with_the_leader_runs() {
        let records = vec![
            run_to(Target::Leader, "etcd", Workload::Put, 1, 1000.0, 4.0),
            run_to(Target::Leader, "raftkv", Workload::Put, 1, 800.0, 4.0),
            run_to(Target::RoundRobin, "etcd", Workload::Put, 1, 780.0, 4.0),
            run_to(Target::RoundRobin, "raftkv", Workload::Put, 1, 600.0, 4.0),
            run_to(Target::RoundRobin, "etcd", Workload::Mixed, 1, 500.0, 4.0),
            run_to(Target::Leader, "etcd", Workload::GetLinear, 1, 900.0, 4.0),
        ];
        let text = render(&records, &systems());
        assert!(text.contains("| put@all | 64/8 | round-robin | raftkv | 1 | 600 |"), "{text}");
        assert!(text.contains("| put | 64/8 | leader | etcd | 1 | 1000 |"), "{text}");
        let summary = text.split("All members against the leader only").nth(1).unwrap();
        // put: etcd 780/1000, raftkv 600/800, raftkv all/etcd all 600/780. mixed has no leader
        // run and get-linear no all-members run, so neither is listed.
        assert!(summary.contains("| put | 64/8 | 0.78 | 0.75 | 0.77 |"), "{summary}");
        assert!(!summary.contains("| mixed |") && !summary.contains("get-linear"), "{summary}");
    }

    #[test]
    fn all_members_summary_is_pending_for_a_missing_system_and_absent_without_pairs() {
        let records = vec![
            run_to(Target::Leader, "etcd", Workload::Put, 1, 1000.0, 4.0),
            run_to(Target::RoundRobin, "etcd", Workload::Put, 1, 500.0, 4.0),
        ];
        let text = render(&records, &systems());
        assert!(text.contains("| put | 64/8 | 0.50 | pending | pending |"), "{text}");
        assert!(text.contains("| put@all | 64/8 | round-robin | raftkv | 0 | pending"), "{text}");
        let leader_only = render(&records[..1], &systems());
        assert!(!leader_only.contains("All members against"), "{leader_only}");
    }

    #[test]
    fn sequential_puts_have_rows_of_their_own() {
        let sequential = |record: Record| match record {
            Record::Run(r) => Record::Run(RunRecord { key_order: KeyOrder::Sequential, ..r }),
            other => other,
        };
        let records = vec![
            run_to(Target::Leader, "etcd", Workload::Put, 1, 1000.0, 4.0),
            sequential(run_to(Target::Leader, "etcd", Workload::Put, 1, 3000.0, 2.0)),
            sequential(run_to(Target::RoundRobin, "etcd", Workload::Put, 1, 1500.0, 2.0)),
            sequential(run_to(Target::Leader, "raftkv", Workload::Put, 1, 2000.0, 2.0)),
        ];
        let text = render(&records, &systems());
        // Not folded together: the random run's 1000 ops/s stays alone on its row.
        assert!(text.contains("| put | 64/8 | leader | etcd | 1 | 1000 |"), "{text}");
        assert!(text.contains("| put-seq | 64/8 | leader | etcd | 1 | 3000 |"), "{text}");
        assert!(text.contains("| put-seq | 64/8 | leader | raftkv | 1 | 2000 |"), "{text}");
        assert!(text.contains("| put-seq@all | 64/8 | round-robin | etcd | 1 | 1500 |"), "{text}");
        let summary = text.split("All members against the leader only").nth(1).unwrap();
        assert!(summary.contains("| put-seq | 64/8 | 0.50 | pending | pending |"), "{summary}");
        assert_eq!(run_name(Workload::Put, KeyOrder::Random, Target::All), "put");
    }

    #[test]
    fn floor_section() {
        let records = vec![Record::Fsync(FloorRecord {
            subject: "/data".into(),
            samples: 100,
            latency: LatencySummary { p50_ms: 0.5, p99_ms: 2.0, ..Default::default() },
        })];
        let text = render(&records, &systems());
        assert!(
            text.contains("fdatasync of a 4 KiB overwrite (/data): p50 0.500 ms, p99 2.000 ms"),
            "{text}"
        );
    }

    #[test]
    fn memory_folds_the_median_before_and_the_highest_peak() {
        let readings = [(Some(1024), Some(3072)), (None, Some(5120)), (Some(3072), None)];
        let refs: Vec<&(Option<u64>, Option<u64>)> = readings.iter().collect();
        let memory = Memory::fold(&refs, |r| *r);
        assert_eq!(memory, Memory { before_kib: Some(2048.0), peak_kib: Some(5120) });
        assert_eq!((memory.cell(), memory.peak()), ("2 → 5".to_string(), Some(5120.0)));
        assert_eq!(Memory::fold(&[], |r: &(Option<u64>, Option<u64>)| *r).cell(), "– → –");
        assert_eq!(ratio_of(Some(&3.0), Some(&2.0), |f| Some(*f)), Some(1.5));
        assert_eq!(ratio_of(Some(&3.0), None, |f: &f64| Some(*f)), None);
        assert_eq!(ratio_of(Some(&3.0), Some(&0.0), |f| Some(*f)), None, "no ratio to nothing");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
