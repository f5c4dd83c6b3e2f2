//! `kvbench fsync-probe`: the fdatasync latency of the data disk.
//!
//! Every committed Raft entry waits for one fsync of the log on a quorum, so a single client's
//! write latency cannot go below this. The probe overwrites 4 KiB blocks in a file that was
//! written and synced once up front (a write-ahead log's steady state: preallocated segments),
//! calling `fdatasync` after each write.
//!
//! With `spin`, busy threads keep every CPU awake during the probe. On some virtual machines
//! (this project's Firecracker VMs among them) a thread that sleeps on an idle CPU waits for
//! the next timer tick to be woken when its I/O completes, adding ~4 ms to every sync; a
//! server with other busy threads does not pay that. The two figures bracket what a server
//! can see, so `scripts/bench.sh` reports both.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::BenchError;
use crate::stats::Latencies;

/// Blocks in the probe file; writes cycle through them.
const BLOCKS: u64 = 256;

/// Writes `count` blocks of `block_size` bytes with an fdatasync after each, in a temporary
/// file under `dir` that is removed afterwards, and returns the latency of each write+sync.
/// With `spin`, one busy thread per CPU runs for the duration of the probe.
pub fn probe(dir: &Path, count: u64, block_size: usize, spin: bool) -> Result<Latencies, BenchError> {
    let path = dir.join(format!(".kvbench-fsync-probe-{}", std::process::id()));
    let spinners = if spin { Spinners::start() } else { Spinners::none() };
    let result = probe_file(&path, count, block_size);
    drop(spinners);
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

/// Busy threads, one per CPU, stopped and joined on drop.
struct Spinners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Spinners {
    fn none() -> Self {
        Self { stop: Arc::default(), threads: Vec::new() }
    }

    fn start() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cpus)
            .map(|_| {
                let stop = stop.clone();
                // No `spin_loop()` hint: a PAUSE loop lets the hypervisor deschedule the vCPU
                // (pause-loop exiting), which is the idle state this mode must avoid.
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_records_every_sync_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        for spin in [false, true] {
            let latencies = probe(dir.path(), 20, 4096, spin).unwrap();
            assert_eq!(latencies.count(), 20);
            assert!(latencies.summary().p50_ms > 0.0);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(probe(&dir.path().join("nope"), 1, 4096, true).is_err());
    }
}
