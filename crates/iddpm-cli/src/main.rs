//! `iddpm`: train, sample and evaluate Improved DDPM models from the command line.
//!
//! A thin layer over the `iddpm` library: it parses the reference scripts' flags (underscores,
//! with kebab-case aliases, and `True`/`False` booleans) and hands the work to the library.

mod commands;
mod flags;
mod recorded_flags;
mod run_dir;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    /// Train a model (the reference's image_train.py).
    Train(Box<commands::train::TrainArgs>),
    /// Train a super-resolution model (--large_size, --small_size).
    #[command(name = "super_res_train", alias = "super-res-train")]
    SuperResTrain(Box<commands::train::TrainArgs>),
    /// Draw samples from a model (the reference's image_sample.py).
    Sample(Box<commands::sample::SampleArgs>),
    /// Upsample samples with a super-resolution model (the reference's super_res_sample.py).
    #[command(name = "super_res_sample", alias = "super-res-sample")]
    SuperResSample(Box<commands::super_res::SuperResArgs>),
    /// Bits/dim of a dataset under a model (the reference's image_nll.py).
    Nll(Box<commands::nll::NllArgs>),
    /// FID, precision and recall of samples against a reference batch.
    Eval(Box<commands::eval::EvalArgs>),
    /// Convert MNIST, Fashion-MNIST or CIFAR-10 files into an image folder.
    Data(commands::data::DataArgs),
    /// Turn a samples .npz into PNG files or a grid.
    Npz2png(commands::data::Npz2PngArgs),
    /// Print the timesteps and noise levels of a (respaced) diffusion.
    Schedule(commands::schedule::ScheduleArgs),
    /// Model settings: a released model's as JSON (for --config), a checkpoint's, or written
    /// into a checkpoint that lacks them (--embed).
    Config(commands::config::ConfigArgs),
    /// Check a device against the reference vectors (forward pass, losses, DDIM).
    #[command(name = "check_device", alias = "check-device")]
    CheckDevice(commands::check_device::CheckDeviceArgs),
    /// Draw CSV columns (progress.csv, study results) as a line chart PNG with labelled axes.
    Plot(commands::plot::PlotArgs),
}

/// The ids of the arguments typed on the command line (not left at their defaults).
fn typed_ids(matches: &clap::ArgMatches) -> std::collections::HashSet<String> {
    matches
        .ids()
        .filter(|id| {
            matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(|id| id.as_str().to_string())
        .collect()
}

fn main() -> ExitCode {
    iddpm::allocator::keep_freed_memory();
    let matches = match parse_command_line(std::env::args().collect()) {
        Ok(matches) => matches,
        Err(message) => {
            eprintln!("error: {}", error_chain(&message));
            return ExitCode::FAILURE;
        }
    };
    if let Some((_, sub)) = matches.subcommand() {
        flags::record_given(typed_ids(sub));
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match &cli.command {
        Command::Train(args) => commands::train::run(args, false),
        Command::SuperResTrain(args) => commands::train::run(args, true),
        Command::Sample(args) => commands::sample::run(args),
        Command::Nll(args) => commands::nll::run(args),
        Command::SuperResSample(args) => commands::super_res::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Npz2png(args) => commands::data::npz2png(args),
        Command::Schedule(args) => commands::schedule::run(args),
        Command::Config(args) => commands::config::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::CheckDevice(args) => commands::check_device::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {}", error_chain(&message));
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line; a resumed training run's recorded flags go before the typed ones
/// (see [`recorded_flags`]).
fn parse_command_line(argv: Vec<String>) -> anyhow::Result<clap::ArgMatches> {
    let matches = Cli::command().get_matches_from(&argv);
    let Some((command, sub)) = matches.subcommand() else {
        recorded_flags::record_command_line(argv);
        return Ok(matches);
    };
    let resume = sub
        .try_get_one::<String>("resume_checkpoint")
        .ok()
        .flatten()
        .map(String::as_str);
    match recorded_flags::continue_recorded_run(&argv, command, resume)? {
        Some((merged, file)) => {
            println!(
                "continuing with the flags recorded in {} (flags typed now take precedence)",
                file.display()
            );
            let matches = Cli::command().get_matches_from(&merged);
            recorded_flags::record_command_line(merged);
            Ok(matches)
        }
        None => {
            recorded_flags::record_command_line(argv);
            Ok(matches)
        }
    }
}

/// An error and its causes as "what failed: why: why", leaving out a cause whose text the
/// message before it already shows (library errors often print their source themselves).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}
