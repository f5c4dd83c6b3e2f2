//! The watch check against the revision log of a checked history: exactly the committed changes
//! of the watched range from the start revision, in order, once each, atomically per revision.

mod db_common;

use db_common::*;
use kvcheck::{Change, ChangeKind, KeyRange, RevisionLog, WatchError, WatchSpec, check_watch_events};

/// Revisions 2..=5: put a, txn put b + put c, delete a, put b again.
fn log() -> RevisionLog {
    let both = txn(vec![], vec![put("b", "1"), put("c", "1")], vec![]);
    let two_puts = kvcheck::Response::Txn {
        succeeded: true,
        responses: vec![kvcheck::Response::Put { prev_kv: None }, kvcheck::Response::Put { prev_kv: None }],
    };
    let history = history(vec![
        (1, 0, 10, put("a", "1"), put_ok(2)),
        (1, 11, 20, both, ok(3, two_puts)),
        (1, 21, 30, del("a"), deleted_ok(4, 1)),
        (1, 31, 40, put("b", "2"), put_ok(5)),
    ]);
    assert_linearizable(&history)
}

fn put_event(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Change {
    Change { kind: ChangeKind::Put, kv: kv(key, value, create, modified, version) }
}

fn delete_event(key: &str, revision: i64) -> Change {
    Change { kind: ChangeKind::Delete, kv: kv(key, "", 0, revision, 0) }
}

fn all_keys(start_revision: i64, complete_through: Option<i64>) -> WatchSpec {
    WatchSpec { range: KeyRange::from_key(""), start_revision, complete_through }
}

fn events() -> Vec<Change> {
    vec![
        put_event("a", "1", 2, 2, 1),
        put_event("b", "1", 3, 3, 1),
        put_event("c", "1", 3, 3, 1),
        delete_event("a", 4),
        put_event("b", "2", 3, 5, 2),
    ]
}

#[test]
fn the_committed_changes_pass_however_responses_group_revisions() {
    let log = log();
    let every = events();
    assert_eq!(check_watch_events(&log, &all_keys(1, Some(5)), std::slice::from_ref(&every)), Ok(()));
    let grouped = vec![every[..1].to_vec(), every[1..3].to_vec(), every[3..].to_vec()];
    assert_eq!(check_watch_events(&log, &all_keys(1, Some(5)), &grouped), Ok(()));
    // From a later start, and on a narrower range.
    assert_eq!(check_watch_events(&log, &all_keys(4, Some(5)), &[every[3..].to_vec()]), Ok(()));
    let only_b = WatchSpec { range: KeyRange::single("b"), start_revision: 1, complete_through: Some(5) };
    assert_eq!(check_watch_events(&log, &only_b, &[vec![every[1].clone(), every[4].clone()]]), Ok(()));
    // A watcher that stopped early passes unless it had to see more.
    assert_eq!(check_watch_events(&log, &all_keys(1, None), &[every[..2].to_vec()]), Ok(()));
}

#[test]
fn out_of_order_duplicate_missing_wrong_and_split_events_are_reported() {
    let log = log();
    let every = events();
    let spec = all_keys(1, Some(5));
    let mut swapped = every.clone();
    swapped.swap(0, 3);
    assert!(matches!(
        check_watch_events(&log, &spec, &[swapped]),
        Err(WatchError::Missing { index: 0, revision: 2, .. })
    ));
    let mut late = every.clone();
    late.swap(3, 4);
    assert!(matches!(
        check_watch_events(&log, &spec, &[late]),
        Err(WatchError::Missing { index: 3, revision: 4, .. })
    ));
    let mut repeated = every.clone();
    repeated.insert(1, every[0].clone());
    assert_eq!(
        check_watch_events(&log, &spec, &[repeated]),
        Err(WatchError::Duplicate { index: 1, key: "a".into(), revision: 2 })
    );
    let mut back = every.clone();
    back.push(every[0].clone());
    assert_eq!(
        check_watch_events(&log, &spec, &[back]),
        Err(WatchError::OutOfOrder { index: 5, revision: 2, previous: 5 })
    );
    let mut gap = every.clone();
    gap.remove(2);
    assert!(matches!(
        check_watch_events(&log, &spec, &[gap]),
        Err(WatchError::Missing { index: 2, revision: 3, .. })
    ));
    let mut wrong = every.clone();
    wrong[4].kv.version = 3;
    assert!(matches!(
        check_watch_events(&log, &spec, &[wrong]),
        Err(WatchError::Unexpected { index: 4, .. })
    ));
    let split = vec![every[..2].to_vec(), every[2..].to_vec()];
    assert_eq!(check_watch_events(&log, &spec, &split), Err(WatchError::SplitRevision { revision: 3 }));
    assert!(matches!(
        check_watch_events(&log, &spec, &[every[..4].to_vec()]),
        Err(WatchError::Missing { index: 4, revision: 5, .. })
    ));
    assert!(matches!(
        check_watch_events(&log, &all_keys(3, Some(5)), std::slice::from_ref(&every)),
        Err(WatchError::Unexpected { index: 0, .. })
    ));
}
