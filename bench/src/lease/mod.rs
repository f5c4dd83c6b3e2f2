//! The lease workloads (`kvbench lease`): how many keep-alives per second the members answer,
//! and how many grant → put → revoke cycles per second they complete.
//!
//! Both run on the runner every `kvbench run` workload uses: `--clients` clients sharing
//! `--connections` connections (client `i` on connection `i mod M`), one operation in flight per
//! client, a warm-up and then a measured window, the CPU time of the servers and of kvbench read
//! at both ends of the window. What a client is and does is in [`keepalive`] and [`cycle`]. The
//! servers' resident memory is read before anything is set up and every
//! [`RSS_INTERVAL`](crate::rss::RSS_INTERVAL) until the window ends, so the peak covers what
//! the run's leases and streams cost.
//!
//! Where requests go is the run's [`Target`]: with `round-robin` each client turns over every
//! member, starting at member `i mod n`, so a keep-alive client's stream (opened on its second
//! turn, the grant taking the first) sits on one member and the clients' streams spread evenly;
//! a follower passes keep-alives on to the leader, as etcd's do. With `leader`, everything goes
//! to the leader.

mod cycle;
mod keepalive;

use std::time::Duration;

use clap::ValueEnum;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::conn::{Pool, Target};
use crate::error::BenchError;
use crate::keys;
use crate::procfs::CpuSample;
use crate::rss::{RssReading, RssSampler};
use crate::runner::{self, Plan, RunStats, Stop};

use cycle::CycleWorker;
pub use cycle::Steps;
use keepalive::{KeepAliveWorker, Stream};

/// The lease workloads. Their names carry the `lease-` prefix (on the command line, in records
/// and in the report) to stand apart from the `run` and `watch` workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize, Deserialize)]
pub enum LeaseWorkload {
    /// One lease per client, renewed over one keep-alive stream the client keeps open (how
    /// clientv3 keeps a lease alive), one keep-alive in flight.
    #[value(name = "lease-keepalive")]
    #[serde(rename = "lease-keepalive")]
    Keepalive,
    /// One lease per client, each keep-alive on a stream of its own (clientv3's
    /// `KeepAliveOnce`, which etcd's `benchmark lease-keepalive` calls).
    #[value(name = "lease-keepalive-once")]
    #[serde(rename = "lease-keepalive-once")]
    KeepaliveOnce,
    /// Grant a lease, put a key attached to it, revoke the lease, again and again.
    #[value(name = "lease-cycle")]
    #[serde(rename = "lease-cycle")]
    Cycle,
}

impl LeaseWorkload {
    /// The name used on the command line, in records and in the report.
    pub fn name(self) -> &'static str {
        match self {
            LeaseWorkload::Keepalive => "lease-keepalive",
            LeaseWorkload::KeepaliveOnce => "lease-keepalive-once",
            LeaseWorkload::Cycle => "lease-cycle",
        }
    }

    /// What one operation of the workload is, in the plural, for tables and summaries.
    pub fn ops(self) -> &'static str {
        match self {
            LeaseWorkload::Keepalive | LeaseWorkload::KeepaliveOnce => "keep-alives",
            LeaseWorkload::Cycle => "cycles",
        }
    }
}

/// What one lease run does.
#[derive(Debug, Clone)]
pub struct LeasePlan {
    /// The workload.
    pub workload: LeaseWorkload,
    /// Concurrent clients, one operation in flight each.
    pub clients: u64,
    /// Connections the clients share.
    pub connections: u64,
    /// Which members the clients talk to.
    pub target: Target,
    /// TTL of every lease granted, seconds.
    pub ttl: i64,
    /// Bytes of the value a cycle puts.
    pub value_size: usize,
    /// Operations before the measured window (not measured).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Longest one operation (a keep-alive, a whole cycle) or a connect may take.
    pub request_timeout: Duration,
    /// Server processes whose memory and CPU time are read.
    pub server_pids: Vec<u32>,
    /// Seeds the values and the run's key prefix.
    pub seed: u64,
}

