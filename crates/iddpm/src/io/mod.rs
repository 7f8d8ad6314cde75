//! File formats: NumPy arrays and archives, PNG image grids.

pub mod grid;
pub mod npy;
pub mod npz;

pub use grid::{save_grid, write_png};
pub use npy::{NpyArray, NpyData};
pub use npz::{read_npz, read_npz_array, write_npz};
