//! Human-readable tables of (sub-)histories.
//!
//! A violation is only useful if a developer can see at a glance who did what when; the timeline
//! column shows which operations overlapped, which is what linearizability is about.

use std::fmt::Write;

use crate::history::{History, Op, OpId, Operation, Outcome, Output};

/// Width of the timeline column in characters.
const TIMELINE_WIDTH: u64 = 40;

/// Renders a history as a table, one operation per line, in invocation order.
pub fn render_history(history: &History) -> String {
    render_marked(history, &[], None)
}

/// Renders a history and marks a partial linearization (`L1`, `L2`, ...) and the operation that
/// could not be placed after it (`!!`).
pub(crate) fn render_marked(history: &History, linearized: &[OpId], stuck: Option<OpId>) -> String {
    let mut ops: Vec<&Operation> = history.operations().iter().collect();
    ops.sort_by_key(|op| (op.invoke, op.id));
    let start = ops.iter().map(|op| op.invoke).min().unwrap_or(0);
    let end = ops.iter().map(|op| op.complete).max().unwrap_or(start).max(start + 1);
    let mut out = format!(
        "times relative to t0 = {start}; timeline spans t0..+{span}; \
         '=' ok, 'x' failed, '~' unknown (may apply until the end)\n",
        span = end - start
    );
    let _ = writeln!(
        out,
        "{:<4} {:>6} {:>7} {:>12} {:>12}  timeline",
        "mark", "op", "client", "invoke", "complete"
    );
    for op in ops {
        let mark = if Some(op.id) == stuck {
            "!!".to_owned()
        } else {
            linearized
                .iter()
                .position(|&id| id == op.id)
                .map_or_else(String::new, |at| format!("L{}", at + 1))
        };
        let _ = writeln!(
            out,
            "{mark:<4} {:>6} {:>7} {:>12} {:>12}  |{}|  {}  {}",
            format!("#{}", op.id),
            op.client,
            format!("+{}", op.invoke - start),
            format!("+{}", op.complete - start),
            timeline(op, start, end),
            describe_op(&op.op),
            describe_outcome(&op.outcome),
        );
    }
    if let Some(stuck) = stuck {
        let order: Vec<String> = linearized.iter().map(|id| format!("#{id}")).collect();
        let _ = writeln!(
            out,
            "longest linearization found: [{}]; then #{stuck} cannot take effect before it completes",
            order.join(", ")
        );
    }
    out
}

fn column(time: u64, start: u64, end: u64) -> u64 {
    (time - start) * (TIMELINE_WIDTH - 1) / (end - start)
}

fn timeline(op: &Operation, start: u64, end: u64) -> String {
    let from = column(op.invoke, start, end);
    let (to, fill) = match op.outcome {
        Outcome::Ok(_) => (column(op.complete, start, end), '='),
        Outcome::Failed => (column(op.complete, start, end), 'x'),
        Outcome::Unknown => (TIMELINE_WIDTH - 1, '~'),
    };
    (0..TIMELINE_WIDTH).map(|at| if (from..=to).contains(&at) { fill } else { ' ' }).collect()
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Get { key } => format!("get {key:?}"),
        Op::Put { key, value } => format!("put {key:?} = {value:?}"),
        Op::Delete { key } => format!("delete {key:?}"),
        Op::Cas { key, expected: Some(expected), value } => format!("cas {key:?}: {expected:?} -> {value:?}"),
        Op::Cas { key, expected: None, value } => format!("cas {key:?}: absent -> {value:?}"),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(Output::Get { value: Some(value) }) => format!("=> {value:?}"),
        Outcome::Ok(Output::Get { value: None }) => "=> absent".to_owned(),
        Outcome::Ok(Output::Put | Output::Delete { existed: None }) => "=> ok".to_owned(),
        Outcome::Ok(Output::Delete { existed: Some(true) }) => "=> deleted".to_owned(),
        Outcome::Ok(Output::Delete { existed: Some(false) }) => "=> not found".to_owned(),
        Outcome::Ok(Output::Cas { succeeded: true }) => "=> succeeded".to_owned(),
        Outcome::Ok(Output::Cas { succeeded: false }) => "=> comparison failed".to_owned(),
        Outcome::Failed => "=> FAILED (not applied)".to_owned(),
        Outcome::Unknown => "=> UNKNOWN (may have applied)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_linearization_and_stuck_operation() {
        let op = |id, invoke, complete, op, outcome| Operation {
            id,
            client: id * 10,
            op,
            invoke,
            complete,
            outcome,
        };
        let history = History::new(vec![
            op(1, 100, 110, Op::Put { key: "k".into(), value: "a".into() }, Outcome::Ok(Output::Put)),
            op(2, 120, 130, Op::Put { key: "k".into(), value: "b".into() }, Outcome::Unknown),
            op(
                3,
                140,
                150,
                Op::Get { key: "k".into() },
                Outcome::Ok(Output::Get { value: Some("c".into()) }),
            ),
        ])
        .unwrap();
        let text = render_marked(&history, &[1, 2], Some(3));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[2].starts_with("L1") && lines[2].contains("put \"k\" = \"a\"  => ok"), "{text}");
        assert!(
            lines[3].starts_with("L2") && lines[3].contains("~|") && lines[3].contains("UNKNOWN"),
            "{text}"
        );
        assert!(lines[4].starts_with("!!") && lines[4].contains("get \"k\"  => \"c\""), "{text}");
        assert!(lines[4].contains("+40"), "{text}");
        assert!(lines[5].contains("[#1, #2]; then #3"), "{text}");
        assert!(lines[2].contains("|=="), "first op starts the timeline: {text}");
    }
}
