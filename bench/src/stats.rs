//! Latency recording and the percentiles kvbench reports.
//!
//! Latencies are recorded in microseconds into an HDR histogram with 3 significant digits
//! (0.1 % error) covering 1 µs to 60 s, which keeps one histogram per client small (~140 KiB)
//! so that clients never share a lock on the hot path.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;

/// Highest latency a histogram can hold, in microseconds; longer samples are clamped to it.
const MAX_MICROS: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Result<Self, BenchError> {
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .map_err(|e| BenchError::Config(format!("histogram bounds: {e}")))?;
        Ok(Self { hist })
    }

    /// Records one sample; samples beyond 60 s count as 60 s.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS);
        self.hist.saturating_record(micros);
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Latencies) {
        // Both share the same bounds, so `add` cannot fail; saturate rather than panic.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The percentiles and extremes, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p999_ms: ms(self.hist.value_at_quantile(0.999)),
            mean_ms: self.hist.mean() / 1000.0,
            max_ms: ms(self.hist.max()),
        }
    }
}

/// Latency figures of one run, in milliseconds. All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latencies::new().unwrap();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(l.count(), 1000);
        assert!((s.p50_ms - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_ms - 999.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean_ms - 500.5).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn merge_adds_samples_and_empty_is_zero() {
        let mut a = Latencies::new().unwrap();
        let mut b = Latencies::new().unwrap();
        assert_eq!(a.summary(), LatencySummary::default());
        a.record(Duration::from_micros(100));
        b.record(Duration::from_micros(300));
        b.record(Duration::from_secs(3600));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!((a.summary().max_ms - 60_000.0).abs() < 60.0);
    }
}
