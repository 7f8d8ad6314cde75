//! Running a command as one of several processes under `mpirun`: joining them, and which
//! device this process takes.

use burn::tensor::Device;
use iddpm::parse_device;
use iddpm::train::ProcessGroup;

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
