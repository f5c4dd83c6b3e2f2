//! Drawing the selected series as SVG with plotters.
//!
//! Only plotters' SVG backend is built (no bitmap backend, no font files): the text is written
//! as SVG `<text>` and the viewer's fonts render it, so kvbench needs no system library to
//! plot. Each system has a colour family (the baseline blue, the candidate red, any other
//! system green or purple); within it, random keys are dark and sequential keys light, and a
//! line whose requests went to every member is dashed where the leader-only line is solid.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use super::select::Series;
use crate::conn::Target;
use crate::keys::KeyOrder;
use crate::workload::Workload;

/// What drawing an SVG into a string can fail with.
pub type DrawError = DrawingAreaErrorKind<std::io::Error>;

/// Width and height of every plot, in pixels.
const SIZE: (u32, u32) = (960, 600);

/// (random keys, sequential keys) colours of each system family.
const FAMILIES: [(RGBColor, RGBColor); 4] = [
    (RGBColor(31, 119, 180), RGBColor(107, 174, 214)),
    (RGBColor(214, 39, 40), RGBColor(253, 141, 60)),
    (RGBColor(44, 160, 44), RGBColor(116, 196, 118)),
    (RGBColor(117, 107, 177), RGBColor(158, 154, 200)),
];

/// The percentiles the latency plot marks on its x axis.
const MARKED_PERCENTILES: [f64; 6] = [50.0, 90.0, 99.0, 99.9, 99.99, 99.999];

/// How one series is drawn.
struct LineStyle {
    colour: RGBColor,
    dashed: bool,
}

impl LineStyle {
    fn of(series: &Series) -> Self {
        let (random, sequential) = FAMILIES[series.system_rank % FAMILIES.len()];
        let colour = match series.key.key_order {
            KeyOrder::Random => random,
            KeyOrder::Sequential => sequential,
        };
        Self { colour, dashed: series.key.target != Target::Leader }
    }
}

/// Throughput against clients: a log scale of clients marked at the client counts measured.
pub fn throughput_svg(workload: Workload, series: &[Series]) -> Result<String, DrawError> {
    let mut clients: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    clients.sort_by(f64::total_cmp);
    clients.dedup();
    let x = padded_log_range(&clients);
    let top = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let y = 0.0..if top > 0.0 { top * 1.15 } else { 1.0 };
    let axes = Axes {
        title: format!("{} throughput against clients (median of rounds)", workload.name()),
        x_desc: "clients (log scale)",
        y_desc: "operations per second",
        x_label: &|x: &f64| format!("{x:.0}"),
        y_label: &|y: &f64| format!("{y:.0}"),
    };
    render(&axes, (x.log_scale().with_key_points(clients), y), workload, series)
}

/// Latency against percentile on a scale of nines (90, 99, 99.9 ... evenly spaced), latency on
/// a log scale: the tail a few requests in a thousand see is as readable as the median.
pub fn latency_svg(workload: Workload, clients: u64, series: &[Series]) -> Result<String, DrawError> {
    let top_nines = series.iter().flat_map(|s| s.points.iter().map(|p| nines(p.0))).fold(1.0, f64::max);
    let x = NinesAxis::new(nines(50.0) - 0.1..top_nines + 0.15);
    let ms: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    let (low, high) =
        (ms.iter().copied().fold(f64::INFINITY, f64::min), ms.iter().copied().fold(0.0, f64::max));
    let y = if low.is_finite() && low > 0.0 { low * 0.7..high * 1.4 } else { 0.1..1.0 };
    let axes = Axes {
        title: format!("{} latency distribution at {clients} clients (median of rounds)", workload.name()),
        x_desc: "percentile (scale of nines)",
        y_desc: "latency, ms (log scale)",
        x_label: &|p: &f64| percentile_label(*p),
        y_label: &|ms: &f64| ms_label(*ms),
    };
    render(&axes, (x, y.log_scale()), workload, series)
}

/// Titles and tick labels of one plot.
struct Axes<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    x_label: &'a dyn Fn(&f64) -> String,
    y_label: &'a dyn Fn(&f64) -> String,
}

