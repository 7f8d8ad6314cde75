//! FID Inception feature extraction (images/s at batch 50, 32×32 inputs resized to 299) with the
//! reference set's pytorch-fid weights; with `IDDPM_TORCH_PYTHON`, pytorch-fid itself runs side
//! by side (`bench/torch_inception.py`, checked against the reference first) and the ratio is
//! printed. `cargo bench -p iddpm --bench inception` (`-- quick`: batch 10).

use std::process::Command;
use std::time::Instant;

use burn::tensor::Device;
use iddpm::diffusion::SeededNoise;
use iddpm::eval::fid_inception::FidInception;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let (batch, reps) = if quick { (10, 2) } else { (50, 3) };
    let dir = std::env::var("IDDPM_REFERENCE_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/reference").to_string()
    });
    let weights = iddpm::reference_check::random_inception_weights(std::path::Path::new(&dir))
        .expect("fid_inception_random_f16.safetensors: set IDDPM_RANDOM_INCEPTION");
    let dict = iddpm::checkpoint::load_state_dict(&weights)
        .expect("the reference set's Inception weights");
    let net = FidInception::from_state_dict(&dict, &Device::flex()).unwrap();
    let images: Vec<f32> = SeededNoise::new(0)
        .normal_vec(batch * 3 * 32 * 32)
        .into_iter()
        .map(|v| (v * 0.25 + 0.5).clamp(0.0, 1.0))
        .collect();
    // Median milliseconds of one batch after a warm-up repetition.
    let time_batch = || {
        let mut times: Vec<f64> = (0..reps + 1)
            .map(|_| {
                let start = Instant::now();
                let f = net.features(&images, batch, 32, 32);
                assert_eq!(f.len(), batch * 2048);
                start.elapsed().as_secs_f64() * 1e3
            })
            .skip(1)
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        times[times.len() / 2]
    };
    iddpm::kernels::set_enabled(false);
    let standard = time_batch();
    iddpm::kernels::set_enabled(true);
    let ours = time_batch();
    println!(
        "iddpm Inception: batch {batch}: {ours:.0} ms, {:.2} images/s (burn's ops: {standard:.0} ms, {:.2} images/s; kernels / burn ops time x{:.2})",
        batch as f64 * 1e3 / ours,
        batch as f64 * 1e3 / standard,
        ours / standard
    );
    if let Ok(py) = std::env::var("IDDPM_TORCH_PYTHON") {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../bench/torch_inception.py"
        );
        let out = Command::new(py)
            .args([script, &dir, &batch.to_string(), &reps.to_string()])
            .output()
            .expect("run python");
        match String::from_utf8_lossy(&out.stdout).trim().parse::<f64>() {
            Ok(theirs) => println!(
                "pytorch-fid: batch {batch}: {theirs:.0} ms, {:.2} images/s; iddpm / PyTorch time x{:.2}",
                batch as f64 * 1e3 / theirs,
                ours / theirs
            ),
            Err(_) => eprintln!(
                "the PyTorch run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}
