//! The recorder as test clients use it: many tokio tasks against an in-memory store, with lost and
//! failed requests, then a check of what they recorded.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{apply, run_check};
use kvcheck::{CheckError, CheckOptions, CheckResult, History, HistoryRecorder, Op, Outcome, Output};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex;

/// How an in-memory store answers reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// From the current state: linearizable.
    Current,
    /// From the state before the latest write, like a replica one write behind.
    OneWriteBehind,
}

#[derive(Default)]
struct Store {
    current: HashMap<String, String>,
    before_last_write: HashMap<String, String>,
}

impl Store {
    fn serve(&mut self, op: &Op, reads: Reads) -> Output {
        if reads == Reads::OneWriteBehind && matches!(op, Op::Get { .. }) {
            return apply(&mut self.before_last_write.clone(), op);
        }
        if op.is_write() {
            self.before_last_write = self.current.clone();
        }
        apply(&mut self.current, op)
    }
}

fn random_op(rng: &mut ChaCha8Rng, client: u64, n: u64) -> Op {
    let key = format!("key-{}", rng.random_range(0..4));
    let value = format!("c{client}-{n}");
    match rng.random_range(0..6) {
        0..=2 => Op::Get { key },
        3 => Op::Put { key, value },
        4 => Op::Delete { key },
        _ => Op::Cas { key, expected: None, value },
    }
}

/// Runs `clients` tasks of `ops` random operations each; some requests fail before reaching the
/// store and some lose their response (applied or not).
async fn run_clients(store: Arc<Mutex<Store>>, reads: Reads, seed: u64, clients: u64, ops: u64) -> History {
    let recorder = HistoryRecorder::new();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let recorder = recorder.clone();
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(client));
                for n in 0..ops {
                    let op = random_op(&mut rng, client, n);
                    let pending = recorder.invoke(client, op.clone());
                    tokio::task::yield_now().await;
                    let outcome = match rng.random_range(0..20) {
                        0 => Outcome::Failed,
                        1 => Outcome::Unknown,
                        roll => {
                            let output = store.lock().await.serve(&op, reads);
                            tokio::task::yield_now().await;
                            if roll == 2 { Outcome::Unknown } else { Outcome::Ok(output) }
                        }
                    };
                    recorder.complete(pending, outcome);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    recorder.history()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_of_a_correct_store_are_linearizable() {
    for seed in 0..5 {
        let history = run_clients(Arc::default(), Reads::Current, seed, 8, 150).await;
        assert_eq!(history.len(), 8 * 150);
        let (report, _dir) = run_check(&history);
        assert!(report.is_linearizable(), "seed {seed}: {report}");
        report.into_result().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_one_write_behind_are_caught() {
    let seed = 7;
    let store: Arc<Mutex<Store>> = Arc::default();
    let mut history = run_clients(Arc::clone(&store), Reads::OneWriteBehind, seed, 4, 50).await;
    // Concurrency may hide the lag; a client that writes twice and then reads cannot miss it.
    let recorder = HistoryRecorder::new();
    for op in [
        Op::Put { key: "solo".into(), value: "1".into() },
        Op::Put { key: "solo".into(), value: "2".into() },
        Op::Get { key: "solo".into() },
    ] {
        let pending = recorder.invoke(99, op.clone());
        let output = store.lock().await.serve(&op, Reads::OneWriteBehind);
        recorder.complete(pending, Outcome::Ok(output));
    }
    let offset = history.len() as u64;
    let mut ops = history.operations().to_vec();
    let last = ops.iter().map(|op| op.complete).max().unwrap_or(0);
    ops.extend(recorder.history().operations().iter().cloned().map(|mut op| {
        op.id += offset;
        op.invoke += last + 1;
        op.complete += last + 1;
        op
    }));
    history = History::new(ops).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let options =
        CheckOptions::default().with_artifact_dir(dir.path()).with_time_budget(Duration::from_secs(60));
    let report = kvcheck::check(&history, options);
    let CheckResult::Violation(violation) = &report.result else { panic!("seed {seed}: {report}") };
    let path = violation.artifact_path().unwrap();
    assert!(path.starts_with(dir.path()));
    assert!(report.to_string().contains(&path.display().to_string()), "{report}");
    assert!(violation.render().contains("!!"), "{}", violation.render());
    let error = report.into_result().unwrap_err();
    assert!(matches!(error, CheckError::Violation(_)));
    assert!(error.to_string().contains("not linearizable"), "{error}");
}

#[tokio::test]
async fn cancelled_request_is_recorded_as_unknown() {
    let recorder = HistoryRecorder::new();
    let (_never_sent, never) = tokio::sync::oneshot::channel::<()>();
    let (invoked_tx, invoked) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let pending = recorder.invoke(1, Op::Put { key: "k".into(), value: "v".into() });
            invoked_tx.send(()).unwrap();
            let _ = never.await;
            recorder.complete(pending, Outcome::Ok(Output::Put));
        })
    };
    invoked.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let read = recorder.invoke(2, Op::Get { key: "k".into() });
    recorder.complete(read, Outcome::Ok(Output::Get { value: Some("v".into()) }));
    let history = recorder.history();
    assert_eq!(history.operations()[0].outcome, Outcome::Unknown);

    // The put may have applied, so reading its value is fine; the JSON form says the same.
    let (report, _dir) = run_check(&history);
    assert!(report.is_linearizable(), "{report}");
    let reloaded = History::from_json(&history.to_json().unwrap()).unwrap();
    assert_eq!(reloaded, history);
}
