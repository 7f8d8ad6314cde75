//! A model's settings as a flat JSON object keyed by the reference's flag names, written into
//! the safetensors metadata of every model and EMA file iddpm saves (key [`SETTINGS_KEY`]),
//! so that a checkpoint samples, evaluates and resumes without its flags typed again.
//!
//! The same object is what `--config FILE.json` reads, and what [`released_config`] gives for
//! the reference's released checkpoints, whose `.pt` files carry nothing. Settings read from
//! a file are treated as hostile: unknown keys, wrong types and absurd values are refused with
//! the key named.

use std::path::Path;

use iddpm_checkpoint::settings_json::{parse_settings, setting_keys};
use iddpm_diffusion::DiffusionConfig;
use iddpm_nn::ModelFlags;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model_and_diffusion::ModelSpec;

/// The safetensors metadata key of the settings.
pub const SETTINGS_KEY: &str = "iddpm_settings";
/// The safetensors metadata key of the iddpm version that wrote the file.
pub const VERSION_KEY: &str = "iddpm_version";
pub use iddpm_checkpoint::settings_json::MAX_SETTINGS_BYTES;

/// A validated set of settings: any subset of the keys, each with a value of its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    values: Map<String, Value>,
}

fn comma_list(values: impl IntoIterator<Item = usize>) -> String {
    values
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl ModelSettings {
    /// All the settings of `spec`.
    pub fn of(spec: &ModelSpec) -> Self {
        let (m, d) = (&spec.model, &spec.diffusion);
        let attention: Vec<usize> = m
            .attention_resolutions
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        let values = [
            ("image_size", Value::from(m.image_size)),
            ("image_channels", Value::from(m.image_channels)),
            ("num_channels", Value::from(m.num_channels)),
            ("num_res_blocks", Value::from(m.num_res_blocks)),
            ("num_heads", Value::from(m.num_heads)),
            ("num_heads_upsample", Value::from(m.num_heads_upsample)),
            ("attention_resolutions", Value::from(comma_list(attention))),
            (
                "channel_mult",
                Value::from(comma_list(m.channel_mult.clone().unwrap_or_default())),
            ),
            ("dropout", Value::from(m.dropout)),
            ("learn_sigma", Value::from(m.learn_sigma)),
            ("class_cond", Value::from(m.class_cond)),
            ("use_scale_shift_norm", Value::from(m.use_scale_shift_norm)),
            ("super_res", Value::from(spec.super_res)),
            ("diffusion_steps", Value::from(d.diffusion_steps)),
            ("noise_schedule", Value::from(d.noise_schedule.to_string())),
            ("sigma_small", Value::from(d.sigma_small)),
            ("use_kl", Value::from(d.use_kl)),
            ("predict_xstart", Value::from(d.predict_xstart)),
            ("rescale_timesteps", Value::from(d.rescale_timesteps)),
            (
                "rescale_learned_sigmas",
                Value::from(d.rescale_learned_sigmas),
            ),
        ];
        Self {
            values: values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// Parses and checks settings text (a JSON object of some of the keys); `source` names
    /// where it came from in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        parse_settings(text)
            .map(|values| Self { values })
            .map_err(|m| Error::Invalid(format!("{source}: {m}")))
    }

    /// The settings stored in a checkpoint's metadata, if it has any (a reference `.pt` file,
    /// or a safetensors file from before iddpm wrote them, has none).
    pub fn from_checkpoint(path: &Path) -> Result<Option<Self>> {
        let Some(meta) = iddpm_checkpoint::read_safetensors_metadata(path)? else {
            return Ok(None);
        };
        meta.get(SETTINGS_KEY)
            .map(|text| {
                Self::parse(
                    text,
                    &format!("{} (metadata {SETTINGS_KEY})", path.display()),
                )
            })
            .transpose()
    }

    /// Reads a `--config` file.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_SETTINGS_BYTES as u64 {
            return Err(Error::file(
                path,
                format!("{len} bytes; a settings file has at most {MAX_SETTINGS_BYTES}"),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The settings as compact JSON (for metadata).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.values).expect("settings serialise")
    }

    /// The settings as indented JSON (for files people read).
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(&self.values).expect("settings serialise")
    }

    /// The value of `key`, if these settings have it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// The keys these settings have, in the order they are written.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        setting_keys().filter(|k| self.values.contains_key(*k))
    }

    /// `spec` with every setting of these settings applied.
    pub fn apply_to(&self, spec: &ModelSpec) -> ModelSpec {
        let mut out = spec.clone();
        for (key, value) in &self.values {
            apply(&mut out, key, value);
        }
        out.diffusion.learn_sigma = out.model.learn_sigma;
        out
    }

    /// `flags` (what the command line says, `given(key)` telling whether the user typed that
    /// key's flag) reconciled with the settings of `sources` (a checkpoint's, a `--config`
    /// file's, each with a name for errors): every setting comes from a source when one has
    /// it, and must then agree with a typed flag and with the other sources.
    pub fn reconcile(
        flags: &ModelSpec,
        given: &dyn Fn(&str) -> bool,
        sources: &[(String, ModelSettings)],
    ) -> Result<ModelSpec> {
        let typed = Self::of(flags);
        let mut merged = Map::new();
        let mut origin: Map<String, Value> = Map::new();
        for (name, settings) in sources {
            for key in settings.keys() {
                let value = &settings.values[key];
                if given(key) && typed.values.get(key) != Some(value) {
                    return Err(Error::Invalid(format!(
                        "--{key} {} on the command line, but {name} says {key} = {}; drop the \
                         flag or give the same value",
                        show(&typed.values[key]),
                        show(value)
                    )));
                }
                if let Some(previous) = merged.get(key).filter(|p| *p != value) {
                    return Err(Error::Invalid(format!(
                        "{} says {key} = {} but {name} says {}",
                        origin[key].as_str().unwrap_or("?"),
                        show(previous),
                        show(value)
                    )));
                }
                merged.insert(key.to_string(), value.clone());
                origin.insert(key.to_string(), Value::from(name.clone()));
            }
        }
        Ok(Self { values: merged }.apply_to(flags))
    }
}

