//! Where memory is sampled: [`MemorySampler`], a background thread that reads resident and
//! virtual size, live heap, threads and CPU every interval into a bounded ring of
//! [`MemorySample`]s, and the least-squares [`regression`] that turns the ring into a
//! growth rate. Also the allocator's own statistics ([`allocator_stats`], jemalloc only).
//!
//! The sampler also records, per sample, how many bytes each annotated function has kept
//! (allocated minus freed, exclusive of annotated callees) for the leak analysis in
//! [`crate::analyze_leaks`], and runs that analysis every leak-check interval.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::analyze::leak::{self, LeakOptions, LeakReport};
use crate::error::{Error, Result};

/// Bytes in a MiB: every "MB" figure of this crate and of the HTTP API is a MiB.
pub const MIB: f64 = 1_048_576.0;

/// One reading of the process's memory and CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// Live heap counted by the [`crate::ProfilingAllocator`]; `None` when it is not installed.
    pub heap_bytes: Option<u64>,
    /// Threads in the process.
    pub threads: u64,
    /// Process CPU time (user + system), ns, from `CLOCK_PROCESS_CPUTIME_ID`.
    pub process_cpu_ns: u64,
    /// User CPU time, ns (clock-tick resolution).
    pub user_cpu_ns: u64,
    /// System CPU time, ns (clock-tick resolution).
    pub system_cpu_ns: u64,
    /// Calls recorded in the current window, all functions together.
    pub profiled_calls: u64,
    /// The profiling window (see [`crate::Window::epoch`]) the call count belongs to.
    pub window_epoch: u64,
}

impl MemorySample {
    /// The memory series the analyses use: live heap when counted, otherwise RSS.
    pub fn tracked_bytes(&self) -> u64 {
        self.heap_bytes.unwrap_or(self.rss_bytes)
    }
}

/// Bytes one function has kept so far in a window: allocated minus freed during its calls,
/// exclusive of annotated callees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRetention {
    /// Function name.
    pub function: String,
    /// Calls so far.
    pub calls: u64,
    /// Net bytes (allocated minus freed) so far; negative when it frees more than it allocates.
    pub net_bytes: i64,
}

/// Every function's retention at one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionObservation {
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The window the figures belong to (they restart at each reset).
    pub window_epoch: u64,
    /// Functions with at least one call.
    pub functions: Vec<FunctionRetention>,
}

/// A least-squares line `y = slope * x + intercept`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    /// Slope, in y units per x unit.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Coefficient of determination in [0, 1] (1 when y is constant).
    pub r_squared: f64,
}

/// Fits `y = a x + b` by ordinary least squares. `None` for fewer than two points or when
/// every x is the same.
pub fn regression(points: &[(f64, f64)]) -> Option<Regression> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in points {
        let (dx, dy) = (x - mx, y - my);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= f64::EPSILON * nf {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Regression {
        slope,
        intercept: my - slope * mx,
        r_squared,
    })
}

/// Growth of a memory series, from a regression over time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Growth {
    /// Slope, MiB per hour.
    pub mb_per_hour: f64,
    /// Fit quality in [0, 1].
    pub r_squared: f64,
    /// Samples used.
    pub samples: usize,
    /// Time between the first and last sample, seconds.
    pub span_secs: f64,
}

/// Growth of `series(sample)` over `samples`, by least squares. `None` for fewer than two
/// samples or samples all at the same instant.
pub fn growth(samples: &[MemorySample], series: impl Fn(&MemorySample) -> u64) -> Option<Growth> {
    let first = samples.first()?.at_unix_ms;
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                (s.at_unix_ms.saturating_sub(first)) as f64 / 3_600_000.0,
                series(s) as f64 / MIB,
            )
        })
        .collect();
    let r = regression(&points)?;
    let last = samples.last()?.at_unix_ms;
    Some(Growth {
        mb_per_hour: r.slope,
        r_squared: r.r_squared,
        samples: samples.len(),
        span_secs: last.saturating_sub(first) as f64 / 1000.0,
    })
}

/// Memory thresholds, compared with RSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryThresholds {
    /// RSS from which the `warning` flag is raised, bytes.
    pub warning_bytes: u64,
    /// RSS from which the `alert` flag is raised, bytes.
    pub alert_bytes: u64,
}

