//! The sequential specification of one key: a register that is absent or holds a value.
//!
//! Operations of one key are compiled into [`Step`]s over interned values, so the search compares
//! and hashes `u32`s instead of strings. Compilation also drops what cannot matter: failed
//! operations (never applied), reads whose result was never seen, and unknown-outcome writes that no
//! operation could ever have needed (see [`compile`]), which keeps histories with many timeouts
//! from making the search exponential.

use std::collections::{HashMap, HashSet};

use crate::history::{Op, Operation, Outcome, Output};

/// The register's state: [`ABSENT`] or the interned id of a value.
pub(crate) type State = u32;

/// The state of a key that does not exist; every key starts absent.
pub(crate) const ABSENT: State = 0;

/// The one state that stands for every value no operation compares against (see [`compile`]).
pub(crate) const UNOBSERVED: State = State::MAX;

/// One operation's effect and its constraint on the state it is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    /// A read that saw this state.
    Read(State),
    /// An unconditional write of this state (put, delete, or either one with an unknown outcome).
    Write(State),
    /// A delete that reported whether the key existed.
    DeleteChecked { existed: bool },
    /// A compare-and-set that reported success.
    CasSucceeded { expected: State, value: State },
    /// A compare-and-set that reported the comparison failed.
    CasFailed { expected: State },
    /// A compare-and-set with an unknown outcome: it writes if the comparison holds.
    CasUnknown { expected: State, value: State },
    /// An output that the operation cannot produce, e.g. a get answered with a put's output.
    Impossible,
}

impl Step {
    /// The state after applying the step to `state`, or `None` if the output contradicts `state`.
    pub(crate) fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(value) => Some(value),
            Step::DeleteChecked { existed } => ((state != ABSENT) == existed).then_some(ABSENT),
            Step::CasSucceeded { expected, value } => (state == expected).then_some(value),
            Step::CasFailed { expected } => (state != expected).then_some(state),
            Step::CasUnknown { expected, value } => Some(if state == expected { value } else { state }),
            Step::Impossible => None,
        }
    }

    /// True for a write whose effect does not depend on the state it is applied to.
    pub(crate) fn is_blind_write(self) -> bool {
        matches!(self, Step::Write(_))
    }

    /// The same step with the value it writes passed through `map`.
    fn map_written(self, map: impl Fn(State) -> State) -> Step {
        match self {
            Step::Write(value) => Step::Write(map(value)),
            Step::CasSucceeded { expected, value } => Step::CasSucceeded { expected, value: map(value) },
            Step::CasUnknown { expected, value } => Step::CasUnknown { expected, value: map(value) },
            other => other,
        }
    }

    /// The value an unknown-outcome write may leave behind, if the step is one.
    fn unknown_write(self) -> Option<State> {
        match self {
            Step::Write(value) | Step::CasUnknown { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// An operation ready for the search: its interval and its step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchOp {
    /// Position of the operation in the slice given to [`compile`].
    pub(crate) source: usize,
    pub(crate) invoke: u64,
    /// Completion time, `None` for +infinity (unknown outcome).
    pub(crate) deadline: Option<u64>,
    pub(crate) step: Step,
}

/// Assigns small ids to values, `0` being reserved for "absent".
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, State>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, value: &'a str) -> State {
        let next = self.ids.len() as State + 1;
        *self.ids.entry(value).or_insert(next)
    }

    fn id_or_absent(&mut self, value: Option<&'a str>) -> State {
        value.map_or(ABSENT, |value| self.id(value))
    }
}

