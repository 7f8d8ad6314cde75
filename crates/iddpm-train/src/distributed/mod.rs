//! Data-parallel training and sharded sampling across processes, over MPI (Open MPI through
//! rsmpi, with the `mpi` cargo feature).
//!
//! A run is launched as the reference's is, `mpirun -n N iddpm ...`: placement (rank, size,
//! and the local rank from a shared-memory split) comes from MPI itself. Every collective is
//! deterministic: sums are folded in rank order, so every rank holds bit-identical results and
//! N processes of batch B equal one process of batch N·B in microbatches of B (MPI_Allreduce
//! promises no order; see [`reduce`]). Counts are chunked, so tensors of any size move.
//!
//! Without the `mpi` feature only the group of one exists, and a launch under `mpirun` with
//! more than one process is refused with instructions.

// Without the feature, `MpiWorld` is an empty type: a group never holds one.
#[cfg_attr(not(feature = "mpi"), path = "no_mpi.rs")]
mod mpi_backend;
pub mod reduce;

use crate::error::Result;

/// What this process's collectives cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Collective calls.
    pub calls: u64,
    /// Wall-clock seconds inside them (waiting for slower ranks included).
    pub seconds: f64,
    /// Bytes this process handed to MPI for the other processes.
    pub bytes_sent: u64,
}

/// This process's place in a multi-process run, and the collectives between the processes.
pub struct ProcessGroup {
    rank: usize,
    world_size: usize,
    local_rank: usize,
    mpi: Option<mpi_backend::MpiWorld>,
    stats: CommStats,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessGroup(rank {} of {})", self.rank, self.world_size)
    }
}

/// The variables through which `mpirun`/`mpiexec` (Open MPI, MPICH, or any PMI launcher)
/// announce the size of a run.
const LAUNCHER_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"];

/// The world size a launcher announced, if this process was started by one.
fn launched_size() -> Option<usize> {
    LAUNCHER_SIZE_VARS
        .iter()
        .find_map(|n| std::env::var(n).ok()?.trim().parse().ok())
}

impl ProcessGroup {
    /// A group of one: every collective is the identity.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            mpi: None,
            stats: CommStats::default(),
        }
    }

    /// The group this process was launched in: MPI's world under `mpirun` (with the `mpi`
    /// feature), else a group of one. Call it once per process.
    pub fn from_environment() -> Result<Self> {
        let Some(size) = launched_size() else {
            return Ok(Self::single());
        };
        Self::join_launched(size)
    }

    #[cfg(feature = "mpi")]
    fn join_launched(_announced: usize) -> Result<Self> {
        let world = mpi_backend::MpiWorld::initialize()?;
        let (rank, world_size, local_rank) = (world.rank(), world.size(), world.local_rank());
        Ok(Self {
            rank,
            world_size,
            local_rank,
            mpi: Some(world),
            stats: CommStats::default(),
        })
    }

    #[cfg(not(feature = "mpi"))]
    fn join_launched(announced: usize) -> Result<Self> {
        if announced <= 1 {
            return Ok(Self::single());
        }
        Err(crate::error::TrainError::Config(format!(
            "launched as one of {announced} processes, but this iddpm was built without MPI. \
             Install Open MPI (Debian: apt install libopenmpi-dev openmpi-bin libclang-dev), \
             build with `cargo build --release --features mpi`, and run under `mpirun -n N`"
        )))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// This process's rank among those on its machine (which GPU it takes).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Whether this process writes logs, checkpoints and outputs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Sums `data` over all ranks, element by element in rank order (((x₀ + x₁) + x₂) + …),
    /// and gives every rank the result.
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        // Alltoall and allgather each send (W-1)/W of the vector: a ring all-reduce's bytes.
        let sent = self.share_of_others(data.len() * 8);
        self.timed(sent, |mpi| mpi.all_reduce_sum(data), || Ok(()))
    }

    /// Concatenates every rank's `local` values (equal lengths) in rank order, on every rank.
    pub fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        let sent = (local.len() * 4 * self.world_size.saturating_sub(1)) as u64;
        self.timed(sent, |mpi| mpi.all_gather(local), || Ok(local.to_vec()))
    }

    /// Collects every rank's bytes (any lengths) on rank 0, in rank order; the other ranks
    /// get `None`.
    pub fn gather_bytes(&mut self, local: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let sent = if self.is_main() {
            0
        } else {
            local.len() as u64
        };
        self.timed(
            sent,
            |mpi| mpi.gather_bytes(local),
            || Ok(Some(vec![local.to_vec()])),
        )
    }

    /// Gives every rank rank 0's `data` (same length everywhere).
    pub fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        let sent = if self.is_main() {
            (data.len() * 4) as u64
        } else {
            0
        };
        self.timed(sent, |mpi| mpi.broadcast(data), || Ok(()))
    }

    /// Waits until every rank gets here.
    pub fn barrier(&mut self) -> Result<()> {
        self.timed(0, |mpi| mpi.barrier(), || Ok(()))
    }

    /// Whether any rank asks to stop (so that all stop at the same step).
    pub fn any(&mut self, local: bool) -> Result<bool> {
        self.timed(4, |mpi| mpi.any(local), || Ok(local))
    }

    /// What this process's collectives have cost so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }

    /// Starts counting [`stats`](Self::stats) afresh (e.g. after setting a run up).
    pub fn reset_stats(&mut self) {
        self.stats = CommStats::default();
    }

    /// Runs a collective on the MPI world (or `alone` in a group of one), counting its time
    /// and the bytes it sends.
    fn timed<T>(
        &mut self,
        bytes_sent: u64,
        collective: impl FnOnce(&mut mpi_backend::MpiWorld) -> Result<T>,
        alone: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(mpi) = self.mpi.as_mut().filter(|m| m.size() > 1) else {
            return alone();
        };
        let started = std::time::Instant::now();
        let result = collective(mpi);
        self.stats.calls += 1;
        self.stats.seconds += started.elapsed().as_secs_f64();
        self.stats.bytes_sent += bytes_sent;
        result
    }

    /// (W-1)/W of `bytes`: what one rank sends in an all-to-all or all-gather of them.
    fn share_of_others(&self, bytes: usize) -> u64 {
        let w = self.world_size as u64;
        bytes as u64 * (w - 1) / w
    }

    /// Leaves the run cleanly (MPI_Finalize). A group dropped without `finish`, as on an
    /// error, leaves without it, so that the launcher ends the whole run at once instead of
    /// the other ranks waiting for this one forever.
    pub fn finish(mut self) -> Result<()> {
        if let Some(mpi) = self.mpi.take() {
            mpi.finish();
        }
        Ok(())
    }
}
