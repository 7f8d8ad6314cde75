//! The f16 torso of mixed-precision training: where f16 is used, what stays f32, and how close
//! it stays to the f32 network.

use burn::tensor::{DType, Device, Distribution, Tensor};
use iddpm_nn::{ModelFlags, ParamSlot, ParamVisitor, UNetModel, UNetTrace, VisitParams};

fn flags() -> ModelFlags {
    ModelFlags {
        image_size: 16,
        image_channels: 3,
        num_channels: 32,
        num_res_blocks: 1,
        num_heads: 2,
        learn_sigma: true,
        attention_resolutions: "8".into(),
        channel_mult: Some(vec![1, 2]),
        dropout: 0.0,
        ..ModelFlags::default()
    }
}

/// A network whose every parameter is random (the reference zero-initialises output layers,
/// which would hide differences).
fn random_model(device: &Device) -> UNetModel {
    struct Randomise;
    impl ParamVisitor for Randomise {
        fn visit(&mut self, _name: &str, _shape: &[usize], p: &mut dyn ParamSlot) {
            let current = p.flat();
            let n = current.dims()[0];
            let noise =
                Tensor::<1>::random([n], Distribution::Uniform(-0.2, 0.2), &current.device());
            p.set_flat(current + noise);
        }
    }
    let mut model = UNetModel::new(&flags().unet_config(false).unwrap(), device);
    model.visit_params("", &mut Randomise);
    model
}

fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>) {
    let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), device);
    let t = Tensor::<1>::from_floats([3.0, 900.0], device);
    (x, t)
}

fn max_abs(t: Tensor<4>) -> f32 {
    t.abs().max().into_scalar()
}

#[test]
fn f16_torso_is_f16_inside_and_f32_outside() {
    let device = Device::flex();
    let mut model = random_model(&device);
    let (x, t) = inputs(&device);
    let full = model.forward(x.clone(), t.clone(), None);
    model.set_torso_f16(true);
    assert!(model.torso_f16());
    let mut trace = UNetTrace::default();
    let mixed = model.forward_traced(x, t, None, Some(&mut trace));
    assert_eq!(mixed.dtype(), DType::F32, "the output layers run in f32");
    assert_eq!(
        trace.emb.unwrap().dtype(),
        DType::F32,
        "the embedding stays f32"
    );
    for h in trace.input_blocks.iter().chain(&trace.output_blocks) {
        assert_eq!(h.dtype(), DType::F16);
    }
    assert_eq!(trace.middle_block.unwrap().dtype(), DType::F16);
    // f16 has an 11-bit significand: the outputs differ, by about its resolution.
    let scale = max_abs(full.clone());
    let err = max_abs(mixed - full);
    eprintln!("f16 torso: max |output error| {err:.3e}, output scale {scale:.3e}");
    assert!(err > 0.0, "the torso really computed in f16");
    assert!(
        err < 1e-2 * scale,
        "f16 error {err} vs output scale {scale}"
    );
}

#[test]
fn gradients_reach_the_f32_parameters_through_the_casts() {
    let device = Device::flex().autodiff();
    let mut model = random_model(&device);
    let (x, t) = inputs(&device);
    let grads_of = |model: &mut UNetModel| {
        let (x, t) = (x.clone(), t.clone());
        let loss = model.forward(x, t, None).square().mean();
        let grads = loss.backward();
        let mut out = Vec::new();
        struct Collect<'a>(
            &'a burn::tensor::Gradients,
            &'a mut Vec<(String, Tensor<1>)>,
        );
        impl ParamVisitor for Collect<'_> {
            fn visit(&mut self, name: &str, _shape: &[usize], p: &mut dyn ParamSlot) {
                let g = p
                    .grad_flat(self.0)
                    .unwrap_or_else(|| panic!("{name} has no gradient"));
                self.1.push((name.to_string(), g));
            }
        }
        model.visit_params("", &mut Collect(&grads, &mut out));
        out
    };
    let full = grads_of(&mut model);
    model.set_torso_f16(true);
    let mixed = grads_of(&mut model);
    let mut worst = 0.0f32;
    for ((name, a), (_, b)) in full.iter().zip(&mixed) {
        assert_eq!(b.dtype(), DType::F32, "{name}: the master gradient is f32");
        let scale: f32 = a.clone().abs().max().into_scalar();
        let err: f32 = (a.clone() - b.clone()).abs().max().into_scalar();
        if scale > 1e-3 {
            worst = worst.max(err / scale);
        }
    }
    eprintln!("f16 torso: worst relative gradient error {worst:.3e}");
    assert!(worst > 0.0, "f16 was used in the backward pass");
    assert!(worst < 3e-2, "worst relative gradient error {worst}");
}
