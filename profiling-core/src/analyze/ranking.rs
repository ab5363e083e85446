//! Bottleneck rankings: which functions to fix first, and why.
//!
//! [`rank`] is a pure function of a [`Snapshot`]: it sorts the functions by a [`SortKey`],
//! and derives for each its share of profiled time, an impact score, a classification and
//! recommendations whose text quotes the figures they come from. The formula and every
//! threshold are constants of this module, documented in `docs/rankings.md`.
//!
//! Unqualified figures of an entry are *self* (exclusive) figures: `cpu_ns` is self CPU time
//! and `alloc_bytes` self allocated bytes, as a ranking asks where the work itself happens.
//! Inclusive figures carry `total` in their name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::record::callsite::CallsiteKind;
use crate::record::snapshot::{FunctionStats, Snapshot};
use crate::render::table::{fmt_bytes, fmt_count, fmt_ns};

/// Weights of the impact score and thresholds of the classification.
pub mod thresholds {
    /// Weight of the share of self wall time in the impact score.
    pub const IMPACT_WEIGHT_WALL: f64 = 0.6;
    /// Weight of the share of self CPU time in the impact score.
    pub const IMPACT_WEIGHT_CPU: f64 = 0.25;
    /// Weight of the share of self allocated bytes in the impact score.
    pub const IMPACT_WEIGHT_ALLOC: f64 = 0.15;

    /// Below this much self wall time a function's CPU/wait profile is not judged: the CPU
    /// clock is attributed per window of [`crate::CPU_ATTRIBUTION_WINDOW_NS`], too coarse for less.
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

use thresholds::*;

/// The metric a ranking is sorted by (descending).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Self (exclusive) wall time: where time is spent in the function's own code.
    #[default]
    SelfWall,
    /// Total (inclusive) wall time, callees included.
    TotalWall,
    /// Self thread CPU time.
    Cpu,
    /// Self allocated bytes.
    AllocBytes,
    /// Self allocation count.
    AllocCount,
    /// Calls.
    Calls,
    /// 99th percentile latency of a call.
    P99,
}

impl SortKey {
    /// Every key, in the order listed in errors and docs.
    pub const ALL: [SortKey; 7] = [
        SortKey::SelfWall,
        SortKey::TotalWall,
        SortKey::Cpu,
        SortKey::AllocBytes,
        SortKey::AllocCount,
        SortKey::Calls,
        SortKey::P99,
    ];

    /// The key's name, as accepted by [`FromStr`] and written by serde.
    pub const fn as_str(self) -> &'static str {
        match self {
            SortKey::SelfWall => "self_wall",
            SortKey::TotalWall => "total_wall",
            SortKey::Cpu => "cpu",
            SortKey::AllocBytes => "alloc_bytes",
            SortKey::AllocCount => "alloc_count",
            SortKey::Calls => "calls",
            SortKey::P99 => "p99",
        }
    }

    /// The value of this metric for an entry.
    fn value(self, b: &Bottleneck) -> u64 {
        match self {
            SortKey::SelfWall => b.self_wall_ns,
            SortKey::TotalWall => b.total_wall_ns,
            SortKey::Cpu => b.cpu_ns,
            SortKey::AllocBytes => b.alloc_bytes,
            SortKey::AllocCount => b.alloc_count,
            SortKey::Calls => b.calls,
            SortKey::P99 => b.p99_ns,
        }
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`SortKey`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown sort key {input:?}; valid keys: self_wall, total_wall, cpu, alloc_bytes, alloc_count, calls, p99")]
pub struct ParseSortKeyError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for SortKey {
    type Err = ParseSortKeyError;

    /// Parses a key name (case-insensitive; `-` may stand for `_`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| ParseSortKeyError { input: s.to_owned() })
    }
}

/// How to rank.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankOptions {
    /// The metric to sort by.
    pub sort: SortKey,
    /// Keep at most this many entries (`None`: all).
    pub limit: Option<usize>,
}

impl RankOptions {
    /// Sort by self wall time, no limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sorts by `sort`.
    #[must_use]
    pub fn sort(mut self, sort: SortKey) -> Self {
        self.sort = sort;
        self
    }

