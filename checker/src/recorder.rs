//! A thread-safe recorder that test clients share to build a [`History`].
//!
//! Every event is stamped under one lock with a strictly increasing monotonic clock, so the
//! recorded order of events is their real order: an operation stamped as completing before another
//! is invoked really did finish first. That is the only property of time a linearizability check
//! relies on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

#[cfg(doc)]
use crate::history::History;
use crate::history::{ClientId, HistoryEntry, HistoryOf, OpId, Operation, Stamp};

/// Distinguishes recorders so a [`PendingOp`] cannot complete an operation of another recorder.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(0);

/// Records invocations and completions from many concurrent clients (tokio tasks or threads).
///
/// Cloning is cheap and every clone records into the same history. An operation whose
/// [`PendingOp`] is dropped without [`Recorder::complete`] (a cancelled task, a panic) is in the
/// history with an unknown outcome: the request may have reached the store. Generic over the kind
/// of operation: [`HistoryRecorder`] for per-key histories, [`crate::DbRecorder`] for whole-database
/// ones.
#[derive(Debug)]
pub struct Recorder<T: HistoryEntry> {
    id: u64,
    state: Arc<Mutex<RecorderState<T>>>,
}

/// Records per-key register operations into a [`History`].
pub type HistoryRecorder = Recorder<Operation>;

impl<T: HistoryEntry> Clone for Recorder<T> {
    fn clone(&self) -> Self {
        Recorder { id: self.id, state: Arc::clone(&self.state) }
    }
}

#[derive(Debug)]
struct RecorderState<T: HistoryEntry> {
    start: Instant,
    last: u64,
    slots: Vec<Slot<T>>,
}

#[derive(Debug)]
struct Slot<T: HistoryEntry> {
    client: ClientId,
    request: T::Request,
    invoke: u64,
    done: Option<(u64, T::Outcome)>,
}

/// An invoked operation awaiting its outcome; hand it back to [`Recorder::complete`].
///
/// It is not `Clone`, so an operation completes at most once.
#[derive(Debug)]
#[must_use = "complete the operation, or it is recorded with an unknown outcome"]
pub struct PendingOp {
    recorder: u64,
    id: OpId,
}

impl PendingOp {
    /// The id the operation has in the recorded history.
    pub fn id(&self) -> OpId {
        self.id
    }
}

impl<T: HistoryEntry> Default for Recorder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: HistoryEntry> RecorderState<T> {
    /// Nanoseconds since the recorder started, forced strictly above the previous stamp so no two
    /// events tie.
    fn stamp(&mut self) -> u64 {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

impl<T: HistoryEntry> Recorder<T> {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
            state: Arc::new(Mutex::new(RecorderState { start: Instant::now(), last: 0, slots: Vec::new() })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RecorderState<T>> {
        // A client that panicked while holding the lock left the state consistent (every update is
        // a single push or assignment), so recording goes on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `client` is about to send `request`; call it before the request leaves.
    pub fn invoke(&self, client: ClientId, request: T::Request) -> PendingOp {
        let mut state = self.lock();
        let invoke = state.stamp();
        let id = state.slots.len() as OpId;
        state.slots.push(Slot { client, request, invoke, done: None });
        PendingOp { recorder: self.id, id }
    }

    /// Records how the operation ended; call it after the response (or the timeout) is seen.
    pub fn complete(&self, pending: PendingOp, outcome: T::Outcome) {
        if pending.recorder != self.id {
            tracing::warn!(
                op = pending.id,
                "operation completed on a recorder that did not invoke it; ignored"
            );
            return;
        }
        let mut state = self.lock();
        let complete = state.stamp();
        match usize::try_from(pending.id).ok().and_then(|index| state.slots.get_mut(index)) {
            Some(slot) => slot.done = Some((complete, outcome)),
            None => tracing::warn!(op = pending.id, "completed operation is not in the recorder; ignored"),
        }
    }

    /// Number of operations invoked so far.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// True when no operation was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the history so far; operations still in flight appear with an unknown outcome
    /// completing now.
    pub fn history(&self) -> HistoryOf<T> {
        let mut state = self.lock();
        let now = state.stamp();
        let ops = state
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let (complete, outcome) = slot.done.clone().unwrap_or_else(|| (now, T::in_flight()));
                let stamp = Stamp { id: index as OpId, client: slot.client, invoke: slot.invoke, complete };
                T::assemble(stamp, slot.request.clone(), outcome)
            })
            .collect();
        HistoryOf::from_trusted(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Outcome, Output};

    #[test]
    fn stamps_are_strictly_ordered_and_pending_ops_are_unknown() {
        let rec = HistoryRecorder::new();
        let a = rec.invoke(1, Op::Put { key: "k".into(), value: "v".into() });
        let b = rec.invoke(2, Op::Get { key: "k".into() });
        rec.complete(a, Outcome::Ok(Output::Put));
        let history = rec.history();
        let ops = history.operations();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].invoke < ops[1].invoke);
        assert!(ops[1].invoke < ops[0].complete);
        assert_eq!(ops[0].outcome, Outcome::Ok(Output::Put));
        assert_eq!(ops[1].outcome, Outcome::Unknown);
        assert!(ops[1].complete > ops[0].complete);
        drop(b);
    }

    #[test]
    fn foreign_pending_op_is_ignored() {
        let rec = HistoryRecorder::new();
        let other = HistoryRecorder::new();
        let pending = other.invoke(1, Op::Get { key: "k".into() });
        let own = rec.invoke(1, Op::Get { key: "k".into() });
        rec.complete(pending, Outcome::Failed);
        assert_eq!(rec.history().operations()[0].outcome, Outcome::Unknown);
        rec.complete(own, Outcome::Failed);
        assert_eq!(rec.history().operations()[0].outcome, Outcome::Failed);
    }
}
