//! The collectives over MPI (rsmpi). Every call is made from the main thread (MPI's
//! "funneled" level); counts are chunked to stay within MPI's 32-bit counts.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::reduce::{ChunkPlan, MAX_COUNT, fold_in_rank_order};
use crate::error::{Result, TrainError};

/// MPI's world communicator, with the universe that keeps MPI initialised.
pub struct MpiWorld {
    /// `None` once finished; a world dropped unfinished leaks it (see [`MpiWorld::finish`]).
    universe: Option<Universe>,
    world: SimpleCommunicator,
    local_rank: usize,
}

impl MpiWorld {
    /// Initialises MPI and finds this process's place, the local rank from a shared-memory
    /// split of the world.
    pub fn initialize() -> Result<Self> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| comm_err("MPI", "already initialised in this process"))?;
        let world = universe.world();
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Ok(Self {
            universe: Some(universe),
            world,
            local_rank,
        })
    }

    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// See [`super::reduce`]: all-to-all of chunks, a rank-ordered fold, an all-gather.
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        self.check_same_length(data.len(), "all-reduce")?;
        let plan = ChunkPlan::new(data.len(), self.size());
        for round in plan.rounds().collect::<Vec<_>>() {
            let sent = plan.pack(data, &round);
            let mut received = vec![0f32; sent.len()];
            self.world.all_to_all_into(&sent[..], &mut received[..]);
            let folded = fold_in_rank_order(&received, round.len());
            let mut gathered = vec![0f32; sent.len()];
            self.world.all_gather_into(&folded[..], &mut gathered[..]);
            plan.unpack(&gathered, &round, data);
        }
        Ok(())
    }

    pub fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        self.check_same_length(local.len(), "all-gather")?;
        let size = self.size();
        let mut all = vec![0f32; local.len() * size];
        for start in (0..local.len()).step_by(MAX_COUNT) {
            let end = (start + MAX_COUNT).min(local.len());
            let mut piece = vec![0f32; (end - start) * size];
            self.world
                .all_gather_into(&local[start..end], &mut piece[..]);
            for (r, block) in piece.chunks_exact(end - start).enumerate() {
                let at = r * local.len() + start;
                all[at..at + block.len()].copy_from_slice(block);
            }
        }
        Ok(all)
    }

    /// Lengths first, then each rank's bytes to rank 0 in messages of at most [`MAX_COUNT`].
    pub fn gather_bytes(&mut self, local: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let lengths = self.lengths(local.len());
        if self.rank() != 0 {
            for piece in local.chunks(MAX_COUNT) {
                self.world.process_at_rank(0).send(piece);
            }
            return Ok(None);
        }
        let mut all = vec![local.to_vec()];
        for (r, &len) in lengths.iter().enumerate().skip(1) {
            let mut bytes = vec![0u8; len];
            for piece in bytes.chunks_mut(MAX_COUNT) {
                self.world.process_at_rank(r as i32).receive_into(piece);
            }
            all.push(bytes);
        }
        Ok(Some(all))
    }

    pub fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        self.check_same_length(data.len(), "broadcast")?;
        let root = self.world.process_at_rank(0);
        for piece in data.chunks_mut(MAX_COUNT) {
            root.broadcast_into(piece);
        }
        Ok(())
    }

    pub fn barrier(&mut self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    pub fn any(&mut self, local: bool) -> Result<bool> {
        let mut any = 0i32;
        self.world
            .all_reduce_into(&i32::from(local), &mut any, SystemOperation::max());
        Ok(any != 0)
    }

    /// MPI_Finalize.
    pub fn finish(mut self) {
        drop(self.universe.take());
    }

    /// Every rank's `len`, in rank order.
    fn lengths(&self, len: usize) -> Vec<usize> {
        let mut all = vec![0u64; self.size()];
        self.world.all_gather_into(&(len as u64), &mut all[..]);
        all.into_iter().map(|l| l as usize).collect()
    }

    /// A clear error, on every rank, when the ranks' lengths differ (MPI would truncate).
    fn check_same_length(&self, len: usize, what: &str) -> Result<()> {
        let lengths = self.lengths(len);
        if lengths.iter().any(|&l| l != lengths[0]) {
            return Err(comm_err(
                what,
                format!("the ranks hold {lengths:?} values (are their flags the same?)"),
            ));
        }
        Ok(())
    }
}

impl Drop for MpiWorld {
    /// Leaving unfinished (an error or a panic on this rank) must not run MPI_Finalize, which
    /// would wait for the other ranks while they wait for this one: the process exits without
    /// it, and the launcher ends the whole run.
    fn drop(&mut self) {
        if let Some(universe) = self.universe.take() {
            std::mem::forget(universe);
        }
    }
}

/// A collective's failure, naming it.
fn comm_err(what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Other(format!("distributed run: {what}: {e}"))
}