fn step_of<'a>(op: &'a Op, outcome: &'a Outcome, values: &mut Interner<'a>) -> Option<Step> {
    let step = match (op, outcome) {
        (_, Outcome::Failed) | (Op::Get { .. }, Outcome::Unknown) => return None,
        (Op::Get { .. }, Outcome::Ok(Output::Get { value })) => {
            Step::Read(values.id_or_absent(value.as_deref()))
        }
        (Op::Put { value, .. }, Outcome::Ok(Output::Put) | Outcome::Unknown) => Step::Write(values.id(value)),
        (Op::Delete { .. }, Outcome::Ok(Output::Delete { existed: None }) | Outcome::Unknown) => {
            Step::Write(ABSENT)
        }
        (Op::Delete { .. }, Outcome::Ok(Output::Delete { existed: Some(existed) })) => {
            Step::DeleteChecked { existed: *existed }
        }
        (Op::Cas { expected, value, .. }, Outcome::Ok(Output::Cas { succeeded })) => {
            let expected = values.id_or_absent(expected.as_deref());
            if *succeeded {
                Step::CasSucceeded { expected, value: values.id(value) }
            } else {
                Step::CasFailed { expected }
            }
        }
        (Op::Cas { expected, value, .. }, Outcome::Unknown) => {
            Step::CasUnknown { expected: values.id_or_absent(expected.as_deref()), value: values.id(value) }
        }
        (_, Outcome::Ok(_)) => Step::Impossible,
    };
    Some(step)
}

/// The states some operation of the history could only have been satisfied by.
///
/// An unknown-outcome write whose value satisfies none of them can be left out of every
/// linearization: in a linearization that includes it, the operations between it and the next
/// write would have to accept its value, and none does (an unknown compare-and-set that would then
/// not apply is left out as well). So dropping such writes changes no verdict.
#[derive(Default)]
struct Observations {
    /// States a read saw or a successful (or unknown) compare-and-set required.
    equal: HashSet<State>,
    /// States that a failed compare-and-set or an "existed" delete required to be different.
    not_equal: HashSet<State>,
}

impl Observations {
    fn note(&mut self, step: Step) {
        match step {
            Step::Read(state) => {
                self.equal.insert(state);
            }
            Step::CasSucceeded { expected, .. } | Step::CasUnknown { expected, .. } => {
                self.equal.insert(expected);
            }
            Step::CasFailed { expected } => {
                self.not_equal.insert(expected);
            }
            Step::DeleteChecked { existed: true } => {
                self.not_equal.insert(ABSENT);
            }
            Step::DeleteChecked { existed: false } => {
                self.equal.insert(ABSENT);
            }
            Step::Write(_) | Step::Impossible => {}
        }
    }

    /// True if some operation could be satisfied by the key holding `state`.
    fn could_need(&self, state: State) -> bool {
        self.equal.contains(&state) || self.not_equal.iter().any(|&other| other != state)
    }

    /// True if some operation compares the state against `state`.
    fn compares_with(&self, state: State) -> bool {
        state == ABSENT || self.equal.contains(&state) || self.not_equal.contains(&state)
    }
}

