//! Stands in for the MPI backend in builds without the `mpi` feature: a type with no values,
//! so that a group of one is all that exists.

use crate::error::Result;

/// No MPI world exists without the feature.
pub enum MpiWorld {}

impl MpiWorld {
    pub fn size(&self) -> usize {
        match *self {}
    }
    pub fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
        match *self {}
    }
    pub fn all_gather(&mut self, _: &[f32]) -> Result<Vec<f32>> {
        match *self {}
    }
    pub fn gather_bytes(&mut self, _: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        match *self {}
    }
    pub fn broadcast(&mut self, _: &mut [f32]) -> Result<()> {
        match *self {}
    }
    pub fn barrier(&mut self) -> Result<()> {
        match *self {}
    }
    pub fn any(&mut self, _: bool) -> Result<bool> {
        match *self {}
    }
    pub fn finish(self) {
        match self {}
    }
}
