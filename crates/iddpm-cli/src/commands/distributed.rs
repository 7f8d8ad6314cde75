//! Running a command as one of several processes under `mpirun`: joining them, and which
//! device this process takes.

use std::path::PathBuf;

use burn::tensor::Device;
use iddpm::parse_device;
use iddpm::progress;
use iddpm::sample::Shard;
use iddpm::train::ProcessGroup;
use indicatif::{ProgressBar, ProgressDrawTarget};

use crate::commands::ensure_writable_dir;
use crate::flags::RunFlags;

/// Joins the processes of this launch: MPI's world under `mpirun` (a build with the `mpi`
/// feature), else a group of one.
pub fn join_processes() -> anyhow::Result<ProcessGroup> {
    let group = ProcessGroup::from_environment()?;
    if group.world_size() > 1 && group.is_main() {
        println!("{} processes (MPI)", group.world_size());
    }
    Ok(group)
}

/// The device for this process: with several processes, plain `cuda` becomes the GPU of the
/// process's local rank (as the reference's `dist_util.dev()`).
pub fn device_for(device: &str, group: &ProcessGroup) -> anyhow::Result<Device> {
    let name = if device == "cuda" && group.world_size() > 1 {
        format!("cuda:{}", group.local_rank())
    } else {
        device.to_string()
    };
    Ok(parse_device(&name)?)
}

/// This process's share of a batched command's batches; `None` when it runs alone.
pub fn shard_of(group: &ProcessGroup) -> Option<Shard> {
    (group.world_size() > 1).then_some(Shard {
        index: group.rank(),
        count: group.world_size(),
    })
}

/// How many of `batches` batches this process works on (batch k is process k mod world's).
pub fn own_batch_count(batches: usize, group: &ProcessGroup) -> u64 {
    shard_of(group).map_or(batches, |shard| {
        (0..batches).filter(|&k| shard.owns(k)).count()
    }) as u64
}

/// A progress bar that only the main process draws: every process advances its own, and one
/// line on the terminal shows the main process's.
pub fn main_process_bar(main: bool, total: u64, label: &str, unit: &str) -> ProgressBar {
    let bar = progress::bar(total, label, unit);
    if !main {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The command's output folder, made and checked for writing by the main process only: the
/// others never write there, and each would otherwise make a default folder of its own.
pub fn output_dir_of(
    run: &RunFlags,
    command: &str,
    group: &ProcessGroup,
) -> anyhow::Result<PathBuf> {
    let dir = run.output_dir(command);
    if group.is_main() {
        ensure_writable_dir(&dir)?;
    }
    Ok(dir)
}
