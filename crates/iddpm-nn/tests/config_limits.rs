//! Absurd sizes are refused by name before any weight is allocated.

use iddpm_nn::{MAX_IMAGE_SIZE, ModelFlags};

fn error(flags: ModelFlags) -> String {
    flags.unet_config(false).unwrap_err().to_string()
}

#[test]
fn absurd_sizes_are_refused_by_flag() {
    let base = ModelFlags {
        image_size: 32,
        ..ModelFlags::default()
    };
    let wide = ModelFlags {
        num_channels: 1 << 20,
        ..base.clone()
    };
    assert!(error(wide).starts_with("--num_channels:"));
    let deep = ModelFlags {
        num_res_blocks: 1000,
        ..base.clone()
    };
    assert!(error(deep).starts_with("--num_res_blocks:"));
    let levels = ModelFlags {
        channel_mult: Some(vec![1; 70]),
        ..base.clone()
    };
    assert!(error(levels).starts_with("--channel_mult:"));
    let huge = ModelFlags {
        image_size: 2 * MAX_IMAGE_SIZE,
        channel_mult: Some(vec![1, 2]),
        ..base.clone()
    };
    assert!(error(huge).starts_with("--image_size:"));
    assert!(base.unet_config(false).is_ok());
}
