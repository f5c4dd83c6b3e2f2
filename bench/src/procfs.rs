//! Server memory and CPU time from `/proc`.
//!
//! Memory is the peak resident set (`VmHWM`) of each server process: a high-water mark over
//! the process's life, so sampling it once after a run gives the peak reached so far without
//! polling during the run (which would cost CPU the servers need on a small machine). The watch
//! and lease workloads also read the current resident set (`VmRSS`), a few times a second
//! ([`crate::rss`]), to tell what their watchers or leases cost rather than the session's
//! high-water mark.
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (every thread of the process, user and
//! kernel), read at the start and the end of a measured run: the difference divided by the
//! operations completed is the CPU each operation cost. Two reads per run, nothing in between.

use std::path::Path;
use std::time::Duration;

use crate::error::BenchError;

/// The `VmHWM` of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64, BenchError> {
    status_kib(pid, "VmHWM")
}

/// The `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    status_kib(pid, "VmRSS")
}

/// The `field` line of `/proc/PID/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64, BenchError> {
    let path = Path::new("/proc").join(pid.to_string()).join("status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
    parse_status_kib(&text, field)
        .ok_or_else(|| BenchError::Unexpected(format!("no {field} line in {}", path.display())))
}

/// Sum of the `VmHWM` of every process in `pids`, or `None` if one cannot be read (it exited).
pub fn total_peak_rss_kib(pids: &[u32]) -> Option<u64> {
    sum_over(pids, "memory", peak_rss_kib)
}

/// Sum of the `VmRSS` of every process in `pids`, or `None` if one cannot be read.
pub fn total_rss_kib(pids: &[u32]) -> Option<u64> {
    sum_over(pids, "memory", rss_kib)
}

/// Sum of `read(pid)` over `pids`, or `None` if one cannot be read (its process exited): a
/// partial sum would understate the servers' total.
fn sum_over<T: std::iter::Sum>(
    pids: &[u32],
    what: &str,
    read: impl Fn(u32) -> Result<T, BenchError>,
) -> Option<T> {
    pids.iter()
        .map(|&pid| {
            read(pid).inspect_err(|e| tracing::warn!(pid, error = %e, "cannot read server {what}")).ok()
        })
        .sum()
}

/// What process to read CPU time of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// kvbench itself (`/proc/self`): the client shares the cores with the servers.
    Own,
    /// Another process.
    Of(u32),
}

/// CPU time (user + system, all threads) of `pid` so far.
pub fn cpu_time(pid: Pid) -> Result<Duration, BenchError> {
    let dir = match pid {
        Pid::Own => "self".to_string(),
        Pid::Of(pid) => pid.to_string(),
    };
    let path = Path::new("/proc").join(dir).join("stat");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::io(&path, e))?;
    let ticks = parse_cpu_ticks(&text)
        .ok_or_else(|| BenchError::Unexpected(format!("no utime/stime in {}", path.display())))?;
    Ok(ticks_to_duration(ticks, clock_ticks_per_second()))
}

/// Sum of the CPU time of every process in `pids`, or `None` if one cannot be read.
pub fn total_cpu_time(pids: &[u32]) -> Option<Duration> {
    sum_over(pids, "CPU time", |pid| cpu_time(Pid::Of(pid)))
}

/// CPU time of the servers and of kvbench itself at one instant of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Sum over the server processes; `None` without server PIDs or if one could not be read.
    pub servers: Option<Duration>,
    /// kvbench's own.
    pub client: Option<Duration>,
}

impl CpuSample {
    /// Reads the CPU time of `server_pids` (summed) and of this process.
    pub fn take(server_pids: &[u32]) -> Self {
        let servers = if server_pids.is_empty() { None } else { total_cpu_time(server_pids) };
        let client =
            cpu_time(Pid::Own).inspect_err(|e| tracing::warn!(error = %e, "cannot read own CPU time")).ok();
        Self { servers, client }
    }

    /// The CPU used from `self` to `later`; `None` where either reading is missing or the
    /// counter went backwards (a PID now names another process).
    pub fn until(&self, later: &CpuSample) -> CpuSample {
        let diff = |a: Option<Duration>, b: Option<Duration>| b?.checked_sub(a?);
        CpuSample { servers: diff(self.servers, later.servers), client: diff(self.client, later.client) }
    }
}

/// Microseconds of `cpu` per operation, or `None` without a reading or without operations.
pub fn micros_per_op(cpu: Option<Duration>, ops: u64) -> Option<f64> {
    if ops == 0 {
        return None;
    }
    Some(cpu?.as_secs_f64() * 1e6 / ops as f64)
}

