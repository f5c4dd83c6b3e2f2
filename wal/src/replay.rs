//! Opening a log: finding the segments, replaying their records into a [`LogState`], and
//! repairing what a crash may have left.
//!
//! What a crash can leave, given how the WAL writes (see [`crate::segment`]):
//! - a temporary segment file (a cut interrupted before its rename): removed;
//! - a last segment without a valid header, and nothing after it (a file system that made the
//!   rename durable before the header): removed;
//! - a torn tail in the last segment (an append interrupted before its fdatasync): the log
//!   ends at the first incomplete or bad record, or at the start of a batch whose last record
//!   is missing, and everything after that is zeroed, durably, before the log is used.
//!
//! Anything else is corruption and an error, never dropped silently: a bad record or data
//! after the end in any segment but the last (each was fdatasynced before the next was
//! cut), a gap in the segment sequence, a header that disagrees with the log replayed so far
//! (a lost tail), a record that makes no sense where it is, or entries that are missing at
//! the end (a released segment that was still needed).

use tracing::warn;

use crate::disk::{Disk, DiskFile, read_all};
use crate::record::{self, Frame, Record, SEGMENT_HEADER_LEN, SegmentHeader, SnapshotKind};
use crate::segment::{self, ActiveSegment, SegmentInfo};
use crate::state::LogState;
use crate::{LogEntry, WalError};

/// A log as found on disk, ready for appends.
pub(crate) struct Opened<F> {
    /// Every segment, oldest first; the last is `active`.
    pub segments: Vec<SegmentInfo>,
    pub active: ActiveSegment<F>,
    pub state: LogState,
}

/// Opens the log in `disk`, creating its first segment if there is none.
pub(crate) fn open<D: Disk>(disk: &D, segment_bytes: u64) -> Result<Opened<D::File>, WalError> {
    let mut segments = list_segments(disk)?;
    let mut last_data = None;
    if let Some(last) = segments.last() {
        let data = read_segment(disk, last)?;
        if has_header(&data) {
            last_data = Some(data);
        } else {
            remove_half_created(disk, &segments, &data)?;
            segments.pop();
        }
    }
    let Some(last) = segments.last().cloned() else {
        let header =
            SegmentHeader { seq: 0, first_index: 1, snapshot: (0, 0), hard_state: Default::default() };
        let active = segment::create(disk, &header, segment_bytes)?;
        return Ok(Opened { segments: vec![active.info.clone()], active, state: LogState::default() });
    };

    let mut state = None;
    for info in &segments[..segments.len() - 1] {
        let data = read_segment(disk, info)?;
        let end = replay_segment(info, &data, &mut state)?;
        if let Some(reason) = end.damage {
            return Err(WalError::corrupt(&info.name, end.offset, reason));
        }
    }
    let data = match last_data {
        Some(data) => data,
        None => read_segment(disk, &last)?,
    };
    let end = replay_segment(&last, &data, &mut state)?;
    let Some(state) = state else {
        // Unreachable: the last segment has a header, which sets the state.
        return Err(WalError::corrupt(&last.name, 0, "segment without a header"));
    };
    if state.base() != state.snapshot.0 {
        return Err(WalError::corrupt(
            &last.name,
            0,
            format!(
                "entries {}..={} are missing (in a released segment?)",
                state.snapshot.0.saturating_add(1),
                state.base()
            ),
        ));
    }

    let mut file = disk.open(&last.name).map_err(WalError::io("open", &last.name))?;
    if let Some(reason) = end.damage {
        warn!(segment = %last.name, offset = end.offset, reason, "repairing the torn tail of the WAL");
        let repair = |file: &mut D::File| {
            file.set_len(end.offset)?;
            file.set_len(end.offset.max(segment_bytes))?;
            file.sync_data()
        };
        repair(&mut file).map_err(WalError::io("repair", &last.name))?;
    }
    let active = ActiveSegment::resume(last, file, end.offset);
    Ok(Opened { segments, active, state })
}

