//! A safetensors file's `__metadata__`: read from the header alone, and replaced without
//! touching the tensors.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::atomic_write::write_atomic;
use crate::error::{CheckpointError, Result};

/// The largest header iddpm reads: the safetensors format's own limit (100 MB).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The string metadata of a safetensors file, read from its header only (the tensors may be
/// gigabytes). `None` for a PyTorch zip archive, which has none. Errors name the file: a
/// header longer than [`MAX_HEADER_BYTES`] or the file, a header that is not JSON, metadata
/// values that are not strings.
pub fn read_safetensors_metadata(path: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let mut file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| CheckpointError::io(path, e))?
        .len();
    let mut head = [0u8; 8];
    file.read_exact(&mut head)
        .map_err(|_| CheckpointError::format(path, "shorter than a safetensors header"))?;
    if head.starts_with(b"PK\x03\x04") {
        return Ok(None);
    }
    let n = u64::from_le_bytes(head);
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(CheckpointError::format(
            path,
            format!(
                "its safetensors header claims {n} bytes; the file has {file_len} and the format \
                 allows at most {MAX_HEADER_BYTES}"
            ),
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| CheckpointError::io(path, e))?;
    metadata_of_header(&header)
        .map(Some)
        .map_err(|m| CheckpointError::format(path, m))
}

/// [`read_safetensors_metadata`] of a file's bytes; `path` names it in errors.
pub fn safetensors_metadata_from_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<BTreeMap<String, String>>> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Ok(None);
    }
    let header = bytes
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().unwrap()))
        .filter(|&n| n <= MAX_HEADER_BYTES)
        .and_then(|n| bytes.get(8..8 + n as usize))
        .ok_or_else(|| CheckpointError::format(path, "its safetensors header is cut short"))?;
    metadata_of_header(header)
        .map(Some)
        .map_err(|m| CheckpointError::format(path, m))
}

/// The `__metadata__` strings of a header's JSON.
fn metadata_of_header(header: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| format!("its safetensors header is not JSON ({e})"))?;
    let Some(meta) = json.get("__metadata__") else {
        return Ok(BTreeMap::new());
    };
    let object = meta
        .as_object()
        .ok_or("its safetensors __metadata__ is not an object of strings")?;
    object
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(format!("its safetensors metadata {k:?} is not a string")),
        })
        .collect()
}

/// Replaces a safetensors file's `__metadata__` with `metadata`, atomically. The tensors'
/// bytes (the data section after the header) are copied unchanged: only the header is
/// written anew (its tensor offsets are relative to the data section, so they stay valid).
pub fn replace_safetensors_metadata(path: &Path, metadata: &[(&str, &str)]) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    let n = bytes
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().unwrap()))
        .filter(|&n| n <= MAX_HEADER_BYTES && n <= bytes.len() as u64 - 8)
        .ok_or_else(|| CheckpointError::format(path, "not a safetensors file"))?;
    let (header, data) = bytes[8..].split_at(n as usize);
    let mut json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| CheckpointError::format(path, format!("header is not a JSON object ({e})")))?;
    let meta: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    json.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut new_header = serde_json::to_vec(&json).expect("a JSON map serialises");
    // The format pads the header with spaces to a multiple of 8 bytes.
    new_header.resize(new_header.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + new_header.len() + data.len());
    out.extend_from_slice(&(new_header.len() as u64).to_le_bytes());
    out.extend_from_slice(&new_header);
    out.extend_from_slice(data);
    write_atomic(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StateDict, load_state_dict, write_safetensors};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("iddpm-meta-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("w.safetensors")
    }

    #[test]
    fn metadata_is_replaced_and_the_tensors_keep_their_bytes() {
        let path = temp("replace");
        let mut dict = StateDict::new();
        dict.insert("a.weight", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        dict.insert("b", vec![1], vec![-7.5]);
        write_safetensors(&path, &dict, &[("producer", "iddpm")]).unwrap();
        let before = std::fs::read(&path).unwrap();
        let data_of =
            |b: &[u8]| b[8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize..].to_vec();
        replace_safetensors_metadata(&path, &[("producer", "iddpm"), ("k", "{\"x\": 1}")]).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert_eq!(data_of(&before), data_of(&after));
        let meta = read_safetensors_metadata(&path).unwrap().unwrap();
        assert_eq!(meta.get("k").map(String::as_str), Some("{\"x\": 1}"));
        let loaded = load_state_dict(&path).unwrap();
        assert_eq!(
            loaded.get("a.weight").unwrap().values,
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn hostile_headers_are_refused_with_the_file_named() {
        let path = temp("hostile");
        // A header length beyond the format's limit.
        let mut bytes = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let err = read_safetensors_metadata(&path).unwrap_err().to_string();
        assert!(
            err.contains("at most") && err.contains("w.safetensors"),
            "{err}"
        );
        // Metadata values that are not strings.
        let header = br#"{"__metadata__":{"iddpm_settings":{"image_size":32}}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_safetensors_metadata(&path).unwrap_err().to_string();
        assert!(err.contains("not a string"), "{err}");
        // A header that is not JSON.
        let mut bytes = 4u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{{{{");
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            read_safetensors_metadata(&path)
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );
    }
}
