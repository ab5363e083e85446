//! The JSON documents of the memory, CPU and allocation endpoints, assembled from
//! `profiling-core` readings. No figure here is computed by the server that core does not
//! measure; what is unavailable is said so (`null` plus a reason), never invented.

use profiling_core::{
    allocator_stats, rank, AllocationTotals, AllocatorStats, LargeAllocation, LoadAverage, MemorySample,
    MemoryThresholds, RankOptions, SizeBucket, Snapshot, SortKey, MIB,
};
use serde::{Deserialize, Serialize};

use crate::overhead;
use crate::state::Shared;

/// `GET /api/profiling/memory`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// When read, ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// Live heap counted by the `ProfilingAllocator` (`null` when it is not installed).
    pub heap_bytes: Option<u64>,
    /// jemalloc's statistics (`null` without the `jemalloc` feature).
    pub jemalloc: Option<AllocatorStats>,
    /// Growth of the tracked series (heap when counted, else RSS), MiB per hour, by
    /// least-squares regression over the sampler's window (`null` with < 2 samples).
    pub growth_rate_mb_per_hour: Option<f64>,
    /// Fit quality of that regression.
    pub growth_r_squared: Option<f64>,
    /// `"heap"` or `"rss"`.
    pub growth_series: String,
    /// Samples in the window.
    pub samples: usize,
    /// Time the window covers, seconds.
    pub window_secs: f64,
    /// Seconds between samples.
    pub sample_interval_secs: f64,
    /// RSS at or above the warning threshold.
    pub warning: bool,
    /// RSS at or above the alert threshold.
    pub alert: bool,
    /// Warning threshold, MiB.
    pub warning_threshold_mb: f64,
    /// Alert threshold, MiB.
    pub alert_threshold_mb: f64,
}

/// `GET /api/profiling/cpu`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    /// Process CPU over the last sampling interval, percent of one core (`null` until two
    /// samples exist).
    pub cpu_percent: Option<f64>,
    /// The same, as a percentage of all the CPUs the process may use.
    pub cpu_percent_of_available: Option<f64>,
    /// Length of that interval, seconds.
    pub interval_secs: Option<f64>,
    /// User CPU time since start, seconds (clock-tick resolution).
    pub user_seconds: f64,
    /// System CPU time since start, seconds (clock-tick resolution).
    pub system_seconds: f64,
    /// Process CPU time since start (user + system), seconds, ns resolution.
    pub process_cpu_seconds: f64,
    /// System load averages (`null` where `/proc/loadavg` is absent).
    pub load_average: Option<LoadAverage>,
    /// Threads in the process.
    pub threads: u64,
    /// CPUs the process may run on.
    pub available_cpus: usize,
    /// Estimated recording overhead over the last interval, percent of process CPU.
    pub profiling_overhead_percent: Option<f64>,
}

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

/// `GET /api/profiling/allocations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationReport {
    /// Whether the counting allocator is installed (all figures are 0 otherwise).
    pub counted: bool,
    /// Process-wide totals since start.
    pub totals: profiling_core::AllocCounters,
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

