//! `GET /api/profiling/memory`: resident, virtual and heap size now, jemalloc's statistics,
//! the growth of the tracked series over the sampler's window, and the thresholds reached.

use serde::{Deserialize, Serialize};

use crate::analyze::memory::{Level, MemorySampler};
use crate::analyze::trend::{growth, MIB};
use crate::record::allocator_stats::{allocator_stats, AllocatorStats};
use crate::record::memory_sample::{tracked_series, MemorySample};

/// The memory report.
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

/// Builds the memory report from a fresh reading and `sampler`'s window; the thresholds
/// and interval are the sampler's.
pub fn memory(sampler: &MemorySampler) -> MemoryReport {
    let proc_stats = crate::record::process::process_stats().unwrap_or_default();
    let alloc = crate::record::alloc_report::allocation_totals();
    let samples = sampler.samples();
    let g = growth(&samples, MemorySample::tracked_bytes);
    let config = sampler.config();
    let t = config.thresholds;
    let level = t.level(proc_stats.rss_bytes);
    MemoryReport {
        taken_unix_ms: super::now_unix_ms(),
        rss_bytes: proc_stats.rss_bytes,
        virtual_bytes: proc_stats.virtual_bytes,
        heap_bytes: alloc.installed.then_some(alloc.live_bytes),
        jemalloc: allocator_stats().ok(),
        growth_rate_mb_per_hour: g.map(|g| g.mb_per_hour),
        growth_r_squared: g.map(|g| g.r_squared),
        growth_series: tracked_series(&samples).to_owned(),
        samples: samples.len(),
        window_secs: g.map_or(0.0, |g| g.span_secs),
        sample_interval_secs: config.interval.as_secs_f64(),
        warning: level >= Level::Warning,
        alert: level == Level::Alert,
        warning_threshold_mb: t.warning_bytes as f64 / MIB,
        alert_threshold_mb: t.alert_bytes as f64 / MIB,
    }
}