impl Default for MemoryThresholds {
    fn default() -> Self {
        Self {
            warning_bytes: 650 * 1024 * 1024,
            alert_bytes: 700 * 1024 * 1024,
        }
    }
}

/// Allocator statistics read from jemalloc (bytes).
///
/// - `allocated`: bytes in live allocations (jemalloc size classes, so above requested sizes);
/// - `active`: bytes in pages that hold live allocations;
/// - `resident`: bytes of allocator memory resident in RAM (data, metadata, dirty pages);
/// - `mapped`: bytes in mapped extents; `retained`: bytes kept mapped but returned to the OS;
/// - `metadata`: bytes of allocator bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in active pages.
    pub active: u64,
    /// Resident allocator bytes.
    pub resident: u64,
    /// Mapped bytes.
    pub mapped: u64,
    /// Retained bytes.
    pub retained: u64,
    /// Metadata bytes.
    pub metadata: u64,
}

impl AllocatorStats {
    /// `allocated / active`: the share of active pages that holds live allocations.
    pub fn efficiency(&self) -> Option<f64> {
        (self.active > 0).then(|| self.allocated as f64 / self.active as f64)
    }

    /// `(resident - allocated) / resident`, in percent: the share of the allocator's resident
    /// memory that holds no live allocation (free space in pages, dirty pages, metadata).
    pub fn fragmentation_percent(&self) -> Option<f64> {
        (self.resident > 0).then(|| self.resident.saturating_sub(self.allocated) as f64 / self.resident as f64 * 100.0)
    }
}

/// Reads jemalloc's statistics (advancing its epoch first so they are current).
///
/// [`Error::AllocatorStats`] without the `jemalloc` feature, and when jemalloc is linked but
/// is not the global allocator.
pub fn allocator_stats() -> Result<AllocatorStats> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        let e = |err: tikv_jemalloc_ctl::Error| Error::AllocatorStats(err.to_string());
        epoch::advance().map_err(e)?;
        let stats = AllocatorStats {
            allocated: stats::allocated::read().map_err(e)? as u64,
            active: stats::active::read().map_err(e)? as u64,
            resident: stats::resident::read().map_err(e)? as u64,
            mapped: stats::mapped::read().map_err(e)? as u64,
            retained: stats::retained::read().map_err(e)? as u64,
            metadata: stats::metadata::read().map_err(e)? as u64,
        };
        if !jemalloc_is_global() {
            return Err(Error::AllocatorStats(
                "jemalloc is linked but is not the global allocator".to_owned(),
            ));
        }
        Ok(stats)
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        Err(Error::AllocatorStats(
            "built without the `jemalloc` feature of profiling-core".to_owned(),
        ))
    }
}

/// Whether the global allocator is jemalloc: a 4 MiB probe allocation must show in
/// jemalloc's `stats.allocated` (checked once; 1 MiB of slack for other threads).
#[cfg(feature = "jemalloc")]
fn jemalloc_is_global() -> bool {
    static IS_GLOBAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IS_GLOBAL.get_or_init(|| {
        use tikv_jemalloc_ctl::{epoch, stats};
        const PROBE: usize = 4 << 20;
        let read = || epoch::advance().ok().and_then(|_| stats::allocated::read().ok());
        let Some(before) = read() else { return false };
        let probe = std::hint::black_box(vec![1u8; PROBE]);
        let after = read();
        drop(probe);
        after.is_some_and(|a| a >= before + PROBE - (1 << 20))
    })
}

/// Reads one sample now.
pub fn read_sample() -> MemorySample {
    read_sample_and_functions().0
}

fn read_sample_and_functions() -> (MemorySample, FunctionObservation) {
    let snap = crate::snapshot();
    let proc_stats = crate::record::process::process_stats().unwrap_or_default();
    let alloc = crate::record::alloc_report::allocation_totals();
    let at_unix_ms = snap.window.taken_unix_ms;
    let sample = MemorySample {
        at_unix_ms,
        rss_bytes: proc_stats.rss_bytes,
        virtual_bytes: proc_stats.virtual_bytes,
        heap_bytes: alloc.installed.then_some(alloc.live_bytes),
        threads: proc_stats.threads,
        process_cpu_ns: crate::record::clock::process_cpu_ns(),
        user_cpu_ns: proc_stats.user_cpu_ns,
        system_cpu_ns: proc_stats.system_cpu_ns,
        profiled_calls: snap.functions.iter().map(|f| f.calls).sum(),
        window_epoch: snap.window.epoch,
    };
    let obs = FunctionObservation {
        at_unix_ms,
        window_epoch: snap.window.epoch,
        functions: snap
            .functions
            .iter()
            .map(|f| FunctionRetention {
                function: f.name.clone(),
                calls: f.calls,
                net_bytes: f.alloc_self.net_bytes(),
            })
            .collect(),
    };
    (sample, obs)
}