/// The segments in the directory, by sequence number, after removing temporary ones.
fn list_segments<D: Disk>(disk: &D) -> Result<Vec<SegmentInfo>, WalError> {
    let names = disk.list().map_err(WalError::io("list", "the WAL directory"))?;
    let mut segments = Vec::new();
    let mut removed = false;
    for name in names {
        if segment::is_temp_name(&name) {
            warn!(file = %name, "removing a half-created WAL segment");
            disk.remove(&name).map_err(WalError::io("remove", &name))?;
            removed = true;
        } else if let Some(info) = SegmentInfo::parse(&name) {
            segments.push(info);
        } else if name.ends_with(".wal") {
            return Err(WalError::corrupt(&name, 0, "not a WAL segment name"));
        }
    }
    if removed {
        disk.sync_dir().map_err(WalError::io("fsync", "the WAL directory"))?;
    }
    segments.sort_by_key(|s| s.seq);
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && a.seq.checked_add(1) != Some(b.seq)
        {
            return Err(WalError::corrupt(&b.name, 0, format!("follows segment {} (a gap)", a.seq)));
        }
    }
    Ok(segments)
}

fn read_segment<D: Disk>(disk: &D, info: &SegmentInfo) -> Result<Vec<u8>, WalError> {
    let file = disk.open(&info.name).map_err(WalError::io("open", &info.name))?;
    read_all(&file).map_err(WalError::io("read", &info.name))
}

fn has_header(data: &[u8]) -> bool {
    matches!(record::decode(data), Frame::Record { record: Record::SegmentHeader(_), .. })
}

/// Removes the last segment, which has no valid header, if a crash while cutting it explains
/// that: nothing was written after the header, and it follows another segment or is the very
/// first one. (A cut never makes the new segment the only one, so a later segment alone
/// without a header is damage, not a crash.)
fn remove_half_created<D: Disk>(disk: &D, segments: &[SegmentInfo], data: &[u8]) -> Result<(), WalError> {
    let Some(last) = segments.last() else { return Ok(()) };
    match record::decode(data) {
        Frame::Invalid(reason) => return Err(WalError::corrupt(&last.name, 0, reason)),
        Frame::Record { .. } => {
            return Err(WalError::corrupt(&last.name, 0, "does not start with a segment header"));
        }
        Frame::End | Frame::Torn(_) => {}
    }
    let after_header = data.get(SEGMENT_HEADER_LEN..).unwrap_or_default();
    if !after_header.iter().all(|&b| b == 0) {
        return Err(WalError::corrupt(&last.name, 0, "no valid segment header, but records after it"));
    }
    if segments.len() == 1 && last.seq != 0 {
        return Err(WalError::corrupt(&last.name, 0, "the only segment has no valid header"));
    }
    warn!(segment = %last.name, "removing a half-created WAL segment (no valid header)");
    disk.remove(&last.name).map_err(WalError::io("remove", &last.name))?;
    disk.sync_dir().map_err(WalError::io("fsync", "the WAL directory"))
}

/// Where the log ends in a segment.
struct SegmentEnd {
    offset: u64,
    /// Why the bytes from `offset` on are not clean zeros, if they are not.
    damage: Option<&'static str>,
}

