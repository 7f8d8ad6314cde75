//! Saving and loading weights, and the errors bad checkpoints give.

use std::path::PathBuf;

use burn::tensor::Device;
use iddpm_checkpoint::{StateDict, load_state_dict, write_safetensors};
use iddpm_nn::{
    LoadError, ModelFlags, UNetModel, apply_state_dict, load_weights, save_weights, state_dict_of,
};

fn small_flags() -> ModelFlags {
    ModelFlags {
        image_size: 32,
        image_channels: 3,
        num_channels: 32,
        num_res_blocks: 1,
        num_heads: 2,
        learn_sigma: true,
        ..ModelFlags::default()
    }
}

fn model(flags: &ModelFlags) -> UNetModel {
    UNetModel::new(&flags.unet_config(false).unwrap(), &Device::flex())
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iddpm-nn-tests-{}", std::process::id()));
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path
}

#[test]
fn saved_weights_load_back_identically() {
    let mut a = model(&small_flags());
    // Its own folder: other tests write (and briefly hold temporary files) in the shared one.
    let path = tmp("roundtrip/model.safetensors");
    save_weights(&mut a, &path).unwrap();
    let mut b = model(&small_flags());
    assert_ne!(
        state_dict_of(&mut a),
        state_dict_of(&mut b),
        "two random inits differ"
    );
    load_weights(&mut b, &path).unwrap();
    assert_eq!(state_dict_of(&mut a), state_dict_of(&mut b));
    // No temporary file is left beside the checkpoint.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn f16_safetensors_load_as_f32() {
    let mut a = model(&small_flags());
    let dict = state_dict_of(&mut a);
    // Write the same tensors as F16 by hand.
    let halves: Vec<(String, Vec<usize>, Vec<u8>)> = dict
        .iter()
        .map(|(n, e)| {
            let bytes = e
                .values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            (n.to_string(), e.shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = halves
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let path = tmp("half.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    let loaded = load_state_dict(&path).unwrap();
    for (name, e) in dict.iter() {
        let got = loaded.get(name).unwrap();
        assert_eq!(got.shape, e.shape);
        for (g, w) in got.values.iter().zip(&e.values) {
            assert_eq!(*g, half::f16::from_f32(*w).to_f32(), "{name}");
        }
    }
}

#[test]
fn a_checkpoint_for_other_flags_names_what_differs_and_the_flag() {
    let mut sigma = model(&small_flags());
    let path = tmp("learned.safetensors");
    save_weights(&mut sigma, &path).unwrap();
    let mut fixed = model(&ModelFlags {
        learn_sigma: false,
        ..small_flags()
    });
    let err = load_weights(&mut fixed, &path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LoadError::Mismatch(_)), "{text}");
    assert!(text.contains("out.2.weight"), "{text}");
    assert!(text.contains("--learn_sigma True"), "{text}");
    assert!(text.contains("learned.safetensors"), "{text}");

    let mut wide = model(&ModelFlags {
        num_channels: 64,
        ..small_flags()
    });
    let text = load_weights(&mut wide, &path).unwrap_err().to_string();
    assert!(text.contains("--num_channels 32"), "{text}");

    let mut cond = model(&ModelFlags {
        class_cond: true,
        ..small_flags()
    });
    let text = load_weights(&mut cond, &path).unwrap_err().to_string();
    assert!(
        text.contains("missing keys") && text.contains("label_emb.weight"),
        "{text}"
    );
    assert!(text.contains("--class_cond False"), "{text}");
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    let mut a = model(&small_flags());
    let good = tmp("good.safetensors");
    save_weights(&mut a, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let text = load_weights(&mut a, &cut).unwrap_err().to_string();
    assert!(text.contains("cut.safetensors"), "{text}");

    let junk = tmp("notes.txt");
    std::fs::write(&junk, b"hello, I am not a checkpoint").unwrap();
    let text = load_weights(&mut a, &junk).unwrap_err().to_string();
    assert!(
        text.contains("notes.txt") && text.contains("not a checkpoint"),
        "{text}"
    );

    let missing = tmp("does-not-exist.pt");
    let text = load_weights(&mut a, &missing).unwrap_err().to_string();
    assert!(text.contains("does-not-exist.pt"), "{text}");
}

/// A zip whose data.pkl calls `os.system`: the reader must refuse, naming the global.
#[test]
fn pickles_that_would_run_code_are_refused() {
    let path = tmp("evil.pt");
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("evil/data.pkl", opts).unwrap();
    // protocol 2: GLOBAL os.system, the argument tuple ("echo pwned",), REDUCE, STOP.
    let mut pkl = vec![0x80, 0x02];
    pkl.extend_from_slice(b"cos\nsystem\n");
    pkl.push(0x8c);
    pkl.push(10);
    pkl.extend_from_slice(b"echo pwned");
    pkl.extend_from_slice(&[0x85, b'R', b'.']);
    std::io::Write::write_all(&mut zip, &pkl).unwrap();
    zip.finish().unwrap();
    let err = load_state_dict(&path).unwrap_err().to_string();
    assert!(
        err.contains("os.system") && err.contains("evil.pt"),
        "{err}"
    );
}

#[test]
fn writing_into_a_missing_directory_fails_without_leftovers() {
    let dict = StateDict::new();
    let path = tmp("absent").join("such/dir/x.safetensors");
    let err = write_safetensors(&path, &dict, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.safetensors"), "{err}");
}

/// `torch.save` to a path names the top folder after the file, and older versions write only
/// `data.pkl`, `data/<n>` and `version`: both load like the handle-saved `archive/` layout.
#[test]
fn both_torch_zip_layouts_load() {
    use std::io::{Read, Write};
    let reference = std::env::var("IDDPM_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference")
        });
    let original = reference.join("model_a.pt");
    let want = load_state_dict(&original).unwrap();
    let mut zin = zip::ZipArchive::new(std::fs::File::open(&original).unwrap()).unwrap();
    let path = tmp("renamed.pt");
    let mut zout = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut e = zin.by_index(i).unwrap();
        let rest = e.name().split_once('/').unwrap().1.to_string();
        if !(rest == "data.pkl" || rest == "version" || rest.starts_with("data/")) {
            continue; // the older layout has nothing else
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        zout.start_file(format!("renamed/{rest}"), opts).unwrap();
        zout.write_all(&buf).unwrap();
    }
    zout.finish().unwrap();
    let got = load_state_dict(&path).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.len(), 222, "model A has 222 tensors");
}

/// Shapes of any rank in a checkpoint are reported, never indexed past their end (a rank-1
/// first convolution and a rank-0 output layer once panicked while the hints were built).
#[test]
fn weights_of_the_wrong_rank_are_an_error_not_a_panic() {
    let mut m = model(&small_flags());
    let mut dict = state_dict_of(&mut m);
    dict.insert("input_blocks.0.0.weight", vec![5], vec![0.0; 5]);
    dict.insert("out.2.weight", vec![], vec![0.0]);
    let err = apply_state_dict(&mut m, &dict).unwrap_err().to_string();
    assert!(err.contains("input_blocks.0.0.weight"), "{err}");
    assert!(err.contains("out.2.weight"), "{err}");
}
