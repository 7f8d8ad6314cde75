//! `iddpm config`: the model settings of a released checkpoint, of a file, or written into a
//! file that lacks them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use iddpm::settings::{ModelSettings, SETTINGS_KEY, VERSION_KEY, released_config};

/// Arguments of `iddpm config`.
#[derive(Args)]
pub struct ConfigArgs {
    /// A released model's name (e.g. cifar10_uncond_50M_500K): print its settings as JSON,
    /// for `--config` when sampling from its `.pt` file.
    pub name: Option<String>,
    /// A checkpoint: print the settings it carries.
    #[arg(long = "model_path", alias = "model-path")]
    pub model_path: Option<PathBuf>,
    /// With --model_path (an iddpm .safetensors file): write these settings into it, from a
    /// JSON file or a released model's name. The tensors' bytes stay as they are.
    #[arg(long = "embed")]
    pub embed: Option<String>,
    /// Write the JSON here (atomically) instead of printing it.
    #[arg(long = "output")]
    pub output: Option<PathBuf>,
}

/// Prints or writes settings, or embeds them into a checkpoint.
pub fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let settings = match (&args.name, &args.model_path, &args.embed) {
        (Some(name), None, None) => released_config(name)?,
        (None, Some(path), None) => ModelSettings::from_checkpoint(path)?.with_context(|| {
            format!(
                "{} carries no settings (a reference .pt file, or written before iddpm stored \
                 them): pass the model flags, or --config, when loading it",
                path.display()
            )
        })?,
        (None, Some(path), Some(source)) => return embed(path, source),
        _ => bail!(
            "give a released model's name, or --model_path FILE (with --embed SETTINGS to write \
             settings into it)"
        ),
    };
    let json = settings.to_pretty_json() + "\n";
    match &args.output {
        Some(path) => {
            iddpm::checkpoint::write_atomic(path, json.as_bytes())?;
            println!("wrote {}", path.display());
        }
        None => print!("{json}"),
    }
    Ok(())
}

/// Writes the settings of `source` (a JSON file, else a released model's name) into the
/// safetensors file at `path`, beside its other metadata.
fn embed(path: &std::path::Path, source: &str) -> anyhow::Result<()> {
    let complete = |s: ModelSettings| ModelSettings::of(&s.apply_to(&iddpm::ModelSpec::default()));
    let settings = if std::path::Path::new(source).is_file() {
        complete(ModelSettings::from_json_file(source.as_ref())?)
    } else {
        released_config(source)?
    };
    let mut meta = iddpm::checkpoint::read_safetensors_metadata(path)?.with_context(|| {
        format!(
            "{}: a PyTorch archive has no metadata; only .safetensors files carry settings",
            path.display()
        )
    })?;
    meta.insert(SETTINGS_KEY.into(), settings.to_json());
    meta.insert(VERSION_KEY.into(), env!("CARGO_PKG_VERSION").into());
    let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    iddpm::checkpoint::replace_safetensors_metadata(path, &pairs)?;
    println!("wrote the settings into {}", path.display());
    Ok(())
}
