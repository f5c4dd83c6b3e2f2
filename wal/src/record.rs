//! Record framing: how one record is laid out on disk, and how a run of bytes is recognised
//! as a record, as the end of the log, or as a torn write.
//!
//! ```text
//! +------------+------------+--------+-----------------+
//! | len u32 LE | crc u32 LE | type u8| payload (len B) |
//! +------------+------------+--------+-----------------+
//! ```
//!
//! - The CRC32C covers the type byte and the payload, so a record whose bytes did not all
//!   reach the disk (a torn write) is recognised with the probability of a 32-bit checksum.
//! - Segments are preallocated with zeros, and a real record never starts with nine zero
//!   bytes (type 0 does not exist), so a zero frame header is the end of the log.
//! - Fields are fixed-width little-endian: the format is small and fixed, and a decoder that
//!   checks exact payload lengths cannot be confused by a record of another version.
//! - The high bit of the type byte says "the next record belongs to the same batch". The WAL
//!   writes each operation (an append of several entries with a hard state, say) as one
//!   batch, and replay applies a batch only when its last record is there: an operation
//!   interrupted by a power cut is then either wholly in the log or not at all.

use crate::{HardState, WalError};

/// Bytes before the payload: length, CRC and type.
pub(crate) const FRAME_HEADER_LEN: usize = 9;

/// Type-byte flag: another record of the same batch follows.
const MORE: u8 = 0x80;

const TYPE_SEGMENT_HEADER: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_SNAPSHOT: u8 = 4;
const TYPE_TRUNCATE_AFTER: u8 = 5;

const SEGMENT_HEADER_PAYLOAD: usize = 7 * 8;
const ENTRY_FIXED_PAYLOAD: usize = 2 * 8;
const HARD_STATE_PAYLOAD: usize = 3 * 8;
const SNAPSHOT_PAYLOAD: usize = 2 * 8 + 1;
const TRUNCATE_AFTER_PAYLOAD: usize = 8;

/// The length of the record that opens every segment, frame included.
pub(crate) const SEGMENT_HEADER_LEN: usize = FRAME_HEADER_LEN + SEGMENT_HEADER_PAYLOAD;

/// The first record of every segment: where the segment sits in the log, and the state that
/// older segments held when this one was cut, so that they can be deleted without losing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub seq: u64,
    /// The index the next appended entry had when the segment was cut (last index + 1).
    pub first_index: u64,
    /// The snapshot point (index, term) at the cut.
    pub snapshot: (u64, u64),
    /// The hard state at the cut.
    pub hard_state: HardState,
}

/// How a snapshot-point record moves the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotKind {
    /// Entries up to the point are dropped, later ones kept.
    Compact,
    /// A snapshot was installed: every entry is dropped and the commit index raised to the
    /// point.
    Install,
}

/// One record, borrowing entry data from the caller (when writing) or from the segment's
/// bytes (when reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    SegmentHeader(SegmentHeader),
    Entry { index: u64, term: u64, data: &'a [u8] },
    HardState(HardState),
    Snapshot { index: u64, term: u64, kind: SnapshotKind },
    TruncateAfter(u64),
}

impl Record<'_> {
    fn type_byte(&self) -> u8 {
        match self {
            Record::SegmentHeader(_) => TYPE_SEGMENT_HEADER,
            Record::Entry { .. } => TYPE_ENTRY,
            Record::HardState(_) => TYPE_HARD_STATE,
            Record::Snapshot { .. } => TYPE_SNAPSHOT,
            Record::TruncateAfter(_) => TYPE_TRUNCATE_AFTER,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Record::SegmentHeader(_) => SEGMENT_HEADER_PAYLOAD,
            Record::Entry { data, .. } => ENTRY_FIXED_PAYLOAD.saturating_add(data.len()),
            Record::HardState(_) => HARD_STATE_PAYLOAD,
            Record::Snapshot { .. } => SNAPSHOT_PAYLOAD,
            Record::TruncateAfter(_) => TRUNCATE_AFTER_PAYLOAD,
        }
    }

    fn put_payload(&self, out: &mut Vec<u8>) {
        let mut put = |v: u64| out.extend_from_slice(&v.to_le_bytes());
        match *self {
            Record::SegmentHeader(h) => {
                for v in [
                    h.seq,
                    h.first_index,
                    h.snapshot.0,
                    h.snapshot.1,
                    h.hard_state.term,
                    h.hard_state.vote,
                    h.hard_state.commit,
                ] {
                    put(v);
                }
            }
            Record::Entry { index, term, data } => {
                put(index);
                put(term);
                out.extend_from_slice(data);
            }
            Record::HardState(hs) => {
                for v in [hs.term, hs.vote, hs.commit] {
                    put(v);
                }
            }
            Record::Snapshot { index, term, kind } => {
                put(index);
                put(term);
                out.push(match kind {
                    SnapshotKind::Compact => 0,
                    SnapshotKind::Install => 1,
                });
            }
            Record::TruncateAfter(index) => put(index),
        }
    }
}

