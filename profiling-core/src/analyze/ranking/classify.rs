//! Where a function is classified (`cpu_bound`, `wait_bound`, `hot_loop`, ...) and the
//! thresholds of every classification and of the impact score's weights.

use serde::{Deserialize, Serialize};

use crate::record::snapshot::FunctionStats;
use thresholds::*;

/// Weights of the impact score and thresholds of the classification.
pub mod thresholds {
    /// Weight of the share of self wall time in the impact score.
    pub const IMPACT_WEIGHT_WALL: f64 = 0.6;
    /// Weight of the share of self CPU time in the impact score.
    pub const IMPACT_WEIGHT_CPU: f64 = 0.25;
    /// Weight of the share of self allocated bytes in the impact score.
    pub const IMPACT_WEIGHT_ALLOC: f64 = 0.15;

    /// Below this much self wall time a function's CPU/wait profile is not judged: the CPU
    /// clock is attributed per window of [`crate::record::CPU_ATTRIBUTION_WINDOW_NS`], too coarse for less.
    pub const MIN_JUDGED_SELF_WALL_NS: u64 = 1_000_000;
    /// `cpu_bound` when self CPU time is at least this fraction of self wall time.
    pub const CPU_BOUND_MIN_CPU_RATIO: f64 = 0.7;
    /// `wait_bound` when self CPU time is at most this fraction of self wall time.
    pub const WAIT_BOUND_MAX_CPU_RATIO: f64 = 0.3;
    /// `hot_loop`: at least this many calls...
    pub const HOT_LOOP_MIN_CALLS: u64 = 10_000;
    /// ...each at most this long on average (total wall time per call).
    pub const HOT_LOOP_MAX_MEAN_NS: u64 = 10_000;
    /// `alloc_heavy` when self allocations per call reach this many bytes...
    pub const ALLOC_HEAVY_BYTES_PER_CALL: u64 = 1 << 20;
    /// ...or this many allocations per call...
    pub const ALLOC_HEAVY_COUNT_PER_CALL: u64 = 1_000;
    /// ...or this many bytes per second of self wall time (1 GiB/s).
    pub const ALLOC_HEAVY_BYTES_PER_SEC: f64 = (1u64 << 30) as f64;
    /// A tail-latency recommendation when p99 is at least this multiple of p50...
    pub const TAIL_MIN_P99_OVER_P50: u64 = 10;
    /// ...over at least this many calls.
    pub const TAIL_MIN_CALLS: u64 = 100;
    /// A "look at its callees" recommendation when self time is at most this fraction of total.
    pub const WRAPPER_MAX_SELF_FRACTION: f64 = 0.1;
}

/// What kind of cost dominates a function. Thresholds are the constants of [`thresholds`].
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Classification {
    /// Allocates a lot per call or per second (only when allocations are counted).
    AllocHeavy,
    /// Self wall time far exceeds self CPU time: it waits (I/O, locks, sleeps, timers).
    WaitBound,
    /// Many cheap calls: the per-call cost matters more than any one call.
    HotLoop,
    /// Self CPU time is most of self wall time.
    CpuBound,
    /// Part CPU, part waiting.
    Balanced,
    /// Too little self time to judge (below [`MIN_JUDGED_SELF_WALL_NS`]), or CPU not measured.
    Negligible,
}

