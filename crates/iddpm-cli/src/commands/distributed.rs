//! Running a command as one of several processes (data-parallel training, sharded sampling):
//! where this process stands, joining the others, and collecting their samples.

use anyhow::{Context, bail};
use std::time::Duration;

use burn::tensor::Device;
use clap::Args;
use iddpm::parse_device;
use iddpm::sample::{Samples, Shard};
use iddpm::train::ProcessGroup;

/// Flags of a multi-process run. Without them, mpirun's variables (or `IDDPM_RANK` /
/// `IDDPM_WORLD_SIZE`) decide; without those, the command runs alone.
#[derive(Args, Debug, Clone)]
pub struct DistFlags {
    /// Number of processes (default: from mpirun's or IDDPM_* variables, else 1).
    #[arg(long = "world_size", alias = "world-size")]
    pub world_size: Option<usize>,
    /// This process's rank (default: from the environment).
    #[arg(long = "rank")]
    pub rank: Option<usize>,
    /// Where rank 0 listens (default: IDDPM_MASTER_ADDR or 127.0.0.1:29500).
    #[arg(long = "dist_addr", alias = "dist-addr")]
    pub dist_addr: Option<String>,
}

impl DistFlags {
    /// This process's rank and the number of processes.
    pub fn placement(&self) -> anyhow::Result<(usize, usize)> {
        let env = ProcessGroup::env_rank_and_size()?;
        let (rank, world) = match (self.rank, self.world_size, env) {
            (Some(r), Some(w), _) => (r, w),
            (None, None, Some(e)) => e,
            (None, None, None) => (0, 1),
            (Some(r), None, Some((_, w))) => (r, w),
            (None, Some(w), Some((r, _))) => (r, w),
            _ => bail!("--rank and --world_size go together"),
        };
        if world == 0 || rank >= world {
            bail!("--rank {rank} does not exist with --world_size {world}");
        }
        Ok((rank, world))
    }

    /// The device for this process: with several processes, plain `cuda` becomes the GPU of
    /// the process's local rank (as the reference's `dist_util.dev()`).
    pub fn device(&self, device: &str, rank: usize, world: usize) -> anyhow::Result<Device> {
        Ok(parse_device(&Self::device_name(device, rank, world))?)
    }

    fn device_name(device: &str, rank: usize, world: usize) -> String {
        if device == "cuda" && world > 1 {
            let local = [
                "IDDPM_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "MPI_LOCALRANKID",
            ]
            .iter()
            .find_map(|n| std::env::var(n).ok()?.parse().ok())
            .unwrap_or(rank);
            format!("cuda:{local}")
        } else {
            device.to_string()
        }
    }

    /// Joins the other processes (a group of one when alone).
    pub fn connect(&self, rank: usize, world: usize) -> anyhow::Result<ProcessGroup> {
        if world == 1 {
            return Ok(ProcessGroup::single());
        }
        let addr = self
            .dist_addr
            .clone()
            .unwrap_or_else(ProcessGroup::env_master_addr);
        println!("rank {rank} of {world}: meeting at {addr}");
        ProcessGroup::connect(rank, world, &addr, Duration::from_secs(600))
            .with_context(|| format!("rank {rank} of {world} could not join the others at {addr}"))
    }
}

/// The batches of a sharded sampling run, collected on rank 0 in batch order (`None` on the
/// other ranks). `n` images in batches of `batch_size`; batch k was drawn by rank k % world.
pub fn gather_samples(
    group: &mut ProcessGroup,
    mine: Samples,
    n: usize,
    batch_size: usize,
) -> anyhow::Result<Option<Samples>> {
    let world = group.world_size();
    if world == 1 {
        return Ok(Some(mine));
    }
    let (h, w) = (mine.h, mine.w);
    let per_image = h * w * 3;
    let with_labels = mine.labels.is_some();
    let mut bytes = mine.images;
    if let Some(l) = &mine.labels {
        bytes.extend(l.iter().flat_map(|v| v.to_le_bytes()));
    }
    let Some(parts) = group.gather_bytes(&bytes)? else {
        return Ok(None);
    };
    // Split each rank's bytes back into its images and labels.
    let mut images_of = Vec::with_capacity(world);
    let mut labels_of = Vec::with_capacity(world);
    for (rank, part) in parts.iter().enumerate() {
        let shard = Shard {
            index: rank,
            count: world,
        };
        let count: usize = (0..n.div_ceil(batch_size))
            .filter(|&k| shard.owns(k))
            .map(|k| batch_size.min(n - k * batch_size))
            .sum();
        let image_bytes = count * per_image;
        let want = image_bytes + if with_labels { count * 8 } else { 0 };
        if part.len() != want {
            bail!(
                "rank {rank} sent {} bytes of samples, {want} expected (are the flags the same?)",
                part.len()
            );
        }
        images_of.push(part[..image_bytes].to_vec());
        labels_of.push(
            part[image_bytes..]
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect::<Vec<i64>>(),
        );
    }
    let mut images = Vec::with_capacity(n * per_image);
    let mut labels = Vec::new();
    let mut taken = vec![0usize; world];
    for k in 0..n.div_ceil(batch_size) {
        let (owner, b) = (k % world, batch_size.min(n - k * batch_size));
        let at = taken[owner];
        images.extend_from_slice(&images_of[owner][at * per_image..(at + b) * per_image]);
        if with_labels {
            labels.extend_from_slice(&labels_of[owner][at..at + b]);
        }
        taken[owner] += b;
    }
    Ok(Some(Samples {
        images,
        labels: with_labels.then_some(labels),
        n,
        h,
        w,
    }))
}
