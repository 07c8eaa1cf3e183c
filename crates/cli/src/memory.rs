//! The process's allocator: jemalloc, with background threads that return
//! freed memory to the operating system.
//!
//! glibc's malloc keeps what a burst of load freed (one arena per thread,
//! fragmented by connections that come and go), so RSS measured after 2,000
//! connections closed stayed at its peak for good (docs/operations.md).
//! jemalloc purges unused pages after `dirty_decay_ms` (10 s by default),
//! from its own threads, even when the process is idle.

use std::sync::Arc;

use protosync_server::MemoryProbe;
use tikv_jemalloc_ctl::{background_thread, epoch, stats};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's purging threads; a failure only costs memory that
/// is returned later (on allocation) instead of on time.
pub(crate) fn start_purging() {
    if let Err(e) = background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background threads could not start");
    }
}

/// The allocator's figures for `/metrics`.
pub(crate) fn probe() -> MemoryProbe {
    Arc::new(|| {
        // The statistics are a snapshot refreshed by advancing the epoch.
        let _ = epoch::advance();
        let read = |value: tikv_jemalloc_ctl::Result<usize>| value.unwrap_or(0) as u64;
        vec![
            (
                "protosync_allocator_allocated_bytes",
                "Bytes the process has allocated and not freed.",
                read(stats::allocated::read()),
            ),
            (
                "protosync_allocator_resident_bytes",
                "Bytes of the allocator's pages resident in memory (what RSS sees of the heap).",
                read(stats::resident::read()),
            ),
            (
                "protosync_allocator_retained_bytes",
                "Bytes the allocator returned to the OS but keeps as address space.",
                read(stats::retained::read()),
            ),
        ]
    })
}
