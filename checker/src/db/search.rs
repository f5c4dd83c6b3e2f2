//! The search for a revision order: walk revisions upward, apply the write each one holds, check
//! what reads attribute to it and the reads served at it, and at each gap choose which
//! unknown-outcome write fills it, backtracking on contradictions.
//!
//! Real time is checked greedily. Every operation takes effect at one instant inside its interval,
//! and the instants follow the revision order: the write of revision `r`, then the reads served at
//! `r` (in any order among themselves), then the write of `r + 1`. Placing each operation at the
//! earliest instant allowed (its invocation, or the instant of what precedes it, whichever is
//! later) leaves the most room for everything after it, so an order exists exactly when this
//! placement never passes an operation's completion. The clock of that placement is part of the
//! search state.
//!
//! The memory of refuted choices: a gap reached with the same store, no fewer unknown-outcome
//! writes used (per group) and no earlier clock than at a gap whose every choice failed can do
//! nothing that one could not, so it fails too.

use std::collections::HashMap;
use std::time::Instant;

use crate::db::compile::{KeyId, Kv};
use crate::db::plan::{Expected, Plan};
use crate::db::store::{KeyState, Mark, Mismatch, Store};
use crate::db::types::Revision;

/// How often (in steps) the clock is read.
const DEADLINE_CHECK_INTERVAL: u32 = 256;

/// Why the walk could not go on, at the point it was found.
#[derive(Debug, Clone)]
pub(crate) enum Fail {
    /// A planned operation's reply contradicts the store.
    Response { op: usize, mismatch: Mismatch },
    /// A planned operation claims a revision but changed nothing, or claims none but changes.
    Changed { op: usize, model: bool },
    /// A planned operation completed before `after`, which precedes it, was invoked.
    Time { op: usize, after: usize },
    /// The write at the revision does not leave a key as a read saw it.
    Expected { expected: Expected, writer: Option<usize>, model: Option<Kv> },
    /// No unknown-outcome write fills the gap: none of the `candidates` (invoked in time, unused)
    /// changes the store in a way reads allow.
    Gap { candidates: usize },
}

/// A failure with where it happened; later is deeper.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) revision: Revision,
    /// 0: the write of the revision, 1: what reads attribute to it, 2: reads served at it.
    pub(crate) stage: u8,
    pub(crate) fail: Fail,
}

/// The verdict of the search.
#[derive(Debug)]
pub(crate) enum SearchOutcome {
    /// The planned operation at each revision `2..=last`.
    Linearizable(Vec<usize>),
    /// No order exists; the deepest contradiction found.
    Violation(Failure),
    /// Out of time; the deepest contradiction found so far, if any.
    TimedOut(Option<Failure>),
}

/// The greedy real-time placement: the instant of the last placed operation and which one it was.
#[derive(Debug, Clone, Copy, Default)]
struct Clock {
    at: u64,
    by: Option<usize>,
}

impl Clock {
    /// The clock after placing operation `op` invoked at `invoke`.
    fn place(self, op: usize, invoke: u64) -> Clock {
        if invoke > self.at { Clock { at: invoke, by: Some(op) } } else { self }
    }
}

/// A gap being filled.
struct Frame {
    revision: Revision,
    mark: Mark,
    clock: Clock,
    candidates: Vec<u32>,
    next: usize,
    /// The group and operation applied now.
    chosen: Option<(u32, usize)>,
    /// The keys some candidate may change: a failure about other keys does not depend on this gap.
    touch: KeySet,
}

/// A set of key ids.
#[derive(Debug, Clone, Default)]
struct KeySet {
    words: Vec<u64>,
}

impl KeySet {
    fn insert(&mut self, key: KeyId) {
        let word = key as usize / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (key % 64);
    }

    fn contains(&self, key: KeyId) -> bool {
        self.words.get(key as usize / 64).is_some_and(|word| word & (1 << (key % 64)) != 0)
    }
}

/// What a failure depends on, to find the latest gap whose choice could avoid it.
enum Conflict {
    /// The state of these keys at the failing revision.
    Keys(Vec<KeyId>),
    /// The clock having passed this completion time.
    LaterThan(u64),
}

