//! Properties of the diffusion process that hold whatever the reference vectors say.

use burn::tensor::{Device, Tensor};
use iddpm_diffusion::{
    BetaSchedule, Conditioning, DiffusionConfig, DiffusionError, GaussianDiffusion,
    LossSecondMomentResampler, LossType, ModelMeanType, ModelVarType, NoiseSource, PredictOptions,
    RecordedNoise, SampleRequest, Sampler, ScheduleSampler, SeededNoise, UniformSampler,
    named_beta_schedule, space_timesteps,
};
use rand::SeedableRng;

fn device() -> Device {
    Device::flex()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn diffusion(
    var: ModelVarType,
    mean: ModelMeanType,
    loss: LossType,
    steps: usize,
) -> GaussianDiffusion {
    GaussianDiffusion::new(
        BetaSchedule::Cosine.betas(steps).unwrap(),
        mean,
        var,
        loss,
        true,
    )
    .unwrap()
}

#[test]
fn respacing_with_all_steps_is_the_identity() {
    for schedule in [BetaSchedule::Linear, BetaSchedule::Cosine] {
        let base = schedule.betas(1000).unwrap();
        let keep = space_timesteps(1000, "1000").unwrap();
        assert_eq!(keep, (0..1000).collect::<Vec<_>>());
        let spaced = GaussianDiffusion::spaced(
            base.clone(),
            &keep,
            ModelMeanType::Epsilon,
            ModelVarType::FixedLarge,
            LossType::Mse,
            true,
        )
        .unwrap();
        assert_eq!(spaced.timestep_map(), keep.as_slice());
        for (a, b) in spaced.coefficients().betas.iter().zip(&base) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{schedule}: {a} vs {b}");
        }
    }
}

#[test]
fn respacing_keeps_alphas_cumprod_of_the_kept_steps() {
    let base = BetaSchedule::Linear.betas(1000).unwrap();
    let full = GaussianDiffusion::new(
        base.clone(),
        ModelMeanType::Epsilon,
        ModelVarType::FixedSmall,
        LossType::Mse,
        true,
    )
    .unwrap();
    let cfg = DiffusionConfig {
        timestep_respacing: "10,15,20".into(),
        ..Default::default()
    };
    let spaced = cfg.build().unwrap();
    assert_eq!(spaced.num_timesteps(), 45);
    for (i, &orig) in spaced.timestep_map().iter().enumerate() {
        let a = spaced.coefficients().alphas_cumprod[i];
        let b = full.coefficients().alphas_cumprod[orig];
        assert!(
            (a - b).abs() < 1e-12,
            "step {i} (original {orig}): {a} vs {b}"
        );
    }
}

#[test]
fn model_timesteps_are_mapped_and_rescaled() {
    let cfg = DiffusionConfig {
        diffusion_steps: 4000,
        timestep_respacing: "ddim4".into(),
        ..Default::default()
    };
    let d = cfg.build().unwrap();
    assert_eq!(d.timestep_map(), &[0, 1000, 2000, 3000]);
    let ts = values(d.model_timesteps(&[0, 1, 3], &device()));
    assert_eq!(ts, vec![0.0, 250.0, 750.0]);
    let cfg = DiffusionConfig {
        rescale_timesteps: false,
        ..cfg
    };
    let ts = values(cfg.build().unwrap().model_timesteps(&[3], &device()));
    assert_eq!(ts, vec![3000.0]);
}

#[test]
fn q_sample_has_the_forward_process_moments() {
    let d = diffusion(
        ModelVarType::FixedLarge,
        ModelMeanType::Epsilon,
        LossType::Mse,
        100,
    );
    let shape = [1, 1, 250, 250];
    let n = 250.0 * 250.0;
    let mut noise = SeededNoise::new(7);
    let x0 = Tensor::<4>::full(shape, 0.5, &device());
    for t in [0usize, 30, 99] {
        let eps = noise.sample(shape, &device()).unwrap();
        let xt = values(d.q_sample(x0.clone(), &[t], eps));
        let mean = xt.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = xt.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let ac = d.coefficients().alphas_cumprod[t];
        let want_mean = ac.sqrt() * 0.5;
        let want_var = 1.0 - ac;
        // Five standard errors of the sample mean and variance.
        assert!(
            (mean - want_mean).abs() < 5.0 * (want_var / n).sqrt(),
            "t={t}: mean {mean} vs {want_mean}"
        );
        assert!(
            (var - want_var).abs() < 5.0 * want_var * (2.0 / n).sqrt(),
            "t={t}: var {var} vs {want_var}"
        );
    }
}

