//! Flag conventions shared with the reference scripts: underscores (with kebab-case aliases)
//! and `True`/`False` booleans, and the model and diffusion flags every command takes.

use anyhow::{Context, anyhow};
use std::fmt::Display;
use std::str::FromStr;

use clap::{ArgAction, Args};
use iddpm::ModelSpec;
use iddpm::diffusion::{BetaSchedule, DiffusionConfig};
use iddpm::nn::ModelFlags;
use iddpm::sample::SampleOptions;

/// Parses a boolean as the reference's `str2bool` does (`True`, `true`, `yes`, `1`, ...).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Ok(true),
        "false" | "f" | "no" | "n" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use True or False")),
    }
}

/// A comma-separated list flag ("0.9999,0.999" or "1,2,2"), parsed once by clap. Empty
/// items are skipped, so "" is the empty list.
#[derive(Debug, Clone, PartialEq)]
pub struct CommaList<T>(pub Vec<T>);

impl<T: Display> Display for CommaList<T> {
    /// The values joined by commas, as they are typed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&items.join(","))
    }
}

impl<T: FromStr> FromStr for CommaList<T>
where
    T::Err: Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| item.parse().map_err(|e| format!("{item:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(CommaList)
    }
}

/// The reference's diffusion flags.
#[derive(Args, Debug, Clone)]
pub struct DiffusionFlags {
    /// Number of diffusion steps T the model is trained with.
    #[arg(
        long = "diffusion_steps",
        alias = "diffusion-steps",
        default_value_t = DiffusionConfig::default().diffusion_steps
    )]
    pub diffusion_steps: usize,
    /// Beta schedule: linear or cosine.
    #[arg(
        long = "noise_schedule",
        alias = "noise-schedule",
        default_value_t = DiffusionConfig::default().noise_schedule
    )]
    pub noise_schedule: BetaSchedule,
    /// Timesteps to keep: "" (all), section counts like "250" or "10,15,20", or "ddimN".
    #[arg(
        long = "timestep_respacing",
        alias = "timestep-respacing",
        default_value_t = DiffusionConfig::default().timestep_respacing
    )]
    pub timestep_respacing: String,
    /// Lay the respaced grid only over timesteps whose log-SNR ½·log(ᾱ/(1−ᾱ)) is at least
    /// this (diffusers' lambda_min_clipped; e.g. -5.1 drops t = 99 of a 100-step cosine
    /// schedule, where ᾱ = 2.4e-7). Default: keep all.
    #[arg(
        long = "lambda_min_clipped",
        alias = "lambda-min-clipped",
        default_value_t = DiffusionConfig::default().lambda_min_clipped,
        allow_negative_numbers = true
    )]
    pub lambda_min_clipped: f64,
    /// With fixed variances, use the posterior variance rather than beta.
    #[arg(long = "sigma_small", alias = "sigma-small", default_value_t = DiffusionConfig::default().sigma_small, value_parser = parse_bool, action = ArgAction::Set)]
    pub sigma_small: bool,
    /// Train on the variational bound L_vlb.
    #[arg(long = "use_kl", alias = "use-kl", default_value_t = DiffusionConfig::default().use_kl, value_parser = parse_bool, action = ArgAction::Set)]
    pub use_kl: bool,
    /// The network predicts x_0 instead of the noise.
    #[arg(long = "predict_xstart", alias = "predict-xstart", default_value_t = DiffusionConfig::default().predict_xstart, value_parser = parse_bool, action = ArgAction::Set)]
    pub predict_xstart: bool,
    /// Feed the network timesteps rescaled to [0, 1000).
    #[arg(long = "rescale_timesteps", alias = "rescale-timesteps", default_value_t = DiffusionConfig::default().rescale_timesteps, value_parser = parse_bool, action = ArgAction::Set)]
    pub rescale_timesteps: bool,
    /// Weight the vb term by T/1000 (RESCALED_MSE).
    #[arg(long = "rescale_learned_sigmas", alias = "rescale-learned-sigmas", default_value_t = DiffusionConfig::default().rescale_learned_sigmas, value_parser = parse_bool, action = ArgAction::Set)]
    pub rescale_learned_sigmas: bool,
}

