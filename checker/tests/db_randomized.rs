//! Seeded random testing of the whole-database check: histories a correct store produces under
//! concurrency, failures and lost responses must pass; the same histories with an anomaly injected
//! must fail with a failing sub-history that fails again on its own. Every failure names its seed.

mod db_common;

use std::time::Instant;

use db_common::anomalies::{Anomaly, WITH_UNKNOWNS, WITHOUT_UNKNOWNS, inject};
use db_common::*;
use kvcheck::{DbAnomaly, DbCheckResult, DbOutcome, DbViolation};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Moderate histories: enough concurrency and faults to exercise every path, quick to check.
const WORKLOAD: Workload = Workload { clients: 5, keys: 6, ops: 400, failed: 0.05, unknown: 0.08 };
/// The same without lost responses, for anomalies a lost write could otherwise explain.
const NO_UNKNOWNS: Workload = Workload { unknown: 0.0, ..WORKLOAD };

#[test]
fn simulated_histories_pass_and_their_revision_log_is_the_store_s() {
    for seed in 0..40 {
        let sim = simulate(seed, WORKLOAD);
        let (report, _dir) = run_check(&sim.history);
        let DbCheckResult::Ok(log) = &report.result else { panic!("seed {seed}: {report}") };
        // Every revision up to the last observed one is in the log; where no unknown-outcome write
        // was involved the log's state is the store's.
        assert_eq!(log.last_revision(), report.last_revision, "seed {seed}");
        if report.gaps == 0 {
            let truth = sim.state_at(report.last_revision);
            let logged = log.state_at(report.last_revision);
            assert_eq!(logged, truth.kvs.values().cloned().collect::<Vec<_>>(), "seed {seed}");
        }
    }
}

/// Which anomalies a report may give for an injected one: the injection can be explained in
/// several equivalent ways (a read served at the wrong revision is also a read with the wrong
/// contents), but never as a malformed response.
fn plausible(injected: Anomaly, found: &DbAnomaly) -> bool {
    match injected {
        Anomaly::DuplicateRevision => matches!(found, DbAnomaly::DuplicateRevision { .. }),
        // With no unknown-outcome write, shifted revisions also overshoot what the writes reach.
        Anomaly::UnfillableGap => {
            matches!(found, DbAnomaly::UnfillableGap { .. } | DbAnomaly::ImpossibleRevision { .. })
        }
        _ => !matches!(found, DbAnomaly::Malformed { .. } | DbAnomaly::DuplicateRevision { .. }),
    }
}

fn check_injected(seed: u64, workload: Workload, anomalies: &[Anomaly], counts: &mut [usize]) {
    let sim = simulate(seed, workload);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00c0_ffee);
    for (kind, &anomaly) in anomalies.iter().enumerate() {
        let Some((corrupted, target)) = inject(&sim, anomaly, &mut rng) else { continue };
        counts[kind] += 1;
        let (report, _dir) = run_check(&corrupted);
        let DbCheckResult::Violation(violation) = report.result else {
            panic!("seed {seed}: {anomaly:?} of #{target} not detected: {report}");
        };
        assert!(plausible(anomaly, &violation.anomaly), "seed {seed}: {anomaly:?} reported as {violation}");
        assert!(violation.minimal.len() <= corrupted.len(), "seed {seed}");
        let (again, _dir) = run_check(&violation.minimal);
        assert!(!again.is_linearizable(), "seed {seed} {anomaly:?}: sub-history passes: {violation}");
    }
}

#[test]
fn injected_anomalies_are_found_despite_unknown_outcomes() {
    let mut counts = [0usize; WITH_UNKNOWNS.len()];
    for seed in 0..25 {
        check_injected(seed, WORKLOAD, &WITH_UNKNOWNS, &mut counts);
    }
    assert!(counts.iter().all(|&count| count >= 15), "too few injected: {counts:?}");
}

#[test]
fn injected_anomalies_are_found_without_unknown_outcomes() {
    let mut counts = [0usize; WITHOUT_UNKNOWNS.len()];
    for seed in 0..25 {
        check_injected(seed, NO_UNKNOWNS, &WITHOUT_UNKNOWNS, &mut counts);
    }
    assert!(counts.iter().all(|&count| count >= 15), "too few injected: {counts:?}");
}

fn count_unknown(sim: &Simulation) -> usize {
    sim.history.operations().iter().filter(|op| op.outcome == DbOutcome::Unknown).count()
}

/// A 2-minute fault soak's worth: 90,000 operations of 8 clients over 10 keys, 5% unknown outcomes.
/// The check's time is printed (run with `--nocapture`), not asserted: the test must not depend on
/// the machine's speed.
#[test]
fn soak_sized_history_checks_in_seconds_and_injected_anomalies_are_found() {
    let seed = 90_000;
    let workload = Workload { clients: 8, keys: 10, ops: 90_000, failed: 0.02, unknown: 0.05 };
    let started = Instant::now();
    let sim = simulate(seed, workload);
    eprintln!("seed {seed}: simulated {} operations in {:?}", sim.history.len(), started.elapsed());
    let started = Instant::now();
    let (report, _dir) = run_check(&sim.history);
    eprintln!(
        "seed {seed}: checked {} operations ({} unknown outcomes) in {:?}: {report}",
        report.operations,
        count_unknown(&sim),
        started.elapsed()
    );
    assert!(report.is_linearizable(), "seed {seed}: {report}");
    assert!(report.gaps > 500, "seed {seed}: only {} revisions filled by unknown writes", report.gaps);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for anomaly in [Anomaly::StaleRead, Anomaly::LostWrite] {
        let (corrupted, target) = inject(&sim, anomaly, &mut rng).expect("an eligible operation");
        let started = Instant::now();
        let (report, _dir) = run_check(&corrupted);
        eprintln!("seed {seed}: {anomaly:?} of #{target} checked and shrunk in {:?}", started.elapsed());
        let DbCheckResult::Violation(violation) = report.result else {
            panic!("seed {seed}: {anomaly:?} not detected: {report}")
        };
        let violation: &DbViolation = &violation;
        eprintln!("{violation}");
        assert!(violation.involved.contains(&target), "seed {seed}: {violation}");
    }
}

/// Other soak shapes: few clients on many keys, many clients on few keys with more lost responses.
#[test]
fn other_soak_shapes_check_in_seconds() {
    let shapes = [
        (20_001, Workload { clients: 4, keys: 20, ops: 90_000, failed: 0.02, unknown: 0.05 }),
        (20_002, Workload { clients: 8, keys: 5, ops: 90_000, failed: 0.02, unknown: 0.10 }),
    ];
    for (seed, workload) in shapes {
        let sim = simulate(seed, workload);
        let started = Instant::now();
        let (report, _dir) = run_check(&sim.history);
        eprintln!("seed {seed}: {workload:?}: checked in {:?}: {report}", started.elapsed());
        assert!(report.is_linearizable(), "seed {seed}: {report}");
    }
}

/// The default CI run's size (~20 s of workload): about 15,000 operations.
#[test]
fn ci_sized_history_checks_in_about_a_second() {
    let seed = 15_000;
    let workload = Workload { clients: 4, keys: 5, ops: 15_000, failed: 0.02, unknown: 0.05 };
    let sim = simulate(seed, workload);
    let started = Instant::now();
    let (report, _dir) = run_check(&sim.history);
    eprintln!("seed {seed}: checked {} operations in {:?}: {report}", report.operations, started.elapsed());
    assert!(report.is_linearizable(), "seed {seed}: {report}");
}
