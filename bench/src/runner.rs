//! Drives N concurrent clients through a warm-up and a measured phase.
//!
//! The runner knows nothing of etcd: a [`Worker`] performs one operation at a time and the
//! runner times it, counts errors, and stops every client when the operation budget or the
//! deadline is spent. Every loop is bounded — by `--ops` (with `max_duration` as a safety
//! net) or by `--duration` — and every operation by a timeout, so a run always ends by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::procfs::CpuSample;
use crate::stats::Latencies;

/// What one finished operation amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation did what it asked for.
    Done,
    /// A compare-and-swap found the value changed underneath it: the round trip completed
    /// normally but wrote nothing. Counted apart from errors and timed like any operation.
    Conflict,
}

/// One benchmark client: performs one operation per call, on its own connection share.
pub trait Worker: Send + 'static {
    /// Performs one operation.
    fn op(&mut self) -> impl Future<Output = Result<Outcome, BenchError>> + Send;
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many operations in total (across all clients).
    Ops(u64),
    /// After this much time.
    Duration(Duration),
}

/// How a run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Time spent running the workload before measuring (nothing recorded).
    pub warmup: Duration,
    /// End of the measured phase.
    pub stop: Stop,
    /// Longest a single operation may take before it counts as an error.
    pub op_timeout: Duration,
    /// Hard cap on the measured phase in `Stop::Ops` mode.
    pub max_duration: Duration,
}

/// What the measured phase produced.
#[derive(Debug)]
pub struct RunStats {
    /// Successful operations (including CAS conflicts).
    pub ops: u64,
    /// Failed or timed-out operations.
    pub errors: u64,
    /// CAS operations that found the value changed.
    pub conflicts: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latencies of the successful operations.
    pub latencies: Latencies,
    /// The first error message, to tell why a run failed.
    pub first_error: Option<String>,
}

impl RunStats {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.ops as f64 / secs } else { 0.0 }
    }
}

/// Per-client outcome of a phase.
struct ClientTally<W> {
    worker: W,
    latencies: Latencies,
    ops: u64,
    errors: u64,
    conflicts: u64,
    first_error: Option<String>,
}

/// Limits shared by every client of one phase.
#[derive(Clone)]
struct Budget {
    /// Operations handed out so far; only consulted when `limit` is set.
    issued: Arc<AtomicU64>,
    limit: Option<u64>,
    deadline: Instant,
}

impl Budget {
    /// Claims the right to start one more operation.
    fn claim(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match self.limit {
            Some(limit) => self.issued.fetch_add(1, Ordering::Relaxed) < limit,
            None => true,
        }
    }
}

/// Runs the warm-up, then the measured phase, with one task per worker.
pub async fn run<W: Worker>(workers: Vec<W>, plan: Plan) -> Result<RunStats, BenchError> {
    let workers = warm_up(workers, &plan).await?;
    Ok(measure(workers, &plan).await?.0)
}

/// Runs the workload for `plan.warmup`, recording nothing, and hands the workers back so the
/// caller can take its own readings (CPU counters) right before [`measure`] starts.
pub async fn warm_up<W: Worker>(workers: Vec<W>, plan: &Plan) -> Result<Vec<W>, BenchError> {
    if plan.warmup.is_zero() || workers.is_empty() {
        return Ok(workers);
    }
    let budget = Budget { issued: Arc::default(), limit: None, deadline: Instant::now() + plan.warmup };
    Ok(phase(workers, budget, plan.op_timeout).await?.0.into_iter().map(|t| t.worker).collect())
}

/// The measured phase: every worker runs until `plan.stop`; no request is in flight when it
/// returns, so readings taken right after it cover exactly the operations counted. The workers
/// come back too, for what they kept themselves (the steps of an operation, state to clean up).
pub async fn measure<W: Worker>(workers: Vec<W>, plan: &Plan) -> Result<(RunStats, Vec<W>), BenchError> {
    if workers.is_empty() {
        return Err(BenchError::Config("at least one client is needed".into()));
    }
    let budget = match plan.stop {
        Stop::Ops(n) => {
            Budget { issued: Arc::default(), limit: Some(n), deadline: Instant::now() + plan.max_duration }
        }
        Stop::Duration(d) => Budget { issued: Arc::default(), limit: None, deadline: Instant::now() + d },
    };
    let (tallies, elapsed) = phase(workers, budget, plan.op_timeout).await?;
    let mut stats = RunStats {
        ops: 0,
        errors: 0,
        conflicts: 0,
        elapsed,
        latencies: Latencies::new()?,
        first_error: None,
    };
    let mut workers = Vec::with_capacity(tallies.len());
    for t in tallies {
        stats.ops += t.ops;
        stats.errors += t.errors;
        stats.conflicts += t.conflicts;
        stats.latencies.merge(&t.latencies);
        if stats.first_error.is_none() {
            stats.first_error = t.first_error;
        }
        workers.push(t.worker);
    }
    Ok((stats, workers))
}

/// [`measure`] between two readings of the CPU time of `server_pids` and of kvbench: what the
/// servers and the client spent on exactly the operations counted.
pub async fn measure_with_cpu<W: Worker>(
    workers: Vec<W>,
    plan: &Plan,
    server_pids: &[u32],
) -> Result<(RunStats, CpuSample, Vec<W>), BenchError> {
    let start = CpuSample::take(server_pids);
    let (stats, workers) = measure(workers, plan).await?;
    Ok((stats, start.until(&CpuSample::take(server_pids)), workers))
}

