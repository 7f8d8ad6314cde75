//! `iddpm data`: dataset files to image folders, and `iddpm npz2png`.

use anyhow::{Context, bail};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use iddpm::data::convert::{cifar10_to_folder, idx_to_folder};
use iddpm::io::{NpyData, read_npz_array, save_grid};

/// Which dataset.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// MNIST IDX files.
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
}

/// Arguments of `iddpm data`.
#[derive(Args)]
pub struct DataArgs {
    /// The dataset kind.
    #[arg(value_enum)]
    pub kind: Kind,
    /// IDX image file (its labels file is found beside it) or a CIFAR-10 batch file/folder.
    #[arg(long)]
    pub input: PathBuf,
    /// Labels file for IDX images (default: the images path with "images-idx3" → "labels-idx1").
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Output folder of PNGs.
    #[arg(long)]
    pub output: PathBuf,
    /// Resize and centre-crop each image to this size as `iddpm train` does (default: keep the
    /// size). A test split written at the training size is the FID reference for samples.
    #[arg(long = "image_size", alias = "image-size")]
    pub image_size: Option<usize>,
}

/// Writes the PNG folder.
pub fn run(args: &DataArgs) -> anyhow::Result<()> {
    if args.image_size == Some(0) {
        bail!("--image_size must be at least 1");
    }
    let n = match args.kind {
        Kind::Cifar10 => cifar10_to_folder(&args.input, &args.output, args.image_size),
        Kind::Mnist | Kind::FashionMnist => {
            let labels = match &args.labels {
                Some(l) => l.clone(),
                None => PathBuf::from(
                    args.input
                        .to_string_lossy()
                        .replace("images-idx3", "labels-idx1"),
                ),
            };
            idx_to_folder(
                &args.input,
                &labels,
                &args.output,
                matches!(args.kind, Kind::FashionMnist),
                args.image_size,
            )
        }
    }?;
    println!("wrote {n} images to {}", args.output.display());
    Ok(())
}

/// Arguments of `iddpm npz2png`.
#[derive(Args)]
pub struct Npz2PngArgs {
    /// A samples .npz (arr_0: uint8 [N, H, W, 3]).
    pub npz: PathBuf,
    /// Output folder for one PNG per image.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Output PNG grid of (up to --max_images) images.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// At most this many images.
    #[arg(long = "max_images", alias = "max-images", default_value_t = usize::MAX)]
    pub max_images: usize,
}

/// Converts a samples archive to PNG files and/or a grid.
pub fn npz2png(args: &Npz2PngArgs) -> anyhow::Result<()> {
    let arr = read_npz_array(&args.npz, "arr_0")?;
    let NpyData::U8(pixels) = &arr.data else {
        bail!(
            "{}: arr_0 is {}, expected uint8 images",
            args.npz.display(),
            arr.descr()
        );
    };
    let [n, h, w, c] = arr.shape[..] else {
        bail!(
            "{}: arr_0 has shape {:?}, expected [N, H, W, C]",
            args.npz.display(),
            arr.shape
        );
    };
    if c != 1 && c != 3 {
        bail!(
            "{}: arr_0 has {c} channels, expected 3 (RGB) or 1 (grey)",
            args.npz.display()
        );
    }
    let n = n.min(args.max_images);
    // Grey images are written as RGB pictures with equal channels.
    let pixels = &iddpm::io::as_rgb(&pixels[..n * h * w * c], c);
    if args.output_dir.is_none() && args.grid.is_none() {
        bail!("give --output_dir, --grid, or both");
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
        for i in 0..n {
            let img = image::RgbImage::from_raw(
                w as u32,
                h as u32,
                pixels[i * h * w * 3..(i + 1) * h * w * 3].to_vec(),
            )
            .context("bad image size")?;
            iddpm::io::write_png(&dir.join(format!("{i:06}.png")), &img)?;
        }
        println!("wrote {n} PNGs to {}", dir.display());
    }
    if let Some(grid) = &args.grid {
        save_grid(grid, pixels, n, h, w)?;
        println!("wrote {}", grid.display());
    }
    Ok(())
}