impl LeasePlan {
    /// Rejects plans that cannot run.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.clients == 0 || self.connections == 0 {
            return Err(BenchError::Config("--clients and --connections must be at least 1".into()));
        }
        if self.ttl <= 0 {
            return Err(BenchError::Config(format!("--ttl {} must be at least 1 second", self.ttl)));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Config("--duration must be above 0".into()));
        }
        Ok(())
    }

    fn runner_plan(&self) -> Plan {
        Plan {
            warmup: self.warmup,
            stop: Stop::Duration(self.duration),
            op_timeout: self.request_timeout,
            max_duration: self.duration,
        }
    }
}

/// What a lease run measured.
#[derive(Debug)]
pub struct LeaseStats {
    /// Operations (keep-alives answered, cycles completed), failures and latencies of the
    /// measured window.
    pub run: RunStats,
    /// Per step, for the cycles only.
    pub steps: Option<Steps>,
    /// The revocations of the run's leases at its end that failed (keep-alive runs).
    pub cleanup: Cleanup,
    /// CPU time used during the window.
    pub cpu: CpuSample,
    /// The servers' memory from before the set-up to the end of the window.
    pub memory: RssReading,
}

/// Failures of the clean-up after the measured window: not operations of the run, but the
/// servers failing requests all the same.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// Requests that failed.
    pub errors: u64,
    /// The first one's message.
    pub first_error: Option<String>,
}

/// Runs one lease workload against the cluster at `endpoints`.
pub async fn run(endpoints: &[String], plan: &LeasePlan) -> Result<LeaseStats, BenchError> {
    plan.validate()?;
    let memory = RssSampler::start(&plan.server_pids);
    let connections = usize::try_from(plan.connections)
        .map_err(|_| BenchError::Config(format!("--connections {} is too large", plan.connections)))?;
    let pool = Pool::open(endpoints, plan.target, connections, plan.request_timeout).await?;
    match plan.workload {
        LeaseWorkload::Keepalive => keep_alives(&pool, plan, Stream::PerClient, memory).await,
        LeaseWorkload::KeepaliveOnce => keep_alives(&pool, plan, Stream::PerKeepAlive, memory).await,
        LeaseWorkload::Cycle => cycles(&pool, plan, memory).await,
    }
}

/// Grants every client its lease, measures the keep-alives, then revokes the leases.
async fn keep_alives(
    pool: &Pool,
    plan: &LeasePlan,
    stream: Stream,
    memory: RssSampler,
) -> Result<LeaseStats, BenchError> {
    let (ttl, timeout) = (plan.ttl, plan.request_timeout);
    let mut granting = JoinSet::new();
    for i in 0..plan.clients {
        let clients = pool.clients_for(i)?;
        granting.spawn(within(timeout, KeepAliveWorker::grant(clients, ttl, stream)));
    }
    let (granted, failed): (Vec<_>, Vec<_>) = joined(granting).await.into_iter().partition(Result::is_ok);
    let workers: Vec<KeepAliveWorker> = granted.into_iter().flatten().collect();
    if let Some(Err(e)) = failed.into_iter().next() {
        // The leases already granted would outlive the run by their TTL, in the next runs.
        revoke_all(workers, timeout).await;
        return Err(e);
    }
    let runner_plan = plan.runner_plan();
    let workers = runner::warm_up(workers, &runner_plan).await?;
    let (run, cpu, workers) = runner::measure_with_cpu(workers, &runner_plan, &plan.server_pids).await?;
    let memory = memory.finish().await?;
    let cleanup = revoke_all(workers, timeout).await;
    Ok(LeaseStats { run, steps: None, cleanup, cpu, memory })
}

