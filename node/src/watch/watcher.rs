//! One watcher: what it watches, from where, and what it wants to hear.

use crate::proto::mvccpb::Event;
use crate::proto::mvccpb::event::EventType;

/// The keys a watcher covers, in etcd's convention (after the server's normalisation: an empty
/// key is `"\0"`, the smallest key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchRange {
    /// One key (`range_end` empty).
    Key(Vec<u8>),
    /// Every key from this one on (`range_end` is `"\0"`).
    From(Vec<u8>),
    /// `[key, range_end)`.
    Between(Vec<u8>, Vec<u8>),
}

impl WatchRange {
    /// Reads a create request's `key` and `range_end`; `None` when the range selects nothing
    /// (`range_end` at or before `key`), which etcd refuses.
    pub fn new(key: &[u8], range_end: &[u8]) -> Option<Self> {
        let key = if key.is_empty() { vec![0] } else { key.to_vec() };
        match range_end {
            [] => Some(WatchRange::Key(key)),
            [0] => Some(WatchRange::From(key)),
            end if end > key.as_slice() => Some(WatchRange::Between(key, end.to_vec())),
            _ => None,
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            WatchRange::Key(key) => k == key.as_slice(),
            WatchRange::From(key) => k >= key.as_slice(),
            WatchRange::Between(key, end) => k >= key.as_slice() && k < end.as_slice(),
        }
    }
}

/// Where a watcher starts: at the next revision, or at a given one (past or future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Now,
    Revision(i64),
}

/// A create request, checked and normalised by the client API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    /// The client's id for the watcher; `None` lets the stream choose.
    pub watch_id: Option<i64>,
    pub range: WatchRange,
    pub start: StartAt,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
}

/// A live watcher, owned by the hub.
#[derive(Debug)]
pub(super) struct Watcher {
    pub(super) spec: WatchSpec,
    /// The first revision this watcher must not miss and has not been sent.
    pub(super) next_rev: i64,
    /// The revision it started at: no event or progress notification below it is ever sent
    /// (etcd-io/etcd#20221).
    pub(super) start_rev: i64,
    /// An event was sent since the last progress tick (a notification then is elided).
    pub(super) sent_since_tick: bool,
}

impl Watcher {
    /// The events of `batch` this watcher wants, with `prev_kv` only if it asked for it.
    pub(super) fn select(&self, batch: &[Event]) -> Vec<Event> {
        batch
            .iter()
            .filter(|e| {
                let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let key = e.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or_default();
                let is_put = e.r#type == EventType::Put as i32;
                let filtered = if is_put { self.spec.no_put } else { self.spec.no_delete };
                rev >= self.next_rev && self.spec.range.contains(key) && !filtered
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.spec.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_etcd_s_convention() {
        assert_eq!(WatchRange::new(b"a", b""), Some(WatchRange::Key(b"a".to_vec())));
        assert_eq!(WatchRange::new(b"", b"\0"), Some(WatchRange::From(vec![0])));
        assert_eq!(WatchRange::new(b"a", b"a"), None, "an empty range is refused");
        assert_eq!(WatchRange::new(b"b", b"a"), None);
        let prefix = WatchRange::new(b"p/", b"p0").expect("range");
        assert!(prefix.contains(b"p/x") && !prefix.contains(b"p0") && !prefix.contains(b"o"));
        assert!(WatchRange::From(b"m".to_vec()).contains(b"z"));
        // Every key is at or after "\0".
        assert!(WatchRange::new(b"", b"\0").expect("all").contains(b"\x00"));
    }
}
