//! Where `/metrics` is produced: the current window and process figures, encoded with
//! `prometheus-client`, served in the format the scraper asks for.
//!
//! **Negotiation.** `prometheus-client` encodes OpenMetrics text only. Prometheus asks for it
//! (`Accept: application/openmetrics-text;version=1.0.0;q=0.5,...,text/plain;version=0.0.4;q=0.3`)
//! and gets it; every other client (curl, `promtool`, older scrapers, no `Accept` at all) gets
//! the Prometheus text format 0.0.4, derived from the OpenMetrics text by [`to_text_004`]: in
//! 0.0.4 a counter's `# HELP`/`# TYPE` carry the sample name (`x_total`), there is no `info`
//! type, no `# UNIT` and no `# EOF`. Both are checked with `promtool check metrics` in
//! `tests/prometheus.rs` of the workspace (with `promtool` and a real `prometheus` server).
//!
//! **Metrics** (prefix `{p}`, `profiling` by default; `function` label = function name):
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `{p}_function_calls_total` | counter | calls recorded in the current window |
//! | `{p}_function_wall_seconds_total` | counter | inclusive wall time |
//! | `{p}_function_self_seconds_total` | counter | exclusive wall time (minus annotated callees) |
//! | `{p}_function_cpu_seconds_total` | counter | inclusive thread CPU time |
//! | `{p}_function_allocated_bytes_total` | counter | bytes allocated during the calls, inclusive |
//! | `{p}_function_latency_seconds` | histogram | latency (async: first poll to completion) |
//! | `{p}_process_cpu_seconds_total` | counter | CPU time of the whole process since it started |
//! | `{p}_cpu_usage_ratio` | gauge | process CPU over the last sampling interval, in cores (1 = one core busy) |
//! | `{p}_memory_rss_bytes` | gauge | resident set size |
//! | `{p}_memory_virtual_bytes` | gauge | virtual memory size |
//! | `{p}_memory_heap_bytes` | gauge | live heap counted by the `ProfilingAllocator` (only when installed) |
//! | `{p}_memory_growth_bytes_per_second` | gauge | least-squares slope of heap (else RSS) over the sampler window |
//! | `{p}_memory_warning` / `{p}_memory_alert` | gauge | 1 when RSS is at or above that threshold |
//! | `{p}_threads` | gauge | threads in the process |
//! | `{p}_recording_overhead_ratio` | gauge | estimated recording cost over the last interval, fraction (0-1) of process CPU |
//! | `{p}_recording_enabled` | gauge | 1 when calls are being recorded |
//! | `{p}_push_sent_total`, `{p}_push_dropped_total` | counter | profiles pushed, and dropped (queue full or retries exhausted); `push` feature |
//! | `{p}_build_info` | gauge (OpenMetrics: info) | always 1; labels `version` (profiling-server) |
//!
//! The `function_*` counters cover the current window and so drop to 0 at a reset, which
//! Prometheus treats as a counter reset (`rate()` stays right).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::reports;
use crate::state::{ProfilingServer, ServerState};

/// Content type of the OpenMetrics exposition (served when asked for).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text exposition (served otherwise).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histogram, seconds (then `+Inf`).
pub const LATENCY_BUCKETS: [f64; 15] = [
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// The two expositions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => CONTENT_TYPE,
            Self::Text004 => TEXT_CONTENT_TYPE,
        }
    }
}

/// Picks the format from an `Accept` header: OpenMetrics when a media range for
/// `application/openmetrics-text` has a quality above 0 and at least that of any range that
/// covers `text/plain` (`text/plain`, `text/*`, `*/*`); text 0.0.4 otherwise, including when
/// there is no header.
pub(crate) fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text004;
    };
    let (mut om, mut text) = (0.0f64, 0.0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f64>().unwrap_or(0.0));
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text004
    }
}

