//! Checks a reconnecting watcher's whole stream, as a client library sees it across members,
//! against the [`RevisionLog`] of a checked history.
//!
//! [`check_watch_events`](crate::check_watch_events) checks one uninterrupted list of events. A
//! watcher under faults is more: it is opened on some member at a start revision, its stream
//! breaks (the member was killed, paused, cut off, or lost its leader), and it is opened again,
//! on the same or another member, from the revision after the last one it was told about
//! (clientv3's behaviour). On the way it may ask for `prev_kv`, filter out puts or deletes, and
//! receive progress notifications. [`check_watch_stream`] checks the recorded [`StreamItem`]s:
//!
//! - **ordered, unique, atomic**: event revisions never go back, no change arrives twice, and the
//!   changes of one revision arrive in one response;
//! - **reliable**: exactly the committed changes of the watched range from the start revision
//!   (less those the filter drops) arrive, with no gap across reconnects;
//! - **resumption**: each reconnect starts at the revision after the last one delivered (an event
//!   or a progress notification), so nothing can be skipped or repeated by the client;
//! - **prev_kv**: when asked for, each event carries the key as it was just before the change
//!   (none when the key did not exist), per the log; when not asked for, none;
//! - **progress**: a progress notification at revision `R` comes only after every change of the
//!   watcher at revisions up to `R` was delivered;
//! - **compaction**: a watch canceled as compacted names a compact revision above the revision it
//!   asked for; the changes below it are then legitimately skipped.
//!
//! [`check_members_agree`] compares events across watchers and members: one revision's change of
//! one key is the same whichever member reported it. It needs no log.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::db::log::{Change, ChangeKind, RevisionLog};
use crate::db::types::{KeyRange, KeyValue, Revision};

/// Which events a watcher asked the server to leave out (etcd's `WatchCreateRequest.filters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFilter {
    /// No put events.
    NoPut,
    /// No delete events.
    NoDelete,
}

impl EventFilter {
    /// True if the filter lets `kind` through.
    pub fn passes(self, kind: ChangeKind) -> bool {
        !matches!(
            (self, kind),
            (EventFilter::NoPut, ChangeKind::Put) | (EventFilter::NoDelete, ChangeKind::Delete)
        )
    }
}

/// What a reconnecting watcher asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// The first revision wanted, as resolved when the watch was first created (for etcd's start
    /// revision 0, "now", the created response's header revision + 1).
    pub start_revision: Revision,
    /// Whether events must carry the previous key-value.
    pub prev_kv: bool,
    /// Events the server leaves out.
    pub filter: Option<EventFilter>,
    /// Every change up to this revision must have arrived; `None` checks only what arrived.
    pub complete_through: Option<Revision>,
}

/// One watch event as received: the change and, if any, the previous key-value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What changed.
    pub change: Change,
    /// The key before the change (`prev_kv`), when the server sent one.
    pub prev_kv: Option<KeyValue>,
}

/// One thing a watcher saw, in arrival order, with the member (index) that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum StreamItem {
    /// The watch was created (first time or after a break) from `start_revision`.
    Start {
        /// Member asked.
        member: usize,
        /// The revision the watch was created from.
        start_revision: Revision,
    },
    /// One response's events.
    Events {
        /// Member that sent them.
        member: usize,
        /// The events, in the response's order.
        events: Vec<WatchEvent>,
    },
    /// A progress notification (a response with no events) at header revision `revision`.
    Progress {
        /// Member that sent it.
        member: usize,
        /// Its header revision.
        revision: Revision,
    },
    /// The watch was canceled because its start revision was compacted.
    Compacted {
        /// Member that sent it.
        member: usize,
        /// The compact revision it reported.
        compact_revision: Revision,
    },
}

/// What a passing stream held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Events checked.
    pub events: usize,
    /// Progress notifications checked.
    pub progress: usize,
    /// Watches created after the first (reconnects and resumptions after compaction).
    pub reconnects: usize,
    /// The revision through which the watcher was told everything.
    pub delivered_through: Revision,
}

