//! One module per subcommand.

pub mod data;
pub mod distributed;
pub mod eval;
pub mod nll;
pub mod sample;
pub mod schedule;
pub mod super_res;
pub mod train;

use std::path::Path;

/// Creates `dir` and checks that a file can be written there, before any long work starts.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("output directory {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".iddpm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| format!("output directory {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
