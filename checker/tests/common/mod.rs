//! Shared helpers for the integration tests: a terse history builder, a simulated linearizable
//! store with random concurrency and faults, guaranteed corruptions, and a brute-force reference
//! checker.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use kvcheck::{CheckReport, CheckResult, ClientId, History, Op, Operation, Outcome, Output, Violation};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[path = "../sim/mod.rs"]
mod sim;
pub use sim::Workload;
use sim::{Ending, Model, drive, options_in, rows_to_history, to_history};

pub fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into() }
}

pub fn del(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

pub fn cas(key: &str, expected: Option<&str>, value: &str) -> Op {
    Op::Cas { key: key.into(), expected: expected.map(Into::into), value: value.into() }
}

/// Outcome of an acknowledged put.
pub fn ok() -> Outcome {
    Outcome::Ok(Output::Put)
}

/// Outcome of a get that saw `value`.
pub fn saw(value: Option<&str>) -> Outcome {
    Outcome::Ok(Output::Get { value: value.map(Into::into) })
}

pub fn cas_result(succeeded: bool) -> Outcome {
    Outcome::Ok(Output::Cas { succeeded })
}

pub fn deleted(existed: Option<bool>) -> Outcome {
    Outcome::Ok(Output::Delete { existed })
}

/// Builds a history from `(client, invoke, complete, op, outcome)` rows; ids are row numbers.
pub fn history(rows: Vec<(ClientId, u64, u64, Op, Outcome)>) -> History {
    rows_to_history(rows)
}

/// Checks with artifacts in a fresh temporary directory (returned so it outlives the report).
pub fn run_check(history: &History) -> (CheckReport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (kvcheck::check(history, options_in(&dir, 20)), dir)
}

pub fn assert_linearizable(history: &History) {
    let (report, _dir) = run_check(history);
    assert!(
        report.is_linearizable(),
        "expected linearizable, got {report}\n{}",
        kvcheck::render_history(history)
    );
}

/// Asserts a violation and checks what every violation must satisfy: its file exists and holds
/// exactly the minimal sub-history, which fails again on its own.
pub fn assert_violation(history: &History) -> Violation {
    let (report, dir) = run_check(history);
    let CheckResult::Violation(violation) = report.result else {
        panic!("expected a violation, got {report}\n{}", kvcheck::render_history(history));
    };
    let path = violation.artifact_path().expect("violation file written").to_owned();
    assert!(path.starts_with(dir.path()), "{}", path.display());
    assert!(violation.to_string().contains(&path.display().to_string()), "{violation}");
    assert_eq!(History::read_json_file(&path).unwrap(), violation.minimal);
    let (again, _dir) = run_check(&violation.minimal);
    assert!(
        matches!(again.result, CheckResult::Violation(_)),
        "minimal sub-history passes on its own: {again}\n{}",
        violation.render()
    );
    *violation
}

/// Applies `op` to the register map and returns what a correct store answers.
pub fn apply(store: &mut HashMap<String, String>, op: &Op) -> Output {
    match op {
        Op::Get { key } => Output::Get { value: store.get(key).cloned() },
        Op::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            Output::Put
        }
        Op::Delete { key } => Output::Delete { existed: Some(store.remove(key).is_some()) },
        Op::Cas { key, expected, value } => {
            let succeeded = store.get(key) == expected.as_ref();
            if succeeded {
                store.insert(key.clone(), value.clone());
            }
            Output::Cas { succeeded }
        }
    }
}

/// The register map with the generator of the per-key workload.
struct Registers {
    keys: usize,
    store: HashMap<String, String>,
    /// Every value written per key, for compare-and-sets against older values.
    written: BTreeMap<String, Vec<String>>,
    next_value: u64,
}

impl Model for Registers {
    type Op = Op;
    type Output = Output;

    fn generate(&mut self, rng: &mut ChaCha8Rng) -> Op {
        let key = format!("k{}", rng.random_range(0..self.keys));
        self.next_value += 1;
        let value = format!("v{}", self.next_value);
        let op = match rng.random_range(0..10) {
            0..=3 => get(&key),
            4..=6 => put(&key, &value),
            7 => del(&key),
            _ => {
                // Mostly the current value (so compare-and-set often succeeds), sometimes an
                // older one or "absent".
                let history = self.written.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                let expected = match rng.random_range(0..3) {
                    0 if !history.is_empty() => Some(history[rng.random_range(0..history.len())].clone()),
                    1 => None,
                    _ => self.store.get(&key).cloned(),
                };
                Op::Cas { key: key.clone(), expected, value: value.clone() }
            }
        };
        if matches!(op, Op::Put { .. } | Op::Cas { .. }) {
            self.written.entry(key).or_default().push(value);
        }
        op
    }

    fn apply(&mut self, op: &Op) -> Output {
        apply(&mut self.store, op)
    }
}

/// Generates the history a correct (linearizable) store produces under random concurrency and
/// faults (see [`drive`]).
pub fn simulate(seed: u64, workload: Workload) -> History {
    let mut model =
        Registers { keys: workload.keys, store: HashMap::new(), written: BTreeMap::new(), next_value: 0 };
    to_history(drive(seed, workload, &mut model), |ending| match ending {
        Ending::Ok(output) => Outcome::Ok(output),
        Ending::Failed => Outcome::Failed,
        Ending::Unknown => Outcome::Unknown,
    })
}

/// A corruption that provably makes a linearizable history non-linearizable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// A read returns a value that a completed write had already overwritten for good.
    StaleRead,
    /// A compare-and-set succeeds against such an overwritten value.
    StaleCas,
    /// A put whose value was read is reported as failed (definitely not applied).
    FailedWriteObserved,
    /// A read returns a value nobody wrote.
    PhantomRead,
}

