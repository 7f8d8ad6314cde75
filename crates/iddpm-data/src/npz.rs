//! NumPy `.npz` archives (`np.savez`): a zip of `.npy` files, stored uncompressed.

use std::io::{Cursor, Write};
use std::path::Path;

use crate::error::{DataError, Result};
use crate::npy::NpyArray;

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
                .map_err(|e| DataError::bad(path, format!("cannot write {name}: {e}")))?;
            zip.write_all(&array.to_bytes())
                .map_err(|e| DataError::io(path, e))?;
        }
        zip.finish()
            .map_err(|e| DataError::bad(path, format!("cannot finish the archive: {e}")))?;
    }
    iddpm_checkpoint::write_atomic(path, buf.get_ref())?;
    Ok(())
}

/// Reads every array of an `.npz` file, in archive order. The archive's declared sizes are
/// checked as checkpoint archives' are ([`iddpm_checkpoint::read_zip_entries`]).
pub fn read_npz(path: &Path) -> Result<Vec<(String, NpyArray)>> {
    arrays_of(iddpm_checkpoint::read_zip_entries(path)?, path)
}

/// [`read_npz`] of an archive in memory; `path` names it in errors.
pub fn read_npz_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, NpyArray)>> {
    arrays_of(iddpm_checkpoint::zip_entries_from_bytes(bytes, path)?, path)
}

fn arrays_of(entries: Vec<(String, Vec<u8>)>, path: &Path) -> Result<Vec<(String, NpyArray)>> {
    entries
        .into_iter()
        .map(|(entry, bytes)| {
            let name = entry.trim_end_matches(".npy").to_string();
            let array = NpyArray::from_bytes(&bytes, &path.join(&name))?;
            Ok((name, array))
        })
        .collect()
}

/// Reads one named array of an `.npz` file; an error names the file and the missing key.
pub fn read_npz_array(path: &Path, key: &str) -> Result<NpyArray> {
    read_npz(path)?
        .into_iter()
        .find(|(n, _)| n == key)
        .map(|(_, a)| a)
        .ok_or_else(|| DataError::bad(path, format!("no array named {key}")))
}
