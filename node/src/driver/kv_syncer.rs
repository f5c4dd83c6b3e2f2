//! Makes the key space durable on a thread of its own, so the Raft loop does not stall for it.
//!
//! Applies commit to the key-space database without an fsync; every
//! [`SYNC_INTERVAL`] while it changes, the Raft loop asks for a durable commit, which writes
//! and fsyncs every page those applies dirtied (milliseconds under write load, on random pages
//! of the key space). Done on the Raft thread, that stalled log writes and acknowledgements for
//! the whole time. Here the loop only stops applying while a sync runs (a write transaction
//! would wait for it anyway) and goes on persisting, replicating and acknowledging.
//!
//! Until a durable commit covers them, applied entries must stay in the log and a restart
//! replays them; syncing in batches bounds both, at one fsync of the key space per interval
//! instead of one per write (etcd commits its backend the same way).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::error;

use crate::storage::{KvStore, StoreError};

use super::error::FatalError;

/// How often the key space is made durable while it changes. Applies wait while a sync runs,
/// and a sync writes every page dirtied since the last one, so the interval trades throughput
/// for tail latency: against 100 ms (etcd's backend interval), 25 ms cut put p99 from 35 to
/// 22 ms at 64 clients for 4 % less throughput.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(25);

/// Longest a due sync waits for a turn that applied something (etcd's backend interval).
///
/// A sync holds the key space's write lock through its fsync (over a millisecond here), and
/// entries committed meanwhile wait to be applied, so their clients and watchers wait too.
/// Right after an apply the next commit is furthest away: started then, a sync mostly ends
/// before that commit arrives. Started at the end of any turn, it most often began in the
/// turn that received the next entry, about one round trip before its commit: a quarter of a
/// follower's applies waited for it at 100 puts/s.
const MAX_SYNC_DELAY: Duration = Duration::from_millis(100);

/// The sync thread's nice value, above the rest of the member's threads (0).
///
/// A sync is background work: it needs a little CPU for a millisecond or so, and it starts
/// right after an apply, exactly when the member sends the commit to its followers and the
/// events to its watchers. On a small machine it took their CPU: a follower's watch event p99
/// was 4.1–5.4 ms with the sync at the same priority and 3.1–3.6 ms at 5 (BENCHMARKS.md).
/// Not much higher: while it runs, applies wait for its write lock, and at 19 a starved sync
/// held them back (p99 5.5 ms).
const SYNC_THREAD_NICE: i32 = 5;

/// A finished sync: the applied index it made durable, and how long it took.
pub(crate) type SyncOutcome = Result<(u64, Duration), StoreError>;

/// The loop's side of the sync thread.
pub(crate) struct KvSyncer {
    kv: KvStore,
    requests: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<SyncOutcome>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_progress: bool,
    last_started: Instant,
    /// Whether entries were applied since the last [`KvSyncer::maybe_start`].
    applied_since_check: bool,
}

impl KvSyncer {
    /// Starts the thread. `wake` is called after each sync so the loop notices it promptly.
    pub(crate) fn start(
        kv: KvStore,
        name: String,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<KvSyncer> {
        let (requests, request_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let synced = kv.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            lower_priority();
            while request_rx.recv().is_ok() {
                let started = Instant::now();
                let outcome = synced.sync().map(|applied| (applied, started.elapsed()));
                if done_tx.send(outcome).is_err() {
                    return;
                }
                wake();
            }
        })?;
        Ok(KvSyncer {
            kv,
            requests: Some(requests),
            done,
            thread: Some(thread),
            in_progress: false,
            last_started: Instant::now(),
            applied_since_check: false,
        })
    }

    /// Notes that entries were just applied: a due sync starts at the end of this turn.
    pub(crate) fn note_applied(&mut self) {
        self.applied_since_check = true;
    }