/// How a watcher's stream departs from what etcd promises. Event positions count events across
/// the whole stream, from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream does not start with a [`StreamItem::Start`], or the first one is not at the
    /// spec's start revision.
    #[error("the stream must begin with a watch created at revision {expected}, not {found:?}")]
    BadFirstStart {
        /// The spec's start revision.
        expected: Revision,
        /// What came first.
        found: Option<Box<StreamItem>>,
    },
    /// A reconnect at a revision other than the one after the last delivered.
    #[error("watch recreated on member {member} at revision {found}, but {expected} was next")]
    BadResume {
        /// Member asked.
        member: usize,
        /// Revision after the last delivered.
        expected: Revision,
        /// Revision asked for.
        found: Revision,
    },
    /// An event at a revision below the one before it.
    #[error("event {index} at revision {revision} from member {member} came after revision {previous}")]
    OutOfOrder {
        /// Position.
        index: usize,
        /// Member that sent it.
        member: usize,
        /// Its revision.
        revision: Revision,
        /// The revision delivered before it.
        previous: Revision,
    },
    /// The same change delivered again.
    #[error("event {index} from member {member} repeats the change of {key:?} at revision {revision}")]
    Duplicate {
        /// Position.
        index: usize,
        /// Member that sent it.
        member: usize,
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
    },
    /// The changes of one revision arrived in more than one response.
    #[error("the changes of revision {revision} were split across responses (member {member})")]
    SplitRevision {
        /// Member of the later response.
        member: usize,
        /// The revision.
        revision: Revision,
    },
    /// A committed change (passing the filter) that should have arrived before event `index` or
    /// before the end of the stream.
    #[error("the change of {key:?} at revision {revision} is missing (before event {index})")]
    Missing {
        /// Where it should have been.
        index: usize,
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
    },
    /// An event that is no committed change of the range the watcher should see (wrong value,
    /// version or revision, a key outside the range, a change the filter drops).
    #[error("event {index} from member {member} ({event:?}) is not a change this watcher should see")]
    Unexpected {
        /// Position.
        index: usize,
        /// Member that sent it.
        member: usize,
        /// The event.
        event: Box<Change>,
    },
    /// `prev_kv` differs from the key's state before the change (or is present though not asked).
    #[error("event {index} (key {key:?}, revision {revision}) has prev_kv {found:?}, expected {expected:?}")]
    WrongPrevKv {
        /// Position.
        index: usize,
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
        /// What the log says.
        expected: Option<Box<KeyValue>>,
        /// What arrived.
        found: Option<Box<KeyValue>>,
    },
    /// A progress notification at `revision` while a change at or below it was still undelivered.
    #[error(
        "progress notification at revision {revision} from member {member} before the change of {key:?} at \
         revision {missing} was delivered"
    )]
    ProgressAhead {
        /// Member that sent it.
        member: usize,
        /// The notification's revision.
        revision: Revision,
        /// The undelivered change's key.
        key: String,
        /// Its revision.
        missing: Revision,
    },
    /// A compaction cancel whose compact revision does not exceed the revision the watch asked for.
    #[error("member {member} canceled a watch from revision {start} as compacted at {compact_revision}")]
    BadCompaction {
        /// Member that sent it.
        member: usize,
        /// The revision the watch asked for.
        start: Revision,
        /// The compact revision reported.
        compact_revision: Revision,
    },
    /// Two reports of one revision's change of one key that differ.
    #[error("member {first_member} and member {second_member} disagree on {key:?} at revision {revision}")]
    Disagreement {
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
        /// One member.
        first_member: usize,
        /// The other.
        second_member: usize,
    },
}

