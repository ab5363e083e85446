//! `GET /api/profiling/cpu`: process CPU percent between the sampler's last two samples,
//! CPU time since start, load, threads, and the recording overhead
//! ([`crate::analyze::overhead`]).

use serde::{Deserialize, Serialize};

use crate::analyze::memory::MemorySampler;
use crate::analyze::overhead;
use crate::record::memory_sample::MemorySample;
use crate::record::process::LoadAverage;

/// The CPU report.
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

/// CPU percent of one core between two samples, and the interval in seconds (`None` when
/// `b` is not later than `a`).
pub fn cpu_between(a: &MemorySample, b: &MemorySample) -> Option<(f64, f64)> {
    let wall_ms = b.at_unix_ms.checked_sub(a.at_unix_ms).filter(|&ms| ms > 0)?;
    let cpu_ns = b.process_cpu_ns.saturating_sub(a.process_cpu_ns);
    Some((cpu_ns as f64 / (wall_ms as f64 * 1e6) * 100.0, wall_ms as f64 / 1000.0))
}

/// Recording overhead over the sampler's last interval, percent of process CPU: `None`
/// until two samples and the calibration exist. Calls of a window that a reset ended are
/// not subtracted from the next window's.
pub fn overhead_percent(sampler: &MemorySampler) -> Option<f64> {
    let (a, b) = sampler.last_two()?;
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
pub fn cpu(sampler: &MemorySampler) -> CpuReport {
    let proc_stats = crate::record::process::process_stats().unwrap_or_default();
    let cpus = crate::record::process::available_cpus();
    let between = sampler.last_two().and_then(|(a, b)| cpu_between(&a, &b));
    CpuReport {
        cpu_percent: between.map(|b| b.0),
        cpu_percent_of_available: between.map(|b| b.0 / cpus as f64),
        interval_secs: between.map(|b| b.1),
        user_seconds: proc_stats.user_cpu_ns as f64 / 1e9,
        system_seconds: proc_stats.system_cpu_ns as f64 / 1e9,
        process_cpu_seconds: crate::record::clock::process_cpu_ns() as f64 / 1e9,
        load_average: crate::record::process::load_average().ok(),
        threads: proc_stats.threads,
        available_cpus: cpus,
        profiling_overhead_percent: overhead_percent(sampler),
    }
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