#[test]
fn posterior_at_the_first_step_is_x0_itself() {
    let d = diffusion(
        ModelVarType::FixedSmall,
        ModelMeanType::Epsilon,
        LossType::Mse,
        1000,
    );
    let mut noise = SeededNoise::new(1);
    let x0 = noise
        .sample([2, 3, 4, 4], &device())
        .unwrap()
        .clamp(-1.0, 1.0);
    let xt = noise.sample([2, 3, 4, 4], &device()).unwrap();
    let (mean, var, _) = d.q_posterior_mean_variance(x0.clone(), xt, &[0, 0]);
    let diff = values(mean - x0)
        .into_iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        diff < 1e-6,
        "posterior mean at t=0 differs from x0 by {diff}"
    );
    assert_eq!(values(var), vec![0.0, 0.0]);
    // At t = 1 the posterior is tight: its variance is below β_1 and far below 1.
    let c = d.coefficients();
    assert!(c.posterior_variance[1] < c.betas[1] && c.posterior_variance[1] < 1e-4);
}

/// A model that knows the noise: ε̂ = ε, and a variance output of `v`.
fn oracle(noise: Tensor<4>, v: f32) -> impl Fn(Tensor<4>, Tensor<1>, &Conditioning) -> Tensor<4> {
    move |_x, _t, _c| {
        let var = noise.clone().zeros_like().add_scalar(v);
        Tensor::cat(vec![noise.clone(), var], 1)
    }
}

#[test]
fn training_loss_of_a_perfect_noise_predictor_is_its_vb_term() {
    let d = diffusion(
        ModelVarType::LearnedRange,
        ModelMeanType::Epsilon,
        LossType::RescaledMse,
        100,
    );
    let mut src = SeededNoise::new(3);
    let x0 = src
        .sample([2, 3, 8, 8], &device())
        .unwrap()
        .clamp(-1.0, 1.0);
    let eps = src.sample([2, 3, 8, 8], &device()).unwrap();
    let model = oracle(eps.clone(), 0.0);
    let losses = d
        .training_losses(&model, x0, &[5, 60], eps, &Conditioning::none())
        .unwrap();
    let mse = values(losses.mse.unwrap());
    assert!(mse.iter().all(|&m| m.abs() < 1e-10), "mse {mse:?}");
    let vb = values(losses.vb.unwrap());
    let loss = values(losses.loss);
    for i in 0..2 {
        assert!(vb[i] >= 0.0, "the KL term is non-negative: {vb:?}");
        assert!((loss[i] - vb[i]).abs() < 1e-6);
    }
}

#[test]
fn variational_bound_terms_are_non_negative() {
    let d = diffusion(
        ModelVarType::Learned,
        ModelMeanType::Epsilon,
        LossType::Kl,
        50,
    );
    let mut src = SeededNoise::new(11);
    let x0 = src
        .sample([3, 3, 6, 6], &device())
        .unwrap()
        .clamp(-1.0, 1.0);
    // A poor model: a constant noise guess and log-variance −3.
    let guess = src.sample([3, 3, 6, 6], &device()).unwrap();
    let model = oracle(guess, -3.0);
    let mut noise = SeededNoise::new(12);
    let terms = d
        .calc_bpd_loop(&model, x0.clone(), true, &Conditioning::none(), &mut noise)
        .unwrap();
    assert_eq!(terms.vb.dims(), [3, 50]);
    let vb = values(terms.vb.clone());
    assert!(vb.iter().all(|&v| v >= -1e-6), "negative vb term: {vb:?}");
    let prior = values(terms.prior_bpd.clone());
    assert!(
        prior.iter().all(|&v| (0.0..1e-3).contains(&v)),
        "prior {prior:?}"
    );
    let total = values(terms.total_bpd);
    let sums: Vec<f32> = vb
        .chunks(50)
        .zip(&prior)
        .map(|(row, p)| row.iter().sum::<f32>() + p)
        .collect();
    for (a, b) in total.iter().zip(&sums) {
        assert!((a - b).abs() < 1e-3 * b.abs().max(1.0));
    }
    assert!(
        noise.rng_mut().get_word_pos() > 0,
        "the loop drew its noise from the source"
    );
}

