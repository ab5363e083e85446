//! Where leaks are detected: [`analyze`], a pure function of the memory samples, the
//! per-function retention history and the large allocations the allocator recorded.
//!
//! Four kinds of evidence, each a [`LeakSuspect`] whose `evidence` text states the figures:
//!
//! - **Steady growth**: the least-squares slope of the tracked series (live heap when the
//!   counting allocator is installed, else RSS) is above `growth_threshold_mb_per_hour`,
//!   the line explains the data (`r² >= min_r_squared`) and the fitted growth over the
//!   window is at least `min_growth_bytes`. Needs `min_samples` samples.
//! - **Large allocation**: single allocations of at least `large_allocation_bytes`, grouped
//!   by the innermost annotated function.
//! - **Retaining function**: a function whose net bytes (allocated minus freed in its own
//!   calls) rose in every interval in which it was called (at least 2 such intervals),
//!   by at least `min_growth_bytes` in all, while the tracked series grew by at least
//!   `min_growth_bytes` too, and by no less than `1/1.25` of what the function kept (a
//!   function cannot have leaked more than the heap grew: bytes it kept beyond that were
//!   freed by its callers, as with a function that returns a buffer).
//! - **Rising peak**: the samples split into `peak_segments` equal parts, whose maxima each
//!   exceed the previous one by at least `max(min_growth_bytes, 1%)`.
//!
//! A steady workload, whose heap goes up and down around a level, meets none of these.
//!
//! Besides, the report names where the live memory was allocated, which needs no history:
//! [`LeakReport::live_heap`], the functions whose sampled allocations are still live
//! ([`crate::analyze::live_heap::suspects`]), with estimated bytes, ages, the number of
//! samples behind each figure and its confidence. Live memory is not by itself a leak (a
//! cache holds memory too), so these entries do not make `leak_suspected` true; a function
//! named there that is also a retaining function, or whose bytes grow from one report to the
//! next, is the leak. They are there at once, in a window too short for the growth analyses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::analyze::live_heap::{self, LiveHeapSuspect, SuspectOptions};
use crate::analyze::trend::{growth, MIB};
use crate::record::alloc_report::LargeAllocation;
use crate::record::memory_sample::{tracked_series, FunctionObservation, MemorySample};

/// Thresholds of [`analyze`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakOptions {
    /// Growth rate above which steady growth is a suspect, MiB/hour (default 10).
    pub growth_threshold_mb_per_hour: f64,
    /// Size from which one allocation is a suspect, bytes (default 50 MiB).
    pub large_allocation_bytes: u64,
    /// Samples needed for the growth and peak analyses (default 6).
    pub min_samples: usize,
    /// Fit quality needed for steady growth (default 0.6).
    pub min_r_squared: f64,
    /// Least growth over the window that counts, bytes (default 1 MiB).
    pub min_growth_bytes: u64,
    /// Segments compared for a rising peak (default 4).
    pub peak_segments: usize,
    /// Estimated live bytes from which a function is listed in [`LeakReport::live_heap`]
    /// (default 1 MiB).
    #[serde(default = "default_live_heap_min_bytes")]
    pub live_heap_min_bytes: u64,
}

fn default_live_heap_min_bytes() -> u64 {
    1024 * 1024
}

impl Default for LeakOptions {
    fn default() -> Self {
        Self {
            growth_threshold_mb_per_hour: 10.0,
            large_allocation_bytes: 50 * 1024 * 1024,
            min_samples: 6,
            min_r_squared: 0.6,
            min_growth_bytes: 1024 * 1024,
            peak_segments: 4,
            live_heap_min_bytes: default_live_heap_min_bytes(),
        }
    }
}

/// What a suspect is suspected of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspectKind {
    /// Memory grows steadily.
    SteadyGrowth,
    /// Single allocations above the threshold.
    LargeAllocation,
    /// A function keeps net bytes call after call.
    RetainingFunction,
    /// Each peak is higher than the last.
    RisingPeak,
}

