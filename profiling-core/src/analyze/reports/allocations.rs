//! `GET /api/profiling/allocations`: functions by bytes allocated in their own code, the
//! allocation sizes, recent large allocations, and jemalloc's efficiency and fragmentation.

use serde::{Deserialize, Serialize};

use crate::record::alloc::AllocCounters;
use crate::record::alloc_report::{AllocationTotals, LargeAllocation, SizeBucket};
use crate::record::allocator_stats::allocator_stats;
use crate::record::snapshot::{FunctionStats, Snapshot};

/// One entry of the allocation ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionAllocations {
    /// Rank by allocated bytes.
    pub rank: usize,
    /// Function name.
    pub function: String,
    /// Calls.
    pub calls: u64,
    /// Bytes allocated in its own code (exclusive of annotated callees).
    pub alloc_bytes: u64,
    /// Allocations in its own code.
    pub alloc_count: u64,
    /// Bytes freed in its own code.
    pub freed_bytes: u64,
    /// Allocated minus freed in its own code (bytes it handed on or kept).
    pub net_bytes: i64,
    /// Bytes allocated per call.
    pub bytes_per_call: u64,
    /// Bytes allocated including annotated callees.
    pub alloc_total_bytes: u64,
}

/// The allocation report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationReport {
    /// Whether the counting allocator is installed (all figures are 0 otherwise).
    pub counted: bool,
    /// Process-wide totals since start.
    pub totals: AllocCounters,
    /// Live heap, bytes.
    pub live_bytes: u64,
    /// Functions by allocated bytes, most first.
    pub top_functions: Vec<FunctionAllocations>,
    /// Allocation sizes in power-of-two buckets, counted by the allocator.
    pub size_distribution: Vec<SizeBucket>,
    /// Recent allocations at or above the threshold.
    pub large_allocations: Vec<LargeAllocation>,
    /// That threshold, bytes.
    pub large_allocation_threshold: u64,
    /// jemalloc `allocated / active` (`null` when unavailable).
    pub efficiency: Option<f64>,
    /// jemalloc `(resident - allocated) / resident`, percent (`null` when unavailable).
    pub fragmentation_percent: Option<f64>,
    /// Why `efficiency` and `fragmentation_percent` are `null`.
    pub unavailable_reason: Option<String>,
}

/// Builds the allocation report; `limit` caps `top_functions`. Functions are ordered as
/// the `alloc_bytes` ranking orders them: self bytes allocated, then self wall time (both
/// descending), then name; those that allocated nothing are left out.
pub fn allocations(snap: &Snapshot, totals: AllocationTotals, limit: usize) -> AllocationReport {
    let mut by_bytes: Vec<&FunctionStats> = snap.functions.iter().filter(|f| f.alloc_self.alloc_bytes > 0).collect();
    by_bytes.sort_by(|a, b| {
        b.alloc_self
            .alloc_bytes
            .cmp(&a.alloc_self.alloc_bytes)
            .then(b.self_wall_ns.cmp(&a.self_wall_ns))
            .then_with(|| a.name.cmp(&b.name))
    });
    let top_functions = by_bytes
        .into_iter()
        .take(limit)
        .enumerate()
        .map(|(i, f)| FunctionAllocations {
            rank: i + 1,
            function: f.name.clone(),
            calls: f.calls,
            alloc_bytes: f.alloc_self.alloc_bytes,
            alloc_count: f.alloc_self.alloc_count,
            freed_bytes: f.alloc_self.freed_bytes,
            net_bytes: f.alloc_self.net_bytes(),
            bytes_per_call: f.alloc_self.alloc_bytes / f.calls.max(1),
            alloc_total_bytes: f.alloc_total.alloc_bytes,
        })
        .collect();
    let (stats, unavailable_reason) = match allocator_stats() {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    AllocationReport {
        counted: totals.installed,
        totals: totals.counters,
        live_bytes: totals.live_bytes,
        top_functions,
        size_distribution: totals.size_distribution,
        large_allocations: totals.large_allocations,
        large_allocation_threshold: totals.large_allocation_threshold,
        efficiency: stats.and_then(|s| s.efficiency()),
        fragmentation_percent: stats.and_then(|s| s.fragmentation_percent()),
        unavailable_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_functions_follow_the_alloc_bytes_ranking_and_skip_non_allocators() {
        let f = |name: &str, bytes: u64, freed: u64, self_wall_ns: u64| {
            let mut s = FunctionStats {
                name: name.to_owned(),
                calls: 4,
                self_wall_ns,
                ..Default::default()
            };
            s.alloc_self.alloc_bytes = bytes;
            s.alloc_self.freed_bytes = freed;
            s.alloc_total.alloc_bytes = bytes * 2;
            s
        };
        let snap = Snapshot {
            functions: vec![
                f("c", 100, 0, 1),
                f("none", 0, 0, 9),
                f("b", 400, 500, 1),
                f("a", 100, 0, 5),
            ],
            ..Default::default()
        };
        let r = allocations(&snap, AllocationTotals::default(), 2);
        let names: Vec<_> = r.top_functions.iter().map(|t| (t.rank, t.function.as_str())).collect();
        assert_eq!(names, vec![(1, "b"), (2, "a")]);
        let b = &r.top_functions[0];
        assert_eq!((b.net_bytes, b.bytes_per_call, b.alloc_total_bytes), (-100, 100, 800));
        let all = allocations(&snap, AllocationTotals::default(), 10);
        assert_eq!(
            all.top_functions.len(),
            3,
            "the function that allocated nothing is left out"
        );
    }
}