/// Encodes `records` as one batch (see the module docs) appended to `out`.
pub(crate) fn encode_batch(records: &[Record<'_>], out: &mut Vec<u8>) -> Result<(), WalError> {
    for (i, record) in records.iter().enumerate() {
        let more = i + 1 < records.len();
        encode(record, more, out)?;
    }
    Ok(())
}

/// Encodes one record (its frame included) appended to `out`.
pub(crate) fn encode(record: &Record<'_>, more: bool, out: &mut Vec<u8>) -> Result<(), WalError> {
    let payload_len = record.payload_len();
    let len =
        u32::try_from(payload_len).map_err(|_| WalError::RecordTooLarge { bytes: payload_len as u64 })?;
    let type_byte = record.type_byte() | if more { MORE } else { 0 };
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + payload_len);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, filled in below
    out.push(type_byte);
    record.put_payload(out);
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_LEN - 1..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What the bytes at some offset of a segment are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole record, `len` bytes with its frame; `more` says that the batch goes on.
    Record { record: Record<'a>, more: bool, len: usize },
    /// Zeros: the end of the log in this segment.
    End,
    /// An incomplete record or one failing its checksum: a torn write, if at the end of the
    /// last segment; corruption anywhere else.
    Torn(&'static str),
    /// A record with a valid checksum that makes no sense (unknown type, wrong length): never
    /// a torn write, always corruption.
    Invalid(String),
}

/// Reads the frame at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Frame<'_> {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return if buf.iter().all(|&b| b == 0) { Frame::End } else { Frame::Torn("incomplete frame header") };
    };
    if header.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let [l0, l1, l2, l3, c0, c1, c2, c3, type_byte] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let Some(payload) = rest.get(..len) else {
        return Frame::Torn("record extends past the end of the segment");
    };
    if crc32c::crc32c_append(crc32c::crc32c(&[type_byte]), payload) != crc {
        return Frame::Torn("checksum mismatch");
    }
    let more = type_byte & MORE != 0;
    match decode_payload(type_byte & !MORE, payload) {
        Ok(record) => Frame::Record { record, more, len: FRAME_HEADER_LEN + len },
        Err(reason) => Frame::Invalid(reason),
    }
}

fn decode_payload(record_type: u8, payload: &[u8]) -> Result<Record<'_>, String> {
    let expect = |want: usize| {
        if payload.len() == want {
            Ok(())
        } else {
            Err(format!("record type {record_type} has {} payload bytes, not {want}", payload.len()))
        }
    };
    let mut r = Reader(payload);
    let record = match record_type {
        TYPE_SEGMENT_HEADER => {
            expect(SEGMENT_HEADER_PAYLOAD)?;
            Record::SegmentHeader(SegmentHeader {
                seq: r.u64()?,
                first_index: r.u64()?,
                snapshot: (r.u64()?, r.u64()?),
                hard_state: HardState { term: r.u64()?, vote: r.u64()?, commit: r.u64()? },
            })
        }
        TYPE_ENTRY => {
            if payload.len() < ENTRY_FIXED_PAYLOAD {
                return Err(format!("entry record of {} bytes", payload.len()));
            }
            Record::Entry { index: r.u64()?, term: r.u64()?, data: r.0 }
        }
        TYPE_HARD_STATE => {
            expect(HARD_STATE_PAYLOAD)?;
            Record::HardState(HardState { term: r.u64()?, vote: r.u64()?, commit: r.u64()? })
        }
        TYPE_SNAPSHOT => {
            expect(SNAPSHOT_PAYLOAD)?;
            let (index, term) = (r.u64()?, r.u64()?);
            let kind = match r.u8()? {
                0 => SnapshotKind::Compact,
                1 => SnapshotKind::Install,
                k => return Err(format!("snapshot record of unknown kind {k}")),
            };
            Record::Snapshot { index, term, kind }
        }
        TYPE_TRUNCATE_AFTER => {
            expect(TRUNCATE_AFTER_PAYLOAD)?;
            Record::TruncateAfter(r.u64()?)
        }
        t => return Err(format!("unknown record type {t}")),
    };
    Ok(record)
}

