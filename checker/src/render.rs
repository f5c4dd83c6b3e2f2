//! Human-readable tables of (sub-)histories.
//!
//! A violation is only useful if a developer can see at a glance who did what when; the timeline
//! column shows which operations overlapped, which is what linearizability is about.

use std::fmt::Write;

use crate::history::{History, HistoryEntry, Op, OpId, Operation, Outcome, Output, Stamp};

/// Width of the timeline column in characters.
const TIMELINE_WIDTH: u64 = 40;

/// Renders a history as a table, one operation per line, in invocation order.
pub fn render_history(history: &History) -> String {
    render_marked(history, &[], None)
}

/// Renders a history and marks a partial linearization (`L1`, `L2`, ...) and the operation that
/// could not be placed after it (`!!`).
pub(crate) fn render_marked(history: &History, linearized: &[OpId], stuck: Option<OpId>) -> String {
    let mut out = table(history.operations().iter(), |op: &Operation| {
        let mark = if Some(op.id) == stuck {
            "!!".to_owned()
        } else {
            linearized
                .iter()
                .position(|&id| id == op.id)
                .map_or_else(String::new, |at| format!("L{}", at + 1))
        };
        let bar = match op.outcome {
            Outcome::Ok(_) => Bar::Ok,
            Outcome::Failed => Bar::Failed,
            Outcome::Unknown => Bar::Unknown,
        };
        Cells { mark, bar, request: describe_op(&op.op), outcome: describe_outcome(&op.outcome) }
    });
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

/// How an operation's interval is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bar {
    /// Answered: `=` from invocation to completion.
    Ok,
    /// Failed: `x` from invocation to completion.
    Failed,
    /// Unknown: `~` from invocation to the end of the timeline.
    Unknown,
}

/// The timeline cell of one operation over a history spanning `start..end` (`end > start`).
fn timeline(invoke: u64, complete: u64, bar: Bar, start: u64, end: u64) -> String {
    let from = column(invoke, start, end);
    let (to, fill) = match bar {
        Bar::Ok => (column(complete, start, end), '='),
        Bar::Failed => (column(complete, start, end), 'x'),
        Bar::Unknown => (TIMELINE_WIDTH - 1, '~'),
    };
    (0..TIMELINE_WIDTH).map(|at| if (from..=to).contains(&at) { fill } else { ' ' }).collect()
}

/// The first invocation and the last completion of `intervals`, at least one apart.
fn time_span(intervals: impl Iterator<Item = (u64, u64)> + Clone) -> (u64, u64) {
    let start = intervals.clone().map(|(invoke, _)| invoke).min().unwrap_or(0);
    let end = intervals.map(|(_, complete)| complete).max().unwrap_or(start).max(start + 1);
    (start, end)
}

/// The first two lines of a table spanning `start..end`.
fn table_header(start: u64, end: u64) -> String {
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
    out
}

/// What a table shows of one operation besides its id, client and times.
pub(crate) struct Cells {
    pub(crate) mark: String,
    pub(crate) bar: Bar,
    pub(crate) request: String,
    pub(crate) outcome: String,
}

/// A table of operations in invocation order: mark, id, client, times, timeline, request and
/// outcome, the mark, bar and texts given by `cells`.
pub(crate) fn table<'a, T: HistoryEntry + 'a>(
    ops: impl Iterator<Item = &'a T>,
    cells: impl Fn(&T) -> Cells,
) -> String {
    let mut ops: Vec<(Stamp, &T)> = ops.map(|op| (op.stamp(), op)).collect();
    ops.sort_by_key(|(stamp, _)| (stamp.invoke, stamp.id));
    let (start, end) = time_span(ops.iter().map(|(stamp, _)| (stamp.invoke, stamp.complete)));
    let mut out = table_header(start, end);
    for (stamp, op) in ops {
        let Cells { mark, bar, request, outcome } = cells(op);
        let _ = writeln!(
            out,
            "{mark:<4} {:>6} {:>7} {:>12} {:>12}  |{}|  {request}  {outcome}",
            format!("#{}", stamp.id),
            stamp.client,
            format!("+{}", stamp.invoke - start),
            format!("+{}", stamp.complete - start),
            timeline(stamp.invoke, stamp.complete, bar, start, end),
        );
    }
    out
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
