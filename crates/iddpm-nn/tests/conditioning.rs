//! Labels and low-resolution inputs must suit the network, as the reference asserts.

use burn::tensor::Device;
use iddpm_nn::{ConditioningError, ModelFlags, UNetModel};

fn model(class_cond: bool, super_res: bool) -> UNetModel {
    let flags = ModelFlags {
        image_size: 32,
        num_channels: 32,
        num_res_blocks: 1,
        class_cond,
        ..ModelFlags::default()
    };
    UNetModel::new(&flags.unet_config(super_res).unwrap(), &Device::flex())
}

#[test]
fn labels_are_required_exactly_by_class_conditional_models() {
    let conditional = model(true, false);
    assert_eq!(conditional.num_classes(), Some(1000));
    assert_eq!(
        conditional.check_conditioning(None, false),
        Err(ConditioningError::MissingLabels { classes: 1000 })
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[0, 999]), false),
        Ok(())
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[3, 1000]), false),
        Err(ConditioningError::LabelOutOfRange {
            label: 1000,
            classes: 1000
        })
    );
    assert_eq!(
        conditional.check_conditioning(Some(&[-1]), false),
        Err(ConditioningError::LabelOutOfRange {
            label: -1,
            classes: 1000
        })
    );
    let plain = model(false, false);
    assert_eq!(
        plain.check_conditioning(Some(&[1]), false),
        Err(ConditioningError::UnexpectedLabels)
    );
    assert_eq!(plain.check_conditioning(None, false), Ok(()));
}

#[test]
fn low_resolution_inputs_are_required_exactly_by_super_resolution_models() {
    let sr = model(false, true);
    assert!(sr.is_super_res());
    assert_eq!(
        sr.check_conditioning(None, false),
        Err(ConditioningError::MissingLowRes)
    );
    assert_eq!(sr.check_conditioning(None, true), Ok(()));
    assert_eq!(
        model(false, false).check_conditioning(None, true),
        Err(ConditioningError::UnexpectedLowRes)
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