/// Settings of a [`MemorySampler`].
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// Time between samples (default 5 s).
    pub interval: Duration,
    /// Samples kept (default 720: an hour at 5 s).
    pub capacity: usize,
    /// Function observations kept (default 120). They are larger than samples.
    pub function_capacity: usize,
    /// Time between background leak analyses (default 300 s); `None` disables them.
    pub leak_check_interval: Option<Duration>,
    /// Options of the leak analysis.
    pub leak: LeakOptions,
    /// Thresholds logged when crossed.
    pub thresholds: MemoryThresholds,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            capacity: 720,
            function_capacity: 120,
            leak_check_interval: Some(Duration::from_secs(300)),
            leak: LeakOptions::default(),
            thresholds: MemoryThresholds::default(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    samples: VecDeque<MemorySample>,
    functions: VecDeque<FunctionObservation>,
    last_leak_report: Option<LeakReport>,
    level: u8,
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    config: SamplerConfig,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_sample(&self) {
        let (sample, obs) = read_sample_and_functions();
        let mut st = self.lock();
        push_bounded(&mut st.samples, sample, self.config.capacity);
        push_bounded(&mut st.functions, obs, self.config.function_capacity);
        let t = self.config.thresholds;
        let level = if sample.rss_bytes >= t.alert_bytes {
            2
        } else if sample.rss_bytes >= t.warning_bytes {
            1
        } else {
            0
        };
        if level > st.level {
            let mb = sample.rss_bytes as f64 / MIB;
            if level == 2 {
                tracing::error!(
                    rss_mb = mb,
                    alert_mb = t.alert_bytes as f64 / MIB,
                    "memory above the alert threshold"
                );
            } else {
                tracing::warn!(
                    rss_mb = mb,
                    warning_mb = t.warning_bytes as f64 / MIB,
                    "memory above the warning threshold"
                );
            }
        }
        st.level = level;
    }

    fn leak_check(&self) {
        let (samples, functions) = {
            let st = self.lock();
            (Vec::from(st.samples.clone()), Vec::from(st.functions.clone()))
        };
        let large = crate::record::alloc_report::allocation_totals().large_allocations;
        let report = leak::analyze(&samples, &functions, &large, &self.config.leak);
        for s in &report.suspects {
            tracing::warn!(kind = ?s.kind, function = s.function.as_deref().unwrap_or(""), "leak suspect: {}", s.evidence);
        }
        self.lock().last_leak_report = Some(report);
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    while q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(v);
}

/// The background sampler: one thread, stopped and joined when dropped.
#[derive(Debug)]
pub struct MemorySampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MemorySampler {
    /// Takes a first sample now and starts the thread that takes one every interval.
    pub fn start(config: SamplerConfig) -> Result<Self> {
        if config.interval.is_zero() {
            return Err(Error::InvalidConfig(
                "the memory sampling interval must be above 0".to_owned(),
            ));
        }
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        shared.take_sample();
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("profiling-sampler".to_owned())
            .spawn(move || run(&worker))
            .map_err(|source| Error::Io {
                path: "<spawn profiling-sampler thread>".to_owned(),
                source,
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SamplerConfig {
        &self.shared.config
    }

    /// Takes a sample now, in addition to the periodic ones.
    pub fn sample_now(&self) {
        self.shared.take_sample();
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<MemorySample> {
        self.shared.lock().samples.iter().copied().collect()
    }

    /// The last two samples (older first), when there are two.
    pub fn last_two(&self) -> Option<(MemorySample, MemorySample)> {
        let st = self.shared.lock();
        let n = st.samples.len();
        (n >= 2).then(|| (st.samples[n - 2], st.samples[n - 1]))
    }

    /// The function observations kept, oldest first.
    pub fn function_history(&self) -> Vec<FunctionObservation> {
        self.shared.lock().functions.iter().cloned().collect()
    }

    /// Growth of the tracked series (heap when counted, else RSS) over the samples kept.
    pub fn growth(&self) -> Option<Growth> {
        growth(&self.samples(), MemorySample::tracked_bytes)
    }

    /// The latest background leak analysis, if one ran.
    pub fn last_leak_report(&self) -> Option<LeakReport> {
        self.shared.lock().last_leak_report.clone()
    }

    /// Runs the leak analysis over the samples kept now.
    pub fn analyze_leaks(&self, options: &LeakOptions) -> LeakReport {
        let samples = self.samples();
        let functions = self.function_history();
        let large = crate::record::alloc_report::allocation_totals().large_allocations;
        leak::analyze(&samples, &functions, &large, options)
    }
}

fn run(shared: &Shared) {
    let interval = shared.config.interval;
    let mut next_sample = Instant::now() + interval;
    let mut next_leak = shared.config.leak_check_interval.map(|d| Instant::now() + d);
    loop {
        let now = Instant::now();
        let deadline = next_leak.map_or(next_sample, |l| l.min(next_sample));
        {
            let st = shared.lock();
            if st.stop {
                return;
            }
            if deadline > now {
                let (st, _) = shared
                    .wake
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner());
                if st.stop {
                    return;
                }
                continue;
            }
        }
        if Instant::now() >= next_sample {
            shared.take_sample();
            next_sample += interval;
            if next_sample < Instant::now() {
                next_sample = Instant::now() + interval;
            }
        }
        if let (Some(at), Some(every)) = (next_leak, shared.config.leak_check_interval) {
            if Instant::now() >= at {
                shared.leak_check();
                next_leak = Some(Instant::now() + every);
            }
        }
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_recovers_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 2.0)).collect();
        let r = regression(&pts).unwrap();
        assert!(
            (r.slope - 3.0).abs() < 1e-9 && (r.intercept - 2.0).abs() < 1e-9,
            "{r:?}"
        );
        assert!((r.r_squared - 1.0).abs() < 1e-9);
        assert!(regression(&pts[..1]).is_none());
        assert!(regression(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
        let flat = regression(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]).unwrap();
        assert_eq!(flat.slope, 0.0);
    }

    #[test]
    fn noisy_flat_series_has_low_r_squared() {
        let ys = [5.0, 7.0, 4.0, 6.0, 5.0, 7.0, 4.0, 6.0];
        let pts: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
        let r = regression(&pts).unwrap();
        assert!(r.slope.abs() < 0.2 && r.r_squared < 0.2, "{r:?}");
    }

    #[test]
    fn growth_is_in_mib_per_hour() {
        // +1 MiB every minute for 10 minutes = 60 MiB/h.
        let samples: Vec<MemorySample> = (0..=10)
            .map(|i| MemorySample {
                at_unix_ms: 1_000_000 + i * 60_000,
                rss_bytes: 100 * 1_048_576 + i * 1_048_576,
                ..Default::default()
            })
            .collect();
        let g = growth(&samples, |s| s.rss_bytes).unwrap();
        assert!((g.mb_per_hour - 60.0).abs() < 1e-6, "{g:?}");
        assert_eq!(g.samples, 11);
        assert_eq!(g.span_secs, 600.0);
    }

    #[test]
    fn ring_is_bounded() {
        let mut q = VecDeque::new();
        for i in 0..10 {
            push_bounded(&mut q, i, 3);
        }
        assert_eq!(Vec::from(q), vec![7, 8, 9]);
    }

    #[test]
    fn allocator_figures() {
        let s = AllocatorStats {
            allocated: 75,
            active: 100,
            resident: 150,
            ..Default::default()
        };
        assert_eq!(s.efficiency(), Some(0.75));
        assert_eq!(s.fragmentation_percent(), Some(50.0));
        assert_eq!(AllocatorStats::default().efficiency(), None);
    }

    #[test]
    fn sampler_samples_and_stops_on_drop() {
        let s = MemorySampler::start(SamplerConfig {
            interval: Duration::from_millis(20),
            leak_check_interval: None,
            ..Default::default()
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let n = s.samples().len();
        // 1 initial + ~7 periodic; generous bounds for a loaded 2-core machine.
        assert!((3..=12).contains(&n), "{n} samples");
        assert!(s.samples()[0].rss_bytes > 0);
        let t = Instant::now();
        drop(s);
        assert!(t.elapsed() < Duration::from_millis(500), "drop took {:?}", t.elapsed());
    }
}
