//! etcd's key-range convention, and table scans over a range.

use std::ops::Bound;

use redb::ReadableTable;

use crate::proto::mvccpb::{self, event::EventType};
use crate::storage::codec::decode_event;
use crate::storage::error::StoreError;

/// A table of current values (`KV`), from a read or a write transaction.
pub(crate) trait KvTable: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> KvTable for T {}

/// The by-key history index (`KEY_REVS`).
pub(crate) trait KeyRevsTable: ReadableTable<(&'static [u8], i64, i64), ()> {}
impl<T: ReadableTable<(&'static [u8], i64, i64), ()>> KeyRevsTable for T {}

/// The by-revision history (`REVS`).
pub(crate) trait RevsTable: ReadableTable<(i64, i64), &'static [u8]> {}
impl<T: ReadableTable<(i64, i64), &'static [u8]>> RevsTable for T {}

/// The keys a request's `key`/`range_end` pair designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// `range_end` empty: just this key.
    Single(&'a [u8]),
    /// `range_end` is `"\0"`: every key >= this one.
    From(&'a [u8]),
    /// `[key, range_end)`.
    Between(&'a [u8], &'a [u8]),
    /// `range_end` <= `key`: nothing.
    Empty,
}

impl<'a> KeyRange<'a> {
    /// Reads etcd's convention: empty `range_end` is one key, `"\0"` is "to the end", anything
    /// else is an exclusive end (an end at or before the start selects nothing).
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == [0] {
            KeyRange::From(key)
        } else if range_end <= key {
            KeyRange::Empty
        } else {
            KeyRange::Between(key, range_end)
        }
    }

    fn bounds(self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match self {
            KeyRange::Single(k) => (Bound::Included(k), Bound::Included(k)),
            KeyRange::From(k) => (Bound::Included(k), Bound::Unbounded),
            KeyRange::Between(k, e) => (Bound::Included(k), Bound::Excluded(e)),
            KeyRange::Empty => (Bound::Excluded(&[][..]), Bound::Excluded(&[][..])),
        }
    }
}

/// Calls `f(key, stored_value)` for each live key of `range` in key order, while it returns
/// `true`.
pub(crate) fn scan_current(
    kv: &impl KvTable,
    range: KeyRange<'_>,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    match range {
        KeyRange::Empty => {}
        KeyRange::Single(k) => {
            if let Some(v) = kv.get(k)? {
                f(k, v.value())?;
            }
        }
        _ => {
            for item in kv.range::<&[u8]>(range.bounds())? {
                let (k, v) = item?;
                if !f(k.value(), v.value())? {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Calls `f(kv)` for each key of `range` that was live at revision `rev`, in key order, with
/// its value as of `rev`, while `f` returns `true`.
pub(crate) fn scan_at(
    key_revs: &impl KeyRevsTable,
    revs: &impl RevsTable,
    range: KeyRange<'_>,
    rev: i64,
    mut f: impl FnMut(mvccpb::KeyValue) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    match range {
        KeyRange::Empty => return Ok(()),
        KeyRange::Single(k) => {
            if let Some(kv) = version_at(key_revs, revs, k, rev)? {
                f(kv)?;
            }
            return Ok(());
        }
        KeyRange::From(_) | KeyRange::Between(..) => {}
    }
    let (start, end) = range.bounds();
    let upper = match end {
        Bound::Included(k) => Bound::Included((k, i64::MAX, i64::MAX)),
        Bound::Excluded(k) => Bound::Excluded((k, i64::MIN, i64::MIN)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut current: Vec<u8> = match start {
        Bound::Included(k) | Bound::Excluded(k) => k.to_vec(),
        Bound::Unbounded => Vec::new(),
    };
    let mut first = true;
    loop {
        // Seek the next distinct key, then its latest version at or before `rev`.
        let lower = if first {
            Bound::Included((current.as_slice(), i64::MIN, i64::MIN))
        } else {
            Bound::Excluded((current.as_slice(), i64::MAX, i64::MAX))
        };
        first = false;
        let next = match key_revs.range((lower, upper))?.next() {
            Some(item) => item?.0.value().0.to_vec(),
            None => break,
        };
        current = next;
        if let Some(kv) = version_at(key_revs, revs, &current, rev)?
            && !f(kv)?
        {
            break;
        }
    }
    Ok(())
}

/// The key as it was at revision `rev`, `None` if it did not exist then.
pub(crate) fn version_at(
    key_revs: &impl KeyRevsTable,
    revs: &impl RevsTable,
    key: &[u8],
    rev: i64,
) -> Result<Option<mvccpb::KeyValue>, StoreError> {
    let latest = key_revs.range((key, i64::MIN, i64::MIN)..=(key, rev, i64::MAX))?.next_back();
    let Some(item) = latest else { return Ok(None) };
    let (_, r, s) = item?.0.value();
    event_kv(revs, r, s)
}

/// The key-value a history record holds, `None` for a deletion (or a missing record).
pub(crate) fn event_kv(
    revs: &impl RevsTable,
    rev: i64,
    sub: i64,
) -> Result<Option<mvccpb::KeyValue>, StoreError> {
    let Some(stored) = revs.get((rev, sub))? else { return Ok(None) };
    let ev = decode_event(stored.value())?;
    if ev.r#type == EventType::Delete as i32 { Ok(None) } else { Ok(ev.kv) }
}

#[cfg(test)]
mod tests {
    use super::KeyRange;

    #[test]
    fn etcd_range_convention() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", b"\0"), KeyRange::From(b"a"));
        assert_eq!(KeyRange::new(b"\0", b"\0"), KeyRange::From(b"\0"));
        assert_eq!(KeyRange::new(b"a", b"b"), KeyRange::Between(b"a", b"b"));
        assert_eq!(KeyRange::new(b"b", b"a"), KeyRange::Empty);
        assert_eq!(KeyRange::new(b"a", b"a"), KeyRange::Empty);
    }
}
