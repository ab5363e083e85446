//! The JSON documents of the memory, CPU and allocation endpoints. They are built by
//! `profiling-core` ([`profiling_core::analyze::reports`]); this module only hands core the
//! server's sampler, and re-exports the types under their former `profiling_server` paths.

use profiling_core::analyze::memory::MemorySample;
pub use profiling_core::analyze::reports::{AllocationReport, CpuReport, FunctionAllocations, MemoryReport};

use crate::state::ServerState;

/// `GET /api/profiling/memory`.
pub(crate) fn memory(shared: &ServerState) -> MemoryReport {
    profiling_core::analyze::reports::memory(&shared.sampler)
}

/// `GET /api/profiling/cpu`.
pub(crate) fn cpu(shared: &ServerState) -> CpuReport {
    profiling_core::analyze::reports::cpu(&shared.sampler)
}

/// CPU percent of one core between two samples, and the interval in seconds.
pub(crate) fn cpu_between(a: &MemorySample, b: &MemorySample) -> Option<(f64, f64)> {
    profiling_core::analyze::reports::cpu_between(a, b)
}

/// Recording overhead over the last sampling interval.
pub(crate) fn overhead_percent(shared: &ServerState) -> Option<f64> {
    profiling_core::analyze::reports::overhead_percent(&shared.sampler)
}

pub(crate) use profiling_core::analyze::reports::allocations;
