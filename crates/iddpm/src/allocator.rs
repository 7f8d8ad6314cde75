//! The C allocator's settings for training and sampling.
//!
//! burn allocates a fresh buffer for every tensor op's output and frees it soon after. glibc
//! serves blocks above 128 KiB–32 MiB (its adaptive `mmap` threshold) with `mmap` and hands
//! them back to the kernel on `free`, and trims the heap top above 128 KiB: every step then
//! faults the same memory in again, page by page. A training step of the CIFAR-10 network at
//! batch 8 took ~475k page faults; with the settings below, ~220k (`perf stat -e page-faults`,
//! `docs/performance.md`).

/// Keeps freed memory in the process for reuse: no `mmap` for large blocks, no trimming of
/// the heap. Peak memory is unchanged (freed blocks are reused, not added to); the process
/// just does not return memory to the kernel between steps. Call it once, first thing in
/// `main`. A no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; it is called before other threads start
    // allocating (the caller's contract: first thing in main), and its failure (return 0)
    // just leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
