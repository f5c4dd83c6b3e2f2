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
    timeout: Duration,
) -> Result<SnapshotSaved, BenchError> {
    let io = |source| BenchError::Io { path: out.to_path_buf(), source };
    let mut client = Client::connect([url(endpoint)], Some(options(timeout))).await?;
    let started = Instant::now();
    let mut file = tokio::fs::File::create(out).await.map_err(io)?;
    // The whole transfer is bounded here: a per-request timeout need not cover a stream's body.
    let transfer = async {
        let mut stream = client.snapshot().await?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await? {
            file.write_all(chunk.blob()).await.map_err(io)?;
            bytes += chunk.blob().len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        Ok::<u64, BenchError>(bytes)
    };
    let bytes = tokio::time::timeout(timeout, transfer).await.map_err(|_| BenchError::Timeout(timeout))??;
    Ok(SnapshotSaved { bytes, elapsed: started.elapsed() })
}

/// How a defragmentation went, seen by the writers of the defragmented member and, when there
/// were any, by writers on the other members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefragStall {
    /// Milliseconds the Defragment call took.
    pub defrag_ms: f64,
    /// The member's database size (Status `db_size`) before the call, bytes.
    pub db_size_before: u64,
    /// The same after it.
    pub db_size_after: u64,
    /// The writers on the defragmented member.
    pub member: WritersSeen,
    /// The writers on the other members (none when no other endpoint was given).
    pub others: Option<WritersSeen>,
}

/// What one group of writers saw before and during the call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WritersSeen {
    /// Puts completed per second in the steady phase before the call.
    pub puts_per_s_before: f64,
    /// Puts completed per second while the call ran.
    pub puts_per_s_during: f64,
    /// Latency of puts before the call.
    pub before: LatencySummary,
    /// Latency of every put that was in flight at some point during the call.
    pub during: LatencySummary,
    /// Puts that failed (timed out or refused), before, during or after the call; a writer
    /// waits [`FAILURE_BACKOFF`] after each.
    pub errors: u64,
    /// What the first failed put was told.
    #[serde(default)]
    pub first_error: Option<String>,
}

/// How long a writer waits after a failed put before the next one.
const FAILURE_BACKOFF: Duration = Duration::from_millis(100);

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
    /// Concurrent writers on the defragmented member, and as many spread over the others.
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

/// Runs `plan.writers` put loops against `endpoint` (and as many spread over `others`), calls
/// Defragment on `endpoint` after `settle`, keeps writing for `settle` more, and sorts each
/// group's puts into before and during the call.
pub async fn defrag_stall(
    endpoint: &str,
    others: &[String],
    plan: DefragPlan,
) -> Result<DefragStall, BenchError> {
    if plan.writers == 0 || plan.key_space == 0 {
        return Err(BenchError::Config("defrag-stall needs at least one writer and one key".into()));
    }
    let mut admin = Client::connect([url(endpoint)], Some(options(plan.request_timeout))).await?;
    let db_size_before = admin.status().await?.db_size().max(0) as u64;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut member_tasks = Vec::new();
    let mut other_tasks = Vec::new();
    for w in 0..plan.writers {
        let client = Client::connect([url(endpoint)], Some(options(plan.request_timeout))).await?;
        member_tasks.push(tokio::spawn(write_loop(client, w, plan, origin, stop.clone())));
        if let Some(other) = others.get(w as usize % others.len().max(1)) {
            let client = Client::connect([url(other)], Some(options(plan.request_timeout))).await?;
            other_tasks.push(tokio::spawn(write_loop(client, plan.writers + w, plan, origin, stop.clone())));
        }
    }
    tokio::time::sleep(plan.settle).await;
    let called = origin.elapsed();
    let defrag_result = admin.defragment().await;
    let returned = origin.elapsed();
    tokio::time::sleep(plan.settle).await;
    stop.store(true, Ordering::Relaxed);
    let member = seen(collect(member_tasks).await?, called, returned)?;
    let others = if other_tasks.is_empty() {
        None
    } else {
        Some(seen(collect(other_tasks).await?, called, returned)?)
    };
    defrag_result?;
    let db_size_after = admin.status().await?.db_size().max(0) as u64;
    Ok(DefragStall {
        defrag_ms: (returned - called).as_secs_f64() * 1000.0,
        db_size_before,
        db_size_after,
        member,
        others,
    })
}

type WriterTask = tokio::task::JoinHandle<(Vec<Sample>, Option<String>)>;

/// Every writer's samples, and the first error any of them saw.
async fn collect(tasks: Vec<WriterTask>) -> Result<(Vec<Sample>, Option<String>), BenchError> {
    let mut samples = Vec::new();
    let mut first_error = None;
    for task in tasks {
        let (mine, error) = task.await.map_err(|e| BenchError::Unexpected(format!("writer task: {e}")))?;
        samples.extend(mine);
        first_error = first_error.or(error);
    }
    Ok((samples, first_error))
}

/// Sorts one group's puts by the call's window `[called, returned)`.
fn seen(
    (samples, first_error): (Vec<Sample>, Option<String>),
    called: Duration,
    returned: Duration,
) -> Result<WritersSeen, BenchError> {
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
    Ok(WritersSeen {
        puts_per_s_before: rate(done_before, called),
        puts_per_s_during: rate(done_during, returned.saturating_sub(called)),
        before: before.summary(),
        during: during.summary(),
        errors,
        first_error,
    })
}

async fn write_loop(
    mut client: Client,
    writer: u64,
    plan: DefragPlan,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, Option<String>) {
    let value = vec![b'v'; plan.value_size];
    let mut samples = Vec::new();
    let mut first_error = None;
    let mut i = writer;
    while !stop.load(Ordering::Relaxed) {
        let key = keys::key(i % plan.key_space);
        i = i.wrapping_add(plan.writers.wrapping_mul(7919));
        let start = origin.elapsed();
        let error =
            match tokio::time::timeout(plan.request_timeout, client.put(key, value.clone(), None)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {:?}", plan.request_timeout)),
            };
        samples.push(Sample { start, end: origin.elapsed(), ok: error.is_none() });
        if let Some(e) = error {
            first_error.get_or_insert(e);
            // As a client retrying a refused write would, rather than counting the same
            // refusal thousands of times a second.
            tokio::time::sleep(FAILURE_BACKOFF).await;
        }
    }
    (samples, first_error)
}
