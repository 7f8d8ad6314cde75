//! Run folders: where a command writes when no output folder is given.

use std::path::PathBuf;

/// A new folder for a command's outputs, `runs/COMMAND-YYYYmmdd-HHMMSS` (UTC), with `-2`,
/// `-3` … appended when that name is taken. Not created here.
pub fn fresh_run_dir(command: &str) -> PathBuf {
    unique_dir(run_dir_name(command))
}

/// `runs/COMMAND-YYYYmmdd-HHMMSS` (UTC) for the current time: the same in every process of a
/// data-parallel run started within the same second.
pub fn run_dir_name(command: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{command}-{}", utc_stamp(secs)))
}

/// `base`, or `base-2`, `base-3` … when it exists.
fn unique_dir(base: PathBuf) -> PathBuf {
    let mut dir = base.clone();
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = PathBuf::from(format!("{}-{n}", base.display()));
    }
    dir
}

/// `YYYYmmdd-HHMMSS` of a Unix time (UTC), by the civil-from-days algorithm.
fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2000-02-29 (a leap day) 12:34:56 and 2026-12-03 09:15:00.
        assert_eq!(utc_stamp(951_827_696), "20000229-123456");
        assert_eq!(utc_stamp(1_796_289_300), "20261203-091500");
    }

    #[test]
    fn fresh_run_dirs_are_under_runs_and_named_for_the_command() {
        let dir = fresh_run_dir("sample");
        assert!(dir.starts_with("runs"));
        assert!(
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sample-"),
            "{}",
            dir.display()
        );
    }
}
