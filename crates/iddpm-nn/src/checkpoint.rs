//! Loading and saving network weights by the reference's state-dict names.

use std::fmt;
use std::path::Path;

use iddpm_checkpoint::{CheckpointError, StateDict, load_state_dict, write_safetensors};

use crate::params::{ParamSlot, ParamVisitor, VisitParams};

/// Why a checkpoint does not fit the network built from the flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mismatch {
    /// The checkpoint file, when known.
    pub file: Option<String>,
    /// Parameters the network has but the checkpoint lacks.
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the network has no place for.
    pub unexpected: Vec<String>,
    /// `(name, network shape, checkpoint shape)`.
    pub shape_mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Flags that would make the network fit, where they can be told.
    pub hints: Vec<String>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatches.is_empty()
    }
}

fn list(f: &mut fmt::Formatter<'_>, title: &str, items: &[String]) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "\n  {title} ({}): ", items.len())?;
    let shown: Vec<&str> = items.iter().take(8).map(String::as_str).collect();
    write!(f, "{}", shown.join(", "))?;
    if items.len() > 8 {
        write!(f, ", ...")?;
    }
    Ok(())
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{file} does not fit the network built from the flags:")?,
            None => write!(
                f,
                "the checkpoint does not fit the network built from the flags:"
            )?,
        }
        list(f, "missing keys", &self.missing)?;
        list(f, "unexpected keys", &self.unexpected)?;
        let shapes: Vec<String> = self
            .shape_mismatches
            .iter()
            .map(|(n, want, got)| format!("{n} (network {want:?}, checkpoint {got:?})"))
            .collect();
        list(f, "shape mismatches", &shapes)?;
        for hint in &self.hints {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// Errors of [`load_weights`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read as a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The file was read but does not fit the network.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// Copies every tensor of `dict` into `model`, matching by name. Nothing is changed unless the
/// whole checkpoint fits; otherwise the error lists every difference.
pub fn apply_state_dict<M: VisitParams + ?Sized>(
    model: &mut M,
    dict: &StateDict,
) -> Result<(), Mismatch> {
    // First pass: compare only.
    struct Compare<'a> {
        dict: &'a StateDict,
        seen: Vec<String>,
        report: Mismatch,
    }
    impl ParamVisitor for Compare<'_> {
        fn visit(&mut self, name: &str, shape: &[usize], _p: &mut dyn ParamSlot) {
            self.seen.push(name.to_string());
            match self.dict.get(name) {
                None => self.report.missing.push(name.to_string()),
                Some(e) if e.shape != shape => self.report.shape_mismatches.push((
                    name.to_string(),
                    shape.to_vec(),
                    e.shape.clone(),
                )),
                Some(_) => {}
            }
        }
    }
    let mut cmp = Compare {
        dict,
        seen: Vec::new(),
        report: Mismatch::default(),
    };
    model.visit_params("", &mut cmp);
    let seen: std::collections::HashSet<&str> = cmp.seen.iter().map(String::as_str).collect();
    cmp.report.unexpected = dict
        .names()
        .filter(|n| !seen.contains(n))
        .map(str::to_string)
        .collect();
    if !cmp.report.is_empty() {
        let mut report = cmp.report;
        report.hints = hints(&report, dict);
        return Err(report);
    }
    // Second pass: copy.
    struct Copy<'a>(&'a StateDict);
    impl ParamVisitor for Copy<'_> {
        fn visit(&mut self, name: &str, _shape: &[usize], p: &mut dyn ParamSlot) {
            let e = self.0.get(name).expect("checked above");
            p.set(e.values.clone());
        }
    }
    model.visit_params("", &mut Copy(dict));
    Ok(())
}

fn shape_of<'a>(report: &'a Mismatch, name: &str) -> Option<(&'a [usize], &'a [usize])> {
    report
        .shape_mismatches
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, want, got)| (want.as_slice(), got.as_slice()))
}

fn hints(report: &Mismatch, dict: &StateDict) -> Vec<String> {
    let mut hints = Vec::new();
    // Shapes come from the file, so any rank is possible: read them with `get`, never index.
    if let Some((want, got)) = shape_of(report, "out.2.weight")
        && want.first() != got.first()
    {
        match got.first() {
            Some(6) => {
                hints.push("the checkpoint predicts variances: pass --learn_sigma True".into())
            }
            Some(3) => {
                hints.push("the checkpoint has fixed variances: pass --learn_sigma False".into())
            }
            _ => {}
        }
    }
    if report.unexpected.iter().any(|n| n.starts_with("label_emb")) {
        hints.push("the checkpoint is class-conditional: pass --class_cond True".into());
    }
    if report.missing.iter().any(|n| n.starts_with("label_emb")) {
        hints.push("the checkpoint is not class-conditional: pass --class_cond False".into());
    }
    if let Some(e) = dict.get("input_blocks.0.0.weight")
        && let Some((want, _)) = shape_of(report, "input_blocks.0.0.weight")
    {
        if let Some(&channels) = e.shape.first()
            && Some(&channels) != want.first()
        {
            hints.push(format!(
                "the checkpoint has {channels} base channels: pass --num_channels {channels}"
            ));
        }
        if e.shape.get(1) == Some(&6) && want.get(1) == Some(&3) {
            hints.push("the checkpoint is a super-resolution model: use super_res_sample with --large_size/--small_size".into());
        }
    }
    let blocks = |names: &mut dyn Iterator<Item = &str>| {
        names
            .filter_map(|n| n.strip_prefix("input_blocks."))
            .filter_map(|n| n.split('.').next()?.parse::<usize>().ok())
            .max()
    };
    let in_dict = blocks(&mut dict.names());
    if report
        .missing
        .iter()
        .chain(&report.unexpected)
        .any(|n| n.starts_with("input_blocks.") || n.starts_with("output_blocks."))
        && let Some(n) = in_dict
    {
        hints.push(format!(
                "the checkpoint has {} input blocks: check --num_res_blocks, --image_size / --channel_mult and --attention_resolutions",
                n + 1
            ));
    }
    hints
}

/// The network's weights as a state dict with the reference's names and shapes.
pub fn state_dict_of<M: VisitParams + ?Sized>(model: &mut M) -> StateDict {
    struct Collect(StateDict);
    impl ParamVisitor for Collect {
        fn visit(&mut self, name: &str, shape: &[usize], p: &mut dyn ParamSlot) {
            let values = p
                .to_data()
                .try_into_vec::<f32>()
                .expect("parameters are f32");
            self.0.insert(name, shape.to_vec(), values);
        }
    }
    let mut c = Collect(StateDict::new());
    model.visit_params("", &mut c);
    c.0
}

/// Loads weights from a `.pt` or `.safetensors` file into `model`.
pub fn load_weights<M: VisitParams + ?Sized>(model: &mut M, path: &Path) -> Result<(), LoadError> {
    let dict = load_state_dict(path)?;
    apply_state_dict(model, &dict).map_err(|mut m| {
        m.file = Some(path.display().to_string());
        LoadError::Mismatch(m)
    })
}

/// Saves the weights of `model` as F32 safetensors (atomically), loadable by the reference with
/// `safetensors.torch.load_file` + `load_state_dict`.
pub fn save_weights<M: VisitParams + ?Sized>(
    model: &mut M,
    path: &Path,
) -> Result<(), CheckpointError> {
    write_safetensors(
        path,
        &state_dict_of(model),
        &[("format", "pt"), ("producer", "iddpm")],
    )?;
    Ok(())
}