/// `utime + stime` (fields 14 and 15, in clock ticks) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11, stime index 12.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// `ticks` clock ticks at `per_second` ticks per second.
fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

/// `AT_CLKTCK`: the auxiliary-vector entry that tells a process the unit of `/proc` times.
const AT_CLKTCK: u64 = 17;

/// The kernel's `USER_HZ`, which every Linux port kvbench can run on fixes at 100; used only if
/// the auxiliary vector cannot be read.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// Clock ticks per second of `/proc` times, from `/proc/self/auxv` (where libc's
/// `sysconf(_SC_CLK_TCK)` gets it too), so kvbench needs no unsafe FFI call.
fn clock_ticks_per_second() -> u64 {
    std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| auxv_value(&auxv, AT_CLKTCK))
        .filter(|&hz| hz > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// The value of entry `key` in an auxiliary vector: native-endian (key, value) pairs of
/// machine words, ended by key 0.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = size_of::<usize>();
    let word = |chunk: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = chunk.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    for pair in auxv.chunks_exact(2 * WORD) {
        let (k, v) = pair.split_at(WORD);
        match word(k)? {
            0 => return None,
            k if k == key => return word(v),
            _ => {}
        }
    }
    None
}

/// Extracts the value of a `FIELD:   1234 kB` line (`VmHWM`, `VmRSS`).
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
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
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(51234));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(40000));
        assert_eq!(parse_status_kib("VmRSS:\t1 kB\n", "VmHWM"), None);
        assert_eq!(parse_status_kib("VmHWM:\t1 MB\n", "VmHWM"), None);
        assert_eq!(parse_status_kib("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn parses_utime_and_stime_after_an_awkward_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime ...
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 9 9 20 0 4 0\n";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("42 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no name at all"), None);
    }

    #[test]
    fn ticks_convert_exactly() {
        assert_eq!(ticks_to_duration(325, 100), Duration::from_millis(3250));
        assert_eq!(ticks_to_duration(1, 1024), Duration::from_nanos(976_562));
        assert_eq!(ticks_to_duration(7, 0), Duration::from_secs(7));
    }

    #[test]
    fn auxv_entries_are_found_until_the_end_marker() {
        let words = |ws: &[usize]| ws.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
        let auxv = words(&[6, 4096, 17, 100, 0, 0, 17, 5]);
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(100));
        assert_eq!(auxv_value(&auxv, 6), Some(4096));
        assert_eq!(auxv_value(&auxv, 33), None);
        assert_eq!(auxv_value(&auxv[..5], AT_CLKTCK), None);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn own_cpu_time_is_readable_and_monotonic() {
        let before = cpu_time(Pid::Own).unwrap();
        let after = cpu_time(Pid::Of(std::process::id())).unwrap();
        assert!(after >= before);
        assert_eq!(total_cpu_time(&[]), Some(Duration::ZERO));
        assert_eq!(total_cpu_time(&[u32::MAX]), None);
    }

    #[test]
    fn usage_is_the_difference_of_two_samples() {
        let at = |s: u64, c: u64| CpuSample {
            servers: Some(Duration::from_millis(s)),
            client: Some(Duration::from_millis(c)),
        };
        let used = at(1000, 50).until(&at(1600, 80));
        assert_eq!(used, at(600, 30));
        let gone = CpuSample { servers: None, ..at(0, 0) };
        assert_eq!(gone.until(&at(5, 5)).servers, None);
        assert_eq!(at(9, 0).until(&at(5, 5)).servers, None, "a counter going back is no reading");
        assert_eq!(micros_per_op(Some(Duration::from_millis(600)), 3000), Some(200.0));
        assert_eq!(micros_per_op(Some(Duration::from_millis(600)), 0), None);
        assert_eq!(micros_per_op(None, 10), None);
        assert_eq!(CpuSample::take(&[]).servers, None);
    }

    #[test]
    fn own_process_has_a_peak() {
        // The kernel keeps RSS in per-CPU counters it sums approximately, so two readings of one
        // process may differ by a few pages either way, the high-water mark included.
        const SLACK_KIB: u64 = 1024;
        let me = std::process::id();
        let kib = peak_rss_kib(me).unwrap();
        assert!(kib > 0);
        assert_eq!(total_peak_rss_kib(&[me, me]).map(|t| t + SLACK_KIB >= 2 * kib), Some(true));
        let now = total_rss_kib(&[me]).unwrap();
        assert!(now > 0 && now <= peak_rss_kib(me).unwrap() + SLACK_KIB, "the current RSS is below the peak");
        assert_eq!(total_rss_kib(&[u32::MAX]), None);
    }
}
