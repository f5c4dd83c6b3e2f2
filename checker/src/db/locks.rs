//! Fencing by revision: lock holders checked on the store's revisions, never on wall-clock time.
//!
//! An etcd lock (the v3lock service, or clientv3's recipe: a key under the lock's prefix with a
//! lease, held once every key of the prefix with a lower create revision is gone) promises this
//! much: ordered by their keys' create revisions, the holders' tenures do not overlap *in
//! revisions*. A holder's tenure runs from the revision at which it learned it holds (the header
//! revision of the response that told it) until the revision that deleted its key (unlock, or its
//! lease's expiry or revocation). Wall-clock time promises nothing (a paused holder can still
//! believe it holds after its lease expired), which is why a guarded resource should check the
//! key's revision, as etcd documents.

use crate::db::log::{ChangeKind, RevisionLog};
use crate::db::types::Revision;

/// One acquisition of a lock, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    /// Who held it (for the report).
    pub holder: String,
    /// The holder's key under the lock's prefix.
    pub key: String,
    /// The key's create revision: the holder's place in the queue.
    pub create_revision: Revision,
    /// The header revision of the response that told the holder it holds the lock.
    pub acquired_at: Revision,
    /// The revision that deleted the key; `None` if it was never deleted.
    pub released_at: Option<Revision>,
}

/// How the acquisitions break the lock's promise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Two tenures overlap in revisions: `second`, queued after `first`, acquired before
    /// `first` released.
    #[error(
        "{} (key {:?}, created at {}) acquired at revision {}, but {} (key {:?}, created at {}) held the lock \
         until {:?}",
        second.holder, second.key, second.create_revision, second.acquired_at,
        first.holder, first.key, first.create_revision, first.released_at
    )]
    Overlap {
        /// The earlier holder in queue order.
        first: Box<Acquisition>,
        /// The later one.
        second: Box<Acquisition>,
    },
    /// A holder that believed it held before its key existed, or after it was deleted.
    #[error(
        "{} (key {:?}, created at {}) acquired at {}, released at {:?}",
        .0.holder, .0.key, .0.create_revision, .0.acquired_at, .0.released_at
    )]
    OutsideOwnKey(Box<Acquisition>),
}

/// The revision that deleted `key` after its creation at `created`, per the log.
pub fn release_revision(log: &RevisionLog, key: &str, created: Revision) -> Option<Revision> {
    log.revisions()
        .iter()
        .filter(|c| c.revision > created)
        .find(|c| c.changes.iter().any(|ch| ch.kind == ChangeKind::Delete && ch.kv.key == key))
        .map(|c| c.revision)
}

/// Checks that the tenures, in create-revision order, follow one another in revisions: each
/// holder acquired at or after the release of every holder queued before it, and held only while
/// its key existed. Returns the number of acquisitions checked.
pub fn check_lock_fencing(acquisitions: &[Acquisition]) -> Result<usize, LockError> {
    let mut ordered: Vec<&Acquisition> = acquisitions.iter().collect();
    ordered.sort_by_key(|a| a.create_revision);
    for a in &ordered {
        let inside = a.acquired_at >= a.create_revision && a.released_at.is_none_or(|r| a.acquired_at < r);
        if !inside {
            return Err(LockError::OutsideOwnKey(Box::new((*a).clone())));
        }
    }
    for (i, first) in ordered.iter().enumerate() {
        for second in &ordered[i + 1..] {
            if first.released_at.is_none_or(|released| second.acquired_at < released) {
                return Err(LockError::Overlap {
                    first: Box::new((*first).clone()),
                    second: Box::new((*second).clone()),
                });
            }
        }
    }
    Ok(ordered.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::log::{Change, Committed};
    use crate::db::types::KeyValue;

    fn acq(
        holder: &str,
        created: Revision,
        acquired_at: Revision,
        released_at: Option<Revision>,
    ) -> Acquisition {
        Acquisition {
            holder: holder.into(),
            key: format!("lock/{holder}"),
            create_revision: created,
            acquired_at,
            released_at,
        }
    }

    #[test]
    fn tenures_in_queue_order_pass() {
        // b queued while a held, acquired at a's release; c waited for b.
        let ok = [acq("a", 2, 2, Some(5)), acq("c", 4, 8, None), acq("b", 3, 5, Some(7))];
        assert_eq!(check_lock_fencing(&ok), Ok(3));
    }

    #[test]
    fn an_overlap_in_revisions_is_caught() {
        let bad = [acq("a", 2, 2, Some(5)), acq("b", 3, 4, Some(7))];
        assert!(
            matches!(check_lock_fencing(&bad), Err(LockError::Overlap { second, .. }) if second.acquired_at == 4)
        );
        // A holder that never let go overlaps everyone after it.
        let bad = [acq("a", 2, 2, None), acq("b", 3, 9, Some(10))];
        assert!(
            matches!(check_lock_fencing(&bad), Err(LockError::Overlap { first, .. }) if first.released_at.is_none())
        );
        // Queue order decides, not the order of acquisition revisions: the later-queued holder
        // acquired first and the earlier one acquired while it held.
        let bad = [acq("a", 2, 6, Some(8)), acq("b", 3, 4, Some(7))];
        assert!(matches!(check_lock_fencing(&bad), Err(LockError::Overlap { .. })));
    }

    #[test]
    fn holding_outside_the_own_key_is_caught() {
        let bad = [acq("a", 4, 3, Some(6))];
        assert!(matches!(check_lock_fencing(&bad), Err(LockError::OutsideOwnKey(_))));
        let bad = [acq("a", 2, 6, Some(6))];
        assert!(matches!(check_lock_fencing(&bad), Err(LockError::OutsideOwnKey(_))));
    }

    #[test]
    fn the_release_is_the_first_delete_after_creation() {
        let kv = |key: &str, revision| KeyValue {
            key: key.into(),
            value: String::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
        };
        let put = |key: &str, revision| Change {
            kind: ChangeKind::Put,
            kv: KeyValue { create_revision: revision, version: 1, ..kv(key, revision) },
        };
        let del = |key: &str, revision| Change { kind: ChangeKind::Delete, kv: kv(key, revision) };
        let log = RevisionLog::from_revisions(
            [vec![put("x", 2)], vec![del("x", 3)], vec![put("x", 4)], vec![del("x", 5)]]
                .into_iter()
                .enumerate()
                .map(|(i, changes)| Committed {
                    revision: i as i64 + 2,
                    op: i as u64,
                    acknowledged: true,
                    changes,
                })
                .collect(),
        );
        assert_eq!(release_revision(&log, "x", 2), Some(3));
        assert_eq!(release_revision(&log, "x", 4), Some(5));
        assert_eq!(release_revision(&log, "y", 2), None);
    }
}
