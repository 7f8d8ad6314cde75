//! Line charts as PNGs with labelled axes: the training loss curve and the reproduction study's
//! plots. Drawn by plotters into a pixel buffer, with DejaVu Sans compiled into the binary, so
//! that no system font is needed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use image::RgbImage;
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans.LICENSE`): Σ, β and ε included.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT_NAME: &str = "sans-serif";
const SIZE: (u32, u32) = (800, 500);

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// `(x, y)` points; non-finite ones, and non-positive ones on a log axis, are skipped.
    pub points: Vec<(f64, f64)>,
    /// Drawn thin and pale, behind the others (raw, noisy values).
    pub faint: bool,
    /// Palette index of its colour (default: its position among the series).
    pub color: Option<usize>,
}

impl Series {
    /// A normal line.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
            faint: false,
            color: None,
        }
    }
}

/// Titles and scales of a chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    /// Caption above the plot.
    pub title: String,
    /// Horizontal axis label.
    pub x_label: String,
    /// Vertical axis label.
    pub y_label: String,
    /// Logarithmic horizontal axis.
    pub log_x: bool,
    /// Logarithmic vertical axis.
    pub log_y: bool,
    /// Mark every point (for short series such as FID against steps).
    pub markers: bool,
}

/// Distinct colours, as in common plotting defaults.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font compiled in; a failure would show as missing text.
        let _ = plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT);
    });
}

fn plot_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("cannot draw the chart: {e}"))
}

/// The points of `series` that can be shown on the chart's axes.
fn visible(chart: &Chart, series: &[Series]) -> Vec<Series> {
    series
        .iter()
        .map(|s| Series {
            points: s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| {
                    x.is_finite()
                        && y.is_finite()
                        && (!chart.log_x || x > 0.0)
                        && (!chart.log_y || y > 0.0)
                })
                .collect(),
            ..s.clone()
        })
        .collect()
}

/// The data range along one axis, widened when empty or a single value, with a margin on a
/// linear axis.
fn axis_range(values: impl Iterator<Item = f64>, log: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return if log { 1.0..10.0 } else { 0.0..1.0 };
    }
    if log {
        let (lo, hi) = if hi / lo < 1.5 {
            (lo / 1.25, hi * 1.25)
        } else {
            (lo, hi)
        };
        return lo / 1.05..hi * 1.05;
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    lo - 0.05 * span..hi + 0.05 * span
}

/// A tick label with no more digits than it needs: `200`, `1500`, `25,000`, `0.05`, `2.5e-4`
/// (thousands are grouped from 10,000 on, where the digits get hard to count).
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}").replace(".0e", "e");
    }
    if v.fract() == 0.0 {
        let digits = format!("{}", a as u64);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && digits.len() > 4 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    // Three significant digits, trailing zeros dropped.
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A logarithmic axis over `range` with labels from [`log_ticks`].
fn log_axis(range: Range<f64>) -> WithKeyPoints<LogCoord<f64>> {
    let (labelled, grid) = log_ticks(&range);
    range
        .log_scale()
        .with_key_points(labelled)
        .with_light_points(grid)
}

/// Labelled ticks and light grid lines of a log axis. Plotters labels powers of ten only, so a
/// range within one decade (FIDs from 45 to 200, say) got one label or none; here the labels
/// step down to 1-2-5 and then to every digit times a power of ten until there are at least
/// three. The grid has a line at every digit times a power of ten.
fn log_ticks(range: &Range<f64>) -> (Vec<f64>, Vec<f64>) {
    const DIGITS: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        let first = range.start.log10().floor() as i32;
        let last = range.end.log10().ceil() as i32;
        (first..=last)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| range.contains(v))
            .collect()
    };
    let grid = ticks(&DIGITS);
    let labelled = [&[1.0][..], &[1.0, 2.0, 5.0], &DIGITS]
        .into_iter()
        .map(ticks)
        .find(|t| t.len() >= 3)
        .unwrap_or_else(|| grid.clone());
    (labelled, grid)
}

/// Draws `series` on `chart` into an RGB image.
pub fn render_chart(chart: &Chart, series: &[Series]) -> Result<RgbImage> {
    register_font();
    let series = visible(chart, series);
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x = axis_range(points().map(|p| p.0), chart.log_x);
    let y = axis_range(points().map(|p| p.1), chart.log_y);
    let mut buffer = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        match (chart.log_x, chart.log_y) {
            (false, false) => draw(&root, chart, &series, x, y),
            (true, false) => draw(&root, chart, &series, log_axis(x), y),
            (false, true) => draw(&root, chart, &series, x, log_axis(y)),
            (true, true) => draw(&root, chart, &series, log_axis(x), log_axis(y)),
        }?;
        root.present().map_err(plot_error)?;
    }
    Ok(RgbImage::from_raw(SIZE.0, SIZE.1, buffer).expect("buffer sized for the image"))
}

fn draw<X, Y>(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
    series: &[Series],
    x: X,
    y: Y,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FONT_NAME, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(plot_error)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .axis_desc_style((FONT_NAME, 16))
        .label_style((FONT_NAME, 13))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(plot_error)?;
    // Faint series first, so that the others are drawn over them.
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by_key(|&i| !series[i].faint);
    for i in order {
        let s = &series[i];
        let color = PALETTE[s.color.unwrap_or(i) % PALETTE.len()];
        let style = if s.faint {
            color.mix(0.35).stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        ctx.draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(plot_error)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
        if chart.markers {
            ctx.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(plot_error)?;
        }
    }
    ctx.configure_series_labels()
        .label_font((FONT_NAME, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// Draws the chart and writes it as a PNG, atomically.
pub fn save_chart(path: &Path, chart: &Chart, series: &[Series]) -> Result<()> {
    let img = render_chart(chart, series)?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| TrainError::Other(format!("{}: cannot encode PNG: {e}", path.display())))?;
    iddpm_checkpoint::write_atomic(path, bytes.get_ref())?;
    Ok(())
}

/// The running mean of `points` over a trailing window of about a twentieth of them.
pub fn running_mean(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let window = (points.len() / 20).max(1);
    let mut sum = 0.0;
    points
        .iter()
        .enumerate()
        .map(|(i, &(x, y))| {
            sum += y;
            if i >= window {
                sum -= points[i - window].1;
            }
            (x, sum / (i + 1).min(window) as f64)
        })
        .collect()
}

/// The training loss on log axes: the loss of every step (faint), its running mean, and the
/// mean loss of each quarter of the timesteps (`loss_q0` … `loss_q3` of the logged rows).
pub fn save_loss_curve(
    path: &Path,
    step_losses: &[(f64, f64)],
    logged: &[BTreeMap<String, f64>],
) -> Result<()> {
    let mut series = vec![
        Series {
            faint: true,
            color: Some(0),
            ..Series::new("loss of each step", step_losses.to_vec())
        },
        Series {
            color: Some(0),
            ..Series::new("running mean", running_mean(step_losses))
        },
    ];
    for q in 0..4 {
        let key = format!("loss_q{q}");
        let points: Vec<(f64, f64)> = logged
            .iter()
            .filter_map(|row| Some((*row.get("step")?, *row.get(&key)?)))
            .collect();
        if !points.is_empty() {
            let label = format!("timesteps in quarter {} (mean per log)", q + 1);
            series.push(Series::new(label, points));
        }
    }
    let chart = Chart {
        title: "Training loss".into(),
        x_label: "training step".into(),
        y_label: "loss".into(),
        log_y: true,
        ..Chart::default()
    };
    save_chart(path, &chart, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        for (v, want) in [
            (200.0, "200"),
            (1500.0, "1500"),
            (-25000.0, "-25,000"),
            (0.05, "0.05"),
            (0.125, "0.125"),
            (2.5, "2.5"),
            (0.00025, "2.5e-4"),
            (0.0, "0"),
        ] {
            assert_eq!(tick_label(v), want, "{v}");
        }
    }

    #[test]
    fn a_log_axis_within_one_decade_still_gets_several_labels() {
        let round =
            |v: Vec<f64>| -> Vec<f64> { v.iter().map(|x| (x * 1e6).round() / 1e6).collect() };
        // Several decades: powers of ten.
        assert_eq!(round(log_ticks(&(2.5..1500.0)).0), [10.0, 100.0, 1000.0]);
        // FIDs from 43 to 207: 1-2-5.
        assert_eq!(round(log_ticks(&(43.0..207.0)).0), [50.0, 100.0, 200.0]);
        // A narrow range: every digit.
        assert_eq!(round(log_ticks(&(0.24..0.46)).0), [0.3, 0.4]);
        let (labelled, grid) = log_ticks(&(24.0..105.0));
        assert_eq!(
            round(labelled),
            [30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
        );
        assert_eq!(grid.len(), 8);
    }

    #[test]
    fn charts_skip_points_a_log_axis_cannot_show() {
        let chart = Chart {
            log_y: true,
            ..Chart::default()
        };
        let series = [Series::new(
            "s",
            vec![(1.0, 0.5), (2.0, 0.0), (3.0, f64::NAN), (4.0, 2.0)],
        )];
        assert_eq!(
            visible(&chart, &series)[0].points,
            vec![(1.0, 0.5), (4.0, 2.0)]
        );
        let img = render_chart(&chart, &series).unwrap();
        assert_eq!(img.dimensions(), SIZE);
        // Something besides the white background was drawn (axes, text, the line).
        assert!(img.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 1000);
    }
}
