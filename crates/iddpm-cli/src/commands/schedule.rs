//! `iddpm schedule`: the timesteps and noise levels of a (respaced) diffusion.

use clap::Args;

use crate::flags::DiffusionFlags;

/// Arguments of `iddpm schedule`.
#[derive(Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    diffusion: DiffusionFlags,
}

/// Prints one line per kept timestep.
pub fn run(args: &ScheduleArgs) -> anyhow::Result<()> {
    let config = args.diffusion.config(false);
    let diffusion = config.build()?;
    println!(
        "{} schedule: {} of {} steps",
        config.noise_schedule,
        diffusion.num_timesteps(),
        diffusion.original_num_steps(),
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