/// A gap whose every choice failed.
struct Refuted {
    keys: Vec<KeyState>,
    used: Vec<u32>,
    at: u64,
}

struct Search<'p> {
    plan: &'p Plan,
    store: Store,
    clock: Clock,
    used: Vec<u32>,
    frames: Vec<Frame>,
    refuted: HashMap<(Revision, u64), Vec<Refuted>>,
    deepest: Option<Failure>,
}

impl<'p> Search<'p> {
    fn new(plan: &'p Plan) -> Self {
        Search {
            plan,
            store: Store::new(plan.universe.keys.len()),
            clock: Clock::default(),
            used: vec![0; plan.classes.list.len()],
            frames: Vec::new(),
            refuted: HashMap::new(),
            deepest: None,
        }
    }

    fn note(&mut self, failure: Failure) {
        let deeper = self
            .deepest
            .as_ref()
            .is_none_or(|deepest| (failure.revision, failure.stage) > (deepest.revision, deepest.stage));
        if deeper {
            self.deepest = Some(failure);
        }
    }

    /// Applies the acknowledged write claiming `revision`.
    fn apply_claimed(&mut self, op: usize, revision: Revision) -> Result<(), Failure> {
        let fail = |fail| Failure { revision, stage: 0, fail };
        let planned = &self.plan.ops[op];
        if planned.invoke.max(self.clock.at) > planned.complete {
            return Err(fail(Fail::Time { op, after: self.clock.by.unwrap_or(op) }));
        }
        match self.store.execute(&planned.request, planned.reply.as_ref()) {
            Err(mismatch) => Err(fail(Fail::Response { op, mismatch })),
            Ok(false) => Err(fail(Fail::Changed { op, model: false })),
            Ok(true) => {
                self.clock = self.clock.place(op, planned.invoke);
                Ok(())
            }
        }
    }

    /// Checks what reads attribute to `revision` and the reads served at it, after its write.
    fn after_write(&mut self, revision: Revision, writer: Option<usize>) -> Result<(), Failure> {
        for expected in self.plan.expected(revision) {
            let model = self.store.state(expected.kv.key).as_kv(expected.kv.key);
            if model != Some(expected.kv) {
                let fail = Fail::Expected { expected: *expected, writer, model };
                return Err(Failure { revision, stage: 1, fail });
            }
        }
        self.check_reads(revision)
    }

    fn check_reads(&mut self, revision: Revision) -> Result<(), Failure> {
        let base = self.clock;
        let mut latest = base;
        for &op in self.plan.reads(revision) {
            let fail = |fail| Failure { revision, stage: 2, fail };
            let planned = &self.plan.ops[op];
            if planned.invoke.max(base.at) > planned.complete {
                return Err(fail(Fail::Time { op, after: base.by.unwrap_or(op) }));
            }
            let mark = self.store.mark();
            let result = self.store.execute(&planned.request, planned.reply.as_ref());
            self.store.undo_to(mark);
            match result {
                Err(mismatch) => return Err(fail(Fail::Response { op, mismatch })),
                Ok(true) => return Err(fail(Fail::Changed { op, model: true })),
                Ok(false) => latest = latest.place(op, planned.invoke),
            }
        }
        self.clock = latest;
        Ok(())
    }

    /// The groups worth trying at the gap `revision`, most promising first.
    fn candidates(&self, revision: Revision) -> Vec<u32> {
        let deadline = self.plan.deadline(revision);
        if self.clock.at > deadline {
            return Vec::new();
        }
        let classes = &self.plan.classes;
        let all: Vec<u32>;
        let pool: &[u32] = match self.plan.expected(revision).first() {
            Some(expected) => classes.writing(expected.kv.key, expected.kv.value),
            None => {
                all = (0..classes.list.len() as u32).collect();
                &all
            }
        };
        let mut ranked: Vec<(bool, u64, u32)> = Vec::new();
        for &id in pool {
            let Some(class) = classes.list.get(id as usize) else { continue };
            let used = self.used.get(id as usize).copied().unwrap_or(0) as usize;
            let in_time = class.ops.partition_point(|&op| self.plan.ops[op].invoke <= deadline);
            if used >= in_time {
                continue;
            }
            // A group that could only change keys reads show unchanged at this revision cannot fill it.
            if class.touches.iter().all(|&key| !self.plan.facts.allow_change(key, revision, false)) {
                continue;
            }
            let reserved = match &class.allowed {
                Some(allowed) if allowed.binary_search(&revision).is_err() => continue,
                Some(_) => true,
                None => false,
            };
            // Recently invoked writes are the likely ones; long-lost ones rarely apply.
            let latest = class.ops.get(in_time - 1).map_or(0, |&op| self.plan.ops[op].invoke);
            ranked.push((reserved, latest, id));
        }
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        ranked.into_iter().map(|(_, _, id)| id).collect()
    }