/// A value as a flag would be typed.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// Sets one checked setting on `spec`.
fn apply(spec: &mut ModelSpec, key: &str, value: &Value) {
    let (m, d): (&mut ModelFlags, &mut DiffusionConfig) = (&mut spec.model, &mut spec.diffusion);
    let count = || value.as_u64().unwrap_or(0) as usize;
    let flag = || value.as_bool().unwrap_or(false);
    let text = || value.as_str().unwrap_or("").to_string();
    match key {
        "image_size" => m.image_size = count(),
        "image_channels" => m.image_channels = count(),
        "num_channels" => m.num_channels = count(),
        "num_res_blocks" => m.num_res_blocks = count(),
        "num_heads" => m.num_heads = count(),
        "num_heads_upsample" => m.num_heads_upsample = value.as_i64().unwrap_or(-1),
        "attention_resolutions" => m.attention_resolutions = text(),
        "channel_mult" => {
            let mult: Vec<usize> = text().split(',').filter_map(|v| v.parse().ok()).collect();
            m.channel_mult = (!mult.is_empty()).then_some(mult);
        }
        "dropout" => m.dropout = value.as_f64().unwrap_or(0.0),
        "learn_sigma" => m.learn_sigma = flag(),
        "class_cond" => m.class_cond = flag(),
        "use_scale_shift_norm" => m.use_scale_shift_norm = flag(),
        "super_res" => spec.super_res = flag(),
        "diffusion_steps" => d.diffusion_steps = count(),
        "noise_schedule" => d.noise_schedule = text().parse().unwrap_or(d.noise_schedule),
        "sigma_small" => d.sigma_small = flag(),
        "use_kl" => d.use_kl = flag(),
        "predict_xstart" => d.predict_xstart = flag(),
        "rescale_timesteps" => d.rescale_timesteps = flag(),
        "rescale_learned_sigmas" => d.rescale_learned_sigmas = flag(),
        _ => {}
    }
}

/// The reference's released checkpoints (improved-diffusion's README, "Models and
/// Hyperparameters") and iddpm's shipped model, by name, with the flags that differ from the
/// reference's defaults. The 256×256 upsampling model is a super-resolution model; its
/// `super_res_sample` flags are not listed here.
pub const RELEASED: [(&str, &str); 8] = [
    (
        "cifar10_uncond_50M_500K",
        r#"{"image_size":32,"num_channels":128,"num_res_blocks":3,"learn_sigma":true,"dropout":0.3,"diffusion_steps":4000,"noise_schedule":"cosine"}"#,
    ),
    (
        "cifar10_uncond_vlb_50M_500K",
        r#"{"image_size":32,"num_channels":128,"num_res_blocks":3,"learn_sigma":true,"dropout":0.3,"diffusion_steps":4000,"noise_schedule":"cosine","use_kl":true}"#,
    ),
    (
        "imagenet64_uncond_100M_1500K",
        r#"{"image_size":64,"num_channels":128,"num_res_blocks":3,"learn_sigma":true,"diffusion_steps":4000,"noise_schedule":"cosine"}"#,
    ),
    (
        "imagenet64_uncond_vlb_100M_1500K",
        r#"{"image_size":64,"num_channels":128,"num_res_blocks":3,"learn_sigma":true,"diffusion_steps":4000,"noise_schedule":"cosine","use_kl":true}"#,
    ),
    (
        "imagenet64_cond_270M_250K",
        r#"{"image_size":64,"num_channels":192,"num_res_blocks":3,"learn_sigma":true,"class_cond":true,"diffusion_steps":4000,"noise_schedule":"cosine","rescale_learned_sigmas":false,"rescale_timesteps":false}"#,
    ),
    (
        "lsun_uncond_100M_1200K_bs128",
        r#"{"image_size":256,"num_channels":128,"num_res_blocks":2,"num_heads":1,"learn_sigma":true,"use_scale_shift_norm":false,"attention_resolutions":"16","diffusion_steps":1000,"noise_schedule":"linear","rescale_learned_sigmas":false,"rescale_timesteps":false}"#,
    ),
    (
        "lsun_uncond_100M_2400K_bs64",
        r#"{"image_size":256,"num_channels":128,"num_res_blocks":2,"num_heads":1,"learn_sigma":true,"use_scale_shift_norm":false,"attention_resolutions":"16","diffusion_steps":1000,"noise_schedule":"linear","rescale_learned_sigmas":false,"rescale_timesteps":false}"#,
    ),
    (
        "fashion_mnist_32",
        r#"{"image_size":32,"num_channels":64,"channel_mult":"1,1,1","num_res_blocks":1,"attention_resolutions":"8","num_heads":2,"dropout":0.0,"learn_sigma":true,"diffusion_steps":100,"noise_schedule":"cosine"}"#,
    ),
];

