//! The servers' resident memory during a run: read once before the run sets anything up, then
//! every [`RSS_INTERVAL`] until the run is over.
//!
//! The workloads that hold state in the servers for their whole length (watchers, leases) are
//! judged on the memory that state costs, not on the session's high-water mark (`VmHWM`), which
//! the put and read workloads set long before. So they read the current resident set (`VmRSS`)
//! a few times a second; the peak of those readings is what the run cost at most.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::BenchError;
use crate::procfs;

/// How often the servers' resident memory is read during a run.
pub const RSS_INTERVAL: Duration = Duration::from_millis(100);

/// The servers' summed resident memory over one run, KiB; `None` without server PIDs or when a
/// server could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RssReading {
    /// Before the run set anything up.
    pub before_kib: Option<u64>,
    /// The highest reading from then to the end of the run, the first one included: memory the
    /// servers hand back while the run sets up does not make the peak look lower than the start.
    pub peak_kib: Option<u64>,
}

/// Reads the servers' memory in the background until [`RssSampler::finish`].
pub struct RssSampler {
    before_kib: Option<u64>,
    /// Dropping it (an early return of the run) stops the task as well.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Option<u64>>>,
}

impl RssSampler {
    /// Takes the first reading of `pids` and starts reading every [`RSS_INTERVAL`]; reads
    /// nothing without PIDs. Must be called inside a tokio runtime.
    pub fn start(pids: &[u32]) -> Self {
        if pids.is_empty() {
            return Self { before_kib: None, stop: None, task: None };
        }
        let before_kib = procfs::total_rss_kib(pids);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(peak_rss(pids.to_vec(), stopped));
        Self { before_kib, stop: Some(stop), task: Some(task) }
    }

    /// Takes a last reading and returns the first one and the peak.
    pub async fn finish(mut self) -> Result<RssReading, BenchError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let peak = match self.task.take() {
            Some(task) => {
                task.await.map_err(|e| BenchError::Unexpected(format!("memory task failed: {e}")))?
            }
            None => None,
        };
        Ok(RssReading { before_kib: self.before_kib, peak_kib: peak.max(self.before_kib) })
    }
}

/// The highest summed resident memory of `pids` read until `stop` fires or is dropped.
async fn peak_rss(pids: Vec<u32>, mut stop: oneshot::Receiver<()>) -> Option<u64> {
    let mut peak = None;
    let mut tick = tokio::time::interval(RSS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => peak = peak.max(procfs::total_rss_kib(&pids)),
            _ = &mut stop => break,
        }
    }
    peak.max(procfs::total_rss_kib(&pids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_pids_read_nothing() {
        let reading = RssSampler::start(&[]).finish().await.unwrap();
        assert_eq!(reading, RssReading::default());
    }

    #[tokio::test]
    async fn own_memory_has_a_peak_at_least_the_first_reading() {
        let reading = RssSampler::start(&[std::process::id()]).finish().await.unwrap();
        let (before, peak) = (reading.before_kib.unwrap(), reading.peak_kib.unwrap());
        assert!(before > 0 && peak >= before, "{reading:?}");
    }

    #[tokio::test]
    async fn a_vanished_server_is_no_reading() {
        let reading = RssSampler::start(&[u32::MAX]).finish().await.unwrap();
        assert_eq!(reading, RssReading::default());
    }
}