    fn is_refuted(&self, revision: Revision) -> bool {
        self.refuted.get(&(revision, self.store.hash())).is_some_and(|list| {
            list.iter().any(|refuted| {
                refuted.at <= self.clock.at
                    && refuted.keys == self.store.keys()
                    && refuted.used.iter().zip(&self.used).all(|(then, now)| then <= now)
            })
        })
    }

    /// Tries the remaining candidates of the top frame; on exhaustion remembers the refutation,
    /// pops the frame and returns false.
    fn advance_frame(&mut self) -> bool {
        let Some((revision, clock)) = self.frames.last().map(|frame| (frame.revision, frame.clock)) else {
            return false;
        };
        let mut tried = 0;
        while let Some(class) = self.next_candidate() {
            let Some(&op) =
                self.plan.classes.list[class as usize].ops.get(self.used[class as usize] as usize)
            else {
                continue;
            };
            let planned = &self.plan.ops[op];
            let mark = self.store.mark();
            let changed = matches!(self.store.execute(&planned.request, None), Ok(true));
            let allowed = changed
                && self
                    .store
                    .changes_since(mark)
                    .iter()
                    .all(|&(key, state)| self.plan.facts.allow_change(key, revision, !state.exists()));
            if !allowed {
                self.store.undo_to(mark);
                continue;
            }
            tried += 1;
            self.used[class as usize] += 1;
            self.clock = clock.place(op, planned.invoke);
            match self.after_write(revision, Some(op)) {
                Ok(()) => {
                    if let Some(frame) = self.frames.last_mut() {
                        frame.chosen = Some((class, op));
                    }
                    return true;
                }
                Err(failure) => {
                    self.note(failure);
                    self.store.undo_to(mark);
                    self.used[class as usize] -= 1;
                    self.clock = clock;
                }
            }
        }
        if tried == 0 {
            let candidates = self.frames.last().map_or(0, |frame| frame.candidates.len());
            self.note(Failure { revision, stage: 0, fail: Fail::Gap { candidates } });
        }
        let refutation = Refuted { keys: self.store.keys().to_vec(), used: self.used.clone(), at: clock.at };
        self.refuted.entry((revision, self.store.hash())).or_default().push(refutation);
        self.frames.pop();
        false
    }

    /// The top frame's next untried group.
    fn next_candidate(&mut self) -> Option<u32> {
        let frame = self.frames.last_mut()?;
        let class = frame.candidates.get(frame.next).copied();
        frame.next += 1;
        class
    }

    /// Undoes the latest choice and tries the next one, further back as choices run out; returns
    /// the revision that was filled anew, or `None` when nothing is left to try.
    fn backtrack(&mut self) -> Option<Revision> {
        while let Some(frame) = self.frames.last_mut() {
            self.store.undo_to(frame.mark);
            self.clock = frame.clock;
            if let Some((class, _)) = frame.chosen.take() {
                self.used[class as usize] -= 1;
            }
            let revision = frame.revision;
            if self.advance_frame() {
                return Some(revision);
            }
        }
        None
    }

    /// What `fail` depends on; `None` when it may depend on every earlier choice.
    fn conflict(&self, fail: &Fail) -> Option<Conflict> {
        let request_keys = |op: usize| {
            let mut keys = Vec::new();
            self.plan.ops[op].request.all_keys(&mut keys);
            Conflict::Keys(keys)
        };
        match fail {
            Fail::Response { mismatch: Mismatch::Key { key, .. }, .. } => Some(Conflict::Keys(vec![*key])),
            Fail::Response { op, .. } | Fail::Changed { op, .. } => Some(request_keys(*op)),
            Fail::Time { op, .. } => Some(Conflict::LaterThan(self.plan.ops[*op].complete)),
            Fail::Expected { expected, .. } => Some(Conflict::Keys(vec![expected.kv.key])),
            Fail::Gap { .. } => None,
        }
    }