/// The complete settings of a released checkpoint by name (see [`RELEASED`]): the reference's
/// defaults with that model's flags applied.
pub fn released_config(name: &str) -> Result<ModelSettings> {
    let name = name
        .trim_end_matches(".pt")
        .trim_end_matches(".safetensors");
    let (_, flags) = RELEASED.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        Error::Invalid(format!(
            "no released model is called {name:?}; known: {}",
            RELEASED.map(|(n, _)| n).join(", ")
        ))
    })?;
    let overrides = ModelSettings::parse(flags, name)?;
    Ok(ModelSettings::of(
        &overrides.apply_to(&ModelSpec::default()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_json() {
        let spec = released_config("cifar10_uncond_50M_500K")
            .unwrap()
            .apply_to(&ModelSpec::default());
        assert_eq!(spec.model.num_res_blocks, 3);
        assert_eq!(spec.model.dropout, 0.3);
        assert!(spec.diffusion.learn_sigma && spec.model.learn_sigma);
        assert_eq!(spec.diffusion.diffusion_steps, 4000);
        let settings = ModelSettings::of(&spec);
        let back = ModelSettings::parse(&settings.to_json(), "test").unwrap();
        assert_eq!(back, settings);
        assert_eq!(back.apply_to(&ModelSpec::default()), spec);
    }

    #[test]
    fn hostile_settings_are_refused_with_the_key_named() {
        let cases = [
            (r#"{"image_size": "32"}"#, "image_size"),
            (r#"{"num_channels": 100000000}"#, "num_channels"),
            (r#"{"dropout": 1.5}"#, "dropout"),
            (r#"{"learn_sigma": 1}"#, "learn_sigma"),
            (r#"{"noise_schedule": "quadratic"}"#, "noise_schedule"),
            (r#"{"channel_mult": "1,x"}"#, "channel_mult"),
            (r#"{"evil": true}"#, "unknown setting \"evil\""),
            (r#"[1, 2]"#, "JSON object"),
            (r#"{"image_size": 32"#, "not JSON"),
        ];
        for (text, named) in cases {
            let err = ModelSettings::parse(text, "f.safetensors")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(named) && err.contains("f.safetensors"),
                "{text}: {err}"
            );
        }
        let huge = format!("{{\"image_size\": 32{}}}", " ".repeat(MAX_SETTINGS_BYTES));
        assert!(
            ModelSettings::parse(&huge, "f")
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }

    #[test]
    fn a_typed_flag_must_agree_with_the_file() {
        let file = released_config("fashion_mnist_32").unwrap();
        let mut flags = ModelSpec::default();
        // Untyped flags take the file's values.
        let spec = ModelSettings::reconcile(
            &flags,
            &|_| false,
            &[("m.safetensors".into(), file.clone())],
        )
        .unwrap();
        assert_eq!(spec.model.num_channels, 64);
        assert_eq!(spec.model.channel_mult, Some(vec![1, 1, 1]));
        // A typed flag that agrees is fine; one that disagrees names both values.
        flags.model.num_channels = 64;
        let given = |k: &str| k == "num_channels";
        assert!(ModelSettings::reconcile(&flags, &given, &[("m".into(), file.clone())]).is_ok());
        flags.model.num_channels = 128;
        let err = ModelSettings::reconcile(&flags, &given, &[("m.safetensors".into(), file)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--num_channels 128") && err.contains("num_channels = 64"),
            "{err}"
        );
    }
}
