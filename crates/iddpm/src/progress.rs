//! Progress bars for long work: position, rate and ETA on stderr.

use indicatif::{ProgressBar, ProgressStyle};

/// Creates a bar over `total` units of `unit` (e.g. "steps") with rate and ETA.
pub fn bar(total: u64, label: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{label} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
    );
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
