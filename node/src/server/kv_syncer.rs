//! Makes the key space durable on a thread of its own, so the Raft loop does not stall for it.
//!
//! Applies commit to the key-space database without an fsync; every so often the Raft loop
//! asks for a durable commit, which writes and fsyncs every page those applies dirtied
//! (milliseconds under write load, on random pages of the key space). Done on the Raft thread,
//! that stalled log writes and acknowledgements for the whole time. Here the loop only stops
//! applying while a sync runs (a write transaction would wait for it anyway) and goes on
//! persisting, replicating and acknowledging.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tracing::error;

use crate::storage::KvStore;

/// A finished sync: the applied index it made durable, and how long it took.
pub type SyncOutcome = Result<(u64, Duration), String>;

/// The loop's side of the sync thread.
pub struct KvSyncer {
    requests: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<SyncOutcome>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_progress: bool,
}

impl KvSyncer {
    /// Starts the thread. `wake` is called after each sync so the loop notices it promptly.
    pub fn start(kv: KvStore, name: String, wake: impl Fn() + Send + 'static) -> std::io::Result<KvSyncer> {
        let (requests, request_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            while request_rx.recv().is_ok() {
                let started = Instant::now();
                let outcome =
                    kv.sync().map(|applied| (applied, started.elapsed())).map_err(|e| e.to_string());
                if done_tx.send(outcome).is_err() {
                    return;
                }
                wake();
            }
        })?;
        Ok(KvSyncer { requests: Some(requests), done, thread: Some(thread), in_progress: false })
    }

    /// Whether a sync is running; the loop must not write to the key space meanwhile.
    pub fn in_progress(&self) -> bool {
        self.in_progress
    }

    /// Starts a sync. The caller guarantees that every apply so far is of entries already
    /// durable in the log, and makes no apply until the sync is over.
    pub fn start_sync(&mut self) -> Result<(), String> {
        let sent = self.requests.as_ref().is_some_and(|r| r.send(()).is_ok());
        if !sent {
            return Err("the key-space sync thread has stopped".into());
        }
        self.in_progress = true;
        Ok(())
    }

    /// The outcome of the running sync if it has finished (`None` if none runs or it is still
    /// running).
    pub fn poll(&mut self) -> Option<SyncOutcome> {
        if !self.in_progress {
            return None;
        }
        match self.done.try_recv() {
            Ok(outcome) => {
                self.in_progress = false;
                Some(outcome)
            }
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.in_progress = false;
                Some(Err("the key-space sync thread has stopped".into()))
            }
        }
    }

    /// Waits for the running sync, if any, and returns its outcome.
    pub fn wait(&mut self) -> Option<SyncOutcome> {
        if !self.in_progress {
            return None;
        }
        self.in_progress = false;
        Some(self.done.recv().unwrap_or_else(|_| Err("the key-space sync thread has stopped".into())))
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