/// Replays one segment into `state` (`None` before the first segment: its header sets it).
fn replay_segment(
    info: &SegmentInfo,
    data: &[u8],
    state: &mut Option<LogState>,
) -> Result<SegmentEnd, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::corrupt(&info.name, offset as u64, reason);
    let (header, mut offset) = match record::decode(data) {
        Frame::Record { record: Record::SegmentHeader(h), more: false, len } => (h, len),
        Frame::Invalid(reason) => return Err(corrupt(0, reason)),
        _ => return Err(corrupt(0, "no valid segment header".into())),
    };
    check_header(&header, info, state.as_ref()).map_err(|reason| corrupt(0, reason))?;
    let state = state
        .get_or_insert_with(|| LogState::from_header(header.snapshot, header.hard_state, header.first_index));

    let mut batch: Vec<(usize, Record<'_>)> = Vec::new();
    let mut batch_start = offset;
    let damage = loop {
        let rest = data.get(offset..).unwrap_or_default();
        match record::decode(rest) {
            Frame::Record { record, more, len } => {
                batch.push((offset, record));
                offset += len;
                if !more {
                    for (at, record) in batch.drain(..) {
                        apply(state, record).map_err(|reason| corrupt(at, reason))?;
                    }
                    batch_start = offset;
                }
            }
            Frame::Invalid(reason) => return Err(corrupt(offset, reason)),
            Frame::Torn(reason) => break Some(reason),
            Frame::End if !batch.is_empty() => break Some("a batch without its last record"),
            Frame::End => {
                let clean = rest.iter().all(|&b| b == 0);
                break (!clean).then_some("data after the end of the log");
            }
        }
    };
    Ok(SegmentEnd { offset: batch_start as u64, damage })
}

/// Checks that a segment's header fits its name and the log replayed before it.
fn check_header(header: &SegmentHeader, info: &SegmentInfo, before: Option<&LogState>) -> Result<(), String> {
    if (header.seq, header.first_index) != (info.seq, info.first_index) {
        return Err(format!(
            "header says segment {} from index {}, unlike its name",
            header.seq, header.first_index
        ));
    }
    let Some(before) = before else {
        return if header.first_index > header.snapshot.0 {
            Ok(())
        } else {
            Err(format!(
                "first index {} at or below the snapshot point {:?}",
                header.first_index, header.snapshot
            ))
        };
    };
    if header.first_index.checked_sub(1) != Some(before.last_index()) {
        return Err(format!(
            "segment starts at index {} but the log before it ends at {} (a lost tail?)",
            header.first_index,
            before.last_index()
        ));
    }
    if header.snapshot != before.snapshot || header.hard_state != before.hard_state {
        return Err(format!(
            "header has snapshot point {:?} and {:?}, the log before it {:?} and {:?}",
            header.snapshot, header.hard_state, before.snapshot, before.hard_state
        ));
    }
    Ok(())
}

