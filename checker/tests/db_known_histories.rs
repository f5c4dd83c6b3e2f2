//! Hand-written whole-database histories with a known verdict: each anomaly the model exists to
//! catch must be rejected (with the anomaly named), and what a correct etcd does under concurrency
//! and lost responses must be accepted.

mod db_common;

use db_common::*;
use kvcheck::{
    ChangeKind, CompareResult, CompareTarget, DbAnomaly, DbOp, DbOutcome, KeyRange, Response,
    ResponseMismatch,
};

fn cas(key: &str, expected: &str, value: &str) -> DbOp {
    txn(
        vec![compare(key, CompareTarget::Value(expected.into()), CompareResult::Equal)],
        vec![put(key, value)],
        vec![range(key)],
    )
}

fn txn_ok(revision: i64, succeeded: bool, responses: Vec<Response>) -> DbOutcome {
    ok(revision, Response::Txn { succeeded, responses })
}

fn range_response(kvs: Vec<kvcheck::KeyValue>) -> Response {
    Response::Range { count: kvs.len() as u64, kvs }
}

// ---- must be rejected ----

#[test]
fn stale_read_after_an_acknowledged_write() {
    let history = history(vec![
        (1, 0, 10, put("k", "1"), put_ok(2)),
        (1, 20, 30, put("k", "2"), put_ok(3)),
        (2, 40, 50, range("k"), read_ok(2, vec![kv("k", "1", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    assert!(
        matches!(
            violation.anomaly,
            DbAnomaly::RealTime { op: 2, revision: 2, after: 2, .. }
                | DbAnomaly::RealTime { op: 1, after: 2, .. }
        ),
        "{violation}"
    );
    assert!(violation.render().contains("!!"), "{violation}");
}

#[test]
fn lost_acknowledged_write() {
    let history = history(vec![
        (1, 0, 10, put("k", "a"), put_ok(2)),
        (1, 20, 30, put("k", "b"), put_ok(3)),
        (2, 40, 50, range("k"), read_ok(3, vec![kv("k", "a", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    assert!(
        matches!(violation.anomaly, DbAnomaly::ReadMissesWrite { read: 2, write: 1, write_revision: 3, .. }),
        "{violation}"
    );
}

#[test]
fn two_writes_claim_the_same_revision() {
    let history = history(vec![(1, 0, 10, put("a", "1"), put_ok(2)), (2, 0, 10, put("b", "1"), put_ok(2))]);
    let violation = assert_violation(&history);
    assert_eq!(violation.anomaly, DbAnomaly::DuplicateRevision { revision: 2, first: 0, second: 1 });
}

#[test]
fn revision_gap_that_no_unknown_write_can_fill() {
    // Revision 3 must be written before the write of revision 4 completes (at 25); the only
    // unknown-outcome write was invoked after that.
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 15, 25, put("a", "2"), put_ok(4)),
        (2, 30, 40, put("b", "9"), DbOutcome::Unknown),
    ]);
    let violation = assert_violation(&history);
    assert!(matches!(violation.anomaly, DbAnomaly::UnfillableGap { revision: 3, .. }), "{violation}");
}

#[test]
fn revision_beyond_what_the_writes_can_reach() {
    let history =
        history(vec![(1, 0, 10, put("a", "1"), put_ok(2)), (2, 20, 30, range("a"), read_ok(5, vec![]))]);
    let violation = assert_violation(&history);
    assert!(
        matches!(violation.anomaly, DbAnomaly::ImpossibleRevision { op: 1, revision: 5, .. }),
        "{violation}"
    );
}

fn wrong_key_value(reported: kvcheck::KeyValue) -> DbAnomaly {
    let history = history(vec![
        (1, 0, 10, put("k", "a"), put_ok(2)),
        (1, 11, 20, put("j", "x"), put_ok(3)),
        (1, 21, 30, put("k", "b"), put_ok(4)),
        (2, 40, 50, range("k"), read_ok(4, vec![reported])),
    ]);
    assert_violation(&history).anomaly
}

#[test]
fn wrong_version_create_revision_or_mod_revision() {
    for reported in [kv("k", "b", 2, 4, 3), kv("k", "b", 3, 4, 2), kv("k", "b", 2, 3, 2)] {
        let anomaly = wrong_key_value(reported.clone());
        assert!(
            matches!(
                anomaly,
                DbAnomaly::WrongResponse { op: 3, revision: 4, .. }
                    | DbAnomaly::WrongWriteObserved { .. }
                    | DbAnomaly::ReadMissesWrite { read: 3, write: 2, .. }
            ),
            "{reported:?}: {anomaly}"
        );
    }
}

#[test]
fn header_revision_contradicts_the_contents() {
    // The read overlaps the put, so revision 1 is a fine time for it, but not with these contents.
    let history = history(vec![
        (1, 0, 10, put("k", "a"), put_ok(2)),
        (2, 5, 15, range("k"), read_ok(1, vec![kv("k", "a", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    assert!(matches!(violation.anomaly, DbAnomaly::WrongResponse { op: 1, revision: 1, .. }), "{violation}");
}

#[test]
fn txn_succeeded_flag_contradicts_the_state() {
    let history = history(vec![
        (1, 0, 10, put("k", "a"), put_ok(2)),
        (2, 20, 30, cas("k", "a", "b"), txn_ok(2, false, vec![range_response(vec![kv("k", "a", 2, 2, 1)])])),
    ]);
    let violation = assert_violation(&history);
    assert_eq!(
        violation.anomaly,
        DbAnomaly::WrongResponse {
            op: 1,
            revision: 2,
            mismatch: ResponseMismatch::Succeeded { model: true }
        }
    );
}

#[test]
fn range_missing_a_key() {
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 20, 30, put("b", "1"), put_ok(3)),
        (2, 40, 50, range_between("a", "c"), read_ok(3, vec![kv("a", "1", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    let DbAnomaly::WrongResponse { mismatch: ResponseMismatch::Key { key, model, reported }, .. } =
        &violation.anomaly
    else {
        panic!("{violation}")
    };
    assert_eq!((key.as_str(), model.is_some(), reported.is_none()), ("b", true, true), "{violation}");
}

#[test]
fn range_including_a_deleted_key() {
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 20, 30, del("a"), deleted_ok(3, 1)),
        (2, 40, 50, range_between("a", "c"), read_ok(3, vec![kv("a", "1", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    assert!(matches!(violation.anomaly, DbAnomaly::ReadMissesWrite { read: 2, write: 1, .. }), "{violation}");
}

/// A write of "a" (acknowledged, or lost but seen at revision 2) that a read finds written again
/// at revision 4. An unrelated lost write could take revision 4, but not with that effect.
#[test]
fn write_applied_twice() {
    let first = [
        vec![(1, 0, 10, put("k", "a"), put_ok(2))],
        vec![
            (1, 0, 10, put("k", "a"), DbOutcome::Unknown),
            (2, 11, 12, range("k"), read_ok(2, vec![kv("k", "a", 2, 2, 1)])),
        ],
    ];
    for rows in first {
        let mut rows = rows;
        rows.insert(0, (3, 0, 1, put("j", "z"), DbOutcome::Unknown));
        rows.push((2, 20, 30, put("k", "b"), put_ok(3)));
        rows.push((2, 40, 50, range("k"), read_ok(4, vec![kv("k", "a", 2, 4, 3)])));
        let violation = assert_violation(&history(rows));
        assert!(
            matches!(
                violation.anomaly,
                DbAnomaly::UnfillableGap { revision: 4, .. }
                    | DbAnomaly::WrongWriteObserved { revision: 4, .. }
            ),
            "{violation}"
        );
    }
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invocation() {
    let history = history(vec![
        (1, 0, 10, range("k"), read_ok(2, vec![kv("k", "a", 2, 2, 1)])),
        (2, 20, 25, put("k", "a"), DbOutcome::Unknown),
    ]);
    assert_violation(&history);
}

#[test]
fn malformed_range_response() {
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 11, 20, put("b", "1"), put_ok(3)),
        (2, 30, 40, range_between("a", "c"), read_ok(3, vec![kv("b", "1", 3, 3, 1), kv("a", "1", 2, 2, 1)])),
    ]);
    let violation = assert_violation(&history);
    assert!(matches!(violation.anomaly, DbAnomaly::Malformed { op: 2, .. }), "{violation}");
}

// ---- must be accepted ----

#[test]
fn empty_history() {
    let log = assert_linearizable(&kvcheck::DbHistory::default());
    assert_eq!(log.last_revision(), 1);
}

#[test]
fn concurrent_put_and_read_either_order() {
    for (revision, kvs) in [(1, vec![]), (2, vec![kv("k", "v", 2, 2, 1)])] {
        let history = history(vec![
            (1, 0, 10, put("k", "v"), put_ok(2)),
            (2, 5, 15, range("k"), read_ok(revision, kvs)),
        ]);
        assert_linearizable(&history);
    }
}

#[test]
fn unknown_write_revealed_by_a_later_read_fills_its_revision() {
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (2, 5, 8, put("b", "x"), DbOutcome::Unknown),
        (3, 6, 9, put("c", "never"), DbOutcome::Unknown),
        (1, 20, 30, put("a", "2"), put_ok(4)),
        (1, 40, 50, range_between("a", "z"), read_ok(4, vec![kv("a", "2", 2, 4, 2), kv("b", "x", 3, 3, 1)])),
    ]);
    let log = assert_linearizable(&history);
    let filled = log.get(3).expect("revision 3");
    assert_eq!((filled.op, filled.acknowledged), (1, false));
    assert_eq!(filled.changes.len(), 1);
    assert_eq!((filled.changes[0].kind, &filled.changes[0].kv), (ChangeKind::Put, &kv("b", "x", 3, 3, 1)));
    assert_eq!(log.last_revision(), 4);
}

#[test]
fn delete_of_nothing_and_read_only_txn_keep_the_revision() {
    let guard = compare("a", CompareTarget::Version(0), CompareResult::Greater);
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 11, 20, del("b"), deleted_ok(2, 0)),
        (
            1,
            21,
            30,
            txn(vec![guard], vec![range("a")], vec![]),
            txn_ok(2, true, vec![range_response(vec![kv("a", "1", 2, 2, 1)])]),
        ),
        (1, 31, 40, del("a"), deleted_ok(3, 1)),
        (1, 41, 50, put("a", "2"), put_ok(4)),
        (2, 51, 60, range("a"), read_ok(4, vec![kv("a", "2", 4, 4, 1)])),
    ]);
    let log = assert_linearizable(&history);
    assert_eq!(log.get(3).map(|committed| committed.changes[0].kind), Some(ChangeKind::Delete));
}

#[test]
fn multi_key_txn_changes_share_one_revision() {
    let guard = compare("a", CompareTarget::CreateRevision(0), CompareResult::Equal);
    let history = history(vec![
        (
            1,
            0,
            10,
            txn(vec![guard], vec![put("a", "1"), put("b", "2"), range_between("a", "c")], vec![]),
            txn_ok(
                2,
                true,
                vec![
                    Response::Put { prev_kv: None },
                    Response::Put { prev_kv: None },
                    range_response(vec![kv("a", "1", 2, 2, 1), kv("b", "2", 2, 2, 1)]),
                ],
            ),
        ),
        (
            2,
            20,
            30,
            DbOp::Range { range: KeyRange::from_key("") },
            read_ok(2, vec![kv("a", "1", 2, 2, 1), kv("b", "2", 2, 2, 1)]),
        ),
    ]);
    let log = assert_linearizable(&history);
    assert_eq!(log.get(2).map(|committed| committed.changes.len()), Some(2));
    assert_eq!(log.state_at(2), vec![kv("a", "1", 2, 2, 1), kv("b", "2", 2, 2, 1)]);
}
