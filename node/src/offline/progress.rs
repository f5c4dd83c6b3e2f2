//! Progress of a long offline run: a line redrawn in place for a person at a terminal, a
//! structured log line every few seconds otherwise (a Kubernetes init container, a script).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tracing::info;

use crate::storage::backup::Phase;

/// How often progress is told.
const EVERY: Duration = Duration::from_secs(2);
const TERMINAL_EVERY: Duration = Duration::from_millis(200);

/// Tells the progress of reading a backup of a known size.
pub struct Progress {
    terminal: bool,
    last: Option<Instant>,
    what: &'static str,
}

impl Progress {
    pub fn new(what: &'static str) -> Self {
        Self { terminal: std::io::stderr().is_terminal(), last: None, what }
    }

    /// Reports `done` of `total` bytes in `phase` (total 0 when not known yet). The end of a
    /// known total is always told, so whoever watches sees the run complete, not stop at the
    /// last tick before it.
    pub fn report(&mut self, phase: Phase, done: u64, total: u64) {
        let every = if self.terminal { TERMINAL_EVERY } else { EVERY };
        let complete = total > 0 && done >= total;
        if !complete && self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let step = match phase {
            Phase::Verifying => "verifying",
            Phase::Reading => self.what,
        };
        if self.terminal {
            let mut err = std::io::stderr();
            let _ = match total {
                0 => write!(err, "\r{step}: {}   ", human_bytes(done)),
                _ => write!(
                    err,
                    "\r{step}: {} of {} ({}%)   ",
                    human_bytes(done),
                    human_bytes(total),
                    done * 100 / total
                ),
            };
            let _ = err.flush();
        } else {
            info!(step, done_bytes = done, total_bytes = total, "progress");
        }
    }

    /// Ends the redrawn line.
    pub fn finish(&self) {
        if self.terminal && self.last.is_some() {
            eprintln!();
        }
    }
}

/// Bytes as etcd's tools print them (`humanize.Bytes`: powers of 1000).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_print_like_etcds_tools() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(25_000), "25.0 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
    }
}
