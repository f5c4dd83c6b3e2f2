//! Server memory from `/proc`: the peak resident set (`VmHWM`) of each server process.
//!
//! VmHWM is the high-water mark over the process's life, so sampling it once after a run
//! gives the peak reached so far without polling during the run (which would cost CPU the
//! servers need on a small machine).

use std::path::Path;

use crate::error::BenchError;

/// The `VmHWM` of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64, BenchError> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
    parse_vm_hwm(&text).ok_or_else(|| BenchError::Unexpected(format!("no VmHWM line in {}", path.display())))
}

/// Sum of the `VmHWM` of every process in `pids`, or `None` if one cannot be read (it exited).
pub fn total_peak_rss_kib(pids: &[u32]) -> Option<u64> {
    let mut total = 0;
    for &pid in pids {
        match peak_rss_kib(pid) {
            Ok(kib) => total += kib,
            Err(e) => {
                tracing::warn!(pid, error = %e, "cannot read server memory");
                return None;
            }
        }
    }
    Some(total)
}

/// Extracts the `VmHWM:   1234 kB` value.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_status_line() {
        let status = "Name:\tetcd\nVmPeak:\t  99 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(51234));
        assert_eq!(parse_vm_hwm("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t1 MB\n"), None);
    }

    #[test]
    fn own_process_has_a_peak() {
        let me = std::process::id();
        let kib = peak_rss_kib(me).unwrap();
        assert!(kib > 0);
        assert_eq!(total_peak_rss_kib(&[me, me]).map(|t| t >= 2 * kib), Some(true));
    }
}
