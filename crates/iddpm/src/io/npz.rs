//! NumPy `.npz` archives (`np.savez`): a zip of `.npy` files, stored uncompressed.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::npy::NpyArray;

/// Writes named arrays as an `.npz` file, atomically (temporary file, then rename).
pub fn write_npz(path: &Path, arrays: &[(&str, &NpyArray)]) -> Result<()> {
    let mut buf = Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, array) in arrays {
            zip.start_file(format!("{name}.npy"), opts)
                .map_err(|e| Error::file(path, format!("cannot write {name}: {e}")))?;
            zip.write_all(&array.to_bytes())
                .map_err(|e| Error::io(path, e))?;
        }
        zip.finish()
            .map_err(|e| Error::file(path, format!("cannot finish the archive: {e}")))?;
    }
    iddpm_checkpoint::write_atomic(path, buf.get_ref())?;
    Ok(())
}

/// Reads every array of an `.npz` file, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, NpyArray)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Error::file(path, format!("not an .npz archive ({e})")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::file(path, format!("damaged entry {i} ({e})")))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| Error::file(path, format!("cannot read {name} ({e})")))?;
        let array = NpyArray::from_bytes(&bytes, &path.join(&name))?;
        out.push((name, array));
    }
    Ok(out)
}

/// Reads one named array of an `.npz` file; an error names the file and the missing key.
pub fn read_npz_array(path: &Path, key: &str) -> Result<NpyArray> {
    read_npz(path)?
        .into_iter()
        .find(|(n, _)| n == key)
        .map(|(_, a)| a)
        .ok_or_else(|| Error::file(path, format!("no array named {key}")))
}
