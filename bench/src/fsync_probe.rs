//! `kvbench fsync-probe`: the fdatasync latency of the data disk.
//!
//! Every committed Raft entry waits for one fsync of the log on a quorum, so a single client's
//! write latency cannot go below this. The probe overwrites 4 KiB blocks in a file that was
//! written and synced once up front (a write-ahead log's steady state: preallocated segments),
//! calling `fdatasync` after each write.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use crate::error::BenchError;
use crate::stats::Latencies;

/// Blocks in the probe file; writes cycle through them.
const BLOCKS: u64 = 256;

/// Writes `count` blocks of `block_size` bytes with an fdatasync after each, in a temporary
/// file under `dir` that is removed afterwards, and returns the latency of each write+sync.
pub fn probe(dir: &Path, count: u64, block_size: usize) -> Result<Latencies, BenchError> {
    let path = dir.join(format!(".kvbench-fsync-probe-{}", std::process::id()));
    let result = probe_file(&path, count, block_size);
    let removed = std::fs::remove_file(&path).map_err(|e| BenchError::io(&path, e));
    let latencies = result?;
    removed?;
    Ok(latencies)
}

fn probe_file(path: &Path, count: u64, block_size: usize) -> Result<Latencies, BenchError> {
    let io = |e| BenchError::io(path, e);
    let mut file = OpenOptions::new().create_new(true).write(true).open(path).map_err(io)?;
    let block = vec![0xA5u8; block_size];
    for _ in 0..BLOCKS {
        file.write_all(&block).map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    let mut latencies = Latencies::new()?;
    for i in 0..count {
        let offset = (i % BLOCKS) * block_size as u64;
        let started = Instant::now();
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        file.write_all(&block).map_err(io)?;
        file.sync_data().map_err(io)?;
        latencies.record(started.elapsed());
    }
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_records_every_sync_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let latencies = probe(dir.path(), 20, 4096).unwrap();
        assert_eq!(latencies.count(), 20);
        assert!(latencies.summary().p50_ms > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe(&dir.path().join("nope"), 1, 4096).is_err());
    }
}
