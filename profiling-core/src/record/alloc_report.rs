//! The process-wide allocation report: totals and live heap over every thread, the size
//! distribution, and the most recent large allocations named by function.
//!
//! What the counting allocator ([`crate::record::alloc`]) records, read for people: kept
//! apart from the allocator so that the allocator depends on no registry of names.

use serde::{Deserialize, Serialize};

use crate::record::alloc::{self, AllocCounters};
use crate::record::callsite;

/// One allocation at or above the large-allocation threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeAllocation {
    /// Requested size.
    pub bytes: u64,
    /// Innermost annotated function at the time, if any.
    pub function: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Process-wide figures counted by [`ProfilingAllocator`](crate::ProfilingAllocator).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationTotals {
    /// Whether the counting allocator is installed; all figures are 0 when it is not.
    pub installed: bool,
    /// Totals since the process started.
    pub counters: AllocCounters,
    /// Live heap: bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// `(lower bound, count)` per power-of-two size bucket, non-empty buckets only.
    pub size_distribution: Vec<SizeBucket>,
    /// The most recent large allocations (at most 64).
    pub large_allocations: Vec<LargeAllocation>,
    /// Threshold for [`AllocationTotals::large_allocations`], bytes.
    pub large_allocation_threshold: u64,
}

/// One power-of-two size bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeBucket {
    /// Smallest size in the bucket (bytes).
    pub min_bytes: u64,
    /// Largest size in the bucket (bytes).
    pub max_bytes: u64,
    /// Allocations of a size in the bucket.
    pub count: u64,
}

/// Reads the process-wide allocation figures.
pub fn allocation_totals() -> AllocationTotals {
    let counts = alloc::process_counts();
    let names = callsite::all_functions();
    let large = alloc::recent_large_allocations()
        .into_iter()
        .map(|l| LargeAllocation {
            bytes: l.bytes,
            function: names.get(l.func as usize).map(|m| m.name.clone()),
            at_unix_ms: l.at_unix_ms,
        })
        .collect();
    AllocationTotals {
        installed: alloc::counting_allocator_installed(),
        live_bytes: counts.counters.alloc_bytes.saturating_sub(counts.counters.freed_bytes),
        counters: counts.counters,
        size_distribution: counts
            .sizes
            .iter()
            .enumerate()
            .filter(|(_, &count)| count > 0)
            .map(|(i, &count)| SizeBucket {
                min_bytes: if i == 0 { 0 } else { 1 << i },
                max_bytes: (1u64 << (i + 1)) - 1,
                count,
            })
            .collect(),
        large_allocations: large,
        large_allocation_threshold: alloc::large_allocation_threshold(),
    }
}
