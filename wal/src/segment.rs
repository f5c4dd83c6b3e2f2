//! Segment files: their names, how a new one is cut, and appending to the active one.
//!
//! A segment is named `<seq:016x>-<first_index:016x>.wal`: the sequence number orders the
//! segments (first indexes alone cannot, since a truncation moves the log back), and the
//! first index says at a glance what the file holds. Fixed-width hex sorts by name.
//!
//! Segments are preallocated to `segment_bytes` when cut, so appends write into space the
//! file already has instead of growing it with every fdatasync. (`set_len` reserves the size;
//! whether blocks are allocated is up to the file system.) Zeros after the last record mark
//! the end of the log.
//!
//! A new segment is created under a temporary name, gets its header and an fdatasync, and is
//! renamed into place, after which the directory is fsynced. A segment under its real name
//! therefore always has its header on disk, and a crash midway leaves at most a temporary
//! file, which opening the log removes.

use crate::WalError;
use crate::disk::{Disk, DiskFile};
use crate::record::{self, Record, SEGMENT_HEADER_LEN, SegmentHeader};

const SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";

/// A segment file that exists under its real name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub seq: u64,
    pub first_index: u64,
    pub name: String,
}

impl SegmentInfo {
    pub fn new(seq: u64, first_index: u64) -> Self {
        SegmentInfo { seq, first_index, name: format!("{seq:016x}-{first_index:016x}{SUFFIX}") }
    }

    /// The segment a file name denotes, if it is one (exactly as [`SegmentInfo::new`] writes
    /// it).
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(SUFFIX)?;
        let (seq, first) = stem.split_once('-')?;
        let hex = |s: &str| {
            (s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(SegmentInfo::new(hex(seq)?, hex(first)?))
    }
}

/// Whether `name` is a segment left half-created by a crash.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment<F> {
    pub info: SegmentInfo,
    file: F,
    /// Where the next record goes: the end of the log in this segment.
    end: u64,
    /// Written since the last fdatasync.
    dirty: bool,
}

impl<F: DiskFile> ActiveSegment<F> {
    /// An existing segment whose log ends at `end` (and is durable up to there).
    pub fn resume(info: SegmentInfo, file: F, end: u64) -> Self {
        ActiveSegment { info, file, end, dirty: false }
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether the segment holds any record besides its header.
    pub fn has_records(&self) -> bool {
        self.end > SEGMENT_HEADER_LEN as u64
    }

    /// Writes `bytes` at the end of the log (not yet durable: see [`Self::sync`]).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), WalError> {
        self.dirty = true;
        self.file.write_at(self.end, bytes).map_err(WalError::io("write", &self.info.name))?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// fdatasyncs what was written since the last sync, if anything.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.dirty {
            self.file.sync_data().map_err(WalError::io("fdatasync", &self.info.name))?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Creates the segment `header` describes (see the module docs for the steps and why), and
/// returns it ready for appends.
pub(crate) fn create<D: Disk>(
    disk: &D,
    header: &SegmentHeader,
    segment_bytes: u64,
) -> Result<ActiveSegment<D::File>, WalError> {
    let info = SegmentInfo::new(header.seq, header.first_index);
    let temp = format!("{}.tmp", info.name);
    let mut bytes = Vec::with_capacity(SEGMENT_HEADER_LEN);
    record::encode(&Record::SegmentHeader(*header), false, &mut bytes)?;
    let mut file = disk.create(&temp).map_err(WalError::io("create", &temp))?;
    file.set_len(segment_bytes).map_err(WalError::io("preallocate", &temp))?;
    file.write_at(0, &bytes).map_err(WalError::io("write", &temp))?;
    file.sync_data().map_err(WalError::io("fdatasync", &temp))?;
    disk.rename(&temp, &info.name).map_err(WalError::io("rename", &temp))?;
    disk.sync_dir().map_err(WalError::io("fsync directory of", &info.name))?;
    Ok(ActiveSegment { info, file, end: bytes.len() as u64, dirty: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        let a = SegmentInfo::new(9, 0x1234);
        assert_eq!(a.name, "0000000000000009-0000000000001234.wal");
        assert_eq!(SegmentInfo::parse(&a.name), Some(a.clone()));
        let b = SegmentInfo::new(10, 1);
        assert!(a.name < b.name);
        for bad in [
            "0000000000000009-0000000000001234.wal.tmp",
            "9-1234.wal",
            "000000000000000g-0000000000001234.wal",
            "0000000000000009-0000000000001234.WAL",
            "0000000000000009_0000000000001234.wal",
            "000000000000000A-0000000000001234.wal",
        ] {
            assert_eq!(SegmentInfo::parse(bad), None, "{bad}");
        }
        assert!(is_temp_name("0000000000000009-0000000000001234.wal.tmp"));
    }
}
