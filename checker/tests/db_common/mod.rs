//! Shared helpers for the whole-database tests: request builders, an independent reference store
//! (written from etcd's semantics, not sharing code with the checker), a simulator that produces
//! the history a correct store gives concurrent clients with failures and lost responses, and
//! injectors of anomalies that no correct store can produce.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod anomalies;

use std::collections::BTreeMap;

use kvcheck::{
    Compare, CompareResult, CompareTarget, DbCheckReport, DbCheckResult, DbHistory, DbOp, DbOutcome,
    DbOutput, DbViolation, KeyRange, KeyValue, Response, Revision,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[path = "../sim/mod.rs"]
mod sim;
pub use sim::Workload;
use sim::{Ending, Model, drive, options_in, rows_to_history, to_history};

pub fn range(key: &str) -> DbOp {
    DbOp::Range { range: KeyRange::single(key) }
}

pub fn range_between(key: &str, end: &str) -> DbOp {
    DbOp::Range { range: KeyRange::between(key, end) }
}

pub fn put(key: &str, value: &str) -> DbOp {
    DbOp::Put { key: key.into(), value: value.into(), prev_kv: false }
}

pub fn del(key: &str) -> DbOp {
    DbOp::DeleteRange { range: KeyRange::single(key) }
}

pub fn compare(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare { key: key.into(), target, result }
}

pub fn txn(compare: Vec<Compare>, success: Vec<DbOp>, failure: Vec<DbOp>) -> DbOp {
    DbOp::Txn { compare, success, failure }
}

pub fn kv(key: &str, value: &str, create: Revision, modified: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
    }
}

pub fn ok(revision: Revision, response: Response) -> DbOutcome {
    DbOutcome::Ok(DbOutput { revision, response })
}

pub fn put_ok(revision: Revision) -> DbOutcome {
    ok(revision, Response::Put { prev_kv: None })
}

pub fn read_ok(revision: Revision, kvs: Vec<KeyValue>) -> DbOutcome {
    let count = kvs.len() as u64;
    ok(revision, Response::Range { kvs, count })
}

pub fn deleted_ok(revision: Revision, deleted: u64) -> DbOutcome {
    ok(revision, Response::DeleteRange { deleted })
}

/// Builds a history from `(client, invoke, complete, op, outcome)` rows; ids are row numbers.
pub fn history(rows: Vec<(u64, u64, u64, DbOp, DbOutcome)>) -> DbHistory {
    rows_to_history(rows)
}

/// Checks with artifacts in a fresh temporary directory (returned so it outlives the report).
pub fn run_check(history: &DbHistory) -> (DbCheckReport, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (kvcheck::check_db(history, options_in(&dir, 10)), dir)
}

pub fn assert_linearizable(history: &DbHistory) -> kvcheck::RevisionLog {
    let (report, _dir) = run_check(history);
    match report.result {
        DbCheckResult::Ok(log) => log,
        _ => panic!("expected linearizable, got {report}\n{}", kvcheck::render_db_history(history)),
    }
}

/// Asserts a violation and what every violation must satisfy: its file exists and holds the
/// failing sub-history, which fails again on its own.
pub fn assert_violation(history: &DbHistory) -> DbViolation {
    let (report, dir) = run_check(history);
    let DbCheckResult::Violation(violation) = report.result else {
        panic!("expected a violation, got {report}\n{}", kvcheck::render_db_history(history));
    };
    let path = violation.artifact_path().expect("violation file written").to_owned();
    assert!(path.starts_with(dir.path()), "{}", path.display());
    assert!(violation.to_string().contains(&path.display().to_string()), "{violation}");
    assert_eq!(DbHistory::read_json_file(&path).unwrap(), violation.minimal);
    let (again, _dir) = run_check(&violation.minimal);
    assert!(
        matches!(again.result, DbCheckResult::Violation(_)),
        "failing sub-history passes on its own: {again}\n{violation}"
    );
    *violation
}

/// An etcd key space: written from etcd's documented semantics, independently of the checker.
#[derive(Debug, Clone, Default)]
pub struct RefStore {
    pub kvs: BTreeMap<String, KeyValue>,
    /// 1 for an empty store.
    pub revision: Revision,
}

impl RefStore {
    pub fn new() -> Self {
        RefStore { kvs: BTreeMap::new(), revision: 1 }
    }

    /// Applies `op`; the output carries the header revision a correct store answers with.
    pub fn apply(&mut self, op: &DbOp) -> DbOutput {
        let next = self.revision + 1;
        let mut changed = false;
        let response = self.exec(op, next, &mut changed);
        if changed {
            self.revision = next;
        }
        DbOutput { revision: self.revision, response }
    }

