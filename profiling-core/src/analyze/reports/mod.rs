//! The reports the HTTP API serves, built here so that a server only transports them: the
//! memory report ([`memory()`]: readings, growth, thresholds), the CPU report ([`cpu()`]: CPU
//! percent between samples, load, the recording overhead) and the allocation report
//! ([`allocations()`]: top allocating functions, sizes, jemalloc efficiency).
//!
//! Each is one function of what core already holds (a [`MemorySampler`], a snapshot, the
//! allocation totals) and returns a `Serialize` type whose JSON is documented in
//! `docs/http-api.md`. Nothing here is invented: what is unavailable is `None` (JSON `null`),
//! with a reason where one is known.
//!
//! [`MemorySampler`]: crate::analyze::memory::MemorySampler

pub mod allocations;
pub mod cpu;
pub mod memory;

pub use allocations::{allocations, AllocationReport, FunctionAllocations};
pub use cpu::{cpu, cpu_between, overhead_percent, CpuReport};
pub use memory::{memory, MemoryReport};

/// Now, in ms since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