/// Closes every client's stream and revokes its lease, so nothing of the run stays in the
/// servers; what failed.
async fn revoke_all(workers: Vec<KeepAliveWorker>, timeout: Duration) -> Cleanup {
    let mut revoking = JoinSet::new();
    for worker in workers {
        revoking.spawn(within(timeout, worker.revoke()));
    }
    let mut cleanup = Cleanup::default();
    for failed in joined(revoking).await.into_iter().filter_map(Result::err) {
        tracing::warn!(error = %failed, "revoking a keep-alive lease failed");
        cleanup.errors += 1;
        cleanup.first_error.get_or_insert_with(|| failed.to_string());
    }
    cleanup
}

/// `fut`, or a timeout error once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(timeout, fut).await.map_err(|_| BenchError::Timeout(timeout))?
}

/// The results of every task of `set`; a task that panicked is an error like any other.
async fn joined<T: 'static>(mut set: JoinSet<Result<T, BenchError>>) -> Vec<Result<T, BenchError>> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(result) = set.join_next().await {
        out.push(result.unwrap_or_else(|e| Err(BenchError::Unexpected(format!("lease task failed: {e}")))));
    }
    out
}

/// Runs the grant → put → revoke cycles, each client on a key of its own.
async fn cycles(pool: &Pool, plan: &LeasePlan, memory: RssSampler) -> Result<LeaseStats, BenchError> {
    let prefix = keys::run_prefix("l", plan.seed);
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let workers = (0..plan.clients)
        .map(|i| {
            let mut key = prefix.clone();
            key.extend_from_slice(format!("{i:04}").as_bytes());
            let value = keys::random_value(&mut rng, plan.value_size);
            CycleWorker::new(pool.clients_for(i)?, key, value, plan.ttl)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let runner_plan = plan.runner_plan();
    let mut workers = runner::warm_up(workers, &runner_plan).await?;
    for worker in &mut workers {
        worker.forget_steps()?;
    }
    let (run, cpu, workers) = runner::measure_with_cpu(workers, &runner_plan, &plan.server_pids).await?;
    let memory = memory.finish().await?;
    let mut steps = Steps::new()?;
    for worker in &workers {
        steps.merge(worker.steps());
    }
    Ok(LeaseStats { run, steps: Some(steps), cleanup: Cleanup::default(), cpu, memory })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LeasePlan {
        LeasePlan {
            workload: LeaseWorkload::Keepalive,
            clients: 1,
            connections: 1,
            target: Target::RoundRobin,
            ttl: 60,
            value_size: 256,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            server_pids: Vec::new(),
            seed: 1,
        }
    }

    #[test]
    fn plans_that_cannot_run_are_refused() {
        assert!(plan().validate().is_ok());
        assert!(LeasePlan { clients: 0, ..plan() }.validate().is_err());
        assert!(LeasePlan { connections: 0, ..plan() }.validate().is_err());
        assert!(LeasePlan { ttl: 0, ..plan() }.validate().is_err());
        assert!(LeasePlan { duration: Duration::ZERO, ..plan() }.validate().is_err());
    }

    #[test]
    fn names_match_the_command_line_and_the_records() {
        for w in [LeaseWorkload::Keepalive, LeaseWorkload::KeepaliveOnce, LeaseWorkload::Cycle] {
            assert_eq!(LeaseWorkload::from_str(w.name(), false), Ok(w));
            assert_eq!(serde_json::to_string(&w).unwrap(), format!("\"{}\"", w.name()));
        }
        assert_eq!(LeaseWorkload::KeepaliveOnce.ops(), "keep-alives");
        assert_eq!(LeaseWorkload::Cycle.ops(), "cycles");
    }

    #[test]
    fn the_window_bounds_the_runner() {
        let p = LeasePlan { warmup: Duration::from_millis(200), ..plan() };
        let r = p.runner_plan();
        assert_eq!((r.warmup, r.stop), (Duration::from_millis(200), Stop::Duration(Duration::from_secs(1))));
    }
}
