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

/// The percentiles a summary's distribution holds (the slowest sample follows as 100): dense
/// enough to draw the latency curve of a run, from its body to the tail a few requests in ten
/// thousand see. Each with its quantile written out, because `99.9 / 100.0` is not `0.999` in
/// floating point and would step past a sample that `p999_ms` stops at.
pub const DISTRIBUTION: [(f64, f64); 13] = [
    (10.0, 0.10),
    (20.0, 0.20),
    (30.0, 0.30),
    (40.0, 0.40),
    (50.0, 0.50),
    (60.0, 0.60),
    (70.0, 0.70),
    (80.0, 0.80),
    (90.0, 0.90),
    (95.0, 0.95),
    (99.0, 0.99),
    (99.9, 0.999),
    (99.99, 0.9999),
];

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
        let at = |quantile: f64| ms(self.hist.value_at_quantile(quantile));
        let distribution = DISTRIBUTION
            .iter()
            .map(|&(percentile, quantile)| PercentilePoint { percentile, ms: at(quantile) })
            .chain([PercentilePoint { percentile: 100.0, ms: ms(self.hist.max()) }])
            .collect();
        LatencySummary {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            mean_ms: self.hist.mean() / 1000.0,
            max_ms: ms(self.hist.max()),
            distribution,
        }
    }
}

/// Latency figures of one run, in milliseconds. All zero (and no distribution) when nothing
/// was recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// The latency at each percentile of [`DISTRIBUTION`] and the slowest sample (percentile
    /// 100), in increasing order: what `kvbench plot` draws. Empty in records of older kvbench
    /// versions, and left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribution: Vec<PercentilePoint>,
}

impl LatencySummary {
    /// The points of the latency distribution: the recorded ones, or for a record of an older
    /// kvbench version (which kept no distribution) the percentiles it did keep, so that its
    /// runs still draw as a coarser curve. Empty when nothing was recorded.
    pub fn points(&self) -> Vec<PercentilePoint> {
        if !self.distribution.is_empty() {
            return self.distribution.clone();
        }
        if self.max_ms <= 0.0 {
            return Vec::new();
        }
        [(50.0, self.p50_ms), (99.0, self.p99_ms), (99.9, self.p999_ms), (100.0, self.max_ms)]
            .into_iter()
            .map(|(percentile, ms)| PercentilePoint { percentile, ms })
            .collect()
    }
}

#[cfg(test)]
impl LatencySummary {
    /// A summary without a distribution (as older kvbench versions wrote), for tests to vary.
    pub fn example() -> Self {
        Self { p50_ms: 1.0, p99_ms: 2.0, p999_ms: 3.0, mean_ms: 1.0, max_ms: 4.0, distribution: Vec::new() }
    }
}

/// One point of a latency distribution: `percentile` % of the samples took at most `ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Between 0 and 100; 100 is the slowest sample.
    pub percentile: f64,
    /// Milliseconds.
    pub ms: f64,
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
        let percentiles: Vec<f64> = s.distribution.iter().map(|p| p.percentile).collect();
        assert_eq!(percentiles[..13], DISTRIBUTION.map(|(p, _)| p));
        assert_eq!(percentiles.last(), Some(&100.0));
        for p in &s.distribution[..13] {
            // Sample k ms is the k-th of 1000: percentile p sits at p × 10 ms.
            assert!((p.ms - p.percentile * 10.0).abs() <= 1.0, "{p:?}");
        }
        assert_eq!(s.distribution.last().map(|p| p.ms), Some(s.max_ms));
        let at = |percentile: f64| s.distribution.iter().find(|p| p.percentile == percentile).map(|p| p.ms);
        assert_eq!((at(50.0), at(99.0), at(99.9)), (Some(s.p50_ms), Some(s.p99_ms), Some(s.p999_ms)));
        assert_eq!(s.points(), s.distribution);
    }

    #[test]
    fn summaries_without_a_distribution_fall_back_to_their_percentiles() {
        let old = LatencySummary {
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            mean_ms: 1.0,
            max_ms: 4.0,
            ..LatencySummary::default()
        };
        let points: Vec<(f64, f64)> = old.points().iter().map(|p| (p.percentile, p.ms)).collect();
        assert_eq!(points, [(50.0, 1.0), (99.0, 2.0), (99.9, 3.0), (100.0, 4.0)]);
        assert!(LatencySummary::default().points().is_empty());
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("distribution"), "{json}");
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