impl DiffusionFlags {
    /// The diffusion configuration (`learn_sigma` from the model flags: one flag for both
    /// halves, as the reference passes it).
    pub fn config(&self, learn_sigma: bool) -> DiffusionConfig {
        DiffusionConfig {
            diffusion_steps: self.diffusion_steps,
            noise_schedule: self.noise_schedule,
            learn_sigma,
            sigma_small: self.sigma_small,
            use_kl: self.use_kl,
            predict_xstart: self.predict_xstart,
            rescale_timesteps: self.rescale_timesteps,
            rescale_learned_sigmas: self.rescale_learned_sigmas,
            timestep_respacing: self.timestep_respacing.clone(),
            lambda_min_clipped: self.lambda_min_clipped,
        }
    }
}

/// The reference's model flags (`model_and_diffusion_defaults`), plus `--channel_mult`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Side of the (square) images.
    #[arg(long = "image_size", alias = "image-size", default_value_t = ModelFlags::default().image_size)]
    pub image_size: usize,
    /// Channels of the images: 3 for RGB, 1 for greyscale (read as Pillow's "L"), or others.
    #[arg(long = "image_channels", alias = "image-channels", default_value_t = ModelFlags::default().image_channels)]
    pub image_channels: usize,
    /// Base channel count of the UNet.
    #[arg(long = "num_channels", alias = "num-channels", default_value_t = ModelFlags::default().num_channels)]
    pub num_channels: usize,
    /// Residual blocks per resolution.
    #[arg(long = "num_res_blocks", alias = "num-res-blocks", default_value_t = ModelFlags::default().num_res_blocks)]
    pub num_res_blocks: usize,
    /// Attention heads.
    #[arg(long = "num_heads", alias = "num-heads", default_value_t = ModelFlags::default().num_heads)]
    pub num_heads: usize,
    /// Attention heads in the upsampling path (-1: same as --num_heads).
    #[arg(long = "num_heads_upsample", alias = "num-heads-upsample", default_value_t = ModelFlags::default().num_heads_upsample, allow_negative_numbers = true)]
    pub num_heads_upsample: i64,
    /// Image resolutions with self-attention.
    #[arg(
        long = "attention_resolutions",
        alias = "attention-resolutions",
        default_value_t = ModelFlags::default().attention_resolutions
    )]
    pub attention_resolutions: String,
    /// Dropout in the residual blocks.
    #[arg(long = "dropout", default_value_t = ModelFlags::default().dropout)]
    pub dropout: f64,
    /// Learn the variances (L_hybrid); the network has 6 output channels.
    #[arg(long = "learn_sigma", alias = "learn-sigma", default_value_t = ModelFlags::default().learn_sigma, value_parser = parse_bool, action = ArgAction::Set)]
    pub learn_sigma: bool,
    /// Class-conditional model (1000 classes).
    #[arg(long = "class_cond", alias = "class-cond", default_value_t = ModelFlags::default().class_cond, value_parser = parse_bool, action = ArgAction::Set)]
    pub class_cond: bool,
    /// Gradient checkpointing (recompute activations in the backward pass).
    #[arg(long = "use_checkpoint", alias = "use-checkpoint", default_value_t = ModelFlags::default().use_checkpoint, value_parser = parse_bool, action = ArgAction::Set)]
    pub use_checkpoint: bool,
    /// FiLM-style scale/shift conditioning in the residual blocks.
    #[arg(long = "use_scale_shift_norm", alias = "use-scale-shift-norm", default_value_t = ModelFlags::default().use_scale_shift_norm, value_parser = parse_bool, action = ArgAction::Set)]
    pub use_scale_shift_norm: bool,
    /// Channel multipliers per resolution, e.g. "1,2,2,2" (default: from --image_size).
    #[arg(long = "channel_mult", alias = "channel-mult")]
    pub channel_mult: Option<CommaList<usize>>,
    /// The model and diffusion settings as JSON (keys: the flag names), for checkpoints that
    /// do not carry them (reference .pt files; `iddpm config NAME` writes one for a released
    /// model). Flags typed on the command line must agree with it.
    #[arg(long = "config")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub diffusion: DiffusionFlags,
}

