//! Hand-written histories with a known verdict: the classic anomalies a replicated store can show
//! must be rejected, and the concurrency and uncertainty a correct store shows must be accepted.

mod common;

use std::time::Duration;

use common::*;
use kvcheck::{CheckOptions, CheckResult, History, Outcome, Output};

// ---- must be rejected ----

#[test]
fn stale_read_after_completed_write() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), ok()),
        (1, 20, 30, put("x", "2"), ok()),
        (2, 40, 50, get("x"), saw(Some("1"))),
    ]);
    let violation = assert_violation(&history);
    assert_eq!(violation.key, "x");
    assert_eq!(violation.linearized, vec![0, 1]);
    assert_eq!(violation.stuck, Some(2));
    assert!(violation.render().contains("!!"), "{}", violation.render());
}

#[test]
fn concurrent_writers_observed_in_contradicting_orders() {
    let history = history(vec![
        (1, 0, 100, put("x", "a"), ok()),
        (2, 0, 100, put("x", "b"), ok()),
        (3, 10, 20, get("x"), saw(Some("a"))),
        (3, 30, 40, get("x"), saw(Some("b"))),
        (4, 10, 20, get("x"), saw(Some("b"))),
        (4, 30, 40, get("x"), saw(Some("a"))),
    ]);
    assert_violation(&history);
}

#[test]
fn cas_succeeded_on_value_nobody_wrote() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), ok()),
        (2, 20, 30, cas("x", Some("7"), "8"), cas_result(true)),
    ]);
    assert_violation(&history);
}

#[test]
fn cas_on_absent_key_succeeded_after_a_completed_put() {
    let history =
        history(vec![(1, 0, 10, put("x", "1"), ok()), (2, 20, 30, cas("x", None, "2"), cas_result(true))]);
    assert_violation(&history);
}

#[test]
fn read_of_value_never_written() {
    let history = history(vec![(1, 0, 10, put("x", "1"), ok()), (2, 5, 15, get("x"), saw(Some("ghost")))]);
    let violation = assert_violation(&history);
    assert_eq!(violation.minimal.len(), 1, "{}", violation.render());
}

#[test]
fn lost_update_two_cas_from_the_same_value() {
    // Two read-modify-write increments that both claim to have replaced "0".
    let history = history(vec![
        (1, 0, 10, put("x", "0"), ok()),
        (2, 20, 30, get("x"), saw(Some("0"))),
        (3, 20, 30, get("x"), saw(Some("0"))),
        (2, 40, 60, cas("x", Some("0"), "1"), cas_result(true)),
        (3, 45, 65, cas("x", Some("0"), "1"), cas_result(true)),
    ]);
    let violation = assert_violation(&history);
    let ids: Vec<u64> = violation.minimal.operations().iter().map(|op| op.id).collect();
    assert!(ids.contains(&3) && ids.contains(&4), "both updates are part of the violation: {ids:?}");
}

#[test]
fn compare_and_set_reported_failed_although_value_matched() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), ok()),
        (2, 20, 30, cas("x", Some("1"), "2"), cas_result(false)),
    ]);
    assert_violation(&history);
}

#[test]
fn delete_reports_existing_key_that_was_absent() {
    let history = history(vec![(1, 0, 10, del("x"), deleted(Some(true)))]);
    assert_violation(&history);
}

#[test]
fn read_sees_value_of_failed_put() {
    let history =
        history(vec![(1, 0, 10, put("x", "1"), Outcome::Failed), (2, 20, 30, get("x"), saw(Some("1")))]);
    let violation = assert_violation(&history);
    // The failed put is shown as context even though the checker ignores it.
    assert_eq!(violation.minimal.len(), 2, "{}", violation.render());
    assert!(violation.render().contains("FAILED"), "{}", violation.render());
}

#[test]
fn unknown_put_cannot_take_effect_before_its_invocation() {
    let history =
        history(vec![(1, 0, 10, get("x"), saw(Some("1"))), (2, 20, 25, put("x", "1"), Outcome::Unknown)]);
    assert_violation(&history);
}

#[test]
fn output_of_the_wrong_kind_is_a_violation() {
    let history = history(vec![(1, 0, 10, get("x"), Outcome::Ok(Output::Put))]);
    assert_violation(&history);
}

#[test]
fn only_the_violating_key_is_reported() {
    let history = history(vec![
        (1, 0, 10, put("a", "1"), ok()),
        (2, 5, 15, get("a"), saw(None)),
        (1, 20, 30, put("b", "1"), ok()),
        (1, 40, 50, put("b", "2"), ok()),
        (2, 60, 70, get("b"), saw(Some("1"))),
        (3, 60, 70, get("c"), saw(None)),
    ]);
    let violation = assert_violation(&history);
    assert_eq!(violation.key, "b");
    assert_eq!(violation.key_operations, 3);
    assert!(violation.other_keys.is_empty());
    assert!(violation.minimal.operations().iter().all(|op| op.op.key() == "b"));
}

#[test]
fn every_violating_key_is_named() {
    let history = history(vec![(1, 0, 10, get("a"), saw(Some("x"))), (1, 20, 30, get("b"), saw(Some("y")))]);
    let violation = assert_violation(&history);
    assert_eq!(violation.key, "a");
    assert_eq!(violation.other_keys, vec!["b".to_owned()]);
}