#[test]
fn last_ancestral_step_adds_no_noise() {
    let d = diffusion(
        ModelVarType::FixedLarge,
        ModelMeanType::Epsilon,
        LossType::Mse,
        10,
    );
    let mut src = SeededNoise::new(5);
    let x = src.sample([2, 3, 4, 4], &device()).unwrap();
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning| x.mul_scalar(0.1);
    let opts = PredictOptions::clipped();
    let p = d
        .p_mean_variance(&model, x.clone(), &[0, 0], opts, &Conditioning::none())
        .unwrap();
    let step = d
        .p_sample(&model, x, &[0, 0], opts, &Conditioning::none(), &mut src)
        .unwrap();
    assert_eq!(values(step.sample), values(p.mean));
}

#[test]
fn seeded_noise_replays_and_recorded_noise_runs_out_with_an_error() {
    let a = values(SeededNoise::new(9).sample([1, 2, 3, 4], &device()).unwrap());
    let b = values(SeededNoise::new(9).sample([1, 2, 3, 4], &device()).unwrap());
    assert_eq!(a, b);
    let c = values(
        SeededNoise::new(10)
            .sample([1, 2, 3, 4], &device())
            .unwrap(),
    );
    assert_ne!(a, c);
    let t = Tensor::<4>::zeros([1, 1, 2, 2], &device());
    let mut rec = RecordedNoise::new(vec![t]);
    assert!(
        rec.sample([1, 1, 2, 3], &device()).is_err(),
        "shape mismatch must be an error"
    );
    let mut rec = RecordedNoise::new(vec![Tensor::<4>::zeros([1, 1, 2, 2], &device())]);
    assert!(rec.sample([1, 1, 2, 2], &device()).is_ok());
    let err = rec.sample([1, 1, 2, 2], &device()).unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
}

#[test]
fn ddim_with_eta_zero_is_deterministic_and_inverts() {
    let d = DiffusionConfig {
        diffusion_steps: 100,
        noise_schedule: BetaSchedule::Cosine,
        timestep_respacing: "ddim10".into(),
        ..Default::default()
    }
    .build()
    .unwrap();
    // A linear "denoiser" keeps everything smooth so the DDIM ODE is well resolved.
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning| x.mul_scalar(0.3);
    let mut src = SeededNoise::new(2);
    let x_t = src.sample([1, 3, 4, 4], &device()).unwrap();
    let opts = PredictOptions::unclipped();
    let cond = Conditioning::none();
    let ddim = Sampler::ddim(0.0);
    let mut noise = SeededNoise::new(1);
    let request = SampleRequest::new(ddim, [1, 3, 4, 4], &cond, &mut noise, &device())
        .starting_from(x_t.clone())
        .with_options(opts);
    let a = d.sample_loop(&model, request).unwrap();
    let mut noise = SeededNoise::new(2);
    let request = SampleRequest::new(ddim, [1, 3, 4, 4], &cond, &mut noise, &device())
        .starting_from(x_t)
        .with_options(opts);
    let b = d.sample_loop(&model, request).unwrap();
    assert_eq!(
        values(a),
        values(b),
        "eta = 0 must not depend on the noise source"
    );
    // One reverse step followed by one forward step returns (nearly) to the start.
    let x = src.sample([1, 3, 4, 4], &device()).unwrap().mul_scalar(0.5);
    let up = d
        .ddim_reverse_sample(&model, x.clone(), &[4], opts, &cond)
        .unwrap();
    let down = d
        .ddim_sample(&model, up.sample, &[5], opts, &cond, 0.0, &mut src)
        .unwrap();
    let err = values(down.sample - x)
        .into_iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(err < 0.05, "reverse then forward DDIM drifted by {err}");
}

#[test]
fn progressive_loop_yields_every_step_in_order() {
    let d = DiffusionConfig {
        diffusion_steps: 100,
        timestep_respacing: "7".into(),
        ..Default::default()
    }
    .build()
    .unwrap();
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning| x.mul_scalar(0.1);
    let cond = Conditioning::none();
    let mut noise = SeededNoise::new(0);
    let steps: Vec<usize> = d
        .sample_loop_progressive(
            &model,
            SampleRequest::new(
                Sampler::ANCESTRAL,
                [1, 1, 2, 2],
                &cond,
                &mut noise,
                &device(),
            ),
        )
        .unwrap()
        .map(|s| s.unwrap().t)
        .collect();
    assert_eq!(steps, vec![6, 5, 4, 3, 2, 1, 0]);
}

