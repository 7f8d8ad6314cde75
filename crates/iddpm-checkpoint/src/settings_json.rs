//! The JSON form of a model's settings: a flat object keyed by the reference's flag names,
//! which iddpm writes into checkpoint metadata (`iddpm_settings`) and reads from `--config`
//! files. This module checks such text, which may come from a stranger: unknown keys, wrong
//! types and absurd values are refused with the key named. (Turning settings into a model is
//! the `iddpm` crate's `settings` module.)

use serde_json::{Map, Value};

/// The longest settings text accepted (a complete one is under 1 KiB).
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// What one settings key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number in `1..=max`.
    Count(u64),
    /// `num_heads_upsample`: −1 or a head count.
    Heads,
    /// A probability in [0, 1).
    Probability,
    /// true or false.
    Flag,
    /// A comma list of whole numbers ("16,8"; "" for none).
    List,
    /// `noise_schedule`: "linear" or "cosine".
    Schedule,
}

/// Every key, in the order they are written. `use_checkpoint`, `timestep_respacing` and
/// `lambda_min_clipped` are left out: they choose how a model runs, not what it is.
pub const SETTING_KEYS: [(&str, Kind); 20] = [
    ("image_size", Kind::Count(4096)),
    ("image_channels", Kind::Count(64)),
    ("num_channels", Kind::Count(4096)),
    ("num_res_blocks", Kind::Count(64)),
    ("num_heads", Kind::Count(1024)),
    ("num_heads_upsample", Kind::Heads),
    ("attention_resolutions", Kind::List),
    ("channel_mult", Kind::List),
    ("dropout", Kind::Probability),
    ("learn_sigma", Kind::Flag),
    ("class_cond", Kind::Flag),
    ("use_scale_shift_norm", Kind::Flag),
    ("super_res", Kind::Flag),
    ("diffusion_steps", Kind::Count(1_000_000)),
    ("noise_schedule", Kind::Schedule),
    ("sigma_small", Kind::Flag),
    ("use_kl", Kind::Flag),
    ("predict_xstart", Kind::Flag),
    ("rescale_timesteps", Kind::Flag),
    ("rescale_learned_sigmas", Kind::Flag),
];

/// The keys, in the order they are written.
pub fn setting_keys() -> impl Iterator<Item = &'static str> {
    SETTING_KEYS.iter().map(|(k, _)| *k)
}

fn comma_list(values: impl IntoIterator<Item = usize>) -> String {
    values
        .into_iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses and checks settings text: a JSON object of some of the keys, each value of its
/// kind, normalised (lists without spaces, schedule names checked). The error says what is
/// wrong, naming the key.
pub fn parse_settings(text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(format!(
            "the settings take {} bytes; at most {MAX_SETTINGS_BYTES} are read",
            text.len()
        ));
    }
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("the settings are not JSON ({e})"))?;
    let Value::Object(object) = json else {
        return Err("the settings must be a JSON object".into());
    };
    let mut values = Map::new();
    for (key, value) in object {
        let kind = SETTING_KEYS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                format!(
                    "unknown setting {key:?}; the settings are {}",
                    setting_keys().collect::<Vec<_>>().join(", ")
                )
            })?;
        let value = checked(kind, &value).map_err(|m| format!("{key}: {m}"))?;
        values.insert(key, value);
    }
    Ok(values)
}

/// `value` checked against `kind` and normalised (lists without spaces, schedules known).
fn checked(kind: Kind, value: &Value) -> std::result::Result<Value, String> {
    match kind {
        Kind::Count(max) => match value.as_u64() {
            Some(n) if (1..=max).contains(&n) => Ok(Value::from(n)),
            _ => Err(format!("{value} is not a whole number in 1..={max}")),
        },
        Kind::Heads => match value.as_i64() {
            Some(n) if n == -1 || (1..=1024).contains(&n) => Ok(Value::from(n)),
            _ => Err(format!("{value} is not -1 or a head count in 1..=1024")),
        },
        Kind::Probability => match value.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Ok(Value::from(p)),
            _ => Err(format!("{value} is not a probability in [0, 1)")),
        },
        Kind::Flag => value
            .as_bool()
            .map(Value::from)
            .ok_or_else(|| format!("{value} is not true or false")),
        Kind::List => {
            let text = value
                .as_str()
                .ok_or_else(|| format!("{value} is not a comma list such as \"16,8\""))?;
            let items: std::result::Result<Vec<usize>, _> = text
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<usize>().ok().filter(|&n| n <= 4096).ok_or(v))
                .collect();
            match items {
                Ok(items) if items.len() <= 16 => Ok(Value::from(comma_list(items))),
                Ok(_) => Err("more than 16 entries".into()),
                Err(item) => Err(format!("{item:?} is not a whole number up to 4096")),
            }
        }
        Kind::Schedule => match value.as_str() {
            Some(name @ ("linear" | "cosine")) => Ok(Value::from(name)),
            _ => Err(format!("{value} is not \"linear\" or \"cosine\"")),
        },
    }
}
