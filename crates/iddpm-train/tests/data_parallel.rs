//! Data-parallel training: the process group's collectives, and a two-process run equal to one
//! process training on the global batch in microbatches.

mod common;

use std::time::Duration;

use burn::tensor::Device;
use common::{diffusion, ema_values, max_diff, params, tiny_net, tmpdir};
use iddpm_data::InMemoryDataset;
use iddpm_nn::{apply_state_dict, state_dict_of};
use iddpm_train::{ProcessGroup, TrainOptions, Trainer};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn join(rank: usize, world: usize, addr: &str) -> ProcessGroup {
    ProcessGroup::connect(rank, world, addr, Duration::from_secs(60)).unwrap()
}

#[test]
fn collectives_combine_ranks_in_order() {
    let addr = free_addr();
    let results: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let addr = addr.clone();
                s.spawn(move || {
                    let mut g = join(rank, 3, &addr);
                    assert_eq!((g.rank(), g.world_size()), (rank, 3));
                    let mut sum = vec![rank as f32, 10.0 * rank as f32 + 0.5];
                    g.all_reduce_sum(&mut sum).unwrap();
                    let gathered = g.all_gather(&[rank as f32; 2]).unwrap();
                    let mut shared = vec![rank as f32 + 7.0; 3];
                    g.broadcast(&mut shared).unwrap();
                    assert!(g.any(rank == 2).unwrap());
                    assert!(!g.any(false).unwrap());
                    (sum, gathered, shared)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (sum, gathered, shared) in results {
        assert_eq!(sum, vec![3.0, 31.5]);
        assert_eq!(gathered, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(shared, vec![7.0; 3]);
    }
}

#[test]
fn joining_fails_clearly() {
    let err = ProcessGroup::connect(3, 2, "127.0.0.1:1", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 3 does not exist"), "{err}");
    // Nobody listens: the error names the address.
    let addr = free_addr();
    let err = ProcessGroup::connect(1, 2, &addr, Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&addr), "{err}");
}

fn data() -> InMemoryDataset {
    let images = (0..24)
        .map(|i| {
            (0..192)
                .map(|j| (((i * 13 + j * 7) % 17) as f32 / 8.0 - 1.0) * 0.9)
                .collect()
        })
        .collect();
    InMemoryDataset::new(images, None, 8)
}

fn opts(name: &str, batch_size: usize, microbatch: usize) -> TrainOptions {
    let dir = tmpdir(name);
    TrainOptions {
        lr: 1e-3,
        batch_size,
        microbatch,
        ema_rates: vec![0.5],
        seed: 11,
        log_dir: dir,
        preview_samples: 0,
        quiet: true,
        ..TrainOptions::default()
    }
}

fn params_and_ema(t: &mut Trainer) -> (Vec<f32>, Vec<f32>) {
    (params(t), ema_values(t))
}

#[test]
fn two_processes_equal_one_with_microbatches() {
    let device = Device::flex();
    let data = data();
    let init = state_dict_of(
        Trainer::new(
            tiny_net(0.0),
            diffusion(),
            &data,
            opts("init", 4, 0),
            &device,
        )
        .unwrap()
        .model_mut(),
    );
    // One process, global batch 8 in two microbatches of 4.
    let mut single = Trainer::new(
        tiny_net(0.0),
        diffusion(),
        &data,
        opts("single", 8, 4),
        &device,
    )
    .unwrap();
    apply_state_dict(single.model_mut(), &init).unwrap();
    single.join_group(ProcessGroup::single()).unwrap();
    let mut single_losses = Vec::new();
    for _ in 0..3 {
        single_losses.push(single.run_step().unwrap().loss);
    }
    let (p1, e1) = params_and_ema(&mut single);

    // Two processes (threads here), 4 examples each. Rank 1 starts from other weights: the
    // main process's are broadcast.
    let addr = free_addr();
    let ranks: Vec<(Vec<f32>, Vec<f32>, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let (addr, init, device) = (addr.clone(), &init, device.clone());
                s.spawn(move || {
                    let data = self::data();
                    let name = format!("rank{rank}");
                    let mut t = Trainer::new(
                        tiny_net(0.0),
                        diffusion(),
                        &data,
                        opts(&name, 4, 0),
                        &device,
                    )
                    .unwrap();
                    if rank == 0 {
                        apply_state_dict(t.model_mut(), init).unwrap();
                    }
                    t.join_group(join(rank, 2, &addr)).unwrap();
                    let losses = (0..3).map(|_| t.run_step().unwrap().loss).collect();
                    let (p, e) = params_and_ema(&mut t);
                    (p, e, losses)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (p0, e0, l0) = &ranks[0];
    let (p1r, e1r, l1) = &ranks[1];
    assert_eq!(p0, p1r, "the processes hold identical weights");
    assert_eq!(e0, e1r, "and identical EMAs");
    assert_eq!(l0, l1, "and report the global batch's loss");
    let d = max_diff(&p1, p0);
    let de = max_diff(&e1, e0);
    eprintln!("2 processes vs 1: parameters differ by {d:.2e}, EMAs by {de:.2e}");
    assert!(d < 1e-6 && de < 1e-6, "parameters {d}, EMAs {de}");
    for (a, b) in single_losses.iter().zip(l0) {
        assert!((a - b).abs() < 1e-6, "loss {a} vs {b}");
    }
}
