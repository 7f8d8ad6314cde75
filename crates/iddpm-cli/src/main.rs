//! `iddpm`: train, sample and evaluate Improved DDPM models from the command line.
//!
//! A thin layer over the `iddpm` library: it parses the reference scripts' flags (underscores,
//! with kebab-case aliases, and `True`/`False` booleans) and hands the work to the library.

mod commands;
mod flags;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "iddpm", version, about = "Improved Denoising Diffusion Probabilistic Models", long_about = None)]
// As with the reference's argparse, a repeated flag takes its last value.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Draw samples from a model (the reference's image_sample.py).
    Sample(Box<commands::sample::SampleArgs>),
    /// Print the timesteps and noise levels of a (respaced) diffusion.
    Schedule(commands::schedule::ScheduleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Sample(args) => commands::sample::run(args),
        Command::Schedule(args) => commands::schedule::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
