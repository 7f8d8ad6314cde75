//! Labels and low-resolution inputs must suit the network, as the reference asserts.

use burn::tensor::Device;
use iddpm_nn::{ConditioningError, ModelFlags, UNetModel};

fn model(class_cond: bool, super_res: bool) -> UNetModel {
    model_with_channels(class_cond, super_res, 3)
}

fn model_with_channels(class_cond: bool, super_res: bool, image_channels: usize) -> UNetModel {
    let flags = ModelFlags {
        image_size: 32,
        num_channels: 32,
        num_res_blocks: 1,
        class_cond,
        image_channels,
        ..ModelFlags::default()
    };
    UNetModel::new(&flags.unet_config(super_res).unwrap(), &Device::flex())
}

#[test]
fn labels_are_required_exactly_by_class_conditional_models() {
    let conditional = model(true, false);
    assert_eq!(conditional.num_classes(), Some(1000));
    assert_eq!(
        conditional.check_conditioning(None, 3, None),
        Err(ConditioningError::MissingLabels { classes: 1000 })
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[0, 999]), 3, None),
        Ok(())
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[3, 1000]), 3, None),
        Err(ConditioningError::LabelOutOfRange {
            label: 1000,
            classes: 1000
        })
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[-1]), 3, None),
        Err(ConditioningError::LabelOutOfRange {
            label: -1,
            classes: 1000
        })
    );
    let plain = model(false, false);
    assert_eq!(
        plain.check_conditioning(Some(&[1]), 3, None),
        Err(ConditioningError::UnexpectedLabels)
    );
    assert_eq!(plain.check_conditioning(None, 3, None), Ok(()));
}

#[test]
fn low_resolution_inputs_are_required_exactly_by_super_resolution_models() {
    let sr = model(false, true);
    assert_eq!(
        sr.check_conditioning(None, 3, None),
        Err(ConditioningError::MissingLowRes)
    );
    assert_eq!(sr.check_conditioning(None, 3, Some(3)), Ok(()));
    assert_eq!(
        model(false, false).check_conditioning(None, 3, Some(3)),
        Err(ConditioningError::UnexpectedLowRes)
    );
}

/// A one-channel super-resolution network takes 2 input channels; this used to be refused as
/// "not a super-resolution model", because the test was "6 input channels".
#[test]
fn super_resolution_works_for_any_channel_count() {
    let grey_sr = model_with_channels(false, true, 1);
    assert_eq!(grey_sr.check_conditioning(None, 1, Some(1)), Ok(()));
    assert_eq!(
        grey_sr.check_conditioning(None, 1, None),
        Err(ConditioningError::MissingLowRes)
    );
    let grey = model_with_channels(false, false, 1);
    assert_eq!(grey.check_conditioning(None, 1, None), Ok(()));
    assert_eq!(
        grey.check_conditioning(None, 1, Some(1)),
        Err(ConditioningError::UnexpectedLowRes)
    );
    let err = model(false, true).check_conditioning(None, 1, Some(1));
    assert_eq!(
        err,
        Err(ConditioningError::ChannelMismatch {
            expected: 6,
            image: 1,
            low_res: Some(1)
        })
    );
    let message = err.unwrap_err().to_string();
    assert!(
        message.contains("6 input channels") && message.contains("images have 1"),
        "{message}"
    );
}

#[test]
#[should_panic(expected = "class-conditional (1000 classes) but no class labels")]
fn the_forward_pass_refuses_a_missing_label_as_the_reference_asserts() {
    use burn::tensor::Tensor;
    let device = Device::flex();
    let x = Tensor::<4>::zeros([1, 3, 32, 32], &device);
    let t = Tensor::<1>::zeros([1], &device);
    model(true, false).forward(x, t, None);
}
