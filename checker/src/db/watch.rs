//! Checks a watcher's event stream against the [`RevisionLog`] of a linearizable history.
//!
//! etcd's Watch promises that a watcher of a key range from a start revision receives exactly the
//! changes of that range at revisions from the start on: in revision order, each once, none left
//! out, and the changes of one revision in one response (atomically). [`check_watch_events`] checks
//! just that; the log says what the changes were.

use crate::db::log::{Change, RevisionLog};
use crate::db::types::{KeyRange, Revision};

/// What a watcher asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// The first revision whose changes are wanted (etcd's `start_revision`).
    pub start_revision: Revision,
    /// Every change up to this revision must have arrived (the watcher ran at least until the
    /// store reached it); `None` checks only what arrived.
    pub complete_through: Option<Revision>,
}

/// How a watcher's events depart from the committed changes. Event positions count events across
/// responses, from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// An event at a revision below the one before it.
    #[error("event {index} at revision {revision} arrived after one at revision {previous}")]
    OutOfOrder {
        /// Position of the event.
        index: usize,
        /// Its revision.
        revision: Revision,
        /// The revision of the event before it.
        previous: Revision,
    },
    /// The same change delivered again.
    #[error("event {index} repeats the change of {key:?} at revision {revision}")]
    Duplicate {
        /// Position of the event.
        index: usize,
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
    },
    /// A committed change the watcher should have received before the event at `index` (or by
    /// `complete_through`, when `index` is the number of events).
    #[error("the change of {key:?} at revision {revision} is missing (before event {index})")]
    Missing {
        /// Where it should have been.
        index: usize,
        /// The key.
        key: String,
        /// The revision.
        revision: Revision,
    },
    /// An event that is no committed change of the watched range from the start revision (wrong
    /// value, version or revision, a key outside the range, a revision before the start).
    #[error("event {index} ({event:?}) is not a committed change of the watched range")]
    Unexpected {
        /// Position of the event.
        index: usize,
        /// The event.
        event: Change,
    },
    /// The changes of one revision arrived in more than one response.
    #[error("the changes of revision {revision} were split across responses")]
    SplitRevision {
        /// The revision.
        revision: Revision,
    },
}

/// Checks the responses a watcher received (each a list of events, in arrival order) against the
/// changes `log` committed.
pub fn check_watch_events(
    log: &RevisionLog,
    spec: &WatchSpec,
    responses: &[Vec<Change>],
) -> Result<(), WatchError> {
    let expected: Vec<(Revision, &Change)> = log.changes_from(spec.start_revision, &spec.range).collect();
    let mut next = 0;
    let mut previous: Option<(Revision, &Change, usize)> = None;
    let mut index = 0;
    for (response, events) in responses.iter().enumerate() {
        for event in events {
            let revision = event.kv.mod_revision;
            if let Some((before, before_event, before_response)) = previous {
                if revision < before {
                    return Err(WatchError::OutOfOrder { index, revision, previous: before });
                }
                if revision == before && event.kv.key == before_event.kv.key {
                    return Err(WatchError::Duplicate { index, key: event.kv.key.clone(), revision });
                }
                if revision == before && response != before_response {
                    return Err(WatchError::SplitRevision { revision });
                }
            }
            match expected.get(next) {
                Some(&(_, change)) if change == event => next += 1,
                Some(&(missing, change))
                    if missing < revision
                        || expected[next..].iter().any(|&(at, later)| at == revision && later == event) =>
                {
                    return Err(WatchError::Missing { index, key: change.kv.key.clone(), revision: missing });
                }
                _ => return Err(WatchError::Unexpected { index, event: event.clone() }),
            }
            previous = Some((revision, event, response));
            index += 1;
        }
    }
    let through = spec.complete_through.unwrap_or(Revision::MIN);
    if let Some(&(revision, change)) = expected.get(next).filter(|(revision, _)| *revision <= through) {
        return Err(WatchError::Missing { index, key: change.kv.key.clone(), revision });
    }
    Ok(())
}