/// One finding, with the figures behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakSuspect {
    /// The kind of evidence.
    pub kind: SuspectKind,
    /// The function concerned, when there is one.
    pub function: Option<String>,
    /// The figures, in words.
    pub evidence: String,
    /// The bytes concerned (growth, allocation size, bytes kept, peak rise).
    pub bytes: u64,
    /// A rate where one applies, MiB/hour.
    pub rate_mb_per_hour: Option<f64>,
}

/// The result of [`analyze`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeakReport {
    /// Whether any suspect was found.
    pub leak_suspected: bool,
    /// The findings, most bytes first.
    pub suspects: Vec<LeakSuspect>,
    /// `"heap"` (counted live heap) or `"rss"`.
    pub series: String,
    /// Samples analyzed.
    pub samples: usize,
    /// Time covered by the samples, seconds.
    pub window_secs: f64,
    /// Growth of the series, MiB/hour (None with fewer than two samples).
    pub growth_rate_mb_per_hour: Option<f64>,
    /// Fit quality of that growth.
    pub r_squared: Option<f64>,
    /// The thresholds used.
    pub options: LeakOptions,
    /// Why an analysis could not run (too few samples, ...).
    pub notes: Vec<String>,
    /// Functions whose sampled allocations are still live (at least
    /// `options.live_heap_min_bytes`), largest first: estimated bytes and blocks, oldest and
    /// median age, samples behind the estimate, its 95% relative error and a confidence.
    /// Where the live memory is, whether or not it grows; see the module docs. Empty when
    /// heap sampling is off or the counting allocator is not installed (a note says which).
    #[serde(default)]
    pub live_heap: Vec<LiveHeapSuspect>,
}

impl LeakReport {
    /// Adds the live-heap figures of this moment ([`live_heap_suspects`]).
    #[must_use]
    pub fn with_live_heap(mut self) -> Self {
        let stats = crate::record::heap_sample::heap_sampler_stats();
        let note = if stats.sample_bytes == 0 {
            Some("live heap: allocation sampling is off (PROFILING_HEAP_SAMPLE_BYTES=0), no function named".to_owned())
        } else if stats.samples_taken == 0 {
            Some("live heap: no allocation sampled yet (is ProfilingAllocator the global allocator?)".to_owned())
        } else {
            None
        };
        self.notes.extend(note);
        self.live_heap = live_heap_suspects(&self.options);
        self
    }
}

/// The functions whose sampled allocations are live now, with at least
/// `options.live_heap_min_bytes` estimated, whatever their age.
pub fn live_heap_suspects(options: &LeakOptions) -> Vec<LiveHeapSuspect> {
    live_heap::suspects(&SuspectOptions {
        min_age: std::time::Duration::ZERO,
        min_inuse_bytes: options.live_heap_min_bytes,
    })
}

/// Formats bytes as a human figure (`3.1 MiB`): [`crate::units::fmt_signed_bytes`].
pub(crate) use crate::units::fmt_signed_bytes as human_bytes;

/// Runs every analysis. `samples` and `functions` are oldest first.
pub fn analyze(
    samples: &[MemorySample],
    functions: &[FunctionObservation],
    large_allocations: &[LargeAllocation],
    options: &LeakOptions,
) -> LeakReport {
    let series_name = tracked_series(samples);
    let mut suspects = Vec::new();
    let mut notes = Vec::new();
    let g = growth(samples, |s| s.tracked_bytes());
    let window_secs = g.map_or(0.0, |g| g.span_secs);

    // Growth of the series over the window, from the fitted line.
    let fitted_growth = g.map_or(0.0, |g| g.mb_per_hour * MIB * window_secs / 3600.0);
    if samples.len() < options.min_samples.max(2) {
        notes.push(format!(
            "{} samples, {} needed for the growth and peak analyses",
            samples.len(),
            options.min_samples.max(2)
        ));
    } else if let Some(g) = g {
        if g.mb_per_hour > options.growth_threshold_mb_per_hour
            && g.r_squared >= options.min_r_squared
            && fitted_growth >= options.min_growth_bytes as f64
        {
            suspects.push(LeakSuspect {
                kind: SuspectKind::SteadyGrowth,
                function: None,
                evidence: format!(
                    "{series_name} grows {:.1} MiB/hour (threshold {:.1}), {} over {:.0} s in {} samples, r² = {:.2}",
                    g.mb_per_hour,
                    options.growth_threshold_mb_per_hour,
                    human_bytes(fitted_growth),
                    g.span_secs,
                    g.samples,
                    g.r_squared
                ),
                bytes: fitted_growth as u64,
                rate_mb_per_hour: Some(g.mb_per_hour),
            });
        }
        if let Some(s) = rising_peak(samples, options) {
            suspects.push(s);
        }
    }

    suspects.extend(large(large_allocations, options));

    let observed_growth = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.tracked_bytes() as f64 - a.tracked_bytes() as f64,
        _ => 0.0,
    };
    let heap_growth = observed_growth.max(fitted_growth);
    suspects.extend(retaining(functions, heap_growth, series_name, options));

    suspects.sort_by_key(|s| std::cmp::Reverse(s.bytes));
    LeakReport {
        leak_suspected: !suspects.is_empty(),
        suspects,
        series: series_name.to_owned(),
        samples: samples.len(),
        window_secs,
        growth_rate_mb_per_hour: g.map(|g| g.mb_per_hour),
        r_squared: g.map(|g| g.r_squared),
        options: options.clone(),
        notes,
        live_heap: Vec::new(),
    }
}

