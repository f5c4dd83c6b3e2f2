//! Automatic compaction (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`),
//! run by the leader: every member runs the loop, and only the one that leads proposes.
//!
//! - `periodic`: keep `retention` worth of history. The revision is sampled every tenth of the
//!   retention (at most every 6 minutes); once per retention (at most once an hour) history is
//!   compacted at the oldest sample, the revision of about `retention` ago.
//! - `revision`: keep the last `retention` revisions; every 5 minutes (etcd's fixed interval;
//!   `--auto-compaction-revision-interval`, hidden, shortens it for tests) history is
//!   compacted at the current revision minus `retention`.
//!
//! Compactions go through the log like a client's Compact, so every member compacts at the
//! same revision.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{ApiContext, EtcdError};
use crate::config::{AutoCompactionMode, parse_duration};
use crate::proto::etcdserverpb::CompactionRequest;
use crate::proto::kvserverpb::internal_request::Request;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// History younger than this.
    Period(Duration),
    /// This many revisions.
    Revisions(i64),
}

/// A `--auto-compaction-retention` that means nothing in its mode.
#[derive(Debug, thiserror::Error)]
#[error("invalid --auto-compaction-retention {0:?} for mode {1}")]
pub struct RetentionError(String, &'static str);

/// Reads the retention as etcd does: in `periodic` mode a duration or a number of hours, in
/// `revision` mode a number of revisions; `None` when auto-compaction is off (`0`).
pub fn parse_retention(mode: AutoCompactionMode, text: &str) -> Result<Option<Retention>, RetentionError> {
    let text = text.trim();
    match mode {
        AutoCompactionMode::Revision => match text.parse::<i64>() {
            Ok(0) => Ok(None),
            Ok(n) if n > 0 => Ok(Some(Retention::Revisions(n))),
            _ => Err(RetentionError(text.to_string(), "revision")),
        },
        AutoCompactionMode::Periodic => {
            let period = match text.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours * 3600),
                Err(_) => parse_duration(text).map_err(|_| RetentionError(text.to_string(), "periodic"))?,
            };
            Ok((!period.is_zero()).then_some(Retention::Period(period)))
        }
    }
}

/// The periodic policy: samples of the revision, and when it last compacted.
#[derive(Debug)]
pub struct Periodic {
    period: Duration,
    samples: VecDeque<i64>,
    last_success: Instant,
    /// The wait before the next compaction: the whole period first, then the shorter
    /// compaction interval.
    wait: Duration,
}

impl Periodic {
    pub fn new(period: Duration, now: Instant) -> Self {
        Self { period, samples: VecDeque::new(), last_success: now, wait: period }
    }

    /// How often the revision is sampled (a tenth of the period, capped at an hour's tenth).
    pub fn sample_every(&self) -> Duration {
        self.period.min(Duration::from_secs(3600)) / 10
    }

    /// Records the current revision; returns the revision to compact at, if it is time.
    pub fn tick(&mut self, revision: i64, now: Instant) -> Option<i64> {
        let keep = (self.period.as_nanos() / self.sample_every().as_nanos().max(1)) as usize + 1;
        self.samples.push_back(revision);
        while self.samples.len() > keep {
            self.samples.pop_front();
        }
        if now.duration_since(self.last_success) < self.wait {
            return None;
        }
        self.wait = self.period.min(Duration::from_secs(3600));
        self.samples.front().copied()
    }

    /// Called when the compaction at the returned revision succeeded (or was already done).
    pub fn succeeded(&mut self, now: Instant) {
        self.last_success = now;
    }
}

/// The revision policy: the revision to compact at, given the current one and the last.
pub fn revision_target(current: i64, keep: i64, last: i64) -> Option<i64> {
    let target = current - keep;
    (target > 0 && target != last).then_some(target)
}

