//! The backup file's framing: magic, length-delimited frames, padding, digest.

use std::io::{self, Read, Write};
use std::path::Path;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::proto::kvserverpb::BackupFrame;
use crate::storage::StoreError;

/// The first bytes of every backup.
pub const MAGIC: &[u8; 16] = b"raftkv-backup-v1";
/// The SHA-256 at the end.
pub const DIGEST_LEN: usize = 32;
/// Frames and padding fill a multiple of this many bytes (etcd's rule).
const ALIGN: u64 = 512;
/// Larger frames are refused when reading: no writer makes them, and a corrupt length must not
/// make the reader allocate gigabytes.
const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Why a backup could not be made, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a raftkv backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC))]
    NotABackup,
    #[error("the backup is truncated: {size} bytes is not a multiple of 512 plus a 32-byte digest")]
    Truncated { size: u64 },
    #[error("the backup is corrupt: its SHA-256 does not match its contents")]
    DigestMismatch,
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    #[error("the data dir {0} already exists and is not empty; restore into a new one")]
    DataDirExists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the member asking for the backup went away")]
    Abandoned,
}

/// Writes the magic, frames, padding and digest to `out`, hashing everything it writes.
pub(super) struct FrameWriter<W: Write> {
    out: W,
    digest: Sha256,
    written: u64,
    buf: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub(super) fn new(out: W) -> Result<Self, BackupError> {
        let mut w = Self { out, digest: Sha256::new(), written: 0, buf: Vec::new() };
        w.write(MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.digest.update(bytes);
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn frame(&mut self, frame: &BackupFrame) -> Result<(), BackupError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        frame.encode_length_delimited(&mut buf).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        let result = self.write(&buf);
        self.buf = buf;
        result
    }

    /// Pads, writes the digest and flushes; returns the sink and the total size.
    pub(super) fn finish(mut self) -> Result<(W, u64), BackupError> {
        let padding = (ALIGN - self.written % ALIGN) % ALIGN;
        self.write(&vec![0; padding as usize])?;
        let digest = self.digest.finalize_reset();
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((self.out, self.written + DIGEST_LEN as u64))
    }
}

/// Checks a backup file's size rule and digest, reading it once in bounded memory; returns its
/// size. `progress` is told the bytes read so far.
pub(super) fn verify_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<u64, BackupError> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size < ALIGN + DIGEST_LEN as u64 || size % ALIGN != DIGEST_LEN as u64 {
        return Err(BackupError::Truncated { size });
    }
    let body = size - DIGEST_LEN as u64;
    let mut digest = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut read = 0;
    while read < body {
        let want = buf.len().min((body - read) as usize);
        file.read_exact(&mut buf[..want])?;
        if read == 0 && buf.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(BackupError::NotABackup);
        }
        digest.update(&buf[..want]);
        read += want as u64;
        progress(read);
    }
    let mut stored = [0; DIGEST_LEN];
    file.read_exact(&mut stored)?;
    if digest.finalize().as_slice() != stored {
        return Err(BackupError::DigestMismatch);
    }
    Ok(size)
}

/// Reads the frames of a backup whose digest was verified, up to and including the end frame.
pub(super) struct FrameReader<R: Read> {
    input: R,
    done: bool,
    buf: Vec<u8>,
    /// Bytes consumed so far (for progress).
    pub(super) position: u64,
}

impl<R: Read> FrameReader<R> {
    pub(super) fn new(mut input: R) -> Result<Self, BackupError> {
        let mut magic = [0; MAGIC.len()];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(BackupError::NotABackup);
        }
        Ok(Self { input, done: false, buf: Vec::new(), position: MAGIC.len() as u64 })
    }

    /// The next frame; `None` after the end frame.
    pub(super) fn next_frame(&mut self) -> Result<Option<BackupFrame>, BackupError> {
        if self.done {
            return Ok(None);
        }
        let len = self.read_varint()?;
        if len == 0 || len > MAX_FRAME {
            return Err(BackupError::Corrupt(format!("a frame of {len} bytes")));
        }
        self.buf.resize(len as usize, 0);
        self.input.read_exact(&mut self.buf)?;
        self.position += len;
        let frame =
            BackupFrame::decode(self.buf.as_slice()).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        if matches!(frame.frame, Some(crate::proto::kvserverpb::backup_frame::Frame::End(_))) {
            self.done = true;
        }
        Ok(Some(frame))
    }

    fn read_varint(&mut self) -> Result<u64, BackupError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let mut byte = [0];
            self.input.read_exact(&mut byte)?;
            self.position += 1;
            value |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BackupError::Corrupt("a frame length longer than 10 bytes".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::kvserverpb::backup_frame::Frame;
    use crate::proto::kvserverpb::{BackupEnd, BackupHeader};

    fn sample() -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new()).expect("writer");
        w.frame(&BackupFrame {
            frame: Some(Frame::Header(BackupHeader { revision: 7, ..Default::default() })),
        })
        .expect("frame");
        w.frame(&BackupFrame { frame: Some(Frame::End(BackupEnd { history_entries: 0, hash_kv: 1 })) })
            .expect("frame");
        let (bytes, size) = w.finish().expect("finish");
        assert_eq!(bytes.len() as u64, size);
        bytes
    }

    #[test]
    fn sizes_follow_etcds_rule_and_frames_read_back() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 32);
        let mut r = FrameReader::new(bytes.as_slice()).expect("reader");
        assert!(
            matches!(r.next_frame().expect("frame"), Some(BackupFrame { frame: Some(Frame::Header(h)) }) if h.revision == 7)
        );
        assert!(matches!(r.next_frame().expect("frame"), Some(BackupFrame { frame: Some(Frame::End(_)) })));
        assert!(r.next_frame().expect("after end").is_none());
    }

    #[test]
    fn damaged_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b");
        let good = sample();
        std::fs::write(&path, &good).expect("write");
        assert_eq!(verify_file(&path, |_| {}).expect("verifies"), good.len() as u64);

        let mut flipped = good.clone();
        flipped[40] ^= 1;
        std::fs::write(&path, &flipped).expect("write");
        assert!(matches!(verify_file(&path, |_| {}), Err(BackupError::DigestMismatch)));

        std::fs::write(&path, &good[..good.len() - 1]).expect("write");
        assert!(matches!(verify_file(&path, |_| {}), Err(BackupError::Truncated { .. })));

        let mut other = good;
        other[0] = b'X';
        std::fs::write(&path, &other).expect("write");
        assert!(matches!(verify_file(&path, |_| {}), Err(BackupError::NotABackup)));
    }
}