/// The argument ids typed on the command line (recorded once by `main`).
static GIVEN: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();

/// Records which arguments the user typed (clap's ids: the field names, e.g. "image_size").
pub fn record_given(ids: std::collections::HashSet<String>) {
    let _ = GIVEN.set(ids);
}

/// Whether the user typed the argument `id` (rather than leaving its default).
pub fn was_given(id: &str) -> bool {
    GIVEN.get().is_some_and(|given| given.contains(id))
}

impl ModelArgs {
    /// The network flags, with `image_size` replaced for super-resolution (`--large_size`).
    pub fn model_flags(&self, image_size: usize) -> anyhow::Result<ModelFlags> {
        let channel_mult = self.channel_mult.clone().map(|m| m.0);
        Ok(ModelFlags {
            image_size,
            image_channels: self.image_channels,
            num_channels: self.num_channels,
            num_res_blocks: self.num_res_blocks,
            num_heads: self.num_heads,
            num_heads_upsample: self.num_heads_upsample,
            attention_resolutions: self.attention_resolutions.clone(),
            dropout: self.dropout,
            learn_sigma: self.learn_sigma,
            class_cond: self.class_cond,
            use_checkpoint: self.use_checkpoint,
            use_scale_shift_norm: self.use_scale_shift_norm,
            channel_mult: channel_mult.filter(|m| !m.is_empty()),
        })
    }

    /// The model and diffusion: these flags reconciled with the settings stored in
    /// `checkpoint` (an iddpm safetensors file carries them) and in `--config`. A setting
    /// found there replaces the flag's default; a flag the user typed must agree with it, or
    /// the error names both values. `size_flag` is the flag that gave `image_size`
    /// (`image_size`, or `large_size` for super-resolution).
    pub fn resolve(
        &self,
        size_flag: &str,
        image_size: usize,
        super_res: bool,
        checkpoint: Option<&std::path::Path>,
    ) -> anyhow::Result<ModelSpec> {
        use iddpm::settings::ModelSettings;
        let flags = self.spec(image_size, super_res)?;
        let mut sources = Vec::new();
        if let Some(path) = &self.config {
            let settings = ModelSettings::from_json_file(path)?;
            sources.push((format!("--config {}", path.display()), settings));
        }
        if let Some(path) = checkpoint.filter(|p| p.is_file())
            && let Some(settings) = ModelSettings::from_checkpoint(path)?
        {
            sources.push((path.display().to_string(), settings));
        }
        for (name, settings) in &sources {
            let stored = settings.get("super_res").and_then(|v| v.as_bool());
            if let Some(stored) = stored.filter(|&s| s != super_res) {
                anyhow::bail!(
                    "{name} describes a {} model; use {}",
                    if stored {
                        "super-resolution"
                    } else {
                        "plain (not super-resolution)"
                    },
                    if stored {
                        "super_res_sample / super_res_train"
                    } else {
                        "sample / train / nll"
                    }
                );
            }
        }
        let given = |key: &str| match key {
            "image_size" => was_given(size_flag),
            "super_res" => false,
            key => was_given(key),
        };
        Ok(ModelSettings::reconcile(&flags, &given, &sources)?)
    }

