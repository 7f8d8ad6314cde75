//! Sharded sampling and NLL across processes: each process handles its batches
//! ([`Shard`]), and rank 0 collects them in batch order, so that N processes write the very
//! files one process writes.

use crate::error::{Error, Result};
use crate::nll::NllBatch;
use crate::sample::{Samples, Shard};
use crate::train::ProcessGroup;

/// The batches of a sharded sampling run, collected on rank 0 in batch order (`None` on the
/// other ranks). `n` images in batches of `batch_size`; batch k was drawn by rank k % world.
pub fn gather_samples(
    group: &mut ProcessGroup,
    mine: Samples,
    n: usize,
    batch_size: usize,
) -> Result<Option<Samples>> {
    let world = group.world_size();
    if world == 1 {
        return Ok(Some(mine));
    }
    let (h, w, c) = (mine.h, mine.w, mine.c);
    let per_image = h * w * c;
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
            return Err(Error::Invalid(format!(
                "rank {rank} sent {} bytes of samples, {want} expected (are the flags the same?)",
                part.len()
            )));
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
        c,
        labels: with_labels.then_some(labels),
        n,
        h,
        w,
    }))
}

/// The bound's batches of a sharded NLL run, collected on rank 0 (`None` on the other ranks);
/// `t` is the number of diffusion steps.
pub fn gather_nll_batches(
    group: &mut ProcessGroup,
    mine: Vec<NllBatch>,
    t: usize,
) -> Result<Option<Vec<NllBatch>>> {
    if group.world_size() == 1 {
        return Ok(Some(mine));
    }
    let bytes: Vec<u8> = mine
        .iter()
        .flat_map(NllBatch::to_values)
        .flat_map(f64::to_le_bytes)
        .collect();
    let Some(parts) = group.gather_bytes(&bytes)? else {
        return Ok(None);
    };
    let mut all = Vec::new();
    for (r, part) in parts.iter().enumerate() {
        let values: Vec<f64> = part
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        for chunk in values.chunks(NllBatch::values_len(t)) {
            let batch = NllBatch::from_values(chunk, t).ok_or_else(|| {
                Error::Invalid(format!(
                    "rank {r} sent malformed results (are the flags the same?)"
                ))
            })?;
            all.push(batch);
        }
    }
    Ok(Some(all))
}