impl Classification {
    /// The name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The inputs of classification: a function's statistics. Kept as a name for older code;
/// [`classify`] reads calls, total and self wall time, self CPU time and self allocations.
pub type Profile = FunctionStats;

/// Every classification that applies, most specific first; never empty.
///
/// - `alloc_heavy` (only if `allocations_counted`): per call ≥ [`ALLOC_HEAVY_BYTES_PER_CALL`]
///   bytes or ≥ [`ALLOC_HEAVY_COUNT_PER_CALL`] allocations, or ≥ [`ALLOC_HEAVY_BYTES_PER_SEC`]
///   per second of self wall time (judged from [`MIN_JUDGED_SELF_WALL_NS`] of self wall time up).
/// - `wait_bound`: self CPU ≤ [`WAIT_BOUND_MAX_CPU_RATIO`] × self wall.
/// - `hot_loop`: ≥ [`HOT_LOOP_MIN_CALLS`] calls of ≤ [`HOT_LOOP_MAX_MEAN_NS`] mean each.
/// - `cpu_bound`: self CPU ≥ [`CPU_BOUND_MIN_CPU_RATIO`] × self wall.
/// - `balanced`: in between.
///
/// The CPU ratio is judged only from [`MIN_JUDGED_SELF_WALL_NS`] of self wall time up and
/// when the window measured CPU time at all; otherwise, failing the other tests, the
/// function is `negligible`.
pub fn classify(f: &FunctionStats, allocations_counted: bool, cpu_measured: bool) -> Vec<Classification> {
    let mut out = Vec::new();
    let calls = f.calls.max(1);
    let (alloc_bytes, alloc_count) = (f.alloc_self.alloc_bytes, f.alloc_self.alloc_count);
    if allocations_counted {
        let per_sec = if f.self_wall_ns > 0 {
            alloc_bytes as f64 * 1e9 / f.self_wall_ns as f64
        } else {
            0.0
        };
        if alloc_bytes / calls >= ALLOC_HEAVY_BYTES_PER_CALL
            || alloc_count / calls >= ALLOC_HEAVY_COUNT_PER_CALL
            || (f.self_wall_ns >= MIN_JUDGED_SELF_WALL_NS && per_sec >= ALLOC_HEAVY_BYTES_PER_SEC)
        {
            out.push(Classification::AllocHeavy);
        }
    }
    let judged = cpu_measured && f.self_wall_ns >= MIN_JUDGED_SELF_WALL_NS;
    let cpu_ratio = cpu_ratio(f);
    if judged && cpu_ratio <= WAIT_BOUND_MAX_CPU_RATIO {
        out.push(Classification::WaitBound);
    }
    if f.calls >= HOT_LOOP_MIN_CALLS && f.total_wall_ns / calls <= HOT_LOOP_MAX_MEAN_NS {
        out.push(Classification::HotLoop);
    }
    if judged {
        if cpu_ratio >= CPU_BOUND_MIN_CPU_RATIO {
            out.push(Classification::CpuBound);
        } else if cpu_ratio > WAIT_BOUND_MAX_CPU_RATIO {
            out.push(Classification::Balanced);
        }
    }
    if out.is_empty() {
        out.push(Classification::Negligible);
    }
    out
}

/// Self CPU time / self wall time (not clamped: CPU attribution windows may overshoot).
pub(crate) fn cpu_ratio(f: &FunctionStats) -> f64 {
    f.cpu_self_ns as f64 / f.self_wall_ns.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::alloc::AllocCounters;

    const MS: u64 = 1_000_000;

    fn p(calls: u64, total: u64, self_wall: u64, cpu: u64, bytes: u64, count: u64) -> FunctionStats {
        FunctionStats {
            calls,
            total_wall_ns: total,
            self_wall_ns: self_wall,
            cpu_self_ns: cpu,
            alloc_self: AllocCounters {
                alloc_bytes: bytes,
                alloc_count: count,
                ..AllocCounters::default()
            },
            ..FunctionStats::default()
        }
    }

    #[test]
    fn classification_thresholds() {
        use Classification::*;
        assert_eq!(
            classify(&p(1, 30 * MS, 30 * MS, 29 * MS, 0, 0), true, true),
            vec![CpuBound]
        );
        assert_eq!(
            classify(&p(1, 20 * MS, 20 * MS, MS / 10, 0, 0), true, true),
            vec![WaitBound]
        );
        assert_eq!(
            classify(&p(1, 10 * MS, 10 * MS, 5 * MS, 0, 0), true, true),
            vec![Balanced]
        );
        // Exactly at the thresholds.
        assert_eq!(
            classify(&p(1, 10 * MS, 10 * MS, 7 * MS, 0, 0), true, true),
            vec![CpuBound]
        );
        assert_eq!(
            classify(&p(1, 10 * MS, 10 * MS, 3 * MS, 0, 0), true, true),
            vec![WaitBound]
        );
        // Too little time to judge.
        assert_eq!(classify(&p(1, MS - 1, MS - 1, 0, 0, 0), true, true), vec![Negligible]);
        // CPU not measured.
        assert_eq!(classify(&p(1, 9 * MS, 9 * MS, 0, 0, 0), true, false), vec![Negligible]);
        // Many cheap calls.
        assert_eq!(
            classify(&p(20_000, 40 * MS, 40 * MS, 39 * MS, 0, 0), true, true),
            vec![HotLoop, CpuBound]
        );
        assert_eq!(
            classify(&p(9_999, 9 * MS, 9 * MS, 9 * MS, 0, 0), true, true),
            vec![CpuBound]
        );
        // Allocation per call, count per call, rate; ignored when not counted.
        let heavy = p(2, 4 * MS, 4 * MS, 4 * MS, 2 << 20, 10);
        assert_eq!(classify(&heavy, true, true), vec![AllocHeavy, CpuBound]);
        assert_eq!(classify(&heavy, false, true), vec![CpuBound]);
        assert_eq!(
            classify(&p(1, MS, MS, MS, 64, 1_000), true, true),
            vec![AllocHeavy, CpuBound]
        );
        let rate = p(100, 10 * MS, 10 * MS, 10 * MS, 11 << 20, 100);
        assert_eq!(classify(&rate, true, true), vec![AllocHeavy, CpuBound]);
        let slow_rate = p(100, 10 * MS, 10 * MS, 10 * MS, 9 << 20, 100);
        assert_eq!(classify(&slow_rate, true, true), vec![CpuBound]);
    }

    #[test]
    fn names_are_snake_case_in_json_and_text() {
        for &c in <Classification as strum::VariantArray>::VARIANTS {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.as_str()));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(Classification::AllocHeavy.as_str(), "alloc_heavy");
    }
}