/// Rewrites `prometheus-client`'s OpenMetrics text as Prometheus text 0.0.4: counter and info
/// families take their sample names (`x` -> `x_total`, `x` -> `x_info`; info becomes gauge)
/// in `# HELP` and `# TYPE`, `# UNIT` and `# EOF` lines go, counters' `_created` samples go.
/// Every other line is the same in both formats.
pub(crate) fn to_text_004(openmetrics: &str) -> String {
    let renamed: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .filter_map(|(name, kind)| match kind {
            "counter" => Some((name, "_total")),
            "info" => Some((name, "_info")),
            _ => None,
        })
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|c| line.strip_prefix(c).map(|rest| (c, rest)));
        if let Some((c, rest)) = comment {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = renamed.get(name).copied().unwrap_or("");
            let tail = if c == "# TYPE " && tail == "info" {
                "gauge"
            } else {
                tail
            };
            out.push_str(&format!("{c}{name}{suffix} {tail}\n"));
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        let created = sample
            .strip_suffix("_created")
            .is_some_and(|family| renamed.get(family) == Some(&"_total"));
        if !created {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `GET /metrics`: the exposition in the negotiated format.
pub(crate) async fn handler(State(s): State<ProfilingServer>, headers: HeaderMap) -> Result<Response, ApiError> {
    let format = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = render(&s.shared, format).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

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

/// One process-wide value: `(name, help, value)`.
type Scalar = (&'static str, &'static str, f64);

#[derive(Debug)]
struct Collected {
    functions: Vec<FunctionMetrics>,
    counters: Vec<Scalar>,
    gauges: Vec<Scalar>,
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
                    fam.encode_counter::<NoLabelSet, u64, f64>(&(v as u64), None)?;
                } else {
                    fam.encode_counter::<NoLabelSet, f64, f64>(&v, None)?;
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
                fam.encode_histogram::<NoLabelSet>(f.wall_s, f.hist_count, &f.buckets, None)?;
            }
        }
        for (name, help, v) in &self.counters {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            m.encode_counter::<NoLabelSet, f64, f64>(v, None)?;
        }
        for (name, help, v) in &self.gauges {
            let g = ConstGauge::new(*v);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        let m = encoder.encode_descriptor(
            "build",
            "Always 1; labels name the profiling-server version.",
            None,
            info.metric_type(),
        )?;
        info.encode(m)
    }
}

/// MiB per hour (core's growth slope) to bytes per second.
const MIB_PER_HOUR: f64 = 1024.0 * 1024.0 / 3600.0;

/// Renders the exposition for the current state.
pub(crate) fn render(shared: &ServerState, format: Format) -> Result<String, std::fmt::Error> {
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
    let cpu_ratio = shared
        .sampler
        .last_two()
        .and_then(|(a, b)| reports::cpu_between(&a, &b))
        .map_or(0.0, |c| c.0 / 100.0);
    let threads = profiling_core::record::process::process_stats().map_or(0, |p| p.threads);
    #[allow(unused_mut)] // extended with the `push` feature
    let mut counters = vec![(
        "process_cpu_seconds",
        "CPU time (user + system) of the whole process since it started.",
        profiling_core::record::clock::process_cpu_ns() as f64 / 1e9,
    )];
    #[cfg(feature = "push")]
    counters.extend([
        (
            "push_sent",
            "Profiles pushed and accepted by the backend.",
            crate::push::sent() as f64,
        ),
        (
            "push_dropped",
            "Profiles dropped instead of pushed: queue full or retries exhausted.",
            crate::push::dropped() as f64,
        ),
    ]);
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
            "memory_growth_bytes_per_second",
            "Growth of the heap (or RSS when the heap is not counted), bytes per second, by least squares over the sampler window.",
            mem.growth_rate_mb_per_hour.unwrap_or(0.0) * MIB_PER_HOUR,
        ),
        ("memory_warning", "1 when RSS is at or above the warning threshold.", f64::from(u8::from(mem.warning))),
        ("memory_alert", "1 when RSS is at or above the alert threshold.", f64::from(u8::from(mem.alert))),
        (
            "cpu_usage_ratio",
            "Process CPU over the last sampling interval, in cores (1 = one core fully busy).",
            cpu_ratio,
        ),
        ("threads", "Threads in the process.", threads as f64),
        (
            "recording_overhead_ratio",
            "Estimated recording cost over the last sampling interval, fraction (0-1) of process CPU time (calls x calibrated cost per call / CPU time).",
            reports::overhead_percent(shared).unwrap_or(0.0) / 100.0,
        ),
        (
            "recording_enabled",
            "1 when calls are being recorded.",
            f64::from(u8::from(profiling_core::is_enabled())),
        ),
    ]);
    let mut registry = Registry::with_prefix(shared.config.metrics_prefix.clone());
    registry.register_collector(Box::new(Collected {
        functions,
        counters,
        gauges,
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(match format {
        Format::OpenMetrics => out,
        Format::Text004 => to_text_004(&out),
    })
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

    #[test]
    fn negotiates_openmetrics_only_when_asked() {
        use Format::*;
        // What Prometheus 2.x/3.x sends by default.
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(negotiate(Some(prom)), OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text")), OpenMetrics);
        assert_eq!(negotiate(None), Text004);
        assert_eq!(negotiate(Some("*/*")), Text004);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Text004);
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Text004
        );
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0")), Text004);
    }

    #[test]
    fn text_004_names_counters_and_info_by_their_samples() {
        let om = "# HELP p_calls Calls.\n# TYPE p_calls counter\np_calls_total{f=\"a\"} 3\np_calls_created 1.5\n\
                  # HELP p_up Up.\n# TYPE p_up gauge\n# UNIT p_up ratio\np_up 1\n\
                  # HELP p_build Build.\n# TYPE p_build info\np_build_info{version=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP p_calls_total Calls.\n# TYPE p_calls_total counter\np_calls_total{f=\"a\"} 3\n\
             # HELP p_up Up.\n# TYPE p_up gauge\np_up 1\n\
             # HELP p_build_info Build.\n# TYPE p_build_info gauge\np_build_info{version=\"1\"} 1\n"
        );
    }
}
