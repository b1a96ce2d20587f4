//! The memory allocator's own figures, for `stats_memory_metrics` and /metrics.
//!
//! Sluice runs on jemalloc (the binary sets it as the global allocator) with its
//! background threads on. What decided it, measured side by side with the system's malloc
//! (benches/allocator.py, RESULTS.md "Allocator"): throughput and CPU per query are the
//! same within the machine's noise; after a burst of large results from 2,000 clients,
//! glibc's malloc and jemalloc without background threads both keep ~150 MB resident for
//! good, while jemalloc's background purging gives it back within seconds (down to ~25
//! MB) — a proxy's load comes in bursts, and memory it keeps after one is memory the
//! database host does not have. jemalloc also reports what it holds, which ProxySQL's tools
//! read as `jemalloc_*`. The cost: an idle session takes about 1 KiB more.

/// Stack size of each worker thread (set on the runtime, so the figure is true).
pub const WORKER_STACK_BYTES: usize = 2 << 20;

/// jemalloc's statistics, in bytes (all 0 when they cannot be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes the program has allocated and not freed.
    pub allocated: usize,
    /// Bytes in pages holding allocations (allocated plus their pages' free room).
    pub active: usize,
    /// Bytes in physically resident pages the allocator maps.
    pub resident: usize,
    /// Bytes in the allocator's mapped chunks.
    pub mapped: usize,
    /// Bytes of the allocator's own bookkeeping.
    pub metadata: usize,
    /// Bytes kept mapped but given back to the system (not resident).
    pub retained: usize,
    /// Whether background threads purge freed memory (see [`purge_in_background`]).
    pub background_threads: bool,
}

/// Turns on jemalloc's background threads, which return freed memory to the system
/// while the proxy is idle (by default jemalloc purges only when it is allocating).
pub fn purge_in_background() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("sluice: jemalloc background threads unavailable: {e}");
    }
}

/// Reads jemalloc's statistics as of now (its counters are refreshed first).
pub fn stats() -> AllocatorStats {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return AllocatorStats::default();
    }
    AllocatorStats {
        allocated: stats::allocated::read().unwrap_or(0),
        active: stats::active::read().unwrap_or(0),
        resident: stats::resident::read().unwrap_or(0),
        mapped: stats::mapped::read().unwrap_or(0),
        metadata: stats::metadata::read().unwrap_or(0),
        retained: stats::retained::read().unwrap_or(0),
        background_threads: tikv_jemalloc_ctl::background_thread::read().unwrap_or(false),
    }
}