#[test]
fn model_output_with_the_wrong_channel_count_is_an_error() {
    let d = diffusion(
        ModelVarType::LearnedRange,
        ModelMeanType::Epsilon,
        LossType::RescaledMse,
        10,
    );
    let model = |x: Tensor<4>, _t: Tensor<1>, _c: &Conditioning| x;
    let x = Tensor::<4>::zeros([1, 3, 2, 2], &device());
    let err = d
        .p_mean_variance(
            &model,
            x,
            &[3],
            PredictOptions::clipped(),
            &Conditioning::none(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("learn_sigma"), "{err}");
}

#[test]
fn bad_configurations_are_errors_that_name_the_value() {
    let cases: Vec<(DiffusionError, &str)> = vec![
        (space_timesteps(1000, "ddim999").unwrap_err(), "ddim999"),
        (
            space_timesteps(10, "ddim7").unwrap_err(),
            "no integer stride",
        ),
        (space_timesteps(1000, "0").unwrap_err(), "at least 1"),
        (space_timesteps(1000, "abc").unwrap_err(), "\"abc\""),
        (
            space_timesteps(1000, "2000").unwrap_err(),
            "cannot be divided into 2000",
        ),
        (space_timesteps(1000, "ddim").unwrap_err(), "ddimN"),
        (space_timesteps(1000, "10,x").unwrap_err(), "\"x\""),
        (
            named_beta_schedule("quadratic", 1000).unwrap_err(),
            "\"quadratic\"",
        ),
        (named_beta_schedule("cosine", 0).unwrap_err(), "at least 1"),
        (
            named_beta_schedule("linear", 10).unwrap_err(),
            "at least 20",
        ),
        ("EPSILONX".parse::<ModelMeanType>().unwrap_err(), "EPSILON"),
    ];
    for (err, needle) in cases {
        assert!(
            err.to_string().contains(needle),
            "{err:?} should mention {needle:?}"
        );
    }
    assert!(
        DiffusionConfig {
            diffusion_steps: 0,
            ..Default::default()
        }
        .build()
        .is_err()
    );
}

#[test]
fn section_counts_round_half_to_even() {
    // 1000 steps in 25: the stride 999/24 = 41.625 lands on 166.5 and 832.5.
    let keep = space_timesteps(1000, "25").unwrap();
    assert!(keep.contains(&166) && keep.contains(&832), "{keep:?}");
    assert!(!keep.contains(&167) && !keep.contains(&833));
}

#[test]
fn uniform_sampler_weights_are_one_and_resampler_starts_uniform() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (ts, w) = UniformSampler::new(10).sample(64, &mut rng);
    assert!(ts.iter().all(|&t| t < 10));
    assert!(w.iter().all(|&x| (x - 1.0).abs() < 1e-6));
    let mut r = LossSecondMomentResampler::with_params(3, 2, 0.0);
    assert_eq!(r.weights(), vec![1.0; 3]);
    r.update_with_all_losses(&[0, 0, 1, 1, 2, 2], &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0]);
    assert!(r.warmed_up());
    let w = r.weights();
    assert!((w[2] / w[0] - 4.0).abs() < 1e-12, "{w:?}");
    // Importance weights undo the non-uniform sampling: E[w] = 1.
    let (ts, iw) = r.sample(20000, &mut rng);
    let mean: f64 = iw.iter().map(|&x| x as f64).sum::<f64>() / iw.len() as f64;
    assert!((mean - 1.0).abs() < 0.05, "mean importance weight {mean}");
    let frac2 = ts.iter().filter(|&&t| t == 2).count() as f64 / ts.len() as f64;
    assert!((frac2 - 4.0 / 7.0).abs() < 0.02, "timestep 2 drawn {frac2}");
}

#[test]
fn logsnr_respacing_builds_a_diffusion_of_that_many_steps() {
    let config = DiffusionConfig {
        diffusion_steps: 1000,
        ..DiffusionConfig::default()
    };
    let d = config.build_with_respacing("logsnr20").unwrap();
    assert_eq!(d.num_timesteps(), 20);
    assert_eq!((d.timestep_map()[0], d.timestep_map()[19]), (0, 999));
    let err = config
        .build_with_respacing("logsnrx")
        .unwrap_err()
        .to_string();
    assert!(err.contains("logsnrN"), "{err}");
    let err = config
        .build_with_respacing("logsnr1001")
        .unwrap_err()
        .to_string();
    assert!(err.contains("between 1 and 1000"), "{err}");
}