/// Draws `series` on axes `x`, `y` with a legend, into an SVG document.
fn render<X, Y>(
    axes: &Axes<'_>,
    (x, y): (X, Y),
    workload: Workload,
    series: &[Series],
) -> Result<String, DrawError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&axes.title, ("sans-serif", 22))
            .margin(18)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x, y)?;
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .x_label_formatter(axes.x_label)
            .y_label_formatter(axes.y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for s in series {
            let style = LineStyle::of(s);
            let line = ShapeStyle::from(style.colour).stroke_width(2);
            let points = s.points.clone();
            let label = s.key.label(workload);
            if style.dashed {
                chart
                    .draw_series(DashedLineSeries::new(points.clone(), 9, 5, line))?
                    .label(label)
                    .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 28, y)], 9, 5, line));
            } else {
                chart
                    .draw_series(LineSeries::new(points.clone(), line))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 28, y)], line));
            }
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, style.colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// A percentile axis on a scale of nines: its values are percentiles, placed by their
/// [`nines`], so p90, p99, p99.9 are evenly spaced; marked at the [`MARKED_PERCENTILES`] it
/// spans.
struct NinesAxis {
    nines: Range<f64>,
}

impl NinesAxis {
    /// The axis from `nines.start` to `nines.end` nines (which must differ).
    fn new(nines: Range<f64>) -> Self {
        Self { nines }
    }
}

impl Ranged for NinesAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, percentile: &f64, (low, high): (i32, i32)) -> i32 {
        let share = (nines(*percentile) - self.nines.start) / (self.nines.end - self.nines.start);
        low + (f64::from(high - low) * share).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        MARKED_PERCENTILES.into_iter().filter(|&p| self.nines.contains(&nines(p))).collect()
    }

    fn range(&self) -> Range<f64> {
        percentile(self.nines.start)..percentile(self.nines.end)
    }
}

impl ValueFormatter<f64> for NinesAxis {
    fn format(percentile: &f64) -> String {
        percentile_label(*percentile)
    }
}

/// A log range around `values` (sorted, positive): from two thirds of the least to 1.5 times
/// the greatest, so the end points are not drawn on the frame.
fn padded_log_range(values: &[f64]) -> Range<f64> {
    match (values.first(), values.last()) {
        (Some(&low), Some(&high)) if low > 0.0 => low / 1.5..high * 1.5,
        _ => 1.0..10.0,
    }
}

/// The nines of a percentile: 90 → 1, 99 → 2, 99.9 → 3.
pub fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// The percentile of a position on the scale of nines.
fn percentile(nines: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-nines))
}

/// `p50`, `p99.9`: as few decimals as the percentile needs (up to 4).
fn percentile_label(percentile: f64) -> String {
    let text = format!("{percentile:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

/// Milliseconds with as many decimals as a log axis spanning them needs.
fn ms_label(ms: f64) -> String {
    match ms {
        m if m >= 10.0 => format!("{m:.0}"),
        m if m >= 1.0 => format!("{m:.1}"),
        m if m >= 0.1 => format!("{m:.2}"),
        m => format!("{m:.3}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_of_nines_round_trips_and_labels_percentiles() {
        assert!((nines(90.0) - 1.0).abs() < 1e-12);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        for p in MARKED_PERCENTILES {
            assert_eq!(percentile_label(percentile(nines(p))), percentile_label(p));
        }
        assert_eq!(percentile_label(50.0), "p50");
        assert_eq!(percentile_label(99.99), "p99.99");
        assert_eq!(
            (ms_label(12.34), ms_label(1.234), ms_label(0.1234), ms_label(0.01234)),
            ("12".to_string(), "1.2".to_string(), "0.12".to_string(), "0.012".to_string())
        );
        assert_eq!(padded_log_range(&[]), 1.0..10.0);
        let axis = NinesAxis::new(0.0..4.0);
        assert_eq!(
            (axis.map(&0.0, (0, 400)), axis.map(&90.0, (0, 400)), axis.map(&99.99, (0, 400))),
            (0, 100, 400)
        );
    }
}