    /// Keeps at most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// What kind of cost dominates a function. Thresholds are the constants of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    pub const fn as_str(self) -> &'static str {
        match self {
            Classification::AllocHeavy => "alloc_heavy",
            Classification::WaitBound => "wait_bound",
            Classification::HotLoop => "hot_loop",
            Classification::CpuBound => "cpu_bound",
            Classification::Balanced => "balanced",
            Classification::Negligible => "negligible",
        }
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a ranking's window starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStart {
    /// The first window: since the process started recording.
    ProcessStart,
    /// Since the last [`crate::reset`].
    LastReset,
}

/// The window a ranking covers, with the totals its shares are relative to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingWindow {
    /// Window counter: 1 for the first window, +1 per reset.
    pub epoch: u64,
    /// Since process start or since the last reset.
    pub since: WindowStart,
    /// Start, in ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the snapshot was taken, in ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Length of the window, in ns.
    pub duration_ns: u64,
    /// Profiled wall time counted once (sum of self wall time): the denominator of `share`.
    pub profiled_wall_ns: u64,
    /// Functions with calls in the window (before `limit`).
    pub functions: usize,
    /// Whether allocations were counted.
    pub allocations_counted: bool,
}

/// One ranked function: measured figures, then what is derived from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bottleneck {
    /// 1-based position.
    pub rank: usize,
    /// Display name.
    pub function: String,
    /// Module path or tracing target.
    pub module: String,
    /// Sync function, async function or tracing span.
    pub kind: CallsiteKind,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Calls (cancelled ones included).
    pub calls: u64,
    /// Inclusive wall time (latency for async calls and spans).
    pub total_wall_ns: u64,
    /// Exclusive wall time.
    pub self_wall_ns: u64,
    /// Time running (sum of polls or span entries; equals total for sync calls).
    pub busy_ns: u64,
    /// Mean total wall time per call.
    pub mean_ns: u64,
    /// Self CPU time (same as `cpu_self_ns`).
    pub cpu_ns: u64,
    /// Self CPU time.
    pub cpu_self_ns: u64,
    /// Inclusive CPU time.
    pub cpu_total_ns: u64,
    /// Self allocated bytes.
    pub alloc_bytes: u64,
    /// Self allocations.
    pub alloc_count: u64,
    /// Self freed bytes.
    pub freed_bytes: u64,
    /// Inclusive allocated bytes.
    pub alloc_total_bytes: u64,
    /// Median latency.
    pub p50_ns: u64,
    /// 95th percentile latency.
    pub p95_ns: u64,
    /// 99th percentile latency.
    pub p99_ns: u64,
    /// Longest call.
    pub max_ns: u64,
    /// `self_wall_ns` / profiled wall time of the window, in [0, 1].
    pub share: f64,
    /// Self CPU / all self CPU of the window, in [0, 1].
    pub cpu_share: f64,
    /// Self allocated bytes / all self allocated bytes of the window, in [0, 1].
    pub alloc_share: f64,
    /// Weighted mean of the shares, in [0, 1] (see [`impact_score`]).
    pub impact_score: f64,
    /// The dominant cost: the first of `classifications`.
    pub classification: Classification,
    /// Every classification that applies, most specific first.
    pub classifications: Vec<Classification>,
    /// What to do, each naming the figures that call for it.
    pub recommendations: Vec<String>,
}

/// A ranking, as served by the HTTP API and rendered by [`crate::render_table`].
///
#[doc = include_str!("../../../docs/rankings.md")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// The window covered.
    pub window: RankingWindow,
    /// The metric sorted by.
    pub sort: SortKey,
    /// Entries, best candidate first.
    pub bottlenecks: Vec<Bottleneck>,
    /// Caveats about the whole ranking (e.g. allocations not counted).
    pub notes: Vec<String>,
}

/// Weighted shares of one function, each in [0, 1]; `None` when the window has none of that
/// resource (so the metric cannot tell functions apart).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Shares {
    /// Self wall time / profiled wall time.
    pub wall: Option<f64>,
    /// Self CPU time / all self CPU time.
    pub cpu: Option<f64>,
    /// Self allocated bytes / all self allocated bytes.
    pub alloc: Option<f64>,
}

