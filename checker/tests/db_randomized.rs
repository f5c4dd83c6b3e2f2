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

/// Reference verdict for tiny histories: every order that respects real time, with each
/// unknown-outcome write either placed somewhere or left out, replayed on the reference store; the
/// acknowledged outputs (revisions included) must be exactly what it answers.
fn brute_force_linearizable(history: &kvcheck::DbHistory) -> bool {
    let ops: Vec<&kvcheck::DbOperation> = history
        .operations()
        .iter()
        .filter(|op| match op.outcome {
            DbOutcome::Ok(_) => true,
            DbOutcome::Failed => false,
            DbOutcome::Unknown => !matches!(op.op, kvcheck::DbOp::Range { .. }),
        })
        .collect();
    fn extend(ops: &[&kvcheck::DbOperation], placed: &mut Vec<bool>, store: &RefStore) -> bool {
        let must = |op: &kvcheck::DbOperation| matches!(op.outcome, DbOutcome::Ok(_));
        if ops.iter().zip(placed.iter()).all(|(op, &done)| done || !must(op)) {
            return true;
        }
        for candidate in 0..ops.len() {
            let op = ops[candidate];
            let forced_earlier = ops
                .iter()
                .zip(placed.iter())
                .any(|(other, &done)| !done && must(other) && other.complete < op.invoke);
            if placed[candidate] || forced_earlier {
                continue;
            }
            let mut next = store.clone();
            let output = next.apply(&op.op);
            let fits = match &op.outcome {
                DbOutcome::Ok(recorded) => *recorded == output,
                _ => true,
            };
            if fits {
                placed[candidate] = true;
                let found = extend(ops, placed, &next);
                placed[candidate] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    extend(&ops, &mut vec![false; ops.len()], &RefStore::new())
}

/// A tiny random history on two keys and three values: outputs come from a random serial run (some
/// unknown-outcome writes left out, some revisions nudged), intervals are random, so both verdicts
/// are common.
fn tiny_history(rng: &mut ChaCha8Rng) -> kvcheck::DbHistory {
    use rand::Rng;
    let keys = ["a", "b"];
    let values = ["x", "y", "z"];
    let count = rng.random_range(1..=6usize);
    let mut store = RefStore::new();
    let mut rows = Vec::new();
    for client in 0..count as u64 {
        let key = keys[rng.random_range(0..2)];
        let value = values[rng.random_range(0..3)];
        let op = match rng.random_range(0..6) {
            0 | 1 => range(key),
            2 => range_between("a", "c"),
            3 => put(key, value),
            4 => del(key),
            _ => txn(
                vec![compare(
                    key,
                    kvcheck::CompareTarget::Value(value.into()),
                    kvcheck::CompareResult::Equal,
                )],
                vec![put(key, values[rng.random_range(0..3)])],
                vec![range(key)],
            ),
        };
        let invoke = rng.random_range(0..20);
        let complete = invoke + rng.random_range(0..8);
        let outcome = match rng.random_range(0..10) {
            0 => DbOutcome::Failed,
            1 | 2 => {
                if rng.random_bool(0.5) {
                    store.apply(&op);
                }
                DbOutcome::Unknown
            }
            _ => {
                let mut output = store.apply(&op);
                if rng.random_bool(0.1) {
                    output.revision += if rng.random_bool(0.5) { 1 } else { -1 };
                }
                DbOutcome::Ok(output)
            }
        };
        rows.push((client, invoke, complete, op, outcome));
    }
    history(rows)
}

#[test]
fn agrees_with_brute_force_on_tiny_histories() {
    let mut verdicts = [0usize; 2];
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..5000 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let history = tiny_history(&mut rng);
        let expected = brute_force_linearizable(&history);
        let options = kvcheck::CheckOptions::default().with_artifact_dir(dir.path());
        let got = match kvcheck::check_db(&history, options).result {
            DbCheckResult::Ok(_) => true,
            DbCheckResult::Violation(_) => false,
            DbCheckResult::Timeout { .. } => panic!("seed {seed}: tiny history timed out"),
        };
        assert_eq!(
            got,
            expected,
            "seed {seed}: checker says {got}, brute force {expected}\n{}",
            kvcheck::render_db_history(&history)
        );
        verdicts[usize::from(expected)] += 1;
    }
    assert!(verdicts.iter().all(|&count| count >= 300), "verdicts (fail, pass): {verdicts:?}");
}
