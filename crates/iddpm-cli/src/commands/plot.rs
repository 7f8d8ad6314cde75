//! `iddpm plot`: line charts of CSV columns (progress.csv, the reproduction study's results) as
//! PNGs with labelled axes.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

use clap::Args;
use iddpm::train::plot::{Chart, Series, running_mean, save_chart};

/// Arguments of `iddpm plot`.
#[derive(Args)]
pub struct PlotArgs {
    /// A line: `LABEL=FILE.csv:XCOLUMN:YCOLUMN` (repeat for several lines; the file name may
    /// not hold '=').
    #[arg(long = "series", required = true)]
    pub series: Vec<String>,
    /// The PNG to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Caption above the chart.
    #[arg(long, default_value = "")]
    pub title: String,
    /// Horizontal axis label (default: the first series' x column).
    #[arg(long = "x_label", alias = "x-label")]
    pub x_label: Option<String>,
    /// Vertical axis label (default: the first series' y column).
    #[arg(long = "y_label", alias = "y-label")]
    pub y_label: Option<String>,
    /// Logarithmic horizontal axis.
    #[arg(long = "log_x", alias = "log-x")]
    pub log_x: bool,
    /// Logarithmic vertical axis.
    #[arg(long = "log_y", alias = "log-y")]
    pub log_y: bool,
    /// Mark every point.
    #[arg(long)]
    pub points: bool,
    /// Draw each series faint with its running mean over it.
    #[arg(long)]
    pub smooth: bool,
}

/// One `--series` value, taken apart.
struct SeriesSpec {
    label: String,
    file: PathBuf,
    x: String,
    y: String,
}

fn parse_spec(spec: &str) -> anyhow::Result<SeriesSpec> {
    let bad = || format!("--series {spec:?}: expected LABEL=FILE.csv:XCOLUMN:YCOLUMN");
    // Taken apart from the right: labels may hold '=' ("Σ = β") and file paths ':'.
    let mut parts = spec.rsplitn(3, ':');
    let (y, x, rest) = (
        parts.next().with_context(bad)?,
        parts.next().with_context(bad)?,
        parts.next().with_context(bad)?,
    );
    let (label, file) = rest.rsplit_once('=').with_context(bad)?;
    if label.is_empty() || file.is_empty() || x.is_empty() || y.is_empty() {
        bail!(bad());
    }
    Ok(SeriesSpec {
        label: label.into(),
        file: file.into(),
        x: x.into(),
        y: y.into(),
    })
}

/// The `(x, y)` pairs of two named columns of a CSV file with a header row; rows where either
/// cell is empty or not a number are skipped.
fn read_columns(path: &Path, x: &str, y: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?
        .split(',')
        .map(str::trim)
        .collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).with_context(|| {
            format!(
                "{}: no column {name:?} (columns: {})",
                path.display(),
                header.join(", ")
            )
        })
    };
    let (xi, yi) = (column(x)?, column(y)?);
    Ok(lines
        .filter_map(|line| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let value = |i: usize| cells.get(i)?.parse::<f64>().ok();
            Some((value(xi)?, value(yi)?))
        })
        .collect())
}

/// Reads every series and writes the chart.
pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let specs = args
        .series
        .iter()
        .map(|s| parse_spec(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut series = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let points = read_columns(&spec.file, &spec.x, &spec.y)?;
        if args.smooth {
            series.push(Series {
                faint: true,
                color: Some(i),
                ..Series::new(format!("{} (each log)", spec.label), points.clone())
            });
            series.push(Series {
                color: Some(i),
                ..Series::new(
                    format!("{} (running mean)", spec.label),
                    running_mean(&points),
                )
            });
        } else {
            series.push(Series::new(spec.label.clone(), points));
        }
    }
    let chart = Chart {
        title: args.title.clone(),
        x_label: args.x_label.clone().unwrap_or_else(|| specs[0].x.clone()),
        y_label: args.y_label.clone().unwrap_or_else(|| specs[0].y.clone()),
        log_x: args.log_x,
        log_y: args.log_y,
        markers: args.points,
    };
    save_chart(&args.output, &chart, &series)?;
    println!("wrote {}", args.output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_specs_split_at_the_last_colons() {
        let s = parse_spec("Σ = β (IS)=runs/a:b/progress.csv:step:loss").unwrap();
        assert_eq!(s.label, "Σ = β (IS)");
        assert_eq!(s.file, PathBuf::from("runs/a:b/progress.csv"));
        assert_eq!((s.x.as_str(), s.y.as_str()), ("step", "loss"));
        for bad in ["no-equals", "x=file.csv:step", "=f.csv:a:b", "x=f.csv::b"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn columns_are_read_by_name_and_bad_cells_skipped() {
        let dir = std::env::temp_dir().join(format!("iddpm-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.csv");
        std::fs::write(&path, "loss,step\n0.5,1\n,2\n0.25,3\nnan?,4\n").unwrap();
        assert_eq!(
            read_columns(&path, "step", "loss").unwrap(),
            vec![(1.0, 0.5), (3.0, 0.25)]
        );
        let err = read_columns(&path, "step", "fid").unwrap_err().to_string();
        assert!(
            err.contains("no column \"fid\"") && err.contains("loss, step"),
            "{err}"
        );
    }
}