/// Reads fixed-width little-endian fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> Result<u64, String> {
        let (v, rest) = self.0.split_first_chunk::<8>().ok_or("payload too short")?;
        self.0 = rest;
        Ok(u64::from_le_bytes(*v))
    }

    fn u8(&mut self) -> Result<u8, String> {
        let (v, rest) = self.0.split_first().ok_or("payload too short")?;
        self.0 = rest;
        Ok(*v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::SegmentHeader(SegmentHeader {
                seq: 7,
                first_index: 42,
                snapshot: (40, 3),
                hard_state: HardState { term: 4, vote: 2, commit: 41 },
            }),
            Record::Entry { index: 5, term: 2, data: b"hello" },
            Record::Entry { index: 6, term: 2, data: b"" },
            Record::HardState(HardState { term: 9, vote: 1, commit: 8 }),
            Record::Snapshot { index: 10, term: 3, kind: SnapshotKind::Compact },
            Record::Snapshot { index: 11, term: 4, kind: SnapshotKind::Install },
            Record::TruncateAfter(12),
        ]
    }

    #[test]
    fn every_record_type_round_trips() {
        for record in samples() {
            for more in [false, true] {
                let mut buf = Vec::new();
                encode(&record, more, &mut buf).unwrap();
                assert_eq!(decode(&buf), Frame::Record { record, more, len: buf.len() });
            }
        }
        let mut header = Vec::new();
        encode(&samples()[0], false, &mut header).unwrap();
        assert_eq!(header.len(), SEGMENT_HEADER_LEN);
    }

    #[test]
    fn a_batch_marks_all_but_its_last_record() {
        let records = samples();
        let mut buf = Vec::new();
        encode_batch(&records, &mut buf).unwrap();
        let mut rest = buf.as_slice();
        for (i, want) in records.iter().enumerate() {
            let Frame::Record { record, more, len } = decode(rest) else { panic!("record {i}") };
            assert_eq!((record, more), (*want, i + 1 < records.len()));
            rest = &rest[len..];
        }
        assert!(rest.is_empty());
        assert_eq!(decode(rest), Frame::End);
    }

    #[test]
    fn zeros_end_the_log() {
        assert_eq!(decode(&[]), Frame::End);
        assert_eq!(decode(&[0; 4]), Frame::End);
        assert_eq!(decode(&[0; 100]), Frame::End);
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(&Record::Entry { index: 1, term: 1, data: b"some data" }, false, &mut buf).unwrap();
        for cut in 1..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Frame::Torn(_)), "cut at {cut}");
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let frame = decode(&bad);
                // A flipped length may still frame a valid prefix only if the CRC matched,
                // which it cannot here; every flip must be caught.
                assert!(matches!(frame, Frame::Torn(_)), "byte {byte} bit {bit}: {frame:?}");
            }
        }
    }

    #[test]
    fn valid_checksum_with_bad_content_is_invalid_not_torn() {
        let frame = |type_byte: u8, payload: &[u8]| {
            let mut buf = (payload.len() as u32).to_le_bytes().to_vec();
            let crc = crc32c::crc32c_append(crc32c::crc32c(&[type_byte]), payload);
            buf.extend_from_slice(&crc.to_le_bytes());
            buf.push(type_byte);
            buf.extend_from_slice(payload);
            buf
        };
        assert!(matches!(decode(&frame(0x7f, b"x")), Frame::Invalid(_)));
        assert!(matches!(decode(&frame(TYPE_HARD_STATE, &[0; 23])), Frame::Invalid(_)));
        assert!(matches!(decode(&frame(TYPE_ENTRY, &[0; 15])), Frame::Invalid(_)));
        let mut snap = vec![0; 16];
        snap.push(9);
        assert!(matches!(decode(&frame(TYPE_SNAPSHOT, &snap)), Frame::Invalid(_)));
    }
}
