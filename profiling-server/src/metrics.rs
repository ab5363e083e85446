//! Where `/metrics` is produced: the current window and process figures, encoded with
//! `prometheus-client` in the OpenMetrics text format (which Prometheus scrapes natively).
//!
//! Per function (label `function`): `{p}_function_calls_total`,
//! `{p}_function_wall_seconds_total` (inclusive), `{p}_function_self_seconds_total`,
//! `{p}_function_cpu_seconds_total` (inclusive thread CPU), `{p}_function_allocated_bytes_total`
//! (inclusive) and the histogram `{p}_function_latency_seconds`. Counters cover the current
//! window and so drop to 0 at a reset, which Prometheus treats as a counter reset.
//!
//! Process: `{p}_memory_rss_bytes`, `{p}_memory_virtual_bytes`, `{p}_memory_heap_bytes`
//! (when counted), `{p}_memory_growth_rate` (MiB/hour), `{p}_memory_warning`,
//! `{p}_memory_alert`, `{p}_cpu_usage_percent` (of one core, last sampling interval),
//! `{p}_threads`, `{p}_profiling_overhead_percent` (see `overhead.rs` for how it is
//! measured) and `{p}_recording_enabled`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::reports;
use crate::state::Shared;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency histogram, seconds (then `+Inf`).
pub const LATENCY_BUCKETS: [f64; 15] = [
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 10.0,
];

#[derive(Debug)]
struct FunctionMetrics {
    name: String,
    calls: u64,
    wall_s: f64,
    self_s: f64,
    cpu_s: f64,
    alloc_bytes: u64,
    /// `(le seconds, count in that bucket alone)`, with `f64::MAX` as `+Inf`.
    buckets: Vec<(f64, u64)>,
    hist_count: u64,
}

#[derive(Debug)]
struct Collected {
    functions: Vec<FunctionMetrics>,
    gauges: Vec<(&'static str, &'static str, f64)>,
}

/// Re-buckets core's sparse histogram (`(exclusive upper bound ns, count)`) onto
/// [`LATENCY_BUCKETS`]: each core bucket goes to the first bound at or above its upper bound,
/// so a bucket's `le` is never below the latencies it holds.
fn rebucket(sparse: &[(u64, u64)]) -> (Vec<(f64, u64)>, u64) {
    let mut counts = vec![0u64; LATENCY_BUCKETS.len() + 1];
    let mut total = 0;
    for &(upper_ns, n) in sparse {
        let upper_s = upper_ns as f64 / 1e9;
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| upper_s <= b * (1.0 + 1e-9))
            .unwrap_or(LATENCY_BUCKETS.len());
        counts[i] += n;
        total += n;
    }
    let bounds = LATENCY_BUCKETS.iter().copied().chain(std::iter::once(f64::MAX));
    (bounds.zip(counts).collect(), total)
}

/// Escapes a label value for the text format (the encoder writes values as they are).
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Collector for Collected {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        type Get = fn(&FunctionMetrics) -> f64;
        let counters: [(&str, &str, Get); 5] = [
            ("function_calls", "Calls recorded in the current window.", |f| {
                f.calls as f64
            }),
            ("function_wall_seconds", "Inclusive wall time of the calls.", |f| {
                f.wall_s
            }),
            (
                "function_self_seconds",
                "Exclusive wall time: total minus annotated callees.",
                |f| f.self_s,
            ),
            ("function_cpu_seconds", "Inclusive thread CPU time of the calls.", |f| {
                f.cpu_s
            }),
            (
                "function_allocated_bytes",
                "Bytes allocated during the calls, inclusive.",
                |f| f.alloc_bytes as f64,
            ),
        ];
        for (name, help, get) in counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for f in &self.functions {
                let labels = [("function", label_value(&f.name))];
                let mut fam = m.encode_family(&labels)?;
                let v = get(f);
                if name == "function_calls" || name == "function_allocated_bytes" {
                    fam.encode_counter::<prometheus_client::encoding::NoLabelSet, u64, f64>(&(v as u64), None)?;
                } else {
                    fam.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(&v, None)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "function_latency_seconds",
                "Latency of calls (async: first poll to completion).",
                None,
                MetricType::Histogram,
            )?;
            for f in &self.functions {
                let labels = [("function", label_value(&f.name))];
                let mut fam = m.encode_family(&labels)?;
                fam.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    f.wall_s,
                    f.hist_count,
                    &f.buckets,
                    None,
                )?;
            }
        }
        for (name, help, v) in &self.gauges {
            let g = ConstGauge::new(*v);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        Ok(())
    }
}

