//! Key-value logs: averaged over each log interval, printed as a table and appended to
//! `log.txt` and `progress.csv` (the reference logger's outputs), and written as TensorBoard
//! scalars beside them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::tensorboard::EventWriter;

/// Accumulates means of named values and writes them out on [`dump`](Logger::dump).
pub struct Logger {
    dir: PathBuf,
    sums: BTreeMap<String, (f64, u64)>,
    csv_keys: Vec<String>,
    rows: Vec<BTreeMap<String, f64>>,
    quiet: bool,
    /// Opened at the first dump, so that processes that never dump write no event file.
    events: Option<EventWriter>,
}

impl Logger {
    /// A logger writing into `dir` (created if needed).
    pub fn new(dir: &Path, quiet: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            sums: BTreeMap::new(),
            csv_keys: Vec::new(),
            rows: Vec::new(),
            quiet,
            events: None,
        })
    }

    /// Adds a value to the running mean of `key`.
    pub fn log_mean(&mut self, key: &str, value: f64) {
        let e = self.sums.entry(key.to_string()).or_insert((0.0, 0));
        e.0 += value;
        e.1 += 1;
    }

    /// Sets `key` to `value` (replacing any mean).
    pub fn log(&mut self, key: &str, value: f64) {
        self.sums.insert(key.to_string(), (value, 1));
    }

    /// The mean of every key since the last dump.
    pub fn means(&self) -> BTreeMap<String, f64> {
        self.sums
            .iter()
            .map(|(k, (s, n))| (k.clone(), s / *n as f64))
            .collect()
    }

    /// Writes the current means (table on stdout, `log.txt`, `progress.csv`) and resets them.
    pub fn dump(&mut self) -> Result<BTreeMap<String, f64>> {
        let means = self.means();
        self.sums.clear();
        if means.is_empty() {
            return Ok(means);
        }
        let width = means.keys().map(|k| k.len()).max().unwrap_or(0);
        let mut table = String::new();
        let line = "-".repeat(width + 17);
        table.push_str(&line);
        table.push('\n');
        for (k, v) in &means {
            table.push_str(&format!("| {k:<width$} | {v:<11.4e} |\n"));
        }
        table.push_str(&line);
        table.push('\n');
        if !self.quiet {
            print!("{table}");
        }
        let log_path = self.dir.join("log.txt");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| TrainError::io(&log_path, e))?;
        f.write_all(table.as_bytes())
            .map_err(|e| TrainError::io(&log_path, e))?;
        self.rows.push(means.clone());
        self.write_csv()?;
        let step = means.get("step").copied().unwrap_or(0.0) as u64;
        self.events()?.scalars(step, &means)?;
        Ok(means)
    }

    /// Adds the PNG file at `path` to the TensorBoard events as picture `tag` at `step`.
    pub fn log_image(&mut self, step: u64, tag: &str, path: &Path) -> Result<()> {
        let png = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (width, height) = image::image_dimensions(path)
            .map_err(|e| TrainError::Other(format!("{}: {e}", path.display())))?;
        self.events()?.image(step, tag, &png, width, height)
    }

    fn events(&mut self) -> Result<&mut EventWriter> {
        if self.events.is_none() {
            self.events = Some(EventWriter::create(&self.dir)?);
        }
        Ok(self.events.as_mut().expect("opened above"))
    }

    fn write_csv(&mut self) -> Result<()> {
        let path = self.dir.join("progress.csv");
        let new_keys: Vec<String> = self
            .rows
            .last()
            .map(|r| {
                r.keys()
                    .filter(|k| !self.csv_keys.contains(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if new_keys.is_empty() && path.exists() {
            let line = self.csv_line(self.rows.last().unwrap());
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| TrainError::io(&path, e))?;
            writeln!(f, "{line}").map_err(|e| TrainError::io(&path, e))?;
            return Ok(());
        }
        // New columns: rewrite the whole file with the wider header, as the reference does.
        self.csv_keys.extend(new_keys);
        self.rewrite_csv()
    }

    /// One CSV line of `row` in the header's column order (empty where a key is missing).
    fn csv_line(&self, row: &BTreeMap<String, f64>) -> String {
        let cells: Vec<String> = self
            .csv_keys
            .iter()
            .map(|k| row.get(k).map(|v| v.to_string()).unwrap_or_default())
            .collect();
        cells.join(",")
    }

    fn rewrite_csv(&self) -> Result<()> {
        let path = self.dir.join("progress.csv");
        let mut text = self.csv_keys.join(",");
        text.push('\n');
        for row in &self.rows {
            text.push_str(&self.csv_line(row));
            text.push('\n');
        }
        iddpm_checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|e| TrainError::Other(e.to_string()))
    }

    /// Takes up an earlier run's `progress.csv` in this folder, when there is one, keeping its
    /// rows up to `step` (those after it were logged past the checkpoint being resumed), so
    /// that a resumed run's CSV holds the whole history instead of starting over.
    pub fn keep_history_until(&mut self, step: u64) -> Result<()> {
        let path = self.dir.join("progress.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut lines = text.lines();
        let Some(header) = lines.next() else {
            return Ok(());
        };
        let keys: Vec<String> = header.split(',').map(str::to_string).collect();
        let rows: Vec<BTreeMap<String, f64>> = lines
            .map(|line| {
                keys.iter()
                    .zip(line.split(','))
                    .filter_map(|(k, v)| Some((k.clone(), v.parse::<f64>().ok()?)))
                    .collect::<BTreeMap<_, _>>()
            })
            .filter(|row| row.get("step").is_some_and(|&s| s <= step as f64))
            .collect();
        self.csv_keys = keys;
        self.rows = rows;
        self.rewrite_csv()
    }

    /// Every dumped row so far.
    pub fn rows(&self) -> &[BTreeMap<String, f64>] {
        &self.rows
    }
}