/// For every change of `range` in `log`: the key's state just before it (etcd's `prev_kv`).
fn previous_states<'a>(
    log: &'a RevisionLog,
    range: &KeyRange,
) -> HashMap<(Revision, &'a str), Option<&'a KeyValue>> {
    let mut current: HashMap<&str, &KeyValue> = HashMap::new();
    let mut previous = HashMap::new();
    for committed in log.revisions() {
        for change in committed.changes.iter().filter(|c| range.contains(&c.kv.key)) {
            let key = change.kv.key.as_str();
            previous.insert((committed.revision, key), current.get(key).copied());
            match change.kind {
                ChangeKind::Put => current.insert(key, &change.kv),
                ChangeKind::Delete => current.remove(key),
            };
        }
    }
    previous
}

/// Checks one watcher's stream (see the module docs).
pub fn check_watch_stream(
    log: &RevisionLog,
    spec: &StreamSpec,
    items: &[StreamItem],
) -> Result<StreamSummary, StreamError> {
    let passes = |change: &Change| spec.filter.is_none_or(|f| f.passes(change.kind));
    let expected: Vec<(Revision, &Change)> =
        log.changes_from(spec.start_revision, &spec.range).filter(|(_, c)| passes(c)).collect();
    match items.first() {
        Some(StreamItem::Start { start_revision, .. }) if *start_revision == spec.start_revision => {}
        other => {
            return Err(StreamError::BadFirstStart {
                expected: spec.start_revision,
                found: other.cloned().map(Box::new),
            });
        }
    }
    let mut summary =
        StreamSummary { delivered_through: spec.start_revision - 1, ..StreamSummary::default() };
    let mut next = 0;
    // The last event delivered: revision, key, response number.
    let mut previous: Option<(Revision, &str, usize)> = None;
    let mut index = 0;
    let mut current_start = spec.start_revision;
    let prev_states = if spec.prev_kv { previous_states(log, &spec.range) } else { HashMap::new() };
    for (position, item) in items.iter().enumerate() {
        match item {
            StreamItem::Start { member, start_revision } => {
                if position > 0 {
                    let expected = summary.delivered_through + 1;
                    if *start_revision != expected {
                        return Err(StreamError::BadResume {
                            member: *member,
                            expected,
                            found: *start_revision,
                        });
                    }
                    summary.reconnects += 1;
                }
                current_start = *start_revision;
            }
            StreamItem::Events { member, events } => {
                let member = *member;
                for event in events {
                    let change = &event.change;
                    let revision = change.kv.mod_revision;
                    if let Some((before, before_key, before_response)) = previous {
                        if revision < before {
                            return Err(StreamError::OutOfOrder {
                                index,
                                member,
                                revision,
                                previous: before,
                            });
                        }
                        if revision == before && change.kv.key == before_key {
                            let key = change.kv.key.clone();
                            return Err(StreamError::Duplicate { index, member, key, revision });
                        }
                        if revision == before && position != before_response {
                            return Err(StreamError::SplitRevision { member, revision });
                        }
                    }
                    match expected.get(next) {
                        Some(&(_, wanted)) if wanted == change => next += 1,
                        Some(&(missing, wanted))
                            if missing < revision
                                || expected[next..]
                                    .iter()
                                    .any(|&(at, later)| at == revision && later == change) =>
                        {
                            let key = wanted.kv.key.clone();
                            return Err(StreamError::Missing { index, key, revision: missing });
                        }
                        _ => {
                            let event = Box::new(change.clone());
                            return Err(StreamError::Unexpected { index, member, event });
                        }
                    }
                    let wanted =
                        prev_states.get(&(revision, change.kv.key.as_str())).copied().flatten().cloned();
                    if wanted != event.prev_kv {
                        return Err(StreamError::WrongPrevKv {
                            index,
                            key: change.kv.key.clone(),
                            revision,
                            expected: wanted.map(Box::new),
                            found: event.prev_kv.clone().map(Box::new),
                        });
                    }
                    previous = Some((revision, change.kv.key.as_str(), position));
                    summary.delivered_through = summary.delivered_through.max(revision);
                    summary.events += 1;
                    index += 1;
                }
            }
            StreamItem::Progress { member, revision } => {
                if let Some(&(missing, wanted)) = expected.get(next).filter(|(at, _)| at <= revision) {
                    return Err(StreamError::ProgressAhead {
                        member: *member,
                        revision: *revision,
                        key: wanted.kv.key.clone(),
                        missing,
                    });
                }
                summary.delivered_through = summary.delivered_through.max(*revision);
                summary.progress += 1;
            }
            StreamItem::Compacted { member, compact_revision } => {
                if *compact_revision <= current_start {
                    return Err(StreamError::BadCompaction {
                        member: *member,
                        start: current_start,
                        compact_revision: *compact_revision,
                    });
                }
                // The changes below the compact revision are gone; the watcher resumes there.
                while expected.get(next).is_some_and(|(at, _)| at < compact_revision) {
                    next += 1;
                }
                summary.delivered_through = summary.delivered_through.max(compact_revision - 1);
            }
        }
    }
    let through = spec.complete_through.unwrap_or(Revision::MIN);
    if let Some(&(revision, change)) = expected.get(next).filter(|(revision, _)| *revision <= through) {
        return Err(StreamError::Missing { index, key: change.kv.key.clone(), revision });
    }
    Ok(summary)
}

/// Checks that every report of one revision's change of one key, from any watcher on any member,
/// is the same. `streams` are the recorded streams of all watchers.
pub fn check_members_agree<'a>(
    streams: impl IntoIterator<Item = &'a [StreamItem]>,
) -> Result<usize, StreamError> {
    let mut seen: BTreeMap<(Revision, &str), (usize, &Change)> = BTreeMap::new();
    let mut compared = 0;
    for items in streams {
        for item in items {
            let StreamItem::Events { member, events } = item else { continue };
            for event in events {
                let change = &event.change;
                let slot = (change.kv.mod_revision, change.kv.key.as_str());
                match seen.get(&slot) {
                    Some(&(first_member, first)) if first != change => {
                        return Err(StreamError::Disagreement {
                            key: change.kv.key.clone(),
                            revision: change.kv.mod_revision,
                            first_member,
                            second_member: *member,
                        });
                    }
                    Some(_) => compared += 1,
                    None => {
                        seen.insert(slot, (*member, change));
                    }
                }
            }
        }
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::log::Committed;

    /// The key's state just before `revision`, per the log (written apart from
    /// `previous_states`).
    fn state_before(log: &RevisionLog, key: &str, revision: Revision) -> Option<KeyValue> {
        let mut state = None;
        for committed in log.revisions().iter().take_while(|c| c.revision < revision) {
            for change in committed.changes.iter().filter(|c| c.kv.key == key) {
                state = match change.kind {
                    ChangeKind::Put => Some(change.kv.clone()),
                    ChangeKind::Delete => None,
                };
            }
        }
        state
    }

    fn kv(key: &str, value: &str, create: Revision, modified: Revision, version: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
            version,
        }
    }

    fn put(key: &str, value: &str, create: Revision, modified: Revision, version: i64) -> Change {
        Change { kind: ChangeKind::Put, kv: kv(key, value, create, modified, version) }
    }

    fn del(key: &str, revision: Revision) -> Change {
        Change { kind: ChangeKind::Delete, kv: kv(key, "", 0, revision, 0) }
    }

    /// Revisions 2..=6: put a=1; put b=1 and c=1 together; put a=2; delete a; put b=2.
    fn log() -> RevisionLog {
        let changes = vec![
            vec![put("a", "1", 2, 2, 1)],
            vec![put("b", "1", 3, 3, 1), put("c", "1", 3, 3, 1)],
            vec![put("a", "2", 2, 4, 2)],
            vec![del("a", 5)],
            vec![put("b", "2", 3, 6, 2)],
        ];
        let revisions = changes
            .into_iter()
            .enumerate()
            .map(|(i, changes)| Committed {
                revision: i as Revision + 2,
                op: i as u64,
                acknowledged: true,
                changes,
            })
            .collect();
        RevisionLog::from_revisions(revisions)
    }

    fn spec(start_revision: Revision, prev_kv: bool, filter: Option<EventFilter>) -> StreamSpec {
        StreamSpec {
            range: KeyRange::from_key(""),
            start_revision,
            prev_kv,
            filter,
            complete_through: Some(6),
        }
    }

    fn start(member: usize, start_revision: Revision) -> StreamItem {
        StreamItem::Start { member, start_revision }
    }

    fn events(member: usize, changes: &[Change], prev: bool, log: &RevisionLog) -> StreamItem {
        let events = changes
            .iter()
            .map(|c| WatchEvent {
                change: c.clone(),
                prev_kv: if prev { state_before(log, &c.kv.key, c.kv.mod_revision) } else { None },
            })
            .collect();
        StreamItem::Events { member, events }
    }

    fn all() -> Vec<Change> {
        log().revisions().iter().flat_map(|c| c.changes.clone()).collect()
    }

    /// A correct stream with two reconnects (to other members), a progress notification and prev_kv.
    fn correct(prev: bool) -> Vec<StreamItem> {
        let log = log();
        let c = all();
        vec![
            start(0, 1),
            events(0, &c[..1], prev, &log),
            events(0, &c[1..3], prev, &log),
            start(1, 4),
            StreamItem::Progress { member: 1, revision: 3 },
            events(1, &c[3..4], prev, &log),
            StreamItem::Progress { member: 1, revision: 4 },
            start(2, 5),
            events(2, &c[4..], prev, &log),
            StreamItem::Progress { member: 2, revision: 7 },
        ]
    }

    #[test]
    fn a_correct_stream_passes_across_reconnects() {
        let log = log();
        for prev in [false, true] {
            let summary = check_watch_stream(&log, &spec(1, prev, None), &correct(prev)).unwrap();
            assert_eq!((summary.events, summary.progress, summary.reconnects), (6, 3, 2));
            assert_eq!(summary.delivered_through, 7);
        }
        assert_eq!(check_members_agree([correct(true).as_slice(), correct(false).as_slice()]), Ok(6));
    }

    #[test]
    fn filters_are_honored() {
        let log = log();
        let c = all();
        let puts: Vec<Change> = c.iter().filter(|c| c.kind == ChangeKind::Put).cloned().collect();
        let no_delete =
            vec![start(0, 1), events(0, &puts[..3], false, &log), events(1, &puts[3..], false, &log)];
        let s = spec(1, false, Some(EventFilter::NoDelete));
        assert!(check_watch_stream(&log, &s, &no_delete).is_ok());
        // A delete slipping through a NODELETE filter.
        let leaked = vec![start(0, 1), events(0, &c, false, &log)];
        assert!(matches!(
            check_watch_stream(&log, &s, &leaked),
            Err(StreamError::Unexpected { index: 4, .. })
        ));
        // A NOPUT watcher sees only the delete; a put is rejected.
        let s = spec(1, true, Some(EventFilter::NoPut));
        assert!(check_watch_stream(&log, &s, &[start(0, 1), events(0, &c[4..5], true, &log)]).is_ok());
        let put_leaked = vec![start(0, 1), events(0, &c[..1], true, &log)];
        assert!(matches!(check_watch_stream(&log, &s, &put_leaked), Err(StreamError::Unexpected { .. })));
    }

    #[test]
    fn a_gap_across_a_reconnect_is_missing() {
        let log = log();
        let c = all();
        // Resumed correctly at 4, but the member skipped revision 4's change.
        let items =
            vec![start(0, 1), events(0, &c[..3], false, &log), start(1, 4), events(1, &c[4..], false, &log)];
        assert_eq!(
            check_watch_stream(&log, &spec(1, false, None), &items),
            Err(StreamError::Missing { index: 3, key: "a".into(), revision: 4 })
        );
        // Or stopped short of what it had to see.
        let items = vec![start(0, 1), events(0, &c[..3], false, &log)];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &items),
            Err(StreamError::Missing { revision: 4, .. })
        ));
    }

    #[test]
    fn a_resume_anywhere_but_after_the_last_delivered_is_rejected() {
        let log = log();
        let c = all();
        for wrong in [3, 5] {
            let items = vec![start(0, 1), events(0, &c[..3], false, &log), start(1, wrong)];
            assert_eq!(
                check_watch_stream(&log, &spec(1, false, None), &items),
                Err(StreamError::BadResume { member: 1, expected: 4, found: wrong })
            );
        }
        let first = vec![start(0, 2)];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &first),
            Err(StreamError::BadFirstStart { expected: 1, .. })
        ));
    }

    #[test]
    fn out_of_order_duplicate_and_split_are_rejected() {
        let log = log();
        let c = all();
        let swapped = vec![
            start(0, 1),
            events(0, &[c[0].clone(), c[1].clone(), c[2].clone(), c[0].clone()], false, &log),
        ];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &swapped),
            Err(StreamError::OutOfOrder { index: 3, revision: 2, previous: 3, .. })
        ));
        // The same change again after a reconnect that (wrongly, for the server) replays it.
        let again =
            vec![start(0, 1), events(0, &c[..1], false, &log), start(1, 3), events(1, &c[..1], false, &log)];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &again),
            Err(StreamError::OutOfOrder { .. } | StreamError::Duplicate { .. })
        ));
        let repeated = vec![start(0, 1), events(0, &[c[0].clone(), c[0].clone()], false, &log)];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &repeated),
            Err(StreamError::Duplicate { index: 1, revision: 2, .. })
        ));
        let split = vec![start(0, 1), events(0, &c[..2], false, &log), events(0, &c[2..3], false, &log)];
        assert_eq!(
            check_watch_stream(&log, &spec(1, false, None), &split),
            Err(StreamError::SplitRevision { member: 0, revision: 3 })
        );
    }

    #[test]
    fn a_wrong_or_unasked_prev_kv_is_rejected() {
        let log = log();
        let c = all();
        let mut items = vec![start(0, 1), events(0, &c, true, &log)];
        // The put of a=2 at revision 4 claims a's previous value was absent.
        if let StreamItem::Events { events, .. } = &mut items[1] {
            events[3].prev_kv = None;
        }
        assert!(matches!(
            check_watch_stream(&log, &spec(1, true, None), &items),
            Err(StreamError::WrongPrevKv { index: 3, revision: 4, .. })
        ));
        // The delete at 5 must carry a=2 (mod revision 4), not a=1.
        let mut items = vec![start(0, 1), events(0, &c, true, &log)];
        if let StreamItem::Events { events, .. } = &mut items[1] {
            events[4].prev_kv = Some(kv("a", "1", 2, 2, 1));
        }
        assert!(matches!(
            check_watch_stream(&log, &spec(1, true, None), &items),
            Err(StreamError::WrongPrevKv { index: 4, revision: 5, .. })
        ));
        let unasked = vec![start(0, 1), events(0, &c, true, &log)];
        assert!(matches!(
            check_watch_stream(&log, &spec(1, false, None), &unasked),
            Err(StreamError::WrongPrevKv { index: 3, .. })
        ));
    }

    #[test]
    fn progress_ahead_of_delivered_events_is_rejected() {
        let log = log();
        let c = all();
        let items = vec![
            start(0, 1),
            events(0, &c[..1], false, &log),
            StreamItem::Progress { member: 2, revision: 3 },
        ];
        assert_eq!(
            check_watch_stream(&log, &spec(1, false, None), &items),
            Err(StreamError::ProgressAhead { member: 2, revision: 3, key: "b".into(), missing: 3 })
        );
        // For a filtered watcher, a progress past changes the filter drops is fine.
        let items = vec![start(0, 1), StreamItem::Progress { member: 0, revision: 4 }];
        let s = StreamSpec { complete_through: None, ..spec(1, false, Some(EventFilter::NoPut)) };
        assert!(check_watch_stream(&log, &s, &items).is_ok());
    }

    #[test]
    fn compaction_is_accepted_only_above_the_start() {
        let log = log();
        let c = all();
        // Started at 1, compacted at 5: resumes at 5 and receives the rest.
        let items = vec![
            start(0, 1),
            StreamItem::Compacted { member: 0, compact_revision: 5 },
            start(1, 5),
            events(1, &c[4..], false, &log),
        ];
        assert!(check_watch_stream(&log, &spec(1, false, None), &items).is_ok());
        let items = vec![start(0, 4), StreamItem::Compacted { member: 0, compact_revision: 4 }];
        assert_eq!(
            check_watch_stream(&log, &spec(4, false, None), &items),
            Err(StreamError::BadCompaction { member: 0, start: 4, compact_revision: 4 })
        );
    }

    #[test]
    fn members_that_disagree_are_caught() {
        let log = log();
        let c = all();
        let one = vec![start(0, 1), events(0, &c, false, &log)];
        let mut other = c.clone();
        other[2].kv.value = "x".into();
        let two = vec![start(1, 1), events(1, &other, false, &log)];
        assert_eq!(
            check_members_agree([one.as_slice(), two.as_slice()]),
            Err(StreamError::Disagreement {
                key: "c".into(),
                revision: 3,
                first_member: 0,
                second_member: 1
            })
        );
    }
}
