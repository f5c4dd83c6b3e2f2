//! The concurrent workload and verdict shared by the fault suites (`faults_process.rs`,
//! `faults_container.rs`): clients issuing get/put/delete/CAS on a few keys, each operation
//! recorded in a `kvcheck` history with an outcome classified as ok, failed (definitely not
//! applied) or unknown; final reads after healing; the linearizability check and an independent
//! lost-acknowledged-write check.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use kvcheck::{CheckOptions, CheckResult, History, HistoryRecorder, Op, Outcome, Output, check};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Few keys, so that concurrent operations conflict.
pub const KEYS: usize = 5;
/// Concurrent clients; the final reads use client id `CLIENTS`.
pub const CLIENTS: u64 = 4;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads a numeric knob from the environment.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Connects within [`REQUEST_TIMEOUT`], or `None`.
pub async fn connect(endpoints: &[String]) -> Option<Client> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(opts))).await.ok()?.ok()
}

/// (member id of the answering member, leader id it reports).
pub async fn status(endpoint: &str) -> Option<(u64, u64)> {
    let mut c = connect(&[endpoint.to_string()]).await?;
    let s = tokio::time::timeout(Duration::from_secs(1), c.status()).await.ok()?.ok()?;
    Some((s.header()?.member_id(), s.leader()))
}

/// Definite errors: the request was rejected before it could be proposed.
pub fn classify(err: &etcd_client::Error) -> Outcome {
    if let etcd_client::Error::GRpcStatus(s) = err {
        let msg = s.message();
        let definite = s.code() == tonic::Code::InvalidArgument
            || msg == "etcdserver: no leader"
            || msg == "etcdserver: not leader";
        if definite {
            return Outcome::Failed;
        }
    }
    Outcome::Unknown
}

/// Runs one operation with [`REQUEST_TIMEOUT`] and classifies its outcome.
pub async fn run_op(c: &mut Client, op: &Op) -> Outcome {
    let fut = async {
        match op {
            Op::Get { key } => c.get(key.as_str(), None).await.map(|r| Output::Get {
                value: r.kvs().first().map(|kv| kv.value_str().unwrap().to_string()),
            }),
            Op::Put { key, value } => c.put(key.as_str(), value.as_str(), None).await.map(|_| Output::Put),
            Op::Delete { key } => {
                c.delete(key.as_str(), None).await.map(|r| Output::Delete { existed: Some(r.deleted() > 0) })
            }
            Op::Cas { key, expected, value } => {
                let cmp = match expected {
                    Some(e) => Compare::value(key.as_str(), CompareOp::Equal, e.as_str()),
                    None => Compare::version(key.as_str(), CompareOp::Equal, 0),
                };
                let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
                c.txn(txn).await.map(|r| Output::Cas { succeeded: r.succeeded() })
            }
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(out)) => Outcome::Ok(out),
        Ok(Err(e)) => {
            let o = classify(&e);
            // A read that failed for any reason changed nothing.
            if matches!(op, Op::Get { .. }) { Outcome::Failed } else { o }
        }
        Err(_) if matches!(op, Op::Get { .. }) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// One workload client: 40% get, 30% put, 5% delete, 25% CAS (on the value last read, or on
/// absence), every operation recorded; reconnects after any failure.
pub async fn client_loop(
    id: u64,
    endpoints: Vec<String>,
    rec: HistoryRecorder,
    stop: Arc<AtomicBool>,
    seed: u64,
    ops: Arc<AtomicU64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (id * 0x9e37_79b9));
    let mut last_seen: HashMap<String, String> = HashMap::new();
    let mut client = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&endpoints).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        seq += 1;
        let key = format!("k{}", rng.random_range(0..KEYS));
        let value = format!("c{id}-{seq}");
        let op = match rng.random_range(0..100) {
            0..40 => Op::Get { key },
            40..70 => Op::Put { key, value },
            70..75 => Op::Delete { key },
            _ => {
                let expected = if rng.random_bool(0.2) { None } else { last_seen.get(&key).cloned() };
                Op::Cas { key, expected, value }
            }
        };
        let pending = rec.invoke(id, op.clone());
        let outcome = run_op(c, &op).await;
        if let (Op::Get { key }, Outcome::Ok(Output::Get { value: Some(v) })) = (&op, &outcome) {
            last_seen.insert(key.clone(), v.clone());
        }
        let failed = !matches!(outcome, Outcome::Ok(_));
        rec.complete(pending, outcome);
        ops.fetch_add(1, Ordering::Relaxed);
        if failed {
            // A fresh connection lets the client move off a dead, paused or partitioned member.
            client = None;
        }
    }
}

/// The running workload: [`CLIENTS`] client tasks recording into one history.
pub struct Workload {
    pub rec: HistoryRecorder,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Starts the clients against `endpoints`.
    pub fn start(endpoints: Vec<String>, seed: u64) -> Self {
        let rec = HistoryRecorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let workers = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client_loop(id, endpoints.clone(), rec.clone(), stop.clone(), seed, ops.clone()))
            })
            .collect();
        Workload { rec, stop, ops, workers }
    }

    /// Stops the clients and waits for their last operations to complete.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            w.await.unwrap();
        }
    }

    /// Operations completed so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }
}

