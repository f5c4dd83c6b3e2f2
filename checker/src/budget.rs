//! The time a shrinker may spend, shared by the per-key and the whole-database shrinkers.
//!
//! Shrinking runs many full checks on candidate sub-histories; each gets a slice of the budget so
//! one hard candidate cannot use it all, and a candidate whose check gives up counts as passing
//! (it is not proven to fail, so it must not be kept). Either way the result is marked incomplete.

use std::time::{Duration, Instant};

/// Deadlines for the whole reduction and for each candidate check, and whether any gave up.
pub(crate) struct Budget {
    deadline: Instant,
    per_check: Duration,
    complete: bool,
}

impl Budget {
    /// A budget ending at `deadline`, each check getting an eighth of `budget` (at least 50 ms).
    pub(crate) fn new(budget: Duration, deadline: Instant) -> Self {
        Budget { deadline, per_check: (budget / 8).max(Duration::from_millis(50)), complete: true }
    }

    /// The deadline for one candidate check started now.
    fn check_deadline(&self) -> Instant {
        self.deadline.min(Instant::now() + self.per_check)
    }

    /// A check's verdict as "fails": `Some(failed)` when it decided, `None` when it gave up.
    fn judge(&mut self, verdict: Option<bool>) -> bool {
        verdict.unwrap_or_else(|| {
            self.complete = false;
            false
        })
    }

    fn out_of_time(&mut self) -> bool {
        let out = Instant::now() >= self.deadline;
        self.complete &= !out;
        out
    }

    fn complete(&self) -> bool {
        self.complete
    }
}

/// Runs a check on candidates within a [`Budget`]; `check` returns `Some(fails)` when it decided by
/// the deadline it is given, `None` when it gave up.
pub(crate) struct Checker<F> {
    budget: Budget,
    check: F,
}

impl<F> Checker<F> {
    pub(crate) fn new(budget: Budget, check: F) -> Self {
        Checker { budget, check }
    }

    /// True only when the candidate is proven to fail.
    pub(crate) fn fails<T>(&mut self, candidate: &[T]) -> bool
    where
        F: FnMut(&[T], Instant) -> Option<bool>,
    {
        let verdict = (self.check)(candidate, self.budget.check_deadline());
        self.budget.judge(verdict)
    }

    /// True (and the result incomplete) once the whole budget is spent.
    pub(crate) fn out_of_time(&mut self) -> bool {
        self.budget.out_of_time()
    }

    /// Binary search over ascending `cuts` for the earliest whose candidate (`at(cut)`) fails,
    /// assuming candidates keep failing after a cut that fails (prefix-closedness); `None` if no
    /// candidate was seen to fail.
    pub(crate) fn earliest_failing<T>(&mut self, cuts: &[u64], at: impl Fn(u64) -> Vec<T>) -> Option<Vec<T>>
    where
        F: FnMut(&[T], Instant) -> Option<bool>,
    {
        let (mut low, mut high) = (0, cuts.len());
        let mut best = None;
        while low < high && !self.out_of_time() {
            let middle = low + (high - low) / 2;
            let candidate = at(cuts[middle]);
            if self.fails(&candidate) {
                high = middle;
                best = Some(candidate);
            } else {
                low = middle + 1;
            }
        }
        best
    }

    /// False if the deadline or a check that gave up cut the reduction short.
    pub(crate) fn complete(&self) -> bool {
        self.budget.complete()
    }
}