pub const CORRUPTIONS: [Corruption; 4] =
    [Corruption::StaleRead, Corruption::StaleCas, Corruption::FailedWriteObserved, Corruption::PhantomRead];

/// The value an operation with a known outcome certainly wrote, if any.
fn certainly_wrote(op: &Operation) -> Option<Option<&str>> {
    match (&op.op, &op.outcome) {
        (Op::Put { value, .. }, Outcome::Ok(_)) => Some(Some(value)),
        (Op::Cas { value, .. }, Outcome::Ok(Output::Cas { succeeded: true })) => Some(Some(value)),
        (Op::Delete { .. }, Outcome::Ok(_)) => Some(None),
        _ => None,
    }
}

/// Applies `corruption` to a random eligible operation; returns the corrupted history and the
/// corrupted operation's id, or `None` when the history has no eligible operation.
///
/// Every simulated value is written by exactly one operation, which is what makes the stale
/// corruptions certain: if `p` wrote `v` and completed before a write `w` of another value was
/// invoked, and `w` completed before `r` was invoked, then `v` is gone for good by the time of `r`.
pub fn corrupt(history: &History, corruption: Corruption, rng: &mut ChaCha8Rng) -> Option<(History, u64)> {
    let ops = history.operations();
    let mut candidates: Vec<(usize, Option<String>)> = Vec::new();
    for (index, target) in ops.iter().enumerate() {
        let key = target.op.key();
        match corruption {
            Corruption::StaleRead | Corruption::StaleCas => {
                let eligible = match (&target.op, &target.outcome) {
                    (Op::Get { .. }, Outcome::Ok(_)) => corruption == Corruption::StaleRead,
                    (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded: true })) => {
                        corruption == Corruption::StaleCas
                    }
                    _ => false,
                };
                if !eligible {
                    continue;
                }
                // The latest invocation of a write certainly done before `target` started; any
                // value written and completed before that invocation is gone for good.
                let latest = ops
                    .iter()
                    .filter(|w| {
                        w.op.key() == key && w.complete < target.invoke && certainly_wrote(w).is_some()
                    })
                    .map(|w| w.invoke)
                    .max();
                let stale = latest.and_then(|latest| {
                    ops.iter().find_map(|p| match certainly_wrote(p) {
                        Some(Some(value)) if p.op.key() == key && p.complete < latest => {
                            Some(value.to_owned())
                        }
                        _ => None,
                    })
                });
                if let Some(stale) = stale {
                    candidates.push((index, Some(stale)));
                }
            }
            Corruption::FailedWriteObserved => {
                if let (Op::Put { value, .. }, Outcome::Ok(_)) = (&target.op, &target.outcome) {
                    let observed = ops.iter().any(|r| r.op.key() == key && r.outcome == saw(Some(value)));
                    if observed {
                        candidates.push((index, None));
                    }
                }
            }
            Corruption::PhantomRead => {
                if let (Op::Get { .. }, Outcome::Ok(_)) = (&target.op, &target.outcome) {
                    candidates.push((index, Some("phantom".to_owned())));
                }
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let (index, value) = candidates.swap_remove(rng.random_range(0..candidates.len()));
    let mut ops = ops.to_vec();
    let target = &mut ops[index];
    match (corruption, &mut target.op) {
        (Corruption::StaleCas, Op::Cas { expected, .. }) => *expected = value,
        (Corruption::FailedWriteObserved, _) => target.outcome = Outcome::Failed,
        _ => target.outcome = Outcome::Ok(Output::Get { value }),
    }
    let id = target.id;
    Some((History::new(ops).unwrap(), id))
}

fn apply_checked(state: &Option<String>, op: &Op, outcome: &Outcome) -> Option<Option<String>> {
    let mut store: HashMap<String, String> = HashMap::new();
    if let Some(value) = state {
        store.insert(op.key().to_owned(), value.clone());
    }
    let output = apply(&mut store, op);
    let after = store.get(op.key()).cloned();
    match outcome {
        Outcome::Unknown => Some(after),
        Outcome::Ok(Output::Delete { existed: None }) => {
            matches!(output, Output::Delete { .. }).then_some(after)
        }
        Outcome::Ok(expected) => (*expected == output).then_some(after),
        Outcome::Failed => None,
    }
}

/// Reference checker for tiny single-key histories: tries every order that respects real time,
/// with every unknown operation either placed somewhere or left out.
pub fn brute_force_linearizable(history: &History) -> bool {
    let ops: Vec<&Operation> =
        history.operations().iter().filter(|op| op.outcome != Outcome::Failed).collect();
    fn extend(ops: &[&Operation], placed: &mut Vec<bool>, state: Option<String>) -> bool {
        let must_place = |op: &Operation| !matches!(op.outcome, Outcome::Unknown);
        if ops.iter().zip(placed.iter()).all(|(op, &done)| done || !must_place(op)) {
            return true;
        }
        for candidate in 0..ops.len() {
            if placed[candidate] {
                continue;
            }
            let op = ops[candidate];
            let forced_earlier = ops
                .iter()
                .zip(placed.iter())
                .any(|(other, &done)| !done && must_place(other) && other.complete < op.invoke);
            if forced_earlier {
                continue;
            }
            if let Some(next) = apply_checked(&state, &op.op, &op.outcome) {
                placed[candidate] = true;
                let found = extend(ops, placed, next);
                placed[candidate] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    extend(&ops, &mut vec![false; ops.len()], None)
}