/// Applies one record, checking that the WAL could have written it where it is: each check
/// mirrors a precondition of the write that produces the record.
fn apply(state: &mut LogState, record: Record<'_>) -> Result<(), String> {
    let (snapshot_index, last) = (state.snapshot.0, state.last_index());
    match record {
        Record::SegmentHeader(_) => return Err("a segment header inside a segment".into()),
        Record::Entry { index, term, data } => {
            if index <= snapshot_index || index - 1 > last {
                return Err(format!(
                    "entry {index} outside the log ({}..={})",
                    snapshot_index.saturating_add(1),
                    last.saturating_add(1)
                ));
            }
            state.put_entry(LogEntry { index, term, data: data.to_vec() });
        }
        Record::HardState(hs) => state.hard_state = hs,
        Record::Snapshot { index, term, kind: SnapshotKind::Compact } => {
            if index <= snapshot_index || index > last {
                return Err(format!("compaction to {index} outside the log ({snapshot_index}..={last})"));
            }
            if let Some(entry) = state.entry(index)
                && entry.term != term
            {
                return Err(format!(
                    "compaction to {index} at term {term}, but the entry has term {}",
                    entry.term
                ));
            }
            state.compact(index, term);
        }
        Record::Snapshot { index, term, kind: SnapshotKind::Install } => {
            if index < snapshot_index {
                return Err(format!("snapshot {index} older than the snapshot point {snapshot_index}"));
            }
            state.install(index, term);
        }
        Record::TruncateAfter(index) => {
            if index < snapshot_index || index >= last {
                return Err(format!("truncation after {index} outside the log ({snapshot_index}..{last})"));
            }
            state.truncate_after(index);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{HardState, MemDisk, Wal, WalOptions};

    /// Values that break careless arithmetic.
    fn nasty(rng: &mut ChaCha8Rng) -> u64 {
        match rng.random_range(0..6) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - 1,
            _ => rng.random_range(0..8),
        }
    }

    fn random_record(rng: &mut ChaCha8Rng) -> Record<'static> {
        match rng.random_range(0..6) {
            0 => Record::Entry { index: nasty(rng), term: nasty(rng), data: b"data" },
            1 => Record::HardState(HardState { term: nasty(rng), vote: nasty(rng), commit: nasty(rng) }),
            2 => Record::Snapshot { index: nasty(rng), term: nasty(rng), kind: SnapshotKind::Compact },
            3 => Record::Snapshot { index: nasty(rng), term: nasty(rng), kind: SnapshotKind::Install },
            4 => Record::TruncateAfter(nasty(rng)),
            _ => Record::SegmentHeader(SegmentHeader {
                seq: nasty(rng),
                first_index: nasty(rng),
                snapshot: (nasty(rng), nasty(rng)),
                hard_state: HardState::default(),
            }),
        }
    }

    #[test]
    fn a_last_segment_starting_with_another_record_is_corruption_not_a_half_created_one() {
        let disk = MemDisk::new();
        let opts = WalOptions { segment_bytes: 4096 };
        let mut wal = Wal::open(disk.clone(), opts).unwrap();
        wal.append(None, &[crate::LogEntry { index: 1, term: 1, data: vec![7; 10] }]).unwrap();
        drop(wal);
        let mut bytes = Vec::new();
        record::encode(&Record::Entry { index: 2, term: 1, data: b"x" }, false, &mut bytes).unwrap();
        let next = SegmentInfo::new(1, 2);
        disk.create(&next.name).unwrap().write_at(0, &bytes).unwrap();
        match Wal::open(disk.clone(), opts) {
            Err(WalError::Corrupt { segment, .. }) => assert_eq!(segment, next.name),
            other => panic!("expected corruption, got {other:?}"),
        }
        assert!(disk.list().unwrap().contains(&next.name), "the segment was removed");
    }

    /// Segments of well-framed records with hostile contents, sometimes damaged: opening
    /// them, and writing to what opens, returns errors but never panics.
    #[test]
    fn hostile_contents_never_panic() {
        for seed in 0..3000 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let disk = MemDisk::new();
            let segments = rng.random_range(1..=3);
            let first_seq = nasty(&mut rng);
            for k in 0..segments {
                let seq = first_seq.wrapping_add(k);
                let header = SegmentHeader {
                    seq,
                    first_index: nasty(&mut rng),
                    snapshot: (nasty(&mut rng), nasty(&mut rng)),
                    hard_state: HardState::default(),
                };
                let mut bytes = Vec::new();
                record::encode(&Record::SegmentHeader(header), false, &mut bytes).unwrap();
                for _ in 0..rng.random_range(0..6) {
                    record::encode(&random_record(&mut rng), rng.random_bool(0.2), &mut bytes).unwrap();
                }
                if rng.random_bool(0.3) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                if rng.random_bool(0.2) {
                    bytes.truncate(rng.random_range(0..bytes.len()));
                }
                let info = SegmentInfo::new(seq, header.first_index);
                disk.create(&info.name).unwrap().write_at(0, &bytes).unwrap();
            }
            let opts = WalOptions { segment_bytes: 256 };
            if let Ok(mut wal) = Wal::open(disk.clone(), opts) {
                let last = wal.last_index();
                let entry = crate::LogEntry { index: last.saturating_add(1), term: 1, data: vec![1; 300] };
                let _ = wal.append(Some(HardState { term: u64::MAX, vote: 0, commit: 0 }), &[entry]);
                let _ = wal.compact(nasty(&mut rng));
                let _ = wal.truncate_after(nasty(&mut rng));
                let _ = wal.entries(nasty(&mut rng), nasty(&mut rng), Some(nasty(&mut rng)));
                let _ = wal.term(nasty(&mut rng));
                let _ = wal.install_snapshot(nasty(&mut rng), nasty(&mut rng));
                drop(wal);
                let _ = Wal::open(disk, opts);
            }
        }
    }
}