/// Runs every worker until the budget is spent; returns the tallies and the phase's wall time.
async fn phase<W: Worker>(
    workers: Vec<W>,
    budget: Budget,
    op_timeout: Duration,
) -> Result<(Vec<ClientTally<W>>, Duration), BenchError> {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for worker in workers {
        let latencies = Latencies::new()?;
        let budget = budget.clone();
        set.spawn(client_loop(
            ClientTally { worker, latencies, ops: 0, errors: 0, conflicts: 0, first_error: None },
            budget,
            op_timeout,
        ));
    }
    let mut tallies = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(t) => tallies.push(t),
            Err(e) => return Err(BenchError::Unexpected(format!("client task failed: {e}"))),
        }
    }
    Ok((tallies, start.elapsed()))
}

async fn client_loop<W: Worker>(
    mut t: ClientTally<W>,
    budget: Budget,
    op_timeout: Duration,
) -> ClientTally<W> {
    while budget.claim() {
        let started = Instant::now();
        let result = match tokio::time::timeout(op_timeout, t.worker.op()).await {
            Ok(r) => r,
            Err(_) => Err(BenchError::Timeout(op_timeout)),
        };
        let took = started.elapsed();
        match result {
            Ok(outcome) => {
                t.ops += 1;
                t.latencies.record(took);
                if outcome == Outcome::Conflict {
                    t.conflicts += 1;
                }
            }
            Err(e) => {
                t.errors += 1;
                if t.first_error.is_none() {
                    t.first_error = Some(e.to_string());
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleeps `delay` per op; every `fail_every`-th op fails, every `conflict_every`-th conflicts.
    struct Fake {
        delay: Duration,
        n: u64,
        fail_every: u64,
        conflict_every: u64,
    }

    impl Worker for Fake {
        async fn op(&mut self) -> Result<Outcome, BenchError> {
            self.n += 1;
            tokio::time::sleep(self.delay).await;
            if self.fail_every > 0 && self.n.is_multiple_of(self.fail_every) {
                return Err(BenchError::Unexpected(format!("op {}", self.n)));
            }
            if self.conflict_every > 0 && self.n.is_multiple_of(self.conflict_every) {
                return Ok(Outcome::Conflict);
            }
            Ok(Outcome::Done)
        }
    }

    fn fake(delay_ms: u64, fail_every: u64, conflict_every: u64) -> Fake {
        Fake { delay: Duration::from_millis(delay_ms), n: 0, fail_every, conflict_every }
    }

    fn plan(stop: Stop) -> Plan {
        Plan {
            warmup: Duration::ZERO,
            stop,
            op_timeout: Duration::from_secs(5),
            max_duration: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn ops_budget_is_exact_across_clients() {
        let workers = (0..7).map(|_| fake(0, 0, 0)).collect();
        let stats = run(workers, plan(Stop::Ops(1000))).await.unwrap();
        assert_eq!(stats.ops, 1000);
        assert_eq!(stats.errors, 0);
        assert_eq!(stats.latencies.count(), 1000);
        assert!(stats.throughput() > 0.0);
    }

    #[tokio::test]
    async fn errors_and_conflicts_are_counted_apart() {
        // One client, 60 ops: ops 3,6,..,60 fail (20); of the rest, multiples of 5 but not 3
        // conflict: 5,10,20,25,35,40,50,55 (8).
        let stats = run(vec![fake(0, 3, 5)], plan(Stop::Ops(60))).await.unwrap();
        assert_eq!(stats.errors, 20);
        assert_eq!(stats.ops, 40);
        assert_eq!(stats.conflicts, 8);
        assert_eq!(stats.latencies.count(), 40);
        assert_eq!(stats.first_error.as_deref(), Some("unexpected response: op 3"));
    }

    #[tokio::test]
    async fn duration_mode_stops_by_itself() {
        let started = Instant::now();
        let workers = (0..4).map(|_| fake(5, 0, 0)).collect();
        let stats = run(workers, plan(Stop::Duration(Duration::from_millis(200)))).await.unwrap();
        assert!(stats.ops > 0);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(stats.elapsed >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn slow_ops_time_out_as_errors() {
        let mut p = plan(Stop::Ops(3));
        p.op_timeout = Duration::from_millis(20);
        let stats = run(vec![fake(1000, 0, 0)], p).await.unwrap();
        assert_eq!(stats.errors, 3);
        assert_eq!(stats.ops, 0);
        assert_eq!(stats.throughput(), 0.0);
    }

    #[tokio::test]
    async fn warmup_is_not_measured() {
        let mut p = plan(Stop::Ops(10));
        p.warmup = Duration::from_millis(50);
        let stats = run(vec![fake(1, 0, 0)], p).await.unwrap();
        assert_eq!(stats.ops, 10);
        assert_eq!(stats.latencies.count(), 10);
    }

    #[tokio::test]
    async fn warm_up_hands_back_every_worker_then_measure_counts_alone() {
        let mut p = plan(Stop::Ops(12));
        p.warmup = Duration::from_millis(30);
        let workers = warm_up((0..3).map(|_| fake(1, 0, 0)).collect(), &p).await.unwrap();
        assert_eq!(workers.len(), 3);
        let warmed: u64 = workers.iter().map(|w| w.n).sum();
        let (stats, workers) = measure(workers, &p).await.unwrap();
        assert_eq!(stats.ops, 12);
        assert_eq!(workers.len(), 3, "measure hands the workers back");
        assert_eq!(workers.iter().map(|w| w.n).sum::<u64>(), warmed + 12);
    }

    #[tokio::test]
    async fn no_clients_is_a_config_error() {
        let r = run(Vec::<Fake>::new(), plan(Stop::Ops(1))).await;
        assert!(matches!(r, Err(BenchError::Config(_))));
    }
}
