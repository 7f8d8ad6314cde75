//! `iddpm`: train, sample and evaluate Improved DDPM models from the command line.
//!
//! A thin layer over the `iddpm` library: it parses the reference scripts' flags (underscores,
//! with kebab-case aliases, and `True`/`False` booleans) and hands the work to the library.

mod flags;

use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};
use iddpm::diffusion::{BetaSchedule, DiffusionConfig};

use crate::flags::parse_bool;

#[derive(Parser)]
#[command(name = "iddpm", version, about = "Improved Denoising Diffusion Probabilistic Models", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the timesteps and noise levels of a (respaced) diffusion.
    Schedule(ScheduleArgs),
}

/// The reference's diffusion flags.
#[derive(Args)]
struct DiffusionFlags {
    /// Number of diffusion steps T the model is trained with.
    #[arg(
        long = "diffusion_steps",
        visible_alias = "diffusion-steps",
        default_value_t = 1000
    )]
    diffusion_steps: usize,
    /// Beta schedule: linear or cosine.
    #[arg(
        long = "noise_schedule",
        visible_alias = "noise-schedule",
        default_value = "linear"
    )]
    noise_schedule: String,
    /// Timesteps to keep: "" (all), section counts like "250" or "10,15,20", or "ddimN".
    #[arg(
        long = "timestep_respacing",
        visible_alias = "timestep-respacing",
        default_value = ""
    )]
    timestep_respacing: String,
    /// Learn the variances (L_hybrid).
    #[arg(long = "learn_sigma", visible_alias = "learn-sigma", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    learn_sigma: bool,
    /// With fixed variances, use the posterior variance rather than beta.
    #[arg(long = "sigma_small", visible_alias = "sigma-small", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    sigma_small: bool,
    /// Train on the variational bound L_vlb.
    #[arg(long = "use_kl", visible_alias = "use-kl", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    use_kl: bool,
    /// The network predicts x_0 instead of the noise.
    #[arg(long = "predict_xstart", visible_alias = "predict-xstart", default_value = "False", value_parser = parse_bool, action = ArgAction::Set)]
    predict_xstart: bool,
    /// Feed the network timesteps rescaled to [0, 1000).
    #[arg(long = "rescale_timesteps", visible_alias = "rescale-timesteps", default_value = "True", value_parser = parse_bool, action = ArgAction::Set)]
    rescale_timesteps: bool,
    /// Weight the vb term by T/1000 (RESCALED_MSE).
    #[arg(long = "rescale_learned_sigmas", visible_alias = "rescale-learned-sigmas", default_value = "True", value_parser = parse_bool, action = ArgAction::Set)]
    rescale_learned_sigmas: bool,
}

impl DiffusionFlags {
    fn config(&self) -> Result<DiffusionConfig, String> {
        let noise_schedule: BetaSchedule = self
            .noise_schedule
            .parse()
            .map_err(|e| format!("--noise_schedule: {e}"))?;
        Ok(DiffusionConfig {
            diffusion_steps: self.diffusion_steps,
            noise_schedule,
            learn_sigma: self.learn_sigma,
            sigma_small: self.sigma_small,
            use_kl: self.use_kl,
            predict_xstart: self.predict_xstart,
            rescale_timesteps: self.rescale_timesteps,
            rescale_learned_sigmas: self.rescale_learned_sigmas,
            timestep_respacing: self.timestep_respacing.clone(),
        })
    }
}

#[derive(Args)]
struct ScheduleArgs {
    #[command(flatten)]
    diffusion: DiffusionFlags,
}

fn schedule(args: &ScheduleArgs) -> Result<(), String> {
    let config = args.diffusion.config()?;
    let diffusion = config.build().map_err(|e| e.to_string())?;
    println!(
        "{} diffusion: {} of {} steps, mean {}, variance {}, loss {}",
        config.noise_schedule,
        diffusion.num_timesteps(),
        diffusion.original_num_steps(),
        diffusion.mean_type(),
        diffusion.var_type(),
        diffusion.loss_type()
    );
    println!(
        "{:>6} {:>9} {:>14} {:>14}",
        "step", "original", "beta", "alpha_bar"
    );
    let c = diffusion.coefficients();
    for (i, &orig) in diffusion.timestep_map().iter().enumerate() {
        println!(
            "{i:>6} {orig:>9} {:>14.8e} {:>14.8e}",
            c.betas[i], c.alphas_cumprod[i]
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Schedule(args) => schedule(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