fn rising_peak(samples: &[MemorySample], o: &LeakOptions) -> Option<LeakSuspect> {
    let k = o.peak_segments.max(2);
    if samples.len() < 2 * k {
        return None;
    }
    let per = samples.len() / k;
    let peaks: Vec<u64> = (0..k)
        .map(|i| {
            let end = if i == k - 1 { samples.len() } else { (i + 1) * per };
            samples[i * per..end]
                .iter()
                .map(MemorySample::tracked_bytes)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rising = peaks.windows(2).all(|w| {
        let margin = (o.min_growth_bytes as f64).max(w[0] as f64 * 0.01);
        w[1] as f64 >= w[0] as f64 + margin
    });
    if !rising {
        return None;
    }
    let first = peaks[0];
    let last = peaks[k - 1];
    Some(LeakSuspect {
        kind: SuspectKind::RisingPeak,
        function: None,
        evidence: format!(
            "each of {k} successive peaks is higher than the last: {}",
            peaks
                .iter()
                .map(|&p| human_bytes(p as f64))
                .collect::<Vec<_>>()
                .join(" -> ")
        ),
        bytes: last - first,
        rate_mb_per_hour: None,
    })
}

fn large(allocs: &[LargeAllocation], o: &LeakOptions) -> Vec<LeakSuspect> {
    let mut by_fn: HashMap<Option<&str>, (u64, u64, u64)> = HashMap::new();
    for a in allocs.iter().filter(|a| a.bytes >= o.large_allocation_bytes) {
        let e = by_fn.entry(a.function.as_deref()).or_default();
        e.0 += 1;
        e.1 = e.1.max(a.bytes);
        e.2 += a.bytes;
    }
    let mut out: Vec<LeakSuspect> = by_fn
        .into_iter()
        .map(|(f, (n, max, total))| LeakSuspect {
            kind: SuspectKind::LargeAllocation,
            function: f.map(str::to_owned),
            evidence: format!(
                "{n} allocation(s) of at least {} (largest {}, {} in all) {}",
                human_bytes(o.large_allocation_bytes as f64),
                human_bytes(max as f64),
                human_bytes(total as f64),
                f.map_or_else(|| "outside any annotated function".to_owned(), |f| format!("in {f}"))
            ),
            bytes: max,
            rate_mb_per_hour: None,
        })
        .collect();
    out.sort_by(|a, b| a.function.cmp(&b.function));
    out
}

fn retaining(obs: &[FunctionObservation], heap_growth: f64, series: &str, o: &LeakOptions) -> Vec<LeakSuspect> {
    let Some(last) = obs.last() else {
        return Vec::new();
    };
    // Only the current window: figures restart at each reset.
    let obs: Vec<&FunctionObservation> = obs.iter().filter(|x| x.window_epoch == last.window_epoch).collect();
    if obs.len() < 3 || heap_growth < o.min_growth_bytes as f64 {
        return Vec::new();
    }
    let span_secs = last.at_unix_ms.saturating_sub(obs[0].at_unix_ms) as f64 / 1000.0;
    let mut series_by_fn: HashMap<&str, Vec<(u64, i64)>> = HashMap::new();
    for x in &obs {
        for f in &x.functions {
            series_by_fn
                .entry(&f.function)
                .or_default()
                .push((f.calls, f.net_bytes));
        }
    }
    let mut out = Vec::new();
    for (name, pts) in series_by_fn {
        let mut called_intervals = 0usize;
        let mut rising_intervals = 0usize;
        for w in pts.windows(2) {
            if w[1].0 > w[0].0 {
                called_intervals += 1;
                if w[1].1 > w[0].1 {
                    rising_intervals += 1;
                }
            }
        }
        let (c0, n0) = pts[0];
        let (c1, n1) = pts[pts.len() - 1];
        let kept = (n1 - n0) as f64;
        let calls = c1.saturating_sub(c0);
        if called_intervals < 2
            || rising_intervals != called_intervals
            || kept < o.min_growth_bytes as f64
            || kept > heap_growth * 1.25
        {
            continue;
        }
        out.push(LeakSuspect {
            kind: SuspectKind::RetainingFunction,
            function: Some(name.to_owned()),
            evidence: format!(
                "kept {} net over {calls} calls ({} per call), rising in {rising_intervals} of {called_intervals} intervals with calls over {span_secs:.0} s, while the {series} grew {}",
                human_bytes(kept),
                human_bytes(kept / calls.max(1) as f64),
                human_bytes(heap_growth)
            ),
            bytes: kept as u64,
            rate_mb_per_hour: (span_secs > 0.0).then(|| kept / MIB / span_secs * 3600.0),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::memory_sample::FunctionRetention;

    const MB: u64 = 1024 * 1024;

    fn sample(i: u64, heap: u64) -> MemorySample {
        MemorySample {
            at_unix_ms: 1_700_000_000_000 + i * 5_000,
            rss_bytes: heap + 20 * MB,
            heap_bytes: Some(heap),
            ..Default::default()
        }
    }

    fn obs(i: u64, fns: &[(&str, u64, i64)]) -> FunctionObservation {
        FunctionObservation {
            at_unix_ms: 1_700_000_000_000 + i * 5_000,
            window_epoch: 1,
            functions: fns
                .iter()
                .map(|&(n, c, b)| FunctionRetention {
                    function: n.to_owned(),
                    calls: c,
                    net_bytes: b,
                })
                .collect(),
        }
    }

    #[test]
    fn steady_workload_has_no_suspects() {
        // Heap saw-tooths between 100 and 108 MiB; functions allocate and free alike
        // (net moves up and down); one returns buffers that its caller frees.
        let samples: Vec<_> = (0..60).map(|i| sample(i, 100 * MB + (i % 5) * 2 * MB)).collect();
        let functions: Vec<_> = (0..60)
            .map(|i| {
                let i64i = i as i64;
                obs(
                    i,
                    &[
                        ("parse", i * 100, (i64i % 3) * 1000),
                        ("encode", i * 100, i64i * 4096 * 100),
                    ],
                )
            })
            .collect();
        let r = analyze(&samples, &functions, &[], &LeakOptions::default());
        assert!(r.suspects.is_empty(), "{:#?}", r.suspects);
        assert!(!r.leak_suspected);
        assert!(r.growth_rate_mb_per_hour.unwrap().abs() < 10.0);
        assert_eq!(r.series, "heap");
    }

    #[test]
    fn leaking_workload_is_found_with_evidence() {
        // `cache_insert` keeps 64 KiB per call, 50 calls per 5 s: 3.1 MiB per interval.
        let per_interval = 50 * 64 * 1024;
        let samples: Vec<_> = (0..60)
            .map(|i| sample(i, 100 * MB + i * per_interval + (i % 2) * 4096))
            .collect();
        let functions: Vec<_> = (0..60)
            .map(|i| {
                obs(
                    i,
                    &[
                        ("cache_insert", i * 50, (i * per_interval) as i64),
                        ("parse", i * 100, ((i % 3) * 1000) as i64),
                    ],
                )
            })
            .collect();
        let r = analyze(&samples, &functions, &[], &LeakOptions::default());
        let kinds: Vec<_> = r.suspects.iter().map(|s| s.kind).collect();
        assert!(kinds.contains(&SuspectKind::SteadyGrowth), "{kinds:?}");
        assert!(kinds.contains(&SuspectKind::RisingPeak), "{kinds:?}");
        let f = r
            .suspects
            .iter()
            .find(|s| s.kind == SuspectKind::RetainingFunction)
            .expect("retaining function");
        assert_eq!(f.function.as_deref(), Some("cache_insert"));
        assert!(f.evidence.contains("64.0 KiB per call"), "{}", f.evidence);
        assert!(!r.suspects.iter().any(|s| s.function.as_deref() == Some("parse")));
        // 3.125 MiB per 5 s = 2250 MiB/h.
        let rate = r.growth_rate_mb_per_hour.unwrap();
        assert!((rate - 2250.0).abs() < 5.0, "{rate}");
    }

    #[test]
    fn slow_growth_below_threshold_is_not_a_suspect() {
        // 5 MiB/h over an hour, threshold 10.
        let samples: Vec<_> = (0..=60)
            .map(|i| MemorySample {
                at_unix_ms: i * 60_000,
                rss_bytes: 200 * MB + i * 5 * MB / 60,
                ..Default::default()
            })
            .collect();
        let o = LeakOptions {
            peak_segments: 4,
            min_growth_bytes: 8 * MB,
            ..Default::default()
        };
        let r = analyze(&samples, &[], &[], &o);
        assert_eq!(r.series, "rss");
        assert!(r.suspects.is_empty(), "{:#?}", r.suspects);
        assert!((r.growth_rate_mb_per_hour.unwrap() - 5.0).abs() < 0.1);
    }

    #[test]
    fn large_allocations_are_grouped_by_function() {
        let big = |b: u64, f: Option<&str>| LargeAllocation {
            bytes: b,
            function: f.map(str::to_owned),
            at_unix_ms: 0,
        };
        let allocs = [
            big(60 * MB, Some("export")),
            big(80 * MB, Some("export")),
            big(10 * MB, Some("small")),
        ];
        let r = analyze(&[], &[], &allocs, &LeakOptions::default());
        assert_eq!(r.suspects.len(), 1, "{:#?}", r.suspects);
        let s = &r.suspects[0];
        assert_eq!(
            (s.kind, s.function.as_deref(), s.bytes),
            (SuspectKind::LargeAllocation, Some("export"), 80 * MB)
        );
        assert!(s.evidence.starts_with("2 allocation(s)"), "{}", s.evidence);
        assert!(r.notes[0].contains("0 samples"));
    }

    #[test]
    fn reports_and_options_of_older_versions_still_read() {
        // Written before the live heap was part of the report.
        let o: LeakOptions = serde_json::from_str(
            r#"{"growth_threshold_mb_per_hour":10.0,"large_allocation_bytes":52428800,"min_samples":6,
                "min_r_squared":0.6,"min_growth_bytes":1048576,"peak_segments":4}"#,
        )
        .unwrap();
        assert_eq!(o, LeakOptions::default());
        let mut v = serde_json::to_value(analyze(&[], &[], &[], &o)).unwrap();
        v.as_object_mut().unwrap().remove("live_heap");
        let r: LeakReport = serde_json::from_value(v).unwrap();
        assert!(r.live_heap.is_empty());
    }

    #[test]
    fn function_observations_of_an_old_window_are_ignored() {
        let samples: Vec<_> = (0..10).map(|i| sample(i, 100 * MB + i * 4 * MB)).collect();
        let mut functions: Vec<_> = (0..10).map(|i| obs(i, &[("f", i * 10, (i * 4 * MB) as i64)])).collect();
        for o in functions.iter_mut().skip(8) {
            o.window_epoch = 2;
        }
        let r = analyze(&samples, &functions, &[], &LeakOptions::default());
        assert!(
            !r.suspects.iter().any(|s| s.kind == SuspectKind::RetainingFunction),
            "{:#?}",
            r.suspects
        );
    }
}
