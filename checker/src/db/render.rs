//! Tables of whole-database (sub-)histories for a human: who did what when, with the revision
//! each response carried, so the order the store claimed can be compared with real time.

use crate::db::history::{DbHistory, DbOperation, DbOutcome};
use crate::db::types::{CompareResult, CompareTarget, DbOp, KeyRange, KeyValue, Response};
use crate::history::OpId;
use crate::render::{Bar, Cells, table};

/// Renders a whole-database history, one operation per line in invocation order.
pub fn render_db_history(history: &DbHistory) -> String {
    render_db_marked(history.operations().iter(), &[])
}

/// Renders operations and marks those in `marked` with `!!`.
pub(crate) fn render_db_marked<'a>(ops: impl Iterator<Item = &'a DbOperation>, marked: &[OpId]) -> String {
    table(ops, |op: &DbOperation| {
        let bar = match op.outcome {
            DbOutcome::Ok(_) => Bar::Ok,
            DbOutcome::Failed => Bar::Failed,
            DbOutcome::Unknown => Bar::Unknown,
        };
        let mark = if marked.contains(&op.id) { "!!" } else { "" };
        Cells {
            mark: mark.to_owned(),
            bar,
            request: describe_op(&op.op),
            outcome: describe_outcome(&op.outcome),
        }
    })
}

fn describe_range(range: &KeyRange) -> String {
    match range.range_end.as_deref() {
        None => format!("{:?}", range.key),
        Some("\0") => format!("[{:?}..)", range.key),
        Some(end) => format!("[{:?}..{end:?})", range.key),
    }
}

/// A request in one line, e.g. `txn if "k".version = 0 then put "k" = "v" else range "k"`.
pub(crate) fn describe_op(op: &DbOp) -> String {
    match op {
        DbOp::Range { range } => format!("range {}", describe_range(range)),
        DbOp::Put { key, value, prev_kv } => {
            format!("put {key:?} = {value:?}{}", if *prev_kv { " (prev_kv)" } else { "" })
        }
        DbOp::DeleteRange { range } => format!("delete {}", describe_range(range)),
        DbOp::Txn { compare, success, failure } => {
            let guards: Vec<String> = compare
                .iter()
                .map(|guard| {
                    let relation = match guard.result {
                        CompareResult::Equal => "=",
                        CompareResult::NotEqual => "!=",
                        CompareResult::Less => "<",
                        CompareResult::Greater => ">",
                    };
                    let (attribute, operand) = match &guard.target {
                        CompareTarget::Value(value) => ("value", format!("{value:?}")),
                        CompareTarget::Version(version) => ("version", version.to_string()),
                        CompareTarget::CreateRevision(revision) => ("create", revision.to_string()),
                        CompareTarget::ModRevision(revision) => ("mod", revision.to_string()),
                    };
                    format!("{:?}.{attribute} {relation} {operand}", guard.key)
                })
                .collect();
            let branch = |ops: &[DbOp]| ops.iter().map(describe_op).collect::<Vec<_>>().join("; ");
            format!("txn if {} then {} else {}", guards.join(" && "), branch(success), branch(failure))
        }
    }
}

fn describe_kv(kv: &KeyValue) -> String {
    format!("{:?}={:?}@c{}m{}v{}", kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
}

fn describe_response(response: &Response) -> String {
    match response {
        Response::Range { kvs, .. } => {
            format!("[{}]", kvs.iter().map(describe_kv).collect::<Vec<_>>().join(", "))
        }
        Response::Put { prev_kv: Some(kv) } => format!("ok, prev {}", describe_kv(kv)),
        Response::Put { prev_kv: None } => "ok".to_owned(),
        Response::DeleteRange { deleted } => format!("deleted {deleted}"),
        Response::Txn { succeeded, responses } => format!(
            "{} [{}]",
            if *succeeded { "succeeded" } else { "failed" },
            responses.iter().map(describe_response).collect::<Vec<_>>().join("; ")
        ),
    }
}

/// An outcome in one line: the header revision and the response, or the failure.
pub(crate) fn describe_outcome(outcome: &DbOutcome) -> String {
    match outcome {
        DbOutcome::Ok(output) => {
            format!("=> rev {}: {}", output.revision, describe_response(&output.response))
        }
        DbOutcome::Failed => "=> FAILED (not applied)".to_owned(),
        DbOutcome::Unknown => "=> UNKNOWN (may have applied)".to_owned(),
    }
}