    /// The deepest frame whose choice could avoid a failure with this conflict; `None` if no
    /// choice can, i.e. the failure is proven.
    fn culprit(&self, conflict: &Conflict) -> Option<usize> {
        self.frames.iter().rposition(|frame| match conflict {
            Conflict::Keys(keys) => keys.iter().any(|&key| frame.touch.contains(key)),
            Conflict::LaterThan(complete) => {
                frame.chosen.is_some_and(|(_, op)| self.plan.ops[op].invoke > *complete)
            }
        })
    }

    /// Drops the frames above `depth` (their choices cannot matter to the failure at hand) so that
    /// backtracking resumes at the frame at `depth`.
    fn jump_to(&mut self, depth: usize) {
        while self.frames.len() > depth + 1 {
            if let Some((class, _)) = self.frames.pop().and_then(|frame| frame.chosen) {
                self.used[class as usize] -= 1;
            }
        }
    }

    /// Fills the gap at `revision`: false if no choice works from here.
    fn open_gap(&mut self, revision: Revision) -> bool {
        if self.is_refuted(revision) {
            return false;
        }
        let candidates = self.candidates(revision);
        let mut touch = KeySet::default();
        for &class in &candidates {
            for &key in &self.plan.classes.list[class as usize].touches {
                touch.insert(key);
            }
        }
        let frame = Frame {
            revision,
            mark: self.store.mark(),
            clock: self.clock,
            candidates,
            next: 0,
            chosen: None,
            touch,
        };
        self.frames.push(frame);
        self.advance_frame()
    }

    fn writers(&self) -> Vec<usize> {
        let mut frames = self.frames.iter().peekable();
        (2..=self.plan.last)
            .filter_map(|revision| match self.plan.claimed(revision) {
                Some(op) => Some(op),
                None => frames
                    .next_if(|frame| frame.revision == revision)
                    .and_then(|frame| frame.chosen)
                    .map(|(_, op)| op),
            })
            .collect()
    }

    fn run(mut self, deadline: Instant) -> SearchOutcome {
        if let Err(failure) = self.check_reads(1) {
            return SearchOutcome::Violation(failure);
        }
        let mut revision = 2;
        let mut until_clock = DEADLINE_CHECK_INTERVAL;
        while revision <= self.plan.last {
            until_clock -= 1;
            if until_clock == 0 {
                if Instant::now() >= deadline {
                    return SearchOutcome::TimedOut(self.deepest);
                }
                until_clock = DEADLINE_CHECK_INTERVAL;
            }
            let advanced = match self.plan.claimed(revision) {
                Some(op) => {
                    match self.apply_claimed(op, revision).and_then(|()| self.after_write(revision, Some(op)))
                    {
                        Ok(()) => true,
                        Err(failure) => {
                            if let Some(conflict) = self.conflict(&failure.fail) {
                                match self.culprit(&conflict) {
                                    Some(depth) => self.jump_to(depth),
                                    None => return SearchOutcome::Violation(failure),
                                }
                            }
                            self.note(failure);
                            false
                        }
                    }
                }
                None => self.open_gap(revision),
            };
            if advanced {
                if self.frames.is_empty() {
                    self.store.forget_undo();
                }
                revision += 1;
                continue;
            }
            match self.backtrack() {
                Some(filled) => revision = filled + 1,
                None => {
                    let failure = self.deepest.unwrap_or(Failure {
                        revision,
                        stage: 0,
                        fail: Fail::Gap { candidates: 0 },
                    });
                    return SearchOutcome::Violation(failure);
                }
            }
        }
        let writers = self.writers();
        SearchOutcome::Linearizable(writers)
    }
}

/// Searches for a revision order of the planned history.
pub(crate) fn search(plan: &Plan, deadline: Instant) -> SearchOutcome {
    Search::new(plan).run(deadline)
}
