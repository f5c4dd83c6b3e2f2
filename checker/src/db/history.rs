//! Recorded histories of whole-database requests: who asked what, when, and what they were told.
//!
//! The shape follows the per-key [`crate::History`]: an interval per operation and one of three
//! outcomes, with the same reason for keeping "failed" (definitely not applied) apart from
//! "unknown" (may have been applied, at any revision after the invocation).

use serde::{Deserialize, Serialize};

use crate::db::types::{DbOp, DbOutput};
use crate::history::{ClientId, HistoryEntry, HistoryOf, OpId, Stamp};

/// How a whole-database request ended, from the client's point of view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "output", rename_all = "snake_case")]
pub enum DbOutcome {
    /// The store answered; the request took effect exactly once between invocation and completion,
    /// and the response (with its header revision) is what the client got.
    Ok(DbOutput),
    /// The store answered with an error that guarantees the request was not applied.
    Failed,
    /// No answer (timeout, connection loss): the request may have taken effect at any moment after
    /// its invocation, or never. Reads with this outcome are ignored.
    Unknown,
}

/// One request of a whole-database history.
///
/// Times are in one clock shared by all clients; only their order matters, and equal times count
/// as concurrent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbOperation {
    /// Unique within the history.
    pub id: OpId,
    /// The client that issued it.
    pub client: ClientId,
    /// What was requested.
    pub op: DbOp,
    /// When the request was about to be sent.
    pub invoke: u64,
    /// When the response (or the decision to give up) was seen.
    pub complete: u64,
    /// What the client learned.
    pub outcome: DbOutcome,
}

/// A well-formed whole-database history: unique ids, no operation completing before it starts.
pub type DbHistory = HistoryOf<DbOperation>;

impl HistoryEntry for DbOperation {
    type Request = DbOp;
    type Outcome = DbOutcome;

    fn in_flight() -> DbOutcome {
        DbOutcome::Unknown
    }

    fn assemble(stamp: Stamp, op: DbOp, outcome: DbOutcome) -> Self {
        let Stamp { id, client, invoke, complete } = stamp;
        DbOperation { id, client, op, invoke, complete, outcome }
    }

    fn stamp(&self) -> Stamp {
        Stamp { id: self.id, client: self.client, invoke: self.invoke, complete: self.complete }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::types::{KeyRange, Response};

    #[test]
    fn json_round_trip_validates() {
        let read = DbOperation {
            id: 1,
            client: 2,
            op: DbOp::Range { range: KeyRange::between("a", "c") },
            invoke: 3,
            complete: 4,
            outcome: DbOutcome::Ok(DbOutput {
                revision: 1,
                response: Response::Range { kvs: vec![], count: 0 },
            }),
        };
        let put = DbOperation {
            id: 2,
            op: DbOp::Put { key: "a".into(), value: "v".into(), prev_kv: false },
            outcome: DbOutcome::Unknown,
            ..read.clone()
        };
        let history = DbHistory::new(vec![read, put]).unwrap();
        let text = history.to_json().unwrap();
        assert_eq!(DbHistory::from_json(&text).unwrap(), history);
        let broken = text.replace("\"id\": 2", "\"id\": 1");
        assert!(matches!(DbHistory::from_json(&broken), Err(crate::HistoryError::Json(_))));
    }

    #[test]
    fn records_in_real_time_order_and_in_flight_ops_are_unknown() {
        let rec = crate::DbRecorder::new();
        let put = rec.invoke(1, DbOp::Put { key: "k".into(), value: "v".into(), prev_kv: false });
        let pending = rec.invoke(2, DbOp::Range { range: crate::db::types::KeyRange::single("k") });
        let output = DbOutput { revision: 2, response: Response::Put { prev_kv: None } };
        rec.complete(put, DbOutcome::Ok(output.clone()));
        let history = rec.history();
        let ops = history.operations();
        assert_eq!(ops.len(), 2);
        assert!(ops[0].invoke < ops[1].invoke && ops[1].invoke < ops[0].complete);
        assert_eq!(ops[0].outcome, DbOutcome::Ok(output));
        assert_eq!(ops[1].outcome, DbOutcome::Unknown);
        drop(pending);
    }
}
