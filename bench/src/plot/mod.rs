//! `kvbench plot`: draws a results file's runs as SVG pictures, so that a reader of
//! BENCHMARKS.md sees the curves the report's tables hold at a glance.
//!
//! For every workload of the file's run records it draws two plots, each system's lines
//! beside the others' (one line per system, target and key order; see [`select`]):
//! - `WORKLOAD-throughput.svg`: ops/s (the median of rounds) against clients, on a log scale;
//! - `WORKLOAD-latency.svg`: the latency distribution at one client count (64 by default),
//!   percentile on a scale of nines against milliseconds on a log scale; left out when no
//!   run of the workload had that many clients.
//!
//! `scripts/bench.sh` runs it after the report; for a put session that yields
//! `put-throughput.svg` and `put-latency.svg`.

use std::path::{Path, PathBuf};

use crate::error::BenchError;
use crate::record::{Record, RunRecord};
use crate::report::Systems;

mod draw;
mod select;

/// What `kvbench plot` draws besides the records.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Which system is drawn in the baseline's colours and which in the candidate's.
    pub systems: Systems,
    /// The client count whose latency distribution is drawn.
    pub latency_clients: u64,
}

/// One drawn plot: the name of its file and its SVG document.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// `WORKLOAD-throughput.svg` or `WORKLOAD-latency.svg`.
    pub file_name: String,
    /// The SVG document.
    pub svg: String,
}

/// Every plot of `records`' runs, workload by workload in the order each first appears.
pub fn render(records: &[Record], options: &PlotOptions) -> Result<Vec<Plot>, BenchError> {
    let runs: Vec<&RunRecord> =
        records.iter().filter_map(|r| if let Record::Run(run) = r { Some(run) } else { None }).collect();
    let mut plots = Vec::new();
    for workload in select::workloads(&runs) {
        let name = workload.name();
        let series = select::throughput(&runs, workload, &options.systems);
        if !series.is_empty() {
            let file_name = format!("{name}-throughput.svg");
            let svg = draw::throughput_svg(workload, &series)
                .map_err(|source| BenchError::Plot { plot: file_name.clone(), source })?;
            plots.push(Plot { file_name, svg });
        }
        let clients = options.latency_clients;
        let series = select::latency(&runs, workload, clients, &options.systems);
        if !series.is_empty() {
            let file_name = format!("{name}-latency.svg");
            let svg = draw::latency_svg(workload, clients, &series)
                .map_err(|source| BenchError::Plot { plot: file_name.clone(), source })?;
            plots.push(Plot { file_name, svg });
        }
    }
    Ok(plots)
}

/// Renders `records`' plots into `out_dir` (created if missing) and returns the files written;
/// none when the records hold no run.
pub fn write_all(
    records: &[Record],
    options: &PlotOptions,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, BenchError> {
    let plots = render(records, options)?;
    if plots.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| BenchError::io(out_dir, e))?;
    plots
        .into_iter()
        .map(|plot| {
            let path = out_dir.join(&plot.file_name);
            std::fs::write(&path, plot.svg).map_err(|e| BenchError::io(&path, e))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::select::tests::{put, systems};
    use super::*;
    use crate::conn::Target;
    use crate::keys::KeyOrder;
    use crate::record::LoadRecord;

    /// Every `<text>` of an SVG document, after checking that it parses as XML with an `<svg>`
    /// root.
    fn texts_of(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_string())
            .collect()
    }

    #[test]
    fn writes_both_put_plots_with_every_series_named() {
        use KeyOrder::{Random, Sequential};
        use Target::{Leader, RoundRobin};
        let mut records =
            vec![Record::Load(LoadRecord { system: "etcd".into(), keys: 1, elapsed_s: 1.0, errors: 0 })];
        for (clients, ops) in [(1, 500.0), (16, 4000.0), (64, 9000.0), (256, 12000.0), (1000, 11000.0)] {
            for (system, speed) in [("etcd", 1.0), ("raftkv", 0.7)] {
                for (target, share) in [(Leader, 1.0), (RoundRobin, 0.8)] {
                    for (order, gain) in [(Random, 1.0), (Sequential, 1.2)] {
                        let throughput = ops * speed * share * gain;
                        let ms = 0.001 * clients as f64 / speed;
                        records.push(Record::Run(put(system, target, order, clients, 1, throughput, ms)));
                    }
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plots");
        let options = PlotOptions { systems: systems(), latency_clients: 64 };
        let written = write_all(&records, &options, &out).unwrap();
        assert_eq!(written, [out.join("put-throughput.svg"), out.join("put-latency.svg")]);

        let expected = [
            "etcd put (leader)",
            "etcd put@all (round-robin)",
            "etcd put-seq (leader)",
            "etcd put-seq@all (round-robin)",
            "raftkv put (leader)",
            "raftkv put@all (round-robin)",
            "raftkv put-seq (leader)",
            "raftkv put-seq@all (round-robin)",
        ];
        let throughput = texts_of(&std::fs::read_to_string(&written[0]).unwrap());
        let latency = texts_of(&std::fs::read_to_string(&written[1]).unwrap());
        for texts in [&throughput, &latency] {
            for name in expected {
                assert_eq!(texts.iter().filter(|t| *t == name).count(), 1, "{name} in {texts:?}");
            }
        }
        assert!(throughput.iter().any(|t| t.contains("throughput against clients")), "{throughput:?}");
        for tick in ["1", "16", "64", "256", "1000"] {
            assert!(throughput.iter().any(|t| t == tick), "tick {tick} in {throughput:?}");
        }
        assert!(latency.iter().any(|t| t.contains("latency distribution at 64 clients")), "{latency:?}");
        for tick in ["p50", "p90", "p99", "p99.9", "p99.99"] {
            assert!(latency.iter().any(|t| t == tick), "tick {tick} in {latency:?}");
        }
    }

    #[test]
    fn nothing_to_draw_writes_nothing_and_a_missing_client_count_skips_the_latency_plot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("never-created");
        let options = PlotOptions { systems: systems(), latency_clients: 64 };
        assert!(write_all(&[], &options, &out).unwrap().is_empty());
        assert!(!out.exists());
        let records = [Record::Run(put("etcd", Target::Leader, KeyOrder::Random, 16, 1, 10.0, 0.01))];
        let plots = render(&records, &options).unwrap();
        assert_eq!(plots.iter().map(|p| p.file_name.as_str()).collect::<Vec<_>>(), ["put-throughput.svg"]);
    }
}