/// Renders the exposition for the current state.
pub(crate) fn render(shared: &Shared) -> Result<String, std::fmt::Error> {
    let snap = shared.snapshot();
    let functions = snap
        .functions
        .iter()
        .map(|f| {
            let (buckets, hist_count) = rebucket(&f.histogram);
            FunctionMetrics {
                name: f.name.clone(),
                calls: f.calls,
                wall_s: f.total_wall_ns as f64 / 1e9,
                self_s: f.self_wall_ns as f64 / 1e9,
                cpu_s: f.cpu_total_ns as f64 / 1e9,
                alloc_bytes: f.alloc_total.alloc_bytes,
                buckets,
                hist_count,
            }
        })
        .collect();
    let mem = reports::memory(shared);
    let cpu_pct = shared
        .sampler
        .last_two()
        .and_then(|(a, b)| reports::cpu_between(&a, &b))
        .map_or(0.0, |c| c.0);
    let threads = profiling_core::process_stats().map_or(0, |p| p.threads);
    let mut gauges = vec![
        ("memory_rss_bytes", "Resident set size, bytes.", mem.rss_bytes as f64),
        (
            "memory_virtual_bytes",
            "Virtual memory size, bytes.",
            mem.virtual_bytes as f64,
        ),
    ];
    if let Some(h) = mem.heap_bytes {
        gauges.push((
            "memory_heap_bytes",
            "Live heap counted by the ProfilingAllocator, bytes.",
            h as f64,
        ));
    }
    gauges.extend([
        (
            "memory_growth_rate",
            "Growth of the heap (or RSS when the heap is not counted), MiB per hour, by least squares over the sampler window.",
            mem.growth_rate_mb_per_hour.unwrap_or(0.0),
        ),
        ("memory_warning", "1 when RSS is at or above the warning threshold.", f64::from(u8::from(mem.warning))),
        ("memory_alert", "1 when RSS is at or above the alert threshold.", f64::from(u8::from(mem.alert))),
        (
            "cpu_usage_percent",
            "Process CPU over the last sampling interval, percent of one core.",
            cpu_pct,
        ),
        ("threads", "Threads in the process.", threads as f64),
        (
            "profiling_overhead_percent",
            "Estimated recording cost over the last sampling interval, percent of process CPU time (calls x calibrated cost per call / CPU time).",
            reports::overhead_percent(shared).unwrap_or(0.0),
        ),
        (
            "recording_enabled",
            "1 when calls are being recorded.",
            f64::from(u8::from(profiling_core::is_enabled())),
        ),
    ]);
    let mut registry = Registry::with_prefix(shared.config.metrics_prefix.clone());
    registry.register_collector(Box::new(Collected { functions, gauges }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuckets_conservatively() {
        // 3 calls under 1 µs, 2 in [512 µs, 1024 µs), 1 above 10 s.
        let (b, n) = rebucket(&[(1000, 3), (1_024_000, 2), (20_000_000_000, 1)]);
        assert_eq!(n, 6);
        assert_eq!(b[0], (1e-6, 3));
        // 1.024 ms is above 1 ms: goes to the 5 ms bucket.
        assert_eq!(b[7], (5e-3, 2));
        assert_eq!(b[LATENCY_BUCKETS.len()], (f64::MAX, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 6);
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