/// One linearizable read per key after healing, recorded in the history (client [`CLIENTS`]);
/// retries for up to 30 s per key. Returns each key's final value.
pub async fn final_reads(
    rec: &HistoryRecorder,
    endpoints: &[String],
) -> Result<HashMap<String, Option<String>>, String> {
    let mut finals = HashMap::new();
    let mut reader = connect(endpoints).await;
    for k in 0..KEYS {
        let key = format!("k{k}");
        let op = Op::Get { key: key.clone() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = reader.as_mut() {
                let pending = rec.invoke(CLIENTS, op.clone());
                let outcome = run_op(r, &op).await;
                if let Outcome::Ok(Output::Get { value }) = &outcome {
                    finals.insert(key.clone(), value.clone());
                    rec.complete(pending, outcome);
                    break;
                }
                rec.complete(pending, Outcome::Failed);
            }
            if Instant::now() >= deadline {
                return Err(format!("final read of {key} kept failing for 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(c) = connect(endpoints).await {
                reader = Some(c);
            }
        }
    }
    Ok(finals)
}

/// The value each write leaves in the key, if it takes effect.
fn written_value(op: &Op) -> Option<Option<&str>> {
    match op {
        Op::Put { value, .. } | Op::Cas { value, .. } => Some(Some(value)),
        Op::Delete { .. } => Some(None),
        Op::Get { .. } => None,
    }
}

/// Every acknowledged write is either what the final read returns or superseded by a write that
/// was not known to finish before it started. Returns the offending keys' descriptions.
pub fn lost_writes(history: &History, finals: &HashMap<String, Option<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, final_value) in finals {
        let ops: Vec<_> = history.operations().iter().filter(|o| o.op.key() == key).collect();
        // Writes that may have produced the final value.
        let producers: Vec<_> = ops
            .iter()
            .filter(|o| {
                let applied = match (&o.op, &o.outcome) {
                    (_, Outcome::Failed) => false,
                    (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                    (_, Outcome::Unknown) | (_, Outcome::Ok(_)) => true,
                };
                applied && written_value(&o.op).is_some_and(|v| v == final_value.as_deref())
            })
            .collect();
        let acked_writes: Vec<_> = ops
            .iter()
            .filter(|o| match (&o.op, &o.outcome) {
                (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                (Op::Put { .. } | Op::Delete { .. }, Outcome::Ok(_)) => true,
                _ => false,
            })
            .collect();
        if final_value.is_none() && producers.is_empty() {
            if let Some(w) = acked_writes.first() {
                problems.push(format!("{key}: absent at the end, but write #{} was acknowledged", w.id));
            }
            continue;
        }
        // Some producer must not have completed before an acknowledged write was invoked.
        let latest_acked_invoke = acked_writes.iter().map(|o| o.invoke).max();
        let ok = match latest_acked_invoke {
            None => !producers.is_empty() || final_value.is_none(),
            Some(t) => producers.iter().any(|p| matches!(p.outcome, Outcome::Unknown) || p.complete >= t),
        };
        if !ok {
            problems.push(format!(
                "{key}: final value {final_value:?} was overwritten by an acknowledged write invoked at {t:?}",
                t = latest_acked_invoke
            ));
        }
    }
    problems
}

/// Why a run failed its verdict.
#[derive(Debug)]
pub enum Verdict {
    /// Not linearizable; the minimal failing history's file, if one was written.
    Violation { text: String, artifact: Option<std::path::PathBuf> },
    /// The checker ran out of budget or could not decide.
    Undecided(String),
    /// Acknowledged writes not readable at the end.
    LostWrites(Vec<String>),
    /// Too few successful operations to mean anything.
    TooFewOps(usize),
}

/// Counts of a history's operations by outcome, for the report.
pub struct Summary {
    pub total: usize,
    pub ok: usize,
    pub unknown: usize,
    pub failed: usize,
}

pub fn summarize(history: &History) -> Summary {
    let ops = history.operations();
    Summary {
        total: ops.len(),
        ok: ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count(),
        unknown: ops.iter().filter(|o| o.outcome == Outcome::Unknown).count(),
        failed: ops.iter().filter(|o| o.outcome == Outcome::Failed).count(),
    }
}

/// Checks linearizability (kvcheck, 90 s budget) and that no acknowledged write was lost;
/// prints the checker's report under `label`.
pub fn verify(
    label: &str,
    history: &History,
    finals: &HashMap<String, Option<String>>,
) -> Result<(), Verdict> {
    let ok_ops = summarize(history).ok;
    if ok_ops <= 50 {
        return Err(Verdict::TooFewOps(ok_ops));
    }
    let report = check(history, CheckOptions::default().with_time_budget(Duration::from_secs(90)));
    println!("{label}: {report}");
    match &report.result {
        CheckResult::Ok => {}
        CheckResult::Violation(v) => {
            let artifact = v.artifact_path().map(|p| p.to_path_buf());
            if let Some(p) = &artifact {
                println!("{label}: minimal failing history in {}", p.display());
            }
            return Err(Verdict::Violation { text: v.to_string(), artifact });
        }
        other => return Err(Verdict::Undecided(format!("{other:?}"))),
    }
    let lost = lost_writes(history, finals);
    if lost.is_empty() { Ok(()) } else { Err(Verdict::LostWrites(lost)) }
}

/// Writes the whole history as JSON next to the temp files, for replaying the check
/// (`History::read_json_file`) after a failed run; returns its path.
pub fn save_history(history: &History, label: &str, seed: u64) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{label}-seed-{seed}-history.json"));
    match history.to_json() {
        Ok(json) => {
            if let Err(e) = std::fs::write(&path, json) {
                println!("{label}: could not write {}: {e}", path.display());
            }
        }
        Err(e) => println!("{label}: could not serialize the history: {e}"),
    }
    path
}