    fn exec(&mut self, op: &DbOp, next: Revision, changed: &mut bool) -> Response {
        match op {
            DbOp::Range { range } => {
                let kvs: Vec<KeyValue> =
                    self.kvs.values().filter(|kv| range.contains(&kv.key)).cloned().collect();
                Response::Range { count: kvs.len() as u64, kvs }
            }
            DbOp::Put { key, value, prev_kv } => {
                let prev = self.kvs.get(key).cloned();
                let (create_revision, version) =
                    prev.as_ref().map_or((next, 1), |p| (p.create_revision, p.version + 1));
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: next,
                    version,
                };
                self.kvs.insert(key.clone(), kv);
                *changed = true;
                Response::Put { prev_kv: if *prev_kv { prev } else { None } }
            }
            DbOp::DeleteRange { range } => {
                let doomed: Vec<String> =
                    self.kvs.keys().filter(|key| range.contains(key)).cloned().collect();
                for key in &doomed {
                    self.kvs.remove(key);
                }
                *changed |= !doomed.is_empty();
                Response::DeleteRange { deleted: doomed.len() as u64 }
            }
            DbOp::Txn { compare, success, failure } => {
                let succeeded = compare.iter().all(|guard| self.holds(guard));
                let branch = if succeeded { success } else { failure };
                let responses = branch.iter().map(|op| self.exec(op, next, changed)).collect();
                Response::Txn { succeeded, responses }
            }
        }
    }

    fn holds(&self, guard: &Compare) -> bool {
        let kv = self.kvs.get(&guard.key);
        let ordering = match (&guard.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(value), Some(kv)) => kv.value.as_str().cmp(value.as_str()),
            (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        };
        match guard.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Less => ordering.is_lt(),
            CompareResult::Greater => ordering.is_gt(),
        }
    }
}

/// A simulated run: the history, and the writes in the order the store applied them (the write of
/// revision `r` at index `r - 2`).
pub struct Simulation {
    pub history: DbHistory,
    pub applied: Vec<DbOp>,
}

impl Simulation {
    /// The reference store at `revision`.
    pub fn state_at(&self, revision: Revision) -> RefStore {
        let mut store = RefStore::new();
        for op in self.applied.iter().take((revision - 1).max(0) as usize) {
            store.apply(op);
        }
        store
    }
}

fn key_name(n: usize) -> String {
    format!("k{n:02}")
}

/// A random request: single- and multi-key ranges, puts, deletes, compare-and-set transactions,
/// multi-key transactions and read-only transactions.
fn random_op(rng: &mut ChaCha8Rng, store: &RefStore, keys: usize, next_value: &mut u64) -> DbOp {
    let key = key_name(rng.random_range(0..keys));
    let mut value = || {
        *next_value += 1;
        format!("v{next_value}")
    };
    match rng.random_range(0..100) {
        0..25 => range(&key),
        25..33 => {
            let (a, b) = (rng.random_range(0..keys), rng.random_range(0..keys));
            range_between(&key_name(a.min(b)), &key_name(a.max(b) + 1))
        }
        33..35 => DbOp::Range { range: KeyRange::from_key(key) },
        35..60 => put(&key, &value()),
        60..65 => del(&key),
        65..67 => {
            let first = rng.random_range(0..keys);
            DbOp::DeleteRange { range: KeyRange::between(key_name(first), key_name(first + 2)) }
        }
        67..85 => {
            // Compare-and-set on the value (mostly the current one), or creation if absent.
            let guard = match store.kvs.get(&key) {
                Some(kv) if rng.random_bool(0.8) => {
                    compare(&key, CompareTarget::Value(kv.value.clone()), CompareResult::Equal)
                }
                _ => compare(&key, CompareTarget::Version(0), CompareResult::Equal),
            };
            txn(vec![guard], vec![put(&key, &value())], vec![range(&key)])
        }
        85..95 => {
            // Move-like multi-key transaction guarded by the mod revision of one key.
            let other = key_name(rng.random_range(0..keys));
            let modified = store.kvs.get(&key).map_or(0, |kv| kv.mod_revision);
            let guard = compare(&key, CompareTarget::ModRevision(modified), CompareResult::Equal);
            if other == key {
                txn(vec![guard], vec![put(&key, &value())], vec![range(&key)])
            } else {
                txn(vec![guard], vec![put(&key, &value()), del(&other)], vec![range(&key), range(&other)])
            }
        }
        _ => {
            // Read-only transaction with branches of the same shape.
            let guard = compare(&key, CompareTarget::Version(0), CompareResult::Greater);
            txn(vec![guard], vec![range(&key)], vec![range(&key)])
        }
    }
}

/// The reference store with the generator of the whole-database workload, remembering the
/// writes in the order they changed the store.
struct Database {
    keys: usize,
    store: RefStore,
    applied: Vec<DbOp>,
    next_value: u64,
}

impl Model for Database {
    type Op = DbOp;
    type Output = DbOutput;

    fn generate(&mut self, rng: &mut ChaCha8Rng) -> DbOp {
        random_op(rng, &self.store, self.keys, &mut self.next_value)
    }

    fn apply(&mut self, op: &DbOp) -> DbOutput {
        let before = self.store.revision;
        let output = self.store.apply(op);
        if self.store.revision != before {
            self.applied.push(op.clone());
        }
        output
    }
}

/// Generates the history a correct store produces under random concurrency and faults (see
/// [`drive`]).
pub fn simulate(seed: u64, workload: Workload) -> Simulation {
    let mut model =
        Database { keys: workload.keys, store: RefStore::new(), applied: Vec::new(), next_value: 0 };
    let history = to_history(drive(seed, workload, &mut model), |ending| match ending {
        Ending::Ok(output) => DbOutcome::Ok(output),
        Ending::Failed => DbOutcome::Failed,
        Ending::Unknown => DbOutcome::Unknown,
    });
    Simulation { history, applied: model.applied }
}