/// Runs the compactor until shutdown; in revision mode it compacts every `revision_every`.
pub async fn run(
    ctx: Arc<ApiContext>,
    retention: Retention,
    revision_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut periodic = match retention {
        Retention::Period(p) => Some(Periodic::new(p, Instant::now())),
        Retention::Revisions(_) => None,
    };
    let every = periodic.as_ref().map_or(revision_every, Periodic::sample_every);
    let mut last = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Ok(current) = ctx.kv.current_revision() else { continue };
        let target = match (&mut periodic, retention) {
            (Some(p), _) => p.tick(current, Instant::now()),
            (None, Retention::Revisions(keep)) => revision_target(current, keep, last),
            (None, Retention::Period(_)) => None,
        };
        let Some(target) = target else { continue };
        if !ctx.node.status().is_leader {
            continue;
        }
        let request = Request::Compaction(CompactionRequest { revision: target, physical: false });
        let outcome = ctx.propose(request).await.map(|applied| applied.outcome);
        let done = match outcome {
            Ok(crate::storage::Outcome::Compaction(_)) => {
                info!(revision = target, "auto-compacted history");
                true
            }
            // Compacted already (by a client, or the previous leader): nothing to do.
            Ok(crate::storage::Outcome::Rejected(crate::storage::KvError::Compacted { .. })) => true,
            Ok(other) => {
                warn!(revision = target, outcome = ?other, "auto-compaction refused");
                false
            }
            Err(EtcdError::NotLeader | EtcdError::NoLeader) => false,
            Err(e) => {
                warn!(revision = target, error = %e, "auto-compaction failed; retried later");
                false
            }
        };
        if done {
            last = target;
            if let Some(p) = periodic.as_mut() {
                p.succeeded(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_the_revision_of_one_period_ago_once_a_period() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut p = Periodic::new(period, start);
        assert_eq!(p.sample_every(), Duration::from_secs(1));
        let mut compacted = Vec::new();
        for second in 1..=35u64 {
            let now = start + Duration::from_secs(second);
            if let Some(rev) = p.tick(100 + second as i64 * 10, now) {
                compacted.push((second, rev));
                p.succeeded(now);
            }
        }
        // At 10 s the oldest sample is the one of 1 s (the first); then every 10 s, the
        // revision of 10 s earlier (samples every second, 11 kept).
        assert_eq!(compacted, [(10, 110), (20, 200), (30, 300)]);
    }

    #[test]
    fn periodic_retries_failures_at_the_next_sample() {
        let start = Instant::now();
        let mut p = Periodic::new(Duration::from_secs(10), start);
        assert!(p.tick(1, start + Duration::from_secs(9)).is_none());
        assert!(p.tick(2, start + Duration::from_secs(10)).is_some());
        // Not told it succeeded: the next sample tries again.
        assert!(p.tick(3, start + Duration::from_secs(11)).is_some());
    }

    #[test]
    fn long_periods_sample_every_six_minutes_and_compact_hourly() {
        let p = Periodic::new(Duration::from_secs(24 * 3600), Instant::now());
        assert_eq!(p.sample_every(), Duration::from_secs(360));
    }

    #[test]
    fn retention_reads_as_etcds_flag() {
        use AutoCompactionMode::{Periodic as P, Revision as R};
        assert_eq!(parse_retention(P, "0").ok(), Some(None));
        assert_eq!(parse_retention(P, "1").ok(), Some(Some(Retention::Period(Duration::from_secs(3600)))));
        assert_eq!(parse_retention(P, "30m").ok(), Some(Some(Retention::Period(Duration::from_secs(1800)))));
        assert_eq!(parse_retention(R, "1000").ok(), Some(Some(Retention::Revisions(1000))));
        assert!(parse_retention(R, "1h").is_err());
        assert!(parse_retention(P, "soon").is_err());
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions() {
        assert_eq!(revision_target(1000, 100, 0), Some(900));
        assert_eq!(revision_target(1000, 100, 900), None, "no new compaction at the same revision");
        assert_eq!(revision_target(50, 100, 0), None, "not enough history yet");
    }
}