fn jemalloc() -> (Option<AllocatorStats>, Option<String>) {
    match allocator_stats() {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// Builds the memory report from a fresh reading and the sampler's window.
pub(crate) fn memory(shared: &Shared) -> MemoryReport {
    let proc_stats = profiling_core::process_stats().unwrap_or_default();
    let alloc = profiling_core::allocation_totals();
    let samples = shared.sampler.samples();
    let heap = samples.iter().all(|s| s.heap_bytes.is_some()) && !samples.is_empty();
    let g = profiling_core::growth(&samples, MemorySample::tracked_bytes);
    let t: MemoryThresholds = shared.config.thresholds;
    MemoryReport {
        taken_unix_ms: now_ms(),
        rss_bytes: proc_stats.rss_bytes,
        virtual_bytes: proc_stats.virtual_bytes,
        heap_bytes: alloc.installed.then_some(alloc.live_bytes),
        jemalloc: jemalloc().0,
        growth_rate_mb_per_hour: g.map(|g| g.mb_per_hour),
        growth_r_squared: g.map(|g| g.r_squared),
        growth_series: if heap { "heap" } else { "rss" }.to_owned(),
        samples: samples.len(),
        window_secs: g.map_or(0.0, |g| g.span_secs),
        sample_interval_secs: shared.config.memory_interval.as_secs_f64(),
        warning: proc_stats.rss_bytes >= t.warning_bytes,
        alert: proc_stats.rss_bytes >= t.alert_bytes,
        warning_threshold_mb: t.warning_bytes as f64 / MIB,
        alert_threshold_mb: t.alert_bytes as f64 / MIB,
    }
}

/// CPU percent of one core between two samples, and the interval in seconds.
pub(crate) fn cpu_between(a: &MemorySample, b: &MemorySample) -> Option<(f64, f64)> {
    let wall_ms = b.at_unix_ms.checked_sub(a.at_unix_ms).filter(|&ms| ms > 0)?;
    let cpu_ns = b.process_cpu_ns.saturating_sub(a.process_cpu_ns);
    Some((cpu_ns as f64 / (wall_ms as f64 * 1e6) * 100.0, wall_ms as f64 / 1000.0))
}

/// Overhead over the last sampling interval, when the calibration and two samples of the
/// same window exist.
pub(crate) fn overhead_percent(shared: &Shared) -> Option<f64> {
    let (a, b) = shared.sampler.last_two()?;
    let c = overhead::calibration()?;
    let calls = if a.window_epoch == b.window_epoch {
        b.profiled_calls.saturating_sub(a.profiled_calls)
    } else {
        b.profiled_calls
    };
    Some(overhead::overhead_percent(
        calls,
        b.process_cpu_ns.saturating_sub(a.process_cpu_ns),
        c.per_call_ns,
    ))
}

/// Builds the CPU report.
pub(crate) fn cpu(shared: &Shared) -> CpuReport {
    let proc_stats = profiling_core::process_stats().unwrap_or_default();
    let cpus = profiling_core::available_cpus();
    let last = shared.sampler.last_two();
    let between = last.as_ref().and_then(|(a, b)| cpu_between(a, b));
    CpuReport {
        cpu_percent: between.map(|b| b.0),
        cpu_percent_of_available: between.map(|b| b.0 / cpus as f64),
        interval_secs: between.map(|b| b.1),
        user_seconds: proc_stats.user_cpu_ns as f64 / 1e9,
        system_seconds: proc_stats.system_cpu_ns as f64 / 1e9,
        process_cpu_seconds: profiling_core::process_cpu_ns() as f64 / 1e9,
        load_average: profiling_core::load_average().ok(),
        threads: proc_stats.threads,
        available_cpus: cpus,
        profiling_overhead_percent: overhead_percent(shared),
    }
}

/// Builds the allocation report; `limit` caps `top_functions`.
pub(crate) fn allocations(snap: &Snapshot, totals: AllocationTotals, limit: usize) -> AllocationReport {
    let ranking = rank(snap, &RankOptions::new().sort(SortKey::AllocBytes).limit(limit));
    let top_functions = ranking
        .bottlenecks
        .iter()
        .map(|b| &b.stats)
        .filter(|s| s.alloc_self.alloc_bytes > 0)
        .enumerate()
        .map(|(i, s)| FunctionAllocations {
            rank: i + 1,
            function: s.name.clone(),
            calls: s.calls,
            alloc_bytes: s.alloc_self.alloc_bytes,
            alloc_count: s.alloc_self.alloc_count,
            freed_bytes: s.alloc_self.freed_bytes,
            net_bytes: s.alloc_self.alloc_bytes as i64 - s.alloc_self.freed_bytes as i64,
            bytes_per_call: s.alloc_self.alloc_bytes / s.calls.max(1),
            alloc_total_bytes: s.alloc_total.alloc_bytes,
        })
        .collect();
    let (stats, reason) = jemalloc();
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
        unavailable_reason: reason,
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_between_samples() {
        let a = MemorySample {
            at_unix_ms: 1000,
            process_cpu_ns: 0,
            ..Default::default()
        };
        let b = MemorySample {
            at_unix_ms: 3000,
            process_cpu_ns: 500_000_000,
            ..Default::default()
        };
        let (pct, secs) = cpu_between(&a, &b).unwrap();
        assert!((pct - 25.0).abs() < 1e-9, "{pct}");
        assert_eq!(secs, 2.0);
        assert!(cpu_between(&b, &a).is_none());
    }
}