/// The impact score: the mean of the available shares weighted by
/// [`IMPACT_WEIGHT_WALL`], [`IMPACT_WEIGHT_CPU`] and [`IMPACT_WEIGHT_ALLOC`]:
///
/// `impact = (0.6·wall + 0.25·cpu + 0.15·alloc) / (sum of the weights of available shares)`
///
/// A function that does all the work of the window scores 1; one that does none scores 0.
/// Shares are clamped to [0, 1], so the score is too. Rounded to 4 decimals.
pub fn impact_score(s: Shares) -> f64 {
    let parts = [
        (IMPACT_WEIGHT_WALL, s.wall),
        (IMPACT_WEIGHT_CPU, s.cpu),
        (IMPACT_WEIGHT_ALLOC, s.alloc),
    ];
    let (num, den) = parts.iter().fold((0.0, 0.0), |(n, d), &(w, x)| match x {
        Some(x) => (n + w * x.clamp(0.0, 1.0), d + w),
        None => (n, d),
    });
    if den == 0.0 {
        0.0
    } else {
        round4(num / den)
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).clamp(0.0, 1.0))
}

/// The inputs of classification, per function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Calls.
    pub calls: u64,
    /// Total wall time.
    pub total_wall_ns: u64,
    /// Self wall time.
    pub self_wall_ns: u64,
    /// Self CPU time.
    pub cpu_self_ns: u64,
    /// Self allocated bytes.
    pub alloc_bytes: u64,
    /// Self allocations.
    pub alloc_count: u64,
}

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
pub fn classify(p: &Profile, allocations_counted: bool, cpu_measured: bool) -> Vec<Classification> {
    let mut out = Vec::new();
    let calls = p.calls.max(1);
    if allocations_counted {
        let per_sec = if p.self_wall_ns > 0 {
            p.alloc_bytes as f64 * 1e9 / p.self_wall_ns as f64
        } else {
            0.0
        };
        if p.alloc_bytes / calls >= ALLOC_HEAVY_BYTES_PER_CALL
            || p.alloc_count / calls >= ALLOC_HEAVY_COUNT_PER_CALL
            || (p.self_wall_ns >= MIN_JUDGED_SELF_WALL_NS && per_sec >= ALLOC_HEAVY_BYTES_PER_SEC)
        {
            out.push(Classification::AllocHeavy);
        }
    }
    let judged = cpu_measured && p.self_wall_ns >= MIN_JUDGED_SELF_WALL_NS;
    let cpu_ratio = p.cpu_self_ns as f64 / p.self_wall_ns.max(1) as f64;
    if judged && cpu_ratio <= WAIT_BOUND_MAX_CPU_RATIO {
        out.push(Classification::WaitBound);
    }
    if p.calls >= HOT_LOOP_MIN_CALLS && p.total_wall_ns / calls <= HOT_LOOP_MAX_MEAN_NS {
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

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Recommendations for one entry, each quoting its evidence.
fn recommend(b: &Bottleneck, cpu_measured: bool) -> Vec<String> {
    let calls = b.calls.max(1);
    let mut out = Vec::new();
    let cpu_ratio = b.cpu_self_ns as f64 / b.self_wall_ns.max(1) as f64;
    for c in &b.classifications {
        let text = match c {
            Classification::AllocHeavy => format!(
                "allocates {} per call in {} allocations ({} per call, {} in all): reuse buffers, \
                 preallocate with `with_capacity`, or borrow instead of cloning",
                fmt_bytes(b.alloc_bytes / calls),
                fmt_count(b.alloc_count),
                fmt_count(b.alloc_count / calls),
                fmt_bytes(b.alloc_bytes),
            ),
            Classification::WaitBound => {
                let busy = if matches!(b.kind, CallsiteKind::Async | CallsiteKind::Span) {
                    format!("; it ran {} of {} latency", fmt_ns(b.busy_ns), fmt_ns(b.total_wall_ns))
                } else {
                    String::new()
                };
                format!(
                    "waits: only {} of its {} self time is on CPU ({} CPU){busy}: look for blocking \
                     I/O, lock contention, sleeps or sequential awaits (or a run queue, if the machine is \
                     oversubscribed); overlap independent waits",
                    pct(cpu_ratio.min(1.0)),
                    fmt_ns(b.self_wall_ns),
                    fmt_ns(b.cpu_self_ns),
                )
            }
            Classification::HotLoop => format!(
                "{} calls of {} each on average: the per-call cost dominates; batch the work, hoist \
                 invariant work out of the loop, or inline it (and drop `#[profiled]` from this leaf)",
                fmt_count(b.calls),
                fmt_ns(b.mean_ns),
            ),
            Classification::CpuBound => format!(
                "computes: {} of its {} self time is on CPU over {} call{} ({} per call): improve the \
                 algorithm or data layout, cache results, or parallelize; a sampling profile shows \
                 the hot lines",
                pct(cpu_ratio.min(1.0)),
                fmt_ns(b.self_wall_ns),
                fmt_count(b.calls),
                if b.calls == 1 { "" } else { "s" },
                fmt_ns(b.self_wall_ns / calls),
            ),
            Classification::Balanced => format!(
                "{} of its {} self time is on CPU: both computation and waiting (I/O, locks, or \
                 the run queue of an oversubscribed machine) matter; check the waits first",
                pct(cpu_ratio.min(1.0)),
                fmt_ns(b.self_wall_ns),
            ),
            Classification::Negligible => {
                if cpu_measured {
                    format!(
                        "{} of self time in all (below {}): not worth optimizing on this evidence",
                        fmt_ns(b.self_wall_ns),
                        fmt_ns(MIN_JUDGED_SELF_WALL_NS),
                    )
                } else {
                    format!(
                        "{} of self time; CPU time was not measured, so computing and waiting cannot \
                         be told apart",
                        fmt_ns(b.self_wall_ns)
                    )
                }
            }
        };
        out.push(text);
    }
    if b.calls >= TAIL_MIN_CALLS && b.p50_ns > 0 && b.p99_ns >= TAIL_MIN_P99_OVER_P50 * b.p50_ns {
        out.push(format!(
            "tail latency: p99 {} is {}x the median {} over {} calls: look for contention, cold \
             caches or rare slow paths",
            fmt_ns(b.p99_ns),
            b.p99_ns / b.p50_ns,
            fmt_ns(b.p50_ns),
            fmt_count(b.calls),
        ));
    }
    if b.total_wall_ns >= MIN_JUDGED_SELF_WALL_NS
        && (b.self_wall_ns as f64) <= WRAPPER_MAX_SELF_FRACTION * b.total_wall_ns as f64
    {
        out.push(format!(
            "{} of its {} total time is spent in profiled callees: look at those instead",
            pct(1.0 - b.self_wall_ns as f64 / b.total_wall_ns as f64),
            fmt_ns(b.total_wall_ns),
        ));
    }
    out
}

fn entry(f: &FunctionStats) -> Bottleneck {
    Bottleneck {
        rank: 0,
        function: f.name.clone(),
        module: f.module.clone(),
        kind: f.kind,
        file: f.file.clone(),
        line: f.line,
        calls: f.calls,
        total_wall_ns: f.total_wall_ns,
        self_wall_ns: f.self_wall_ns,
        busy_ns: f.busy_ns,
        mean_ns: f.mean_ns,
        cpu_ns: f.cpu_self_ns,
        cpu_self_ns: f.cpu_self_ns,
        cpu_total_ns: f.cpu_total_ns,
        alloc_bytes: f.alloc_self.alloc_bytes,
        alloc_count: f.alloc_self.alloc_count,
        freed_bytes: f.alloc_self.freed_bytes,
        alloc_total_bytes: f.alloc_total.alloc_bytes,
        p50_ns: f.p50_ns,
        p95_ns: f.p95_ns,
        p99_ns: f.p99_ns,
        max_ns: f.max_ns,
        share: 0.0,
        cpu_share: 0.0,
        alloc_share: 0.0,
        impact_score: 0.0,
        classification: Classification::Negligible,
        classifications: Vec::new(),
        recommendations: Vec::new(),
    }
}

/// Ranks the functions of `snap`. Pure: the same snapshot and options give the same ranking.
///
/// Ties on the sort key are broken by self wall time, then by name.
///
/// ```
/// use profiling_core::{profiled, rank, RankOptions, SortKey};
///
/// #[profiled]
/// fn work() -> u64 {
///     (0..1000u64).sum()
/// }
///
/// # fn main() {
/// work();
/// let ranking = rank(&profiling_core::snapshot(), &RankOptions::new().sort(SortKey::Calls).limit(5));
/// assert!(ranking.bottlenecks.len() <= 5);
/// assert!(ranking.bottlenecks.iter().any(|b| b.function.ends_with("::work")));
/// println!("{ranking}"); // a plain-text table
/// # }
/// ```
pub fn rank(snap: &Snapshot, opts: &RankOptions) -> Ranking {
    let wall_total = snap.profiled_wall_ns();
    let cpu_total: u64 = snap.functions.iter().map(|f| f.cpu_self_ns).sum();
    let alloc_total: u64 = snap.functions.iter().map(|f| f.alloc_self.alloc_bytes).sum();
    let cpu_measured = cpu_total > 0 || snap.unattributed_cpu_ns > 0;
    let allocs = snap.allocations_counted;

    let mut entries: Vec<Bottleneck> = snap.functions.iter().map(entry).collect();
    for b in &mut entries {
        let shares = Shares {
            wall: ratio(b.self_wall_ns, wall_total),
            cpu: ratio(b.cpu_self_ns, cpu_total),
            alloc: if allocs {
                ratio(b.alloc_bytes, alloc_total)
            } else {
                None
            },
        };
        b.share = round4(shares.wall.unwrap_or(0.0));
        b.cpu_share = round4(shares.cpu.unwrap_or(0.0));
        b.alloc_share = round4(shares.alloc.unwrap_or(0.0));
        b.impact_score = impact_score(shares);
        let profile = Profile {
            calls: b.calls,
            total_wall_ns: b.total_wall_ns,
            self_wall_ns: b.self_wall_ns,
            cpu_self_ns: b.cpu_self_ns,
            alloc_bytes: b.alloc_bytes,
            alloc_count: b.alloc_count,
        };
        b.classifications = classify(&profile, allocs, cpu_measured);
        b.classification = b.classifications[0];
        b.recommendations = recommend(b, cpu_measured);
    }
    let key = opts.sort;
    entries.sort_by(|a, b| {
        key.value(b)
            .cmp(&key.value(a))
            .then(b.self_wall_ns.cmp(&a.self_wall_ns))
            .then_with(|| a.function.cmp(&b.function))
    });
    let functions = entries.len();
    if let Some(limit) = opts.limit {
        entries.truncate(limit);
    }
    for (i, b) in entries.iter_mut().enumerate() {
        b.rank = i + 1;
    }

    let mut notes = Vec::new();
    if !allocs {
        notes.push(
            "allocations not counted: install `profiling_core::ProfilingAllocator` as the \
             `#[global_allocator]` to see allocation figures and `alloc_heavy` classifications"
                .to_owned(),
        );
    }
    if !cpu_measured {
        notes.push("no CPU time was measured: functions are not classified cpu_bound or wait_bound".to_owned());
    }
    if snap.folded_calls > 0 {
        notes.push(format!(
            "{} calls were folded into their parent's path because the call tree reached its cap of \
             {} nodes: per-path figures are approximate",
            fmt_count(snap.folded_calls),
            snap.call_tree_node_cap
        ));
    }

    Ranking {
        window: RankingWindow {
            epoch: snap.window.epoch,
            since: if snap.window.epoch <= 1 {
                WindowStart::ProcessStart
            } else {
                WindowStart::LastReset
            },
            started_unix_ms: snap.window.started_unix_ms,
            taken_unix_ms: snap.window.taken_unix_ms,
            duration_ns: snap.window.duration_ns,
            profiled_wall_ns: wall_total,
            functions,
            allocations_counted: allocs,
        },
        sort: key,
        bottlenecks: entries,
        notes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::alloc::AllocCounters;
    use crate::record::snapshot::{CallTreeNode, ThreadCounts, Window};

    const MS: u64 = 1_000_000;

    /// A function with the given self figures, on its own root path.
    pub(crate) fn func(id: u32, name: &str, calls: u64, total: u64, self_wall: u64, cpu: u64) -> FunctionStats {
        FunctionStats {
            id,
            name: name.to_owned(),
            module: "m".to_owned(),
            file: "src/m.rs".to_owned(),
            line: id,
            kind: CallsiteKind::Sync,
            calls,
            cancelled: 0,
            total_wall_ns: total,
            self_wall_ns: self_wall,
            min_ns: total / calls.max(1),
            max_ns: total / calls.max(1),
            mean_ns: total / calls.max(1),
            busy_ns: total,
            p50_ns: total / calls.max(1),
            p90_ns: total / calls.max(1),
            p95_ns: total / calls.max(1),
            p99_ns: total / calls.max(1),
            p999_ns: total / calls.max(1),
            cpu_total_ns: cpu,
            cpu_self_ns: cpu,
            alloc_total: AllocCounters::default(),
            alloc_self: AllocCounters::default(),
            histogram: Vec::new(),
        }
    }

    pub(crate) fn snap(functions: Vec<FunctionStats>, allocations_counted: bool) -> Snapshot {
        let call_tree = functions
            .iter()
            .map(|f| CallTreeNode {
                id: f.id,
                parent: Some(0),
                function: Some(f.id),
                calls: f.calls,
                self_wall_ns: f.self_wall_ns,
                self_busy_ns: f.self_wall_ns,
                self_cpu_ns: f.cpu_self_ns,
                self_alloc: f.alloc_self,
            })
            .collect();
        Snapshot {
            window: Window {
                epoch: 1,
                started_unix_ms: 1_700_000_000_000,
                taken_unix_ms: 1_700_000_001_000,
                duration_ns: 1_000 * MS,
            },
            functions,
            call_tree,
            unattributed_cpu_ns: 0,
            threads: ThreadCounts { live: 1, exited: 0 },
            folded_calls: 0,
            call_tree_nodes: 3,
            call_tree_node_cap: 1000,
            allocations_counted,
            clock: "monotonic".to_owned(),
        }
    }

    #[test]
    fn sort_keys_round_trip_and_errors_list_valid_keys() {
        for k in SortKey::ALL {
            assert_eq!(k.to_string().parse::<SortKey>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<SortKey>(&format!("\"{k}\"")).unwrap(), k);
        }
        assert_eq!("Self-Wall".parse::<SortKey>(), Ok(SortKey::SelfWall));
        let err = "wall".parse::<SortKey>().unwrap_err();
        assert_eq!(err.input, "wall");
        let msg = err.to_string();
        for k in SortKey::ALL {
            assert!(msg.contains(k.as_str()), "{msg} lacks {k}");
        }
        assert_eq!(SortKey::default(), SortKey::SelfWall);
    }

    #[test]
    fn impact_score_formula() {
        let all = Shares {
            wall: Some(1.0),
            cpu: Some(1.0),
            alloc: Some(1.0),
        };
        assert_eq!(impact_score(all), 1.0);
        assert_eq!(impact_score(Shares::default()), 0.0);
        let s = Shares {
            wall: Some(0.5),
            cpu: Some(0.2),
            alloc: Some(0.0),
        };
        // 0.6*0.5 + 0.25*0.2 + 0.15*0 = 0.35
        assert_eq!(impact_score(s), 0.35);
        // Without allocation figures the weights renormalize: (0.3 + 0.05) / 0.85.
        let s = Shares { alloc: None, ..s };
        assert_eq!(impact_score(s), round4(0.35 / 0.85));
        // Out-of-range inputs are clamped.
        let s = Shares {
            wall: Some(3.0),
            cpu: Some(-1.0),
            alloc: None,
        };
        assert_eq!(impact_score(s), round4(0.6 / 0.85));
    }

    #[test]
    fn classification_thresholds() {
        let p = |calls, total, self_wall, cpu, bytes, count| Profile {
            calls,
            total_wall_ns: total,
            self_wall_ns: self_wall,
            cpu_self_ns: cpu,
            alloc_bytes: bytes,
            alloc_count: count,
        };
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
    fn ranks_by_each_key_with_shares_and_limit() {
        let mut a = func(1, "m::a", 1, 30 * MS, 30 * MS, 29 * MS);
        let b = func(2, "m::b", 1, 10 * MS, 10 * MS, 10 * MS);
        let mut parent = func(3, "m::parent", 1, 41 * MS, MS, MS);
        parent.p99_ns = 500 * MS;
        a.alloc_self = AllocCounters {
            alloc_bytes: 3 << 20,
            alloc_count: 41_000,
            freed_bytes: 3 << 20,
            freed_count: 41_000,
        };
        let s = snap(vec![a, b, parent], true);
        let r = rank(&s, &RankOptions::new());
        let names: Vec<_> = r.bottlenecks.iter().map(|b| b.function.as_str()).collect();
        assert_eq!(names, ["m::a", "m::b", "m::parent"]);
        assert_eq!(r.bottlenecks[0].rank, 1);
        assert_eq!(r.bottlenecks[0].share, round4(30.0 / 41.0));
        let share_sum: f64 = r.bottlenecks.iter().map(|b| b.share).sum();
        assert!((share_sum - 1.0).abs() < 1e-3);
        assert_eq!(r.window.profiled_wall_ns, 41 * MS);
        assert_eq!(r.window.since, WindowStart::ProcessStart);
        assert!(r.notes.is_empty(), "{:?}", r.notes);

        let first = |k: SortKey| rank(&s, &RankOptions::new().sort(k)).bottlenecks[0].function.clone();
        assert_eq!(first(SortKey::TotalWall), "m::parent");
        assert_eq!(first(SortKey::P99), "m::parent");
        assert_eq!(first(SortKey::Cpu), "m::a");
        assert_eq!(first(SortKey::AllocBytes), "m::a");
        assert_eq!(first(SortKey::AllocCount), "m::a");

        let r = rank(&s, &RankOptions::new().sort(SortKey::TotalWall).limit(2));
        assert_eq!(r.bottlenecks.len(), 2);
        assert_eq!(r.window.functions, 3);
        assert_eq!(r.sort, SortKey::TotalWall);
        // The parent is a wrapper: told to look at its callees.
        let p = &r.bottlenecks[0];
        assert!(
            p.recommendations
                .iter()
                .any(|t| t.contains("98% of its 41.0 ms total time")),
            "{:?}",
            p.recommendations
        );
    }

    #[test]
    fn recommendations_quote_the_evidence() {
        let mut a = func(1, "m::alloc", 1, 30 * MS, 30 * MS, 29 * MS);
        a.alloc_self = AllocCounters {
            alloc_bytes: 3_250_586, // 3.1 MiB
            alloc_count: 41_000,
            freed_bytes: 0,
            freed_count: 0,
        };
        let mut sleeper = func(2, "m::sleep", 1, 20 * MS, 20 * MS, 0);
        sleeper.kind = CallsiteKind::Async;
        sleeper.busy_ns = MS / 10;
        let r = rank(&snap(vec![a, sleeper], true), &RankOptions::new());
        let alloc = &r.bottlenecks[0];
        assert_eq!(alloc.classification, Classification::AllocHeavy);
        assert!(
            alloc.recommendations[0].starts_with("allocates 3.1 MiB per call in 41k allocations"),
            "{}",
            alloc.recommendations[0]
        );
        let sleep = &r.bottlenecks[1];
        assert_eq!(sleep.classification, Classification::WaitBound);
        assert!(
            sleep.recommendations[0].starts_with(
                "waits: only 0% of its 20.0 ms self time is on CPU (0 ns CPU); it ran 100 µs of 20.0 ms latency"
            ),
            "{}",
            sleep.recommendations[0]
        );
    }

    #[test]
    fn no_alloc_heavy_and_a_note_without_counted_allocations() {
        let mut a = func(1, "m::alloc", 1, 30 * MS, 30 * MS, 29 * MS);
        a.alloc_self.alloc_bytes = 100 << 20;
        let r = rank(&snap(vec![a], false), &RankOptions::new());
        assert_eq!(r.bottlenecks[0].classification, Classification::CpuBound);
        assert_eq!(r.bottlenecks[0].alloc_share, 0.0);
        assert!(r.notes[0].starts_with("allocations not counted"));
        assert!(!r.window.allocations_counted);
    }

    #[test]
    fn tail_latency_is_reported() {
        let mut f = func(1, "m::tail", 1_000, 2_000 * MS, 2_000 * MS, 1_900 * MS);
        f.p50_ns = MS;
        f.p99_ns = 50 * MS;
        let r = rank(&snap(vec![f], true), &RankOptions::new());
        assert!(
            r.bottlenecks[0]
                .recommendations
                .iter()
                .any(|t| t.starts_with("tail latency: p99 50.0 ms is 50x the median 1.00 ms over 1k calls")),
            "{:?}",
            r.bottlenecks[0].recommendations
        );
    }

    #[test]
    fn json_shape() {
        let r = rank(&snap(vec![func(1, "m::a", 1, MS, MS, MS)], true), &RankOptions::new());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["sort"], "self_wall");
        assert_eq!(v["window"]["since"], "process_start");
        let b = &v["bottlenecks"][0];
        for k in [
            "rank",
            "function",
            "file",
            "line",
            "calls",
            "total_wall_ns",
            "self_wall_ns",
            "cpu_ns",
            "cpu_self_ns",
            "cpu_total_ns",
            "alloc_bytes",
            "alloc_count",
            "freed_bytes",
            "p50_ns",
            "p95_ns",
            "p99_ns",
            "share",
            "impact_score",
            "classification",
            "recommendations",
        ] {
            assert!(!b[k].is_null(), "missing {k}");
        }
        assert_eq!(b["classification"], "cpu_bound");
        let back: Ranking = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
