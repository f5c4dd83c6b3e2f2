//! Which member each client talks to, and what every member served.
//!
//! Every client is pinned to one member, as clientv3 spreads its connections: client `i` talks
//! to member `i mod n`. The nemesis marks a member down while it is killed, paused, disconnected
//! or on the minority side of a partition (the ground truth of what it did, not a guess from
//! errors); a client whose member is down moves to the next member that is not, and goes back as
//! soon as its own is marked up again. So every member serves writes and linearizable reads
//! throughout the run, and the counts here show it.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What one member served and how long it was marked down.
#[derive(Debug, Default, Clone)]
pub struct MemberCounts {
    pub ok_writes: u64,
    pub ok_reads: u64,
    pub unknown: u64,
    pub failed: u64,
    down_since: Option<Instant>,
    down_total: Duration,
}

#[derive(Debug)]
struct Shared {
    endpoints: Vec<String>,
    started: Instant,
    served: Mutex<Vec<MemberCounts>>,
}

/// The members clients are pinned to: their endpoints, which are down now, and the counts.
/// Cloning shares the state.
#[derive(Debug, Clone)]
pub struct Members(Arc<Shared>);

/// How a request ended, for the per-member counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    OkWrite,
    OkRead,
    Unknown,
    Failed,
}

impl Members {
    pub fn new(endpoints: Vec<String>) -> Self {
        let served = Mutex::new(vec![MemberCounts::default(); endpoints.len()]);
        Members(Arc::new(Shared { endpoints, started: Instant::now(), served }))
    }

    pub fn len(&self) -> usize {
        self.0.endpoints.len()
    }

    pub fn endpoint(&self, i: usize) -> &str {
        &self.0.endpoints[i]
    }

    pub fn endpoints(&self) -> &[String] {
        &self.0.endpoints
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MemberCounts>> {
        self.0.served.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks member `i` down (killed, paused, disconnected, cut off from a majority) or up again.
    /// Indices beyond the pinned members (a member the nemesis added) are ignored.
    pub fn set_down(&self, i: usize, down: bool) {
        let mut served = self.lock();
        let Some(m) = served.get_mut(i) else { return };
        match (down, m.down_since) {
            (true, None) => m.down_since = Some(Instant::now()),
            (false, Some(since)) => {
                m.down_total += since.elapsed();
                m.down_since = None;
            }
            _ => {}
        }
    }

    /// Marks every member up.
    pub fn all_up(&self) {
        for i in 0..self.len() {
            self.set_down(i, false);
        }
    }

    /// The member a client pinned to `home` talks to now: `home` unless it is down, else the next
    /// one (in index order, wrapping) that is not; `home` when all are down.
    pub fn route(&self, home: usize) -> usize {
        let served = self.lock();
        let n = served.len();
        (0..n).map(|step| (home + step) % n).find(|&i| served[i].down_since.is_none()).unwrap_or(home)
    }

    /// Counts one request served by member `i`.
    pub fn record(&self, i: usize, how: Answer) {
        let mut served = self.lock();
        let m = &mut served[i];
        match how {
            Answer::OkWrite => m.ok_writes += 1,
            Answer::OkRead => m.ok_reads += 1,
            Answer::Unknown => m.unknown += 1,
            Answer::Failed => m.failed += 1,
        }
    }

    /// Each member's counts and the fraction of the run so far it was marked down.
    pub fn snapshot(&self) -> Vec<(MemberCounts, f64)> {
        let elapsed = self.0.started.elapsed().as_secs_f64().max(1e-9);
        self.lock()
            .iter()
            .map(|m| {
                let down = m.down_total + m.down_since.map_or(Duration::ZERO, |s| s.elapsed());
                (m.clone(), down.as_secs_f64() / elapsed)
            })
            .collect()
    }

    /// A table of what each member served.
    pub fn report(&self, names: &[String]) -> String {
        let mut out = String::from("member       down  ok writes   ok reads   unknown    failed\n");
        for (i, (m, down)) in self.snapshot().iter().enumerate() {
            let name = names.get(i).map_or("?", String::as_str);
            let _ = writeln!(
                out,
                "{name:<10} {:>5.1}% {:>10} {:>10} {:>9} {:>9}",
                down * 100.0,
                m.ok_writes,
                m.ok_reads,
                m.unknown,
                m.failed
            );
        }
        out
    }

    /// Members that were up most of the run (marked down less than half of it) but acknowledged
    /// no write or no linearizable read: with clients pinned to every member, that means the
    /// member did not serve.
    pub fn idle(&self, names: &[String]) -> Vec<String> {
        self.snapshot()
            .iter()
            .enumerate()
            .filter(|(_, (m, down))| *down < 0.5 && (m.ok_writes == 0 || m.ok_reads == 0))
            .map(|(i, (m, down))| {
                let name = names.get(i).map_or("?", String::as_str);
                format!(
                    "{name}: down {:.0}% of the run, {} ok writes, {} ok reads",
                    down * 100.0,
                    m.ok_writes,
                    m.ok_reads
                )
            })
            .collect()
    }
}
