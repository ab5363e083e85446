//! Where memory is sampled: [`MemorySampler`], a background thread that takes a
//! [`MemorySample`] every interval into a bounded ring, with each function's retention
//! ([`FunctionObservation`]) beside it, logs when resident memory crosses a threshold, and
//! runs the leak analysis ([`crate::analyze::leak`]) every leak-check interval.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::analyze::leak::{self, LeakOptions, LeakReport};
use crate::analyze::memory::{Level, MemoryThresholds};
use crate::analyze::trend::{growth, Growth, MIB};
use crate::error::{Error, Result};
use crate::record::memory_sample::{read_sample_and_functions, FunctionObservation, MemorySample};

/// Longest sampling or leak-check interval [`MemorySampler::start`] accepts: a week. (Far
/// longer ones cannot be added to a clock reading.)
pub const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// What the sampler has read so far, and whether it was told to stop.
#[derive(Debug, Default)]
struct Readings {
    samples: VecDeque<MemorySample>,
    functions: VecDeque<FunctionObservation>,
    last_leak_report: Option<LeakReport>,
    /// The threshold level of the latest sample, to log each crossing once.
    level: Level,
    stop: bool,
}

/// What the sampler thread and its handle share: the settings, the readings, and the
/// condition variable that wakes the thread early (to stop it).
#[derive(Debug)]
struct SamplerShared {
    config: SamplerConfig,
    readings: Mutex<Readings>,
    wake: Condvar,
}

impl SamplerShared {
    fn lock(&self) -> MutexGuard<'_, Readings> {
        self.readings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_sample(&self) {
        let (sample, obs) = read_sample_and_functions();
        let mut r = self.lock();
        push_bounded(&mut r.samples, sample, self.config.capacity);
        push_bounded(&mut r.functions, obs, self.config.function_capacity);
        let t = self.config.thresholds;
        let level = t.level(sample.rss_bytes);
        if level > r.level {
            let mb = sample.rss_bytes as f64 / MIB;
            match level {
                Level::Alert => tracing::error!(
                    rss_mb = mb,
                    alert_mb = t.alert_bytes as f64 / MIB,
                    "memory above the alert threshold"
                ),
                Level::Warning => tracing::warn!(
                    rss_mb = mb,
                    warning_mb = t.warning_bytes as f64 / MIB,
                    "memory above the warning threshold"
                ),
                Level::Normal => {}
            }
        }
        r.level = level;
    }

    fn leak_check(&self) {
        let (samples, functions) = {
            let r = self.lock();
            (Vec::from(r.samples.clone()), Vec::from(r.functions.clone()))
        };
        let large = crate::record::alloc_report::allocation_totals().large_allocations;
        let report = leak::analyze(&samples, &functions, &large, &self.config.leak).with_live_heap();
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
    shared: Arc<SamplerShared>,
    thread: Option<JoinHandle<()>>,
}

impl MemorySampler {
    /// Takes a first sample now and starts the thread that takes one every interval.
    ///
    /// [`Error::InvalidConfig`] when an interval is 0 or above [`MAX_INTERVAL`].
    pub fn start(config: SamplerConfig) -> Result<Self> {
        let in_range = |d: Duration| !d.is_zero() && d <= MAX_INTERVAL;
        if !in_range(config.interval) {
            return Err(Error::InvalidConfig(format!(
                "the memory sampling interval must be above 0 and at most {MAX_INTERVAL:?}, got {:?}",
                config.interval
            )));
        }
        if config.leak_check_interval.is_some_and(|d| !in_range(d)) {
            return Err(Error::InvalidConfig(format!(
                "the leak-check interval must be above 0 and at most {MAX_INTERVAL:?} (or None), got {:?}",
                config.leak_check_interval
            )));
        }
        let shared = Arc::new(SamplerShared {
            config,
            readings: Mutex::new(Readings::default()),
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
        let r = self.shared.lock();
        let n = r.samples.len();
        (n >= 2).then(|| (r.samples[n - 2], r.samples[n - 1]))
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

    /// Runs the leak analysis over the samples kept now, with the live heap by allocating
    /// function of this moment.
    pub fn analyze_leaks(&self, options: &LeakOptions) -> LeakReport {
        let samples = self.samples();
        let functions = self.function_history();
        let large = crate::record::alloc_report::allocation_totals().large_allocations;
        leak::analyze(&samples, &functions, &large, options).with_live_heap()
    }
}

fn run(shared: &SamplerShared) {
    let interval = shared.config.interval;
    let mut next_sample = Instant::now() + interval;
    let mut next_leak = shared.config.leak_check_interval.map(|d| Instant::now() + d);
    loop {
        let now = Instant::now();
        let deadline = next_leak.map_or(next_sample, |l| l.min(next_sample));
        {
            let r = shared.lock();
            if r.stop {
                return;
            }
            if deadline > now {
                let (r, _) = shared
                    .wake
                    .wait_timeout(r, deadline - now)
                    .unwrap_or_else(|p| p.into_inner());
                if r.stop {
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
    fn ring_is_bounded() {
        let mut q = VecDeque::new();
        for i in 0..10 {
            push_bounded(&mut q, i, 3);
        }
        assert_eq!(Vec::from(q), vec![7, 8, 9]);
    }

    #[test]
    fn intervals_out_of_range_are_refused_before_the_thread_starts() {
        // u64::MAX seconds once started a thread that panicked on its first deadline.
        for (interval, leak) in [
            (Duration::from_secs(u64::MAX), None),
            (Duration::MAX, None),
            (Duration::from_secs(1), Some(Duration::from_secs(u64::MAX))),
            (Duration::from_secs(1), Some(Duration::ZERO)),
        ] {
            let r = MemorySampler::start(SamplerConfig {
                interval,
                leak_check_interval: leak,
                ..Default::default()
            });
            let e = r.map(|_| ()).expect_err("out of range");
            assert!(e.to_string().contains("interval"), "{e}");
        }
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