    /// Starts a sync if one is due: none running, the interval passed, entries applied this
    /// turn (or [`MAX_SYNC_DELAY`] passed), and applies not yet durable. `durable_log` is the
    /// last index durable in the log: every apply a sync covers must be of entries already
    /// there, or a power cut could leave the key space ahead of its log (the loop only applies
    /// entries of turns whose log write is done, so this holds by construction; it is checked
    /// because breaking it would be silent).
    pub(crate) fn maybe_start(&mut self, applied: u64, durable_log: u64) -> Result<(), FatalError> {
        let just_applied = std::mem::take(&mut self.applied_since_check);
        let since = self.last_started.elapsed();
        if self.in_progress || since < SYNC_INTERVAL || (!just_applied && since < MAX_SYNC_DELAY) {
            return Ok(());
        }
        self.last_started = Instant::now();
        if self.kv.durable_applied_index() >= applied {
            return Ok(());
        }
        debug_assert!(applied <= durable_log, "applied {applied} beyond the durable log {durable_log}");
        if applied > durable_log {
            error!(applied, durable_log, "key space ahead of the log; sync deferred");
            return Ok(());
        }
        self.start_sync()
    }

    /// Whether a sync is running; the loop must not write to the key space meanwhile.
    pub(crate) fn in_progress(&self) -> bool {
        self.in_progress
    }

    /// Starts a sync. The caller guarantees that every apply so far is of entries already
    /// durable in the log, and makes no apply until the sync is over.
    fn start_sync(&mut self) -> Result<(), FatalError> {
        let sent = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        if !sent {
            return Err(FatalError::SyncThreadStopped);
        }
        self.in_progress = true;
        Ok(())
    }

    /// The outcome of the running sync if it has finished (`None` if none runs or it is still
    /// running).
    pub(crate) fn poll(&mut self) -> Option<Result<SyncOutcome, FatalError>> {
        if !self.in_progress {
            return None;
        }
        match self.done.try_recv() {
            Ok(outcome) => {
                self.in_progress = false;
                Some(Ok(outcome))
            }
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.in_progress = false;
                Some(Err(FatalError::SyncThreadStopped))
            }
        }
    }

    /// Waits for the running sync, if any, and returns its outcome.
    pub(crate) fn wait(&mut self) -> Option<Result<SyncOutcome, FatalError>> {
        if !self.in_progress {
            return None;
        }
        self.in_progress = false;
        Some(self.done.recv().map_err(|_| FatalError::SyncThreadStopped))
    }
}

/// Gives the calling thread [`SYNC_THREAD_NICE`]. On Linux the nice value belongs to the
/// thread (setpriority's documented deviation from POSIX); elsewhere it would renice the whole
/// process, so it is left alone there.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, SYNC_THREAD_NICE) {
        tracing::warn!(error = %e, "cannot lower the key-space sync thread's priority");
    }
}

impl Drop for KvSyncer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            error!("the key-space sync thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    /// The nice value of this process's thread named `name` (field 19 of its `stat`).
    #[cfg(target_os = "linux")]
    fn nice_of_thread(name: &str) -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if comm.trim_end() == name {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // Fields after the parenthesised command name; nice is the 19th field overall.
                let after_comm = &stat[stat.rfind(')')? + 2..];
                return after_comm.split(' ').nth(16)?.parse().ok();
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_sync_thread_runs_below_the_members_other_threads() {
        let store = Store::in_memory().expect("store");
        let (started_tx, started) = mpsc::channel();
        let mut syncer = KvSyncer::start(store.kv().clone(), "kv-sync-nice".into(), move || {
            let _ = started_tx.send(());
        })
        .expect("start");
        // The thread renices itself first thing; a sync it finished proves it got that far.
        syncer.start_sync().expect("request a sync");
        started.recv().expect("the sync thread answered");
        assert_eq!(nice_of_thread("kv-sync-nice"), Some(SYNC_THREAD_NICE));
        assert!(syncer.wait().is_some_and(|outcome| outcome.is_ok()));
    }
}
