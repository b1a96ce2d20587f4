//! The memory allocator's own figures, for `stats_memory_metrics` and /metrics.
//!
//! Sluice runs on jemalloc (the binary sets it as the global allocator): a proxy holds
//! many small buffers per connection that come and go on every worker thread, and
//! jemalloc's per-thread caches and arenas keep that fast and unfragmented where glibc's
//! malloc lets freed memory pile up per thread; it also reports what it holds, which
//! ProxySQL's tools read as `jemalloc_*` (benches/RESULTS.md, "Allocator", measures the
//! choice).

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
    }
}