#[test]
fn shrinks_a_long_history_to_the_three_operations_that_contradict() {
    let mut rows = Vec::new();
    let mut time = 0;
    for n in 0..100 {
        let value = format!("v{n}");
        rows.push((1, time, time + 5, put("x", &value), ok()));
        rows.push((2, time + 6, time + 9, get("x"), saw(Some(&value))));
        time += 10;
    }
    rows.push((3, time, time + 5, get("x"), saw(Some("v50"))));
    let stale = rows.len() as u64 - 1;
    let violation = assert_violation(&history(rows));
    eprintln!("{violation}");
    let ops = violation.minimal.operations();
    // The stale read, the write of its value, and one later write or read of a later value (the
    // latter shown with the write it saw).
    assert!((3..=4).contains(&ops.len()), "{}", violation.render());
    assert_eq!(ops[0].op, put("x", "v50"));
    assert_eq!(ops.last().unwrap().id, stale);
    for op in ops {
        if let Outcome::Ok(Output::Get { value: Some(value) }) = &op.outcome {
            assert!(ops.iter().any(|w| w.op == put("x", value)), "{value} written: {}", violation.render());
        }
    }
    assert!(violation.shrink_complete);
    assert_eq!(violation.key_operations, 201);
}

// ---- must be accepted ----

#[test]
fn empty_history() {
    assert_linearizable(&History::default());
}

#[test]
fn concurrent_put_and_get_either_order() {
    for seen in [None, Some("1")] {
        assert_linearizable(&history(vec![
            (1, 0, 100, put("x", "1"), ok()),
            (2, 10, 20, get("x"), saw(seen)),
        ]));
    }
}

#[test]
fn concurrent_writers_observed_in_the_same_order() {
    let history = history(vec![
        (1, 0, 100, put("x", "a"), ok()),
        (2, 0, 100, put("x", "b"), ok()),
        (3, 10, 20, get("x"), saw(Some("a"))),
        (3, 30, 40, get("x"), saw(Some("b"))),
        (4, 10, 20, get("x"), saw(Some("a"))),
        (4, 30, 40, get("x"), saw(Some("b"))),
        (3, 110, 120, get("x"), saw(Some("b"))),
    ]);
    assert_linearizable(&history);
}

#[test]
fn compare_and_set_chain() {
    let history = history(vec![
        (1, 0, 10, cas("x", None, "1"), cas_result(true)),
        (2, 5, 15, cas("x", None, "2"), cas_result(false)),
        (1, 20, 30, cas("x", Some("1"), "3"), cas_result(true)),
        (2, 25, 35, del("x"), deleted(Some(true))),
        (3, 40, 50, del("x"), deleted(Some(false))),
        (3, 60, 70, get("x"), saw(None)),
    ]);
    assert_linearizable(&history);
}

#[test]
fn unknown_put_observed_later() {
    let history =
        history(vec![(1, 0, 10, put("x", "1"), Outcome::Unknown), (2, 50, 60, get("x"), saw(Some("1")))]);
    assert_linearizable(&history);
}

#[test]
fn unknown_put_never_observed() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), Outcome::Unknown),
        (2, 50, 60, get("x"), saw(None)),
        (2, 70, 80, get("x"), saw(None)),
    ]);
    assert_linearizable(&history);
}

#[test]
fn unknown_put_takes_effect_after_a_later_completed_write() {
    // The lost put was invoked first but applied last: allowed, its completion is +infinity.
    let history = history(vec![
        (1, 0, 10, put("x", "old"), Outcome::Unknown),
        (2, 20, 30, put("x", "new"), ok()),
        (3, 40, 50, get("x"), saw(Some("new"))),
        (3, 60, 70, get("x"), saw(Some("old"))),
    ]);
    assert_linearizable(&history);
}

#[test]
fn unknown_compare_and_set_observed() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), ok()),
        (2, 20, 30, cas("x", Some("1"), "2"), Outcome::Unknown),
        (3, 40, 50, get("x"), saw(Some("2"))),
    ]);
    assert_linearizable(&history);
}

#[test]
fn failed_put_never_observed() {
    let history = history(vec![
        (1, 0, 10, put("x", "1"), Outcome::Failed),
        (2, 20, 30, get("x"), saw(None)),
        (2, 40, 50, get("x"), Outcome::Unknown),
    ]);
    assert_linearizable(&history);
}

// ---- bounded time ----

#[test]
fn hard_history_times_out_within_budget() {
    // 30 concurrent writes and a read no order can explain: the search space is 2^30 subsets.
    let mut rows: Vec<_> = (0..30).map(|n| (n, 0, 100, put("x", &format!("{n}")), ok())).collect();
    rows.push((99, 0, 100, get("x"), saw(Some("nobody"))));
    rows.push((99, 200, 210, get("y"), saw(None)));
    let options = CheckOptions::default().with_time_budget(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let report = kvcheck::check(&history(rows), options);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    match report.result {
        CheckResult::Timeout { keys } => assert_eq!(keys, vec!["x".to_owned()]),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
