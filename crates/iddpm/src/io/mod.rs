//! File formats: NumPy arrays and archives (from `iddpm-data`), PNG image grids.

pub mod grid;

pub use grid::{save_grid, write_png};
pub use iddpm_data::npy::{self, NpyArray, NpyData};
pub use iddpm_data::npz::{self, read_npz, read_npz_array, read_npz_bytes, write_npz};
pub use iddpm_data::pictures::as_rgb;
