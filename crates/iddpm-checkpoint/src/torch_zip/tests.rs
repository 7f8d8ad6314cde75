//! Archives with hostile views, storages and sizes: each is an error naming the problem.

use std::io::Write;

use super::*;

/// `{"w": _rebuild_tensor_v2(storage "0" of `numel` floats, offset, shape, stride)}`.
fn state_dict_pickle(numel: u8, shape: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut p = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend_from_slice(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000");
    p.extend_from_slice(b"X\x03\x00\x00\x00cpuK");
    p.extend_from_slice(&[numel, b't', b'Q', b'K', 0]);
    for dims in [shape, stride] {
        p.push(b'(');
        for d in dims {
            p.push(b'J');
            p.extend_from_slice(&d.to_le_bytes());
        }
        p.push(b't');
    }
    p.extend_from_slice(b"tRu.");
    p
}

/// Writes an archive of `(name, bytes, deflate)` entries and returns its path.
fn archive(dir: &Path, entries: &[(&str, &[u8], bool)]) -> std::path::PathBuf {
    let path = dir.join("hostile.pt");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (name, bytes, deflate) in entries {
        let method = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iddpm-hostile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(entries: &[(&str, &[u8], bool)], name: &str) -> Result<StateDict> {
    let dir = temp_dir(name);
    let result = TorchArchive::open(&archive(&dir, entries)).and_then(|a| a.state_dict());
    std::fs::remove_dir_all(dir).unwrap();
    result
}

const FOUR_FLOATS: &[u8] = &[0; 16];

#[test]
fn a_good_view_reads() {
    let pkl = state_dict_pickle(4, &[2, 2], &[1, 2]);
    let dict = load(
        &[
            ("a/data.pkl", &pkl, false),
            ("a/data/0", FOUR_FLOATS, false),
        ],
        "good",
    )
    .unwrap();
    assert_eq!(dict.get("w").unwrap().shape, vec![2, 2]);
}

#[test]
fn zero_strides_may_not_ask_for_terabytes() {
    let pkl = state_dict_pickle(4, &[1_000_000, 1_000_000], &[0, 0]);
    let err = load(
        &[
            ("a/data.pkl", &pkl, false),
            ("a/data/0", FOUR_FLOATS, false),
        ],
        "stride0",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("the limit is"), "{err}");
}

#[test]
fn views_past_the_storage_and_overflowing_shapes_are_refused() {
    for (shape, stride, expect) in [
        (&[3u32, 2][..], &[1u32, 2][..], "reaches index 4"),
        (&[i32::MAX as u32; 3][..], &[1, 1, 1][..], "overflows"),
        (&[2][..], &[1, 1][..], "differ in rank"),
    ] {
        let pkl = state_dict_pickle(4, shape, stride);
        let err = load(
            &[
                ("a/data.pkl", &pkl, false),
                ("a/data/0", FOUR_FLOATS, false),
            ],
            "past",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expect), "{shape:?}: {err}");
    }
}

#[test]
fn a_storage_whose_bytes_differ_from_its_count_is_refused() {
    let pkl = state_dict_pickle(8, &[2], &[1]);
    let err = load(
        &[
            ("a/data.pkl", &pkl, false),
            ("a/data/0", FOUR_FLOATS, false),
        ],
        "count",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("declares 8 elements"), "{err}");
}

#[test]
fn an_entry_that_inflates_beyond_its_declared_size_is_refused() {
    let pkl = state_dict_pickle(4, &[4], &[1]);
    let zeros = vec![0u8; 1 << 20];
    let dir = temp_dir("bomb");
    let path = archive(
        &dir,
        &[("a/data.pkl", &pkl, false), ("a/data/0", &zeros, true)],
    );
    // Make both headers of the deflated entry declare 16 bytes instead of 1 MiB.
    let mut bytes = std::fs::read(&path).unwrap();
    let real = (1u32 << 20).to_le_bytes();
    let mut patched = 0;
    for i in 0..bytes.len() - 4 {
        if bytes[i..i + 4] == real {
            bytes[i..i + 4].copy_from_slice(&16u32.to_le_bytes());
            patched += 1;
        }
    }
    assert_eq!(patched, 2, "local and central headers");
    std::fs::write(&path, &bytes).unwrap();
    let err = TorchArchive::open(&path).err().unwrap().to_string();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(err.contains("inflates to more"), "{err}");
}

#[test]
fn a_declared_size_beyond_the_budget_is_refused_before_reading() {
    let pkl = state_dict_pickle(4, &[4], &[1]);
    let dir = temp_dir("declared");
    let path = archive(
        &dir,
        &[("a/data.pkl", &pkl, false), ("a/data/0", FOUR_FLOATS, true)],
    );
    let mut bytes = std::fs::read(&path).unwrap();
    // The deflated entry's uncompressed size, in the central directory: 3 GB.
    let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 24..central + 28].copy_from_slice(&3_000_000_000u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = TorchArchive::open(&path).err().unwrap().to_string();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(err.contains("declares 3000000000 bytes"), "{err}");
}