    /// The model and diffusion these flags describe (nothing else consulted).
    pub fn spec(&self, image_size: usize, super_res: bool) -> anyhow::Result<ModelSpec> {
        Ok(ModelSpec {
            model: self.model_flags(image_size)?,
            diffusion: self.diffusion.config(self.learn_sigma),
            super_res,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bool;

    #[test]
    fn reference_spellings_are_accepted() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("1"), Ok(true));
        assert!(parse_bool("maybe").unwrap_err().contains("maybe"));
    }
}

/// How the reverse process is run: the sampling flags of `sample` and `super_res_sample`.
#[derive(Args, Debug, Clone)]
pub struct SamplerFlags {
    /// The solver: ancestral, ddim, dpm++2m, dpm++3m, sde-dpm++2m or unipc (each takes one
    /// network evaluation per step of --timestep_respacing). Default: ancestral, or ddim with
    /// --use_ddim True.
    #[arg(long = "sampler")]
    pub sampler: Option<String>,
    /// Sample with DDIM instead of the ancestral sampler (the reference's flag; the same as
    /// --sampler ddim).
    #[arg(long = "use_ddim", alias = "use-ddim", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    pub use_ddim: bool,
    /// DDIM noise level η (0: deterministic).
    #[arg(long = "eta", default_value_t = iddpm::diffusion::Sampler::default().eta)]
    pub eta: f64,
    /// Clamp predicted x_0 to [-1, 1] at every step.
    #[arg(long = "clip_denoised", alias = "clip-denoised", default_value_t = SampleOptions::default().clip_denoised, value_parser = parse_bool, action = ArgAction::Set)]
    pub clip_denoised: bool,
    /// Imagen's dynamic thresholding of predicted x_0 instead of the clamp: per image, the
    /// threshold is this quantile of |x_0| (e.g. 0.995), at least 1 and at most
    /// --threshold_max.
    #[arg(long = "dynamic_threshold", alias = "dynamic-threshold")]
    pub dynamic_threshold: Option<f64>,
    /// The largest dynamic threshold (diffusers' sample_max_value).
    #[arg(long = "threshold_max", alias = "threshold-max", default_value_t = iddpm::diffusion::DynamicThreshold::DEFAULT_MAX)]
    pub threshold_max: f64,
}

impl SamplerFlags {
    /// The sampler these flags ask for.
    pub fn sampler(&self) -> anyhow::Result<iddpm::diffusion::Sampler> {
        use iddpm::diffusion::Sampler;
        let sampler = match (&self.sampler, self.use_ddim) {
            (Some(name), true) if name != "ddim" => anyhow::bail!(
                "--use_ddim True asks for DDIM but --sampler asks for {name}: give one of them"
            ),
            (Some(name), _) => Sampler::named(name)?,
            (None, true) => Sampler::ddim(self.eta),
            (None, false) => Sampler::ANCESTRAL,
        };
        Ok(sampler.with_eta(self.eta))
    }

    /// The dynamic thresholding these flags ask for, if any.
    pub fn threshold(&self) -> anyhow::Result<Option<iddpm::diffusion::DynamicThreshold>> {
        self.dynamic_threshold
            .map(|ratio| iddpm::diffusion::DynamicThreshold::new(ratio, self.threshold_max))
            .transpose()
            .map_err(Into::into)
    }
}

/// Where and how a batch job over a trained model runs: `sample`, `super_res_sample`, `nll`.
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    /// Model weights: a reference `.pt` checkpoint or an iddpm `.safetensors`.
    #[arg(long = "model_path", alias = "model-path")]
    pub model_path: std::path::PathBuf,
    /// Images per batch.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = SampleOptions::default().batch_size)]
    pub batch_size: usize,
    /// Seed of all randomness.
    #[arg(long = "seed", default_value_t = SampleOptions::default().seed)]
    pub seed: u64,
    /// Where the outputs go (default: a new folder runs/COMMAND-TIME).
    #[arg(long = "output_dir", alias = "output-dir")]
    pub output_dir: Option<std::path::PathBuf>,
    #[arg(long = "device", default_value = iddpm::device::DEFAULT_DEVICE_NAME, help = iddpm::device::DEVICE_HELP)]
    pub device: String,
}

impl RunFlags {
    /// `--output_dir`, or a new folder under `runs/` named for `command`.
    pub fn output_dir(&self, command: &str) -> std::path::PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| crate::run_dir::fresh_run_dir(command))
    }

    /// The model at `--model_path` built as `spec` says, and its diffusion; errors name the file.
    pub fn load_model(
        &self,
        spec: &ModelSpec,
        device: &burn::tensor::Device,
    ) -> anyhow::Result<(iddpm::nn::UNetModel, iddpm::diffusion::GaussianDiffusion)> {
        spec.load(&self.model_path, device)
            .with_context(|| format!("loading --model_path {}", self.model_path.display()))
    }

    /// An error naming `--model_path` when it is not a file, before any work starts.
    pub fn check_model_path(&self) -> anyhow::Result<()> {
        if self.model_path.is_file() {
            Ok(())
        } else {
            Err(anyhow!(
                "--model_path {}: no such file",
                self.model_path.display()
            ))
        }
    }
}