/// Compiles the operations of one key into search steps, dropping those that cannot affect the
/// verdict.
///
/// Values that no operation compares against (no read returned them, no compare-and-set expected
/// them) are indistinguishable to every operation: all of them pass every "different from" check
/// and fail every "equal to" check. They are merged into [`UNOBSERVED`], which lets the search treat
/// unknown-outcome writes of such values as interchangeable instead of trying every subset of them.
pub(crate) fn compile(ops: &[&Operation]) -> Vec<SearchOp> {
    let mut values = Interner::default();
    let mut compiled: Vec<SearchOp> = ops
        .iter()
        .enumerate()
        .filter_map(|(source, op)| {
            step_of(&op.op, &op.outcome, &mut values).map(|step| SearchOp {
                source,
                invoke: op.invoke,
                deadline: op.deadline(),
                step,
            })
        })
        .collect();
    let mut observed = Observations::default();
    for op in &compiled {
        observed.note(op.step);
    }
    compiled.retain(|op| {
        op.deadline.is_some() || op.step.unknown_write().is_none_or(|value| observed.could_need(value))
    });
    for op in &mut compiled {
        op.step = op.step.map_written(|value| if observed.compares_with(value) { value } else { UNOBSERVED });
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_register_specification() {
        assert_eq!(Step::Read(2).apply(2), Some(2));
        assert_eq!(Step::Read(2).apply(ABSENT), None);
        assert_eq!(Step::Write(3).apply(ABSENT), Some(3));
        assert_eq!(Step::DeleteChecked { existed: true }.apply(4), Some(ABSENT));
        assert_eq!(Step::DeleteChecked { existed: true }.apply(ABSENT), None);
        assert_eq!(Step::DeleteChecked { existed: false }.apply(ABSENT), Some(ABSENT));
        assert_eq!(Step::CasSucceeded { expected: 1, value: 2 }.apply(1), Some(2));
        assert_eq!(Step::CasSucceeded { expected: 1, value: 2 }.apply(3), None);
        assert_eq!(Step::CasFailed { expected: 1 }.apply(1), None);
        assert_eq!(Step::CasFailed { expected: 1 }.apply(3), Some(3));
        assert_eq!(Step::CasUnknown { expected: 1, value: 2 }.apply(1), Some(2));
        assert_eq!(Step::CasUnknown { expected: 1, value: 2 }.apply(5), Some(5));
        assert_eq!(Step::Impossible.apply(0), None);
    }

    fn operation(op: Op, outcome: Outcome) -> Operation {
        Operation { id: 0, client: 0, op, invoke: 0, complete: 1, outcome }
    }

    #[test]
    fn drops_failed_ops_unseen_reads_and_unneeded_unknown_writes() {
        let put = |value: &str, outcome| operation(Op::Put { key: "k".into(), value: value.into() }, outcome);
        let read = |value: Option<&str>| {
            operation(Op::Get { key: "k".into() }, Outcome::Ok(Output::Get { value: value.map(Into::into) }))
        };
        let ops = [
            put("a", Outcome::Failed),
            operation(Op::Get { key: "k".into() }, Outcome::Unknown),
            put("b", Outcome::Unknown),
            put("c", Outcome::Unknown),
            read(Some("c")),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        let sources: Vec<usize> = compile(&refs).iter().map(|op| op.source).collect();
        assert_eq!(sources, vec![3, 4]);

        // A failed compare-and-set against "c" could be explained by "b" being there.
        let cas_failed = operation(
            Op::Cas { key: "k".into(), expected: Some("c".into()), value: "d".into() },
            Outcome::Ok(Output::Cas { succeeded: false }),
        );
        let with_cas: Vec<&Operation> = ops.iter().chain([&cas_failed]).collect();
        let sources: Vec<usize> = compile(&with_cas).iter().map(|op| op.source).collect();
        assert_eq!(sources, vec![2, 3, 4, 5]);
    }

    #[test]
    fn values_nobody_compares_with_are_merged() {
        let put = |value: &str, outcome| operation(Op::Put { key: "k".into(), value: value.into() }, outcome);
        let ops = [
            put("a", Outcome::Ok(Output::Put)),
            put("b", Outcome::Unknown),
            put("c", Outcome::Unknown),
            operation(
                Op::Cas { key: "k".into(), expected: Some("c".into()), value: "d".into() },
                Outcome::Ok(Output::Cas { succeeded: false }),
            ),
            operation(Op::Get { key: "k".into() }, Outcome::Ok(Output::Get { value: Some("c".into()) })),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        let steps: Vec<Step> = compile(&refs).iter().map(|op| op.step).collect();
        let c = 3;
        let expected = vec![
            Step::Write(UNOBSERVED),
            Step::Write(UNOBSERVED),
            Step::Write(c),
            Step::CasFailed { expected: c },
            Step::Read(c),
        ];
        assert_eq!(steps, expected);
    }

    #[test]
    fn mismatched_output_is_impossible() {
        let op = operation(Op::Get { key: "k".into() }, Outcome::Ok(Output::Put));
        let compiled = compile(&[&op]);
        assert_eq!(compiled.len(), 1);
        assert_eq!(compiled[0].step, Step::Impossible);
    }
}
