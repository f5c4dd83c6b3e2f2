//! The concurrency and fault driver shared by the per-key and the whole-database simulators: it
//! decides which client acts when, which requests fail, which responses are lost and when lost
//! requests still take effect; the model generates requests and applies them to its store.

use std::time::Duration;

use kvcheck::{CheckOptions, HistoryEntry, HistoryOf, Stamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A store with a request generator.
pub trait Model {
    type Op: Clone;
    type Output;
    /// A new request for the next invocation.
    fn generate(&mut self, rng: &mut ChaCha8Rng) -> Self::Op;
    /// Applies a request at its linearization point.
    fn apply(&mut self, op: &Self::Op) -> Self::Output;
}

/// How a simulated operation ended for its client.
pub enum Ending<O> {
    Ok(O),
    Failed,
    Unknown,
}

/// One simulated operation.
pub struct Event<Op, O> {
    pub client: usize,
    pub op: Op,
    pub invoke: u64,
    pub complete: u64,
    pub ending: Ending<O>,
}

/// Shape of a simulated workload: clients, keys and operations, and how often requests fail or
/// lose their response.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub clients: usize,
    pub keys: usize,
    pub ops: usize,
    /// Chance that an operation fails without being applied.
    pub failed: f64,
    /// Chance that its outcome is lost (applied with probability 1/2, maybe after the client gave up).
    pub unknown: f64,
}

enum Fate {
    Ok,
    Failed,
    Unknown { apply: bool },
}

struct InFlight<O> {
    index: usize,
    fate: Fate,
    output: Option<O>,
}

/// Runs the clients against `model` on a logical clock advanced by one per event. Each step picks
/// a random client and advances it: invoke a new operation, apply its pending operation (its
/// linearization point) or complete it. Operations whose outcome is lost may be applied later,
/// even after the client moved on.
pub fn drive<M: Model>(seed: u64, faults: Workload, model: &mut M) -> Vec<Event<M::Op, M::Output>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut events: Vec<Event<M::Op, M::Output>> = Vec::with_capacity(faults.ops);
    let mut clients: Vec<Option<InFlight<M::Output>>> = (0..faults.clients).map(|_| None).collect();
    let mut late: Vec<M::Op> = Vec::new();
    let mut time = 0u64;
    while events.len() < faults.ops || clients.iter().any(Option::is_some) {
        time += 1;
        if !late.is_empty() && rng.random_bool(0.05) {
            let op = late.swap_remove(rng.random_range(0..late.len()));
            model.apply(&op);
            continue;
        }
        let client = rng.random_range(0..faults.clients);
        match clients[client].take() {
            None if events.len() < faults.ops => {
                let op = model.generate(&mut rng);
                let roll: f64 = rng.random();
                let fate = if roll < faults.failed {
                    Fate::Failed
                } else if roll < faults.failed + faults.unknown {
                    Fate::Unknown { apply: rng.random_bool(0.5) }
                } else {
                    Fate::Ok
                };
                clients[client] = Some(InFlight { index: events.len(), fate, output: None });
                events.push(Event { client, op, invoke: time, complete: time, ending: Ending::Unknown });
            }
            None => {}
            Some(mut flight) => {
                let event = &mut events[flight.index];
                let must_apply = matches!(flight.fate, Fate::Ok | Fate::Unknown { apply: true })
                    && flight.output.is_none();
                let lost = matches!(flight.fate, Fate::Unknown { .. });
                if must_apply && rng.random_bool(0.5) {
                    flight.output = Some(model.apply(&event.op));
                    clients[client] = Some(flight);
                } else if (!must_apply || lost) && rng.random_bool(0.5) {
                    event.complete = time;
                    event.ending = match (flight.fate, flight.output) {
                        (Fate::Ok, Some(output)) => Ending::Ok(output),
                        (Fate::Ok, None) => unreachable!("an ok operation completes after it applied"),
                        (Fate::Failed, _) => Ending::Failed,
                        (Fate::Unknown { .. }, _) => {
                            if must_apply {
                                late.push(event.op.clone());
                            }
                            Ending::Unknown
                        }
                    };
                } else {
                    clients[client] = Some(flight);
                }
            }
        }
    }
    events
}

/// Turns simulated events into a history, ids in invocation order.
pub fn to_history<T: HistoryEntry, O>(
    events: Vec<Event<T::Request, O>>,
    outcome: impl Fn(Ending<O>) -> T::Outcome,
) -> HistoryOf<T> {
    let ops = events
        .into_iter()
        .enumerate()
        .map(|(id, event)| {
            let stamp = Stamp {
                id: id as u64,
                client: event.client as u64,
                invoke: event.invoke,
                complete: event.complete,
            };
            T::assemble(stamp, event.op, outcome(event.ending))
        })
        .collect();
    HistoryOf::new(ops).unwrap()
}

/// One row of a hand-written history: `(client, invoke, complete, request, outcome)`.
pub type Row<T> = (u64, u64, u64, <T as HistoryEntry>::Request, <T as HistoryEntry>::Outcome);

/// Builds a history from rows; ids are row numbers.
pub fn rows_to_history<T: HistoryEntry>(rows: Vec<Row<T>>) -> HistoryOf<T> {
    let ops = rows
        .into_iter()
        .enumerate()
        .map(|(id, (client, invoke, complete, request, outcome))| {
            T::assemble(Stamp { id: id as u64, client, invoke, complete }, request, outcome)
        })
        .collect();
    HistoryOf::new(ops).unwrap()
}

/// Check options with artifacts in `dir`, generous budgets (the tests must not time out on a slow
/// machine), and `shrink` seconds for shrinking.
pub fn options_in(dir: &tempfile::TempDir, shrink: u64) -> CheckOptions {
    CheckOptions::default()
        .with_time_budget(Duration::from_secs(60))
        .with_shrink_budget(Duration::from_secs(shrink))
        .with_artifact_dir(dir.path())
}
