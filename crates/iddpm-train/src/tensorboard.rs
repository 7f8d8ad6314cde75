//! TensorBoard event files, so that `tensorboard --logdir runs` shows a run while it trains.
//!
//! An event file is a sequence of records (TFRecord framing: little-endian u64 length, masked
//! CRC-32C of the length, the bytes, masked CRC-32C of the bytes), each holding one `Event`
//! protocol buffer. The few messages needed are encoded by hand:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; Image image = 4; }
//! Image   { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, TrainError};

/// Appends events to one `events.out.tfevents.*` file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates a new event file in `dir` (a resumed run adds a file; TensorBoard reads all of a
    /// folder's files as one run) and writes the file-version event.
    pub fn create(dir: &Path) -> Result<Self> {
        let secs = wall_time() as u64;
        // A name no other writer has: several may start in one second (a resumed trainer in
        // the same process, say).
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!(
                "events.out.tfevents.{secs}.iddpm.{}.{n}",
                std::process::id()
            ));
            match File::options().create_new(true).append(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        };
        let mut writer = Self { path, file };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, b"brain.Event:2");
        writer.write_event(&event)?;
        Ok(writer)
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar per key at `step`.
    pub fn scalars(&mut self, step: u64, values: &BTreeMap<String, f64>) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, &v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            put_float(&mut value, 2, v as f32);
            put_bytes(&mut summary, 1, &value);
        }
        self.write_summary(step, &summary)
    }

    /// A PNG picture of `width` × `height` RGB pixels at `step`.
    pub fn image(
        &mut self,
        step: u64,
        tag: &str,
        png: &[u8],
        width: u32,
        height: u32,
    ) -> Result<()> {
        let mut image = Vec::new();
        put_varint_field(&mut image, 1, u64::from(height));
        put_varint_field(&mut image, 2, u64::from(width));
        put_varint_field(&mut image, 3, 3); // RGB
        put_bytes(&mut image, 4, png);
        let mut value = Vec::new();
        put_bytes(&mut value, 1, tag.as_bytes());
        put_bytes(&mut value, 4, &image);
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &value);
        self.write_summary(step, &summary)
    }

    fn write_summary(&mut self, step: u64, summary: &[u8]) -> Result<()> {
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time());
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, summary);
        self.write_event(&event)
    }

    /// One record, flushed so that TensorBoard sees it at once.
    fn write_event(&mut self, event: &[u8]) -> Result<()> {
        let len = (event.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(event.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(event);
        record.extend_from_slice(&masked_crc32c(event).to_le_bytes());
        self.file
            .write_all(&record)
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Splits an event file into its records, checking both checksums of each.
pub fn read_records(bytes: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let word = |b: &[u8], at: usize, n: usize| -> std::result::Result<Vec<u8>, String> {
            b.get(at..at + n)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("record {} is truncated", records.len()))
        };
        let len_bytes = word(rest, 0, 8)?;
        let len_crc = u32::from_le_bytes(word(rest, 8, 4)?.try_into().expect("4 bytes"));
        if masked_crc32c(&len_bytes) != len_crc {
            return Err(format!("record {}: bad length checksum", records.len()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| format!("record {} is truncated", records.len()))?;
        let data = rest
            .get(12..12 + len)
            .ok_or_else(|| format!("record {} is truncated", records.len()))?;
        let data_crc = u32::from_le_bytes(word(rest, 12 + len, 4)?.try_into().expect("4 bytes"));
        if masked_crc32c(data) != data_crc {
            return Err(format!("record {}: bad data checksum", records.len()));
        }
        records.push(data);
        rest = &rest[16 + len..];
    }
    Ok(records)
}

/// CRC-32C (Castagnoli), bitwise: event records are small and written once per log interval.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// TFRecord's masking of a CRC (rotate right by 15, add a constant).
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field key: field number and wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u32, v: f32) {
    put_key(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded protobuf field: number and value.
    #[derive(Debug, PartialEq)]
    enum Field<'a> {
        Varint(u32, u64),
        Fixed64(u32, u64),
        Bytes(u32, &'a [u8]),
        Fixed32(u32, u32),
    }

    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<Field<'_>> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let key = varint(b, &mut at);
            let field = (key >> 3) as u32;
            out.push(match key & 7 {
                0 => Field::Varint(field, varint(b, &mut at)),
                1 => {
                    at += 8;
                    Field::Fixed64(field, u64::from_le_bytes(b[at - 8..at].try_into().unwrap()))
                }
                2 => {
                    let len = varint(b, &mut at) as usize;
                    at += len;
                    Field::Bytes(field, &b[at - len..at])
                }
                5 => {
                    at += 4;
                    Field::Fixed32(field, u32::from_le_bytes(b[at - 4..at].try_into().unwrap()))
                }
                w => panic!("wire type {w}"),
            });
        }
        out
    }

    fn bytes_field<'a>(fs: &[Field<'a>], n: u32) -> Vec<&'a [u8]> {
        fs.iter()
            .filter_map(|f| match f {
                Field::Bytes(k, b) if *k == n => Some(*b),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C catalogue's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn scalars_and_images_read_back() {
        let dir = std::env::temp_dir().join(format!("iddpm-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut w = EventWriter::create(&dir).unwrap();
        let values: BTreeMap<String, f64> =
            [("loss".to_string(), 0.25), ("mse".to_string(), 0.125)].into();
        w.scalars(7, &values).unwrap();
        w.image(8, "samples", b"\x89PNG fake", 64, 32).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        assert!(
            w.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("tfevents")
        );
        let records = read_records(&bytes).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            bytes_field(&fields(records[0]), 3),
            vec![b"brain.Event:2" as &[u8]]
        );

        let event = fields(records[1]);
        assert!(event.contains(&Field::Varint(2, 7)));
        let summary = fields(bytes_field(&event, 5)[0]);
        let scalars: Vec<(String, f32)> = bytes_field(&summary, 1)
            .into_iter()
            .map(|v| {
                let v = fields(v);
                let tag = String::from_utf8(bytes_field(&v, 1)[0].to_vec()).unwrap();
                let value = v
                    .iter()
                    .find_map(|f| match f {
                        Field::Fixed32(2, bits) => Some(f32::from_bits(*bits)),
                        _ => None,
                    })
                    .unwrap();
                (tag, value)
            })
            .collect();
        assert_eq!(scalars, vec![("loss".into(), 0.25), ("mse".into(), 0.125)]);

        let event = fields(records[2]);
        assert!(event.contains(&Field::Varint(2, 8)));
        let value = fields(bytes_field(&fields(bytes_field(&event, 5)[0]), 1)[0]);
        assert_eq!(bytes_field(&value, 1), vec![b"samples" as &[u8]]);
        let image = fields(bytes_field(&value, 4)[0]);
        assert!(image.contains(&Field::Varint(1, 32)) && image.contains(&Field::Varint(2, 64)));
        assert_eq!(bytes_field(&image, 4), vec![b"\x89PNG fake" as &[u8]]);
    }

    #[test]
    fn damaged_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("iddpm-tb-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = EventWriter::create(&dir).unwrap();
        // A second writer in the same second gets a file of its own.
        let other = EventWriter::create(&dir).unwrap();
        assert_ne!(w.path(), other.path());
        let mut bytes = std::fs::read(w.path()).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        assert!(read_records(&bytes).unwrap_err().contains("checksum"));
        assert!(
            read_records(&bytes[..10])
                .unwrap_err()
                .contains("truncated")
        );
    }
}
