//! Every released checkpoint's network builds from its flags with the reference's exact
//! state-dict names, shapes and parameter count (`released_configs.json`).

use std::path::PathBuf;

use burn::tensor::Device;
use iddpm_nn::{ModelFlags, UNetModel, param_names};
use serde_json::Value;

fn reference_dir() -> PathBuf {
    std::env::var("IDDPM_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference"))
}

fn flags(kw: &Value, super_res: bool) -> ModelFlags {
    let u = |k: &str| kw[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    ModelFlags {
        image_channels: 3,
        image_size: if super_res {
            u("large_size")
        } else {
            u("image_size")
        },
        num_channels: u("num_channels"),
        num_res_blocks: u("num_res_blocks"),
        num_heads: u("num_heads"),
        num_heads_upsample: kw["num_heads_upsample"].as_i64().unwrap(),
        attention_resolutions: kw["attention_resolutions"].as_str().unwrap().into(),
        dropout: kw["dropout"].as_f64().unwrap(),
        learn_sigma: kw["learn_sigma"].as_bool().unwrap(),
        class_cond: kw["class_cond"].as_bool().unwrap(),
        use_checkpoint: kw["use_checkpoint"].as_bool().unwrap(),
        use_scale_shift_norm: kw["use_scale_shift_norm"].as_bool().unwrap(),
        channel_mult: None,
    }
}

#[test]
fn released_networks_have_the_reference_names_and_shapes() {
    let path = reference_dir().join("released_configs.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let configs: Value = serde_json::from_str(&text).unwrap();
    let configs = configs.as_object().unwrap();
    assert!(
        configs.len() >= 5,
        "expected the released checkpoints, found {}",
        configs.len()
    );
    let device = Device::flex();
    for (name, entry) in configs {
        let super_res = entry["super_res"].as_bool().unwrap();
        let config = flags(&entry["kwargs"], super_res)
            .unet_config(super_res)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut model = UNetModel::new(&config, &device);
        let ours = param_names(&mut model);
        let want: Vec<(String, Vec<usize>)> = entry["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .collect();
        assert_eq!(ours.len(), want.len(), "{name}: number of tensors");
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "{name}: tensor {i}");
        }
        let count: usize = ours.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(
            count as u64,
            entry["num_params"].as_u64().unwrap(),
            "{name}: parameter count"
        );
        println!("{name}: {} tensors, {count} parameters match", ours.len());
    }
}
