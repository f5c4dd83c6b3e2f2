//! Maintenance workloads: how long a snapshot takes to save, and how much a defragmentation
//! stalls the writes of a member's clients.
//!
//! Both are operations an operator runs on a live cluster, so the figures that matter are the
//! ones a client sees: `etcdctl snapshot save`'s wall time to a synced file, and the put latency
//! on the member being defragmented while it rewrites its database.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::Client;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::conn::{options, url};
use crate::error::BenchError;
use crate::keys;
use crate::stats::{Latencies, LatencySummary};

/// What saving a snapshot cost.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotSaved {
    /// Bytes written.
    pub bytes: u64,
    /// From the request to the file synced.
    pub elapsed: Duration,
}

/// Streams `endpoint`'s snapshot (Maintenance.Snapshot) into `out` and syncs it, as
/// `etcdctl snapshot save` does.
pub async fn snapshot_save(
    endpoint: &str,
    out: &Path,
    request_timeout: Duration,
) -> Result<SnapshotSaved, BenchError> {
    let io = |source| BenchError::Io { path: out.to_path_buf(), source };
    let mut client = Client::connect([url(endpoint)], Some(options(request_timeout))).await?;
    let started = Instant::now();
    let mut file = tokio::fs::File::create(out).await.map_err(io)?;
    let mut stream = client.snapshot().await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.message().await? {
        file.write_all(chunk.blob()).await.map_err(io)?;
        bytes += chunk.blob().len() as u64;
    }
    file.sync_all().await.map_err(io)?;
    Ok(SnapshotSaved { bytes, elapsed: started.elapsed() })
}

/// How a defragmentation went, seen by the member's writers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefragStall {
    /// Milliseconds the Defragment call took.
    pub defrag_ms: f64,
    /// The member's database size (Status `db_size`) before the call, bytes.
    pub db_size_before: u64,
    /// The same after it.
    pub db_size_after: u64,
    /// Puts completed per second in the steady phase before the call.
    pub puts_per_s_before: f64,
    /// Puts completed per second while the call ran.
    pub puts_per_s_during: f64,
    /// Latency of puts before the call.
    pub before: LatencySummary,
    /// Latency of every put that was in flight at some point during the call.
    pub during: LatencySummary,
    /// Puts that failed.
    pub errors: u64,
}

/// One completed put: when it started and ended, relative to the run's start.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Duration,
    end: Duration,
    ok: bool,
}

/// The shape of a defrag-stall run.
#[derive(Debug, Clone, Copy)]
pub struct DefragPlan {
    /// Concurrent writers on the member.
    pub writers: u64,
    /// Steady writes before the call, and after it.
    pub settle: Duration,
    /// Keys the writers overwrite (`0..key_space`).
    pub key_space: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Longest one request may take.
    pub request_timeout: Duration,
}

/// Runs `plan.writers` put loops against `endpoint`, calls Defragment on it after `settle`,
/// keeps writing for `settle` more, and sorts the puts into before and during the call.
pub async fn defrag_stall(endpoint: &str, plan: DefragPlan) -> Result<DefragStall, BenchError> {
    if plan.writers == 0 || plan.key_space == 0 {
        return Err(BenchError::Config("defrag-stall needs at least one writer and one key".into()));
    }
    let mut admin = Client::connect([url(endpoint)], Some(options(plan.request_timeout))).await?;
    let db_size_before = admin.status().await?.db_size().max(0) as u64;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..plan.writers {
        let client = Client::connect([url(endpoint)], Some(options(plan.request_timeout))).await?;
        tasks.push(tokio::spawn(write_loop(client, w, plan, origin, stop.clone())));
    }
    tokio::time::sleep(plan.settle).await;
    let called = origin.elapsed();
    let defrag_result = admin.defragment().await;
    let returned = origin.elapsed();
    tokio::time::sleep(plan.settle).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.map_err(|e| BenchError::Unexpected(format!("writer task: {e}")))?);
    }
    defrag_result?;
    let db_size_after = admin.status().await?.db_size().max(0) as u64;
    let mut before = Latencies::new()?;
    let mut during = Latencies::new()?;
    let (mut done_before, mut done_during, mut errors) = (0u64, 0u64, 0u64);
    for s in &samples {
        if !s.ok {
            errors += 1;
            continue;
        }
        if s.end <= called {
            before.record(s.end - s.start);
            done_before += 1;
        } else if s.start < returned {
            during.record(s.end - s.start);
        }
        if s.end > called && s.end <= returned {
            done_during += 1;
        }
    }
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(f64::EPSILON);
    Ok(DefragStall {
        defrag_ms: (returned - called).as_secs_f64() * 1000.0,
        db_size_before,
        db_size_after,
        puts_per_s_before: rate(done_before, called),
        puts_per_s_during: rate(done_during, returned - called),
        before: before.summary(),
        during: during.summary(),
        errors,
    })
}

async fn write_loop(
    mut client: Client,
    writer: u64,
    plan: DefragPlan,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let value = vec![b'v'; plan.value_size];
    let mut samples = Vec::new();
    let mut i = writer;
    while !stop.load(Ordering::Relaxed) {
        let key = keys::key(i % plan.key_space);
        i = i.wrapping_add(plan.writers.wrapping_mul(7919));
        let start = origin.elapsed();
        let ok = matches!(
            tokio::time::timeout(plan.request_timeout, client.put(key, value.clone(), None)).await,
            Ok(Ok(_))
        );
        samples.push(Sample { start, end: origin.elapsed(), ok });
    }
    samples
}
