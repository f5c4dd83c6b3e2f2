//! Seeded random testing: histories of a simulated correct store must pass, the same histories
//! with a provable anomaly injected must fail, and on tiny histories the checker must agree with a
//! brute-force search over all orders. Every failure message names its seed.

mod common;

use std::time::Instant;

use common::*;
use kvcheck::{CheckOptions, CheckResult, History, Op, Operation, Outcome, Output};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Moderate histories: enough concurrency and faults to exercise every path, quick to check.
const WORKLOAD: Workload = Workload { clients: 5, keys: 3, ops: 300, failed: 0.05, unknown: 0.1 };

#[test]
fn simulated_linearizable_histories_pass() {
    for seed in 0..40 {
        let history = simulate(seed, WORKLOAD);
        let (report, _dir) = run_check(&history);
        assert!(report.is_linearizable(), "seed {seed}: {report}");
        assert_eq!(report.operations, WORKLOAD.ops, "seed {seed}");
    }
}

#[test]
fn simulated_histories_with_injected_corruption_fail() {
    let mut injected = [0usize; CORRUPTIONS.len()];
    for seed in 0..40 {
        let history = simulate(seed, WORKLOAD);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0ffee);
        for (kind, corruption) in CORRUPTIONS.into_iter().enumerate() {
            let Some((corrupted, target)) = corrupt(&history, corruption, &mut rng) else { continue };
            injected[kind] += 1;
            let key = corrupted.operations().iter().find(|op| op.id == target).unwrap().op.key().to_owned();
            let (report, _dir) = run_check(&corrupted);
            let CheckResult::Violation(violation) = report.result else {
                panic!("seed {seed}: {corruption:?} of op #{target} not detected: {report}");
            };
            assert_eq!(violation.key, key, "seed {seed} {corruption:?}");
            assert!(violation.other_keys.is_empty(), "seed {seed} {corruption:?}: {violation}");
            assert!(violation.minimal.len() < violation.key_operations, "seed {seed}: {violation}");
            if matches!(corruption, Corruption::StaleRead | Corruption::PhantomRead) {
                // Without the corrupted read the rest is a weakening of a linearizable history, so
                // every failing sub-history must contain it.
                let ids: Vec<u64> = violation.minimal.operations().iter().map(|op| op.id).collect();
                assert!(ids.contains(&target), "seed {seed} {corruption:?}: #{target} missing: {violation}");
            }
            let (again, _dir) = run_check(&violation.minimal);
            assert!(!again.is_linearizable(), "seed {seed} {corruption:?}: minimal passes: {violation}");
        }
    }
    assert!(injected.iter().all(|&count| count >= 10), "too few corruptions injected: {injected:?}");
}

/// A random history of at most 7 operations on one key, values from a tiny domain so that reads
/// often match and often contradict.
fn tiny_history(rng: &mut ChaCha8Rng) -> History {
    let values = ["a", "b", "c"];
    let pick = |rng: &mut ChaCha8Rng| values[rng.random_range(0..values.len())];
    let pick_maybe = |rng: &mut ChaCha8Rng| rng.random_bool(0.7).then(|| pick(rng));
    let count = rng.random_range(1..=7u64);
    let ops = (0..count)
        .map(|id| {
            let invoke = rng.random_range(0..20);
            let complete = invoke + rng.random_range(0..8);
            let (op, output) = match rng.random_range(0..5) {
                0 | 1 => (get("k"), Output::Get { value: pick_maybe(rng).map(Into::into) }),
                2 => (put("k", pick(rng)), Output::Put),
                3 => (
                    del("k"),
                    Output::Delete { existed: [None, Some(true), Some(false)][rng.random_range(0..3)] },
                ),
                _ => (cas("k", pick_maybe(rng), pick(rng)), Output::Cas { succeeded: rng.random_bool(0.5) }),
            };
            let outcome = match rng.random_range(0..10) {
                0 => Outcome::Failed,
                1 | 2 => Outcome::Unknown,
                _ => Outcome::Ok(output),
            };
            Operation { id, client: id, op, invoke, complete, outcome }
        })
        .collect();
    History::new(ops).unwrap()
}

#[test]
fn agrees_with_brute_force_on_tiny_histories() {
    let mut verdicts = [0usize; 2];
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..4000 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let history = tiny_history(&mut rng);
        let expected = brute_force_linearizable(&history);
        let options = CheckOptions::default().with_threads(1).with_artifact_dir(dir.path());
        let got = match kvcheck::check(&history, options).result {
            CheckResult::Ok => true,
            CheckResult::Violation(_) => false,
            CheckResult::Timeout { .. } => panic!("seed {seed}: tiny history timed out"),
        };
        assert_eq!(
            got,
            expected,
            "seed {seed}: checker says {got}, brute force {expected}\n{}",
            kvcheck::render_history(&history)
        );
        verdicts[usize::from(expected)] += 1;
    }
    // Both verdicts must be common, or the comparison proves little.
    assert!(verdicts.iter().all(|&count| count >= 500), "verdicts (fail, pass): {verdicts:?}");
}

#[test]
fn performance_5000_operations_10_keys_8_clients() {
    let workload = Workload { clients: 8, keys: 10, ops: 5000, failed: 0.02, unknown: 0.05 };
    let seed = 5000;
    let history = simulate(seed, workload);
    let started = Instant::now();
    let (report, _dir) = run_check(&history);
    eprintln!("seed {seed}: checked {} in {:?}", report.operations, started.elapsed());
    assert!(report.is_linearizable(), "seed {seed}: {report}");
    assert_eq!(report.keys, 10);

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (corrupted, target) =
        corrupt(&history, Corruption::StaleRead, &mut rng).expect("a stale read to inject");
    let started = Instant::now();
    let (report, _dir) = run_check(&corrupted);
    eprintln!("seed {seed}: corrupted history checked and shrunk in {:?}", started.elapsed());
    let CheckResult::Violation(violation) = report.result else {
        panic!("seed {seed}: not detected: {report}")
    };
    eprintln!("{violation}");
    assert!(violation.minimal.operations().iter().any(|op| op.id == target), "seed {seed}: {violation}");
}

#[test]
fn simulator_produces_concurrency_and_faults() {
    // Guards the tests above against a simulator that degenerates into sequential, fault-free runs.
    let history = simulate(1, WORKLOAD);
    let ops = history.operations();
    let overlapping = ops.windows(2).filter(|pair| pair[1].invoke < pair[0].complete).count();
    let unknown = ops.iter().filter(|op| op.outcome == Outcome::Unknown).count();
    let failed = ops.iter().filter(|op| op.outcome == Outcome::Failed).count();
    let cas_ok = ops.iter().filter(|op| op.outcome == Outcome::Ok(Output::Cas { succeeded: true })).count();
    let deletes = ops.iter().filter(|op| matches!(op.op, Op::Delete { .. })).count();
    assert!(overlapping > 50, "overlapping {overlapping}");
    assert!(
        unknown > 10 && failed > 5 && cas_ok > 5 && deletes > 10,
        "{unknown} {failed} {cas_ok} {deletes}"
    );
}
