//! Datasets of square images in [−1, 1] (RGB, greyscale or any channel count), and the
//! shuffled, resumable batch loader.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Random access to images (CHW f32 in [−1, 1]) and optional class labels.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Side of the square images.
    fn resolution(&self) -> usize;
    /// Channels of every image (3 for RGB, 1 for greyscale).
    fn channels(&self) -> usize {
        3
    }
    /// Image `index` (CHW, `channels · resolution²` values) and its label.
    fn get(&self, index: usize) -> Result<(Vec<f32>, Option<i64>)>;
}

/// Images decoded once and kept in memory.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    images: Vec<Vec<f32>>,
    labels: Option<Vec<i64>>,
    resolution: usize,
    channels: usize,
}

impl InMemoryDataset {
    /// Wraps decoded RGB images (each CHW of `resolution`²·3 values).
    pub fn new(images: Vec<Vec<f32>>, labels: Option<Vec<i64>>, resolution: usize) -> Self {
        Self {
            images,
            labels,
            resolution,
            channels: 3,
        }
    }

    /// The same images, read as having `channels` channels (each CHW of
    /// `resolution`²·`channels` values).
    pub fn with_channels(self, channels: usize) -> Self {
        Self { channels, ..self }
    }

    /// Decodes every image of another dataset.
    pub fn load_all(source: &dyn Dataset) -> Result<Self> {
        let mut images = Vec::with_capacity(source.len());
        let mut labels = Vec::with_capacity(source.len());
        let mut any_label = false;
        for i in 0..source.len() {
            let (img, label) = source.get(i)?;
            any_label |= label.is_some();
            labels.push(label.unwrap_or(0));
            images.push(img);
        }
        Ok(
            Self::new(images, any_label.then_some(labels), source.resolution())
                .with_channels(source.channels()),
        )
    }

    /// Splits off the last `n` images (e.g. a held-out set).
    pub fn split_off(&mut self, n: usize) -> Self {
        let keep = self.images.len().saturating_sub(n);
        let images = self.images.split_off(keep);
        let labels = self.labels.as_mut().map(|l| l.split_off(keep));
        Self::new(images, labels, self.resolution).with_channels(self.channels)
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn resolution(&self) -> usize {
        self.resolution
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn get(&self, index: usize) -> Result<(Vec<f32>, Option<i64>)> {
        Ok((
            self.images[index].clone(),
            self.labels.as_ref().map(|l| l[index]),
        ))
    }
}

/// A batch: `[B, C, R, R]` row-major images and optional labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Image values.
    pub images: Vec<f32>,
    /// Labels, for class-conditional data.
    pub labels: Option<Vec<i64>>,
    /// Batch size.
    pub size: usize,
    /// Image side.
    pub resolution: usize,
}

/// Where a loader stands, to resume exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderState {
    /// The loader's seed.
    pub seed: u64,
    /// Completed passes over the data.
    pub epoch: u64,
    /// Position within the current pass.
    pub position: u64,
}

/// An endless stream of shuffled batches (each pass a fresh permutation from the seed and the
/// pass number, incomplete final batches dropped, as the reference's `drop_last=True`).
pub struct BatchLoader<'a> {
    data: &'a dyn Dataset,
    batch_size: usize,
    state: LoaderState,
    order: Vec<usize>,
}

impl<'a> BatchLoader<'a> {
    /// A loader over `data` starting at the beginning.
    pub fn new(data: &'a dyn Dataset, batch_size: usize, seed: u64) -> Result<Self> {
        Self::resume(
            data,
            batch_size,
            LoaderState {
                seed,
                epoch: 0,
                position: 0,
            },
        )
    }

    /// A loader continuing from `state`.
    pub fn resume(data: &'a dyn Dataset, batch_size: usize, state: LoaderState) -> Result<Self> {
        if batch_size == 0 || batch_size > data.len() {
            return Err(DataError::bad(
                "<dataset>",
                format!(
                    "batch size {batch_size} does not fit a dataset of {} images",
                    data.len()
                ),
            ));
        }
        let mut loader = Self {
            data,
            batch_size,
            state,
            order: Vec::new(),
        };
        loader.shuffle();
        Ok(loader)
    }

    fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.state.seed ^ self.state.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        self.order = (0..self.data.len()).collect();
        self.order.shuffle(&mut rng);
    }

    /// The dataset this loader reads.
    pub fn data(&self) -> &'a dyn Dataset {
        self.data
    }

    /// The current position (saved with checkpoints).
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.next_batch_part(0..self.batch_size)
    }

    /// The images `part` (positions within the batch) of the next batch; the loader advances by
    /// the whole batch. Each process of a data-parallel run loads its own part of one global
    /// batch this way.
    pub fn next_batch_part(&mut self, part: std::ops::Range<usize>) -> Result<Batch> {
        if part.end > self.batch_size || part.start > part.end {
            return Err(DataError::bad(
                "<dataset>",
                format!("part {part:?} is not within a batch of {}", self.batch_size),
            ));
        }
        if self.state.position as usize + self.batch_size > self.order.len() {
            self.state.epoch += 1;
            self.state.position = 0;
            self.shuffle();
        }
        let start = self.state.position as usize;
        let r = self.data.resolution();
        let mut images = Vec::with_capacity(part.len() * 3 * r * r);
        let mut labels = Vec::new();
        let mut has_labels = false;
        for &i in &self.order[start + part.start..start + part.end] {
            let (img, label) = self.data.get(i)?;
            images.extend(img);
            if let Some(l) = label {
                has_labels = true;
                labels.push(l);
            }
        }
        self.state.position += self.batch_size as u64;
        Ok(Batch {
            images,
            labels: has_labels.then_some(labels),
            size: part.len(),
            resolution: r,
        })
    }
}

/// The index ranges of consecutive batches of `batch_size` out of `n` items (the last one may
/// be smaller): how sampling, the bound and microbatches walk through their items.
///
/// # Panics
/// When `batch_size` is 0 (callers check their sizes first).
pub fn batch_ranges(n: usize, batch_size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n)
        .step_by(batch_size)
        .map(move |start| start..(start + batch_size).min(n))
}
