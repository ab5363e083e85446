//! Where two snapshots are compared: [`diff`] gives per-function deltas ranked by
//! regression.
//!
//! Figures are compared per call, so windows of different length compare fairly. The
//! ranking key is `regression_ns = (target self ns per call - base self ns per call) *
//! target calls`: the self time the target window spent beyond what the same calls would
//! have cost at the base's speed. Self time (not total) so that a slow child is not counted
//! again in each of its callers. A function is `regressed` or `improved` when its self time
//! per call moved by more than [`UNCHANGED_PERCENT`]; functions present on one side only
//! are `added` or `removed` and ranked after those present on both, by self time.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::record::snapshot::{FunctionStats, Snapshot};

/// Relative change of self time per call within which a function is `unchanged`, percent.
pub const UNCHANGED_PERCENT: f64 = 5.0;

/// How a function changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaStatus {
    /// Slower per call.
    Regressed,
    /// Faster per call.
    Improved,
    /// Within the tolerance.
    Unchanged,
    /// Only in the target.
    Added,
    /// Only in the base.
    Removed,
}

/// Per-call figures of one function in one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerCall {
    /// Calls in the window.
    pub calls: u64,
    /// Mean inclusive wall time per call, ns.
    pub mean_ns: u64,
    /// Mean exclusive wall time per call, ns.
    pub self_mean_ns: u64,
    /// 99th percentile latency, ns.
    pub p99_ns: u64,
    /// Mean CPU time per call (inclusive), ns.
    pub cpu_per_call_ns: u64,
    /// Mean bytes allocated per call (inclusive).
    pub alloc_bytes_per_call: u64,
}

impl PerCall {
    fn of(f: &FunctionStats) -> Self {
        let c = f.calls.max(1);
        Self {
            calls: f.calls,
            mean_ns: f.total_wall_ns / c,
            self_mean_ns: f.self_wall_ns / c,
            p99_ns: f.p99_ns,
            cpu_per_call_ns: f.cpu_total_ns / c,
            alloc_bytes_per_call: f.alloc_total.alloc_bytes / c,
        }
    }
}

/// One function's change from base to target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDelta {
    /// 1 = the worst regression.
    pub rank: usize,
    /// Function name.
    pub function: String,
    /// How it changed.
    pub status: DeltaStatus,
    /// Base figures (`None` when added).
    pub base: Option<PerCall>,
    /// Target figures (`None` when removed).
    pub target: Option<PerCall>,
    /// Change of self time per call, percent (`None` unless on both sides with base > 0).
    pub self_change_percent: Option<f64>,
    /// Change of mean inclusive time per call, percent.
    pub mean_change_percent: Option<f64>,
    /// Change of p99 latency, percent.
    pub p99_change_percent: Option<f64>,
    /// Change of bytes allocated per call, percent.
    pub alloc_change_percent: Option<f64>,
    /// Extra self time the target spent at its own speed versus the base's, ns (negative:
    /// time saved). The ranking key.
    pub regression_ns: i64,
}

/// The comparison of two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDiff {
    /// When the base was taken, ms since the Unix epoch.
    pub base_taken_unix_ms: u64,
    /// When the target was taken, ms since the Unix epoch.
    pub target_taken_unix_ms: u64,
    /// Functions, worst regression first.
    pub functions: Vec<FunctionDelta>,
    /// Counts by status.
    pub regressed: usize,
    /// Functions that got faster.
    pub improved: usize,
}

fn change(base: u64, target: u64) -> Option<f64> {
    (base > 0).then(|| (target as f64 - base as f64) / base as f64 * 100.0)
}

/// Compares `target` with `base`.
pub fn diff(base: &Snapshot, target: &Snapshot) -> SnapshotDiff {
    let base_by: HashMap<&str, &FunctionStats> = base.functions.iter().map(|f| (f.name.as_str(), f)).collect();
    let target_names: std::collections::HashSet<&str> = target.functions.iter().map(|f| f.name.as_str()).collect();
    let mut out = Vec::new();
    for t in &target.functions {
        let tp = PerCall::of(t);
        match base_by.get(t.name.as_str()) {
            Some(b) => {
                let bp = PerCall::of(b);
                let self_change = change(bp.self_mean_ns, tp.self_mean_ns);
                let status = match self_change {
                    Some(c) if c > UNCHANGED_PERCENT => DeltaStatus::Regressed,
                    Some(c) if c < -UNCHANGED_PERCENT => DeltaStatus::Improved,
                    None if tp.self_mean_ns > 0 => DeltaStatus::Regressed,
                    _ => DeltaStatus::Unchanged,
                };
                let regression_ns = (tp.self_mean_ns as i128 - bp.self_mean_ns as i128) * tp.calls as i128;
                out.push(FunctionDelta {
                    rank: 0,
                    function: t.name.clone(),
                    status,
                    base: Some(bp),
                    target: Some(tp),
                    self_change_percent: self_change,
                    mean_change_percent: change(bp.mean_ns, tp.mean_ns),
                    p99_change_percent: change(bp.p99_ns, tp.p99_ns),
                    alloc_change_percent: change(bp.alloc_bytes_per_call, tp.alloc_bytes_per_call),
                    regression_ns: regression_ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                });
            }
            None => out.push(FunctionDelta {
                rank: 0,
                function: t.name.clone(),
                status: DeltaStatus::Added,
                base: None,
                target: Some(tp),
                self_change_percent: None,
                mean_change_percent: None,
                p99_change_percent: None,
                alloc_change_percent: None,
                regression_ns: t.self_wall_ns.min(i64::MAX as u64) as i64,
            }),
        }
    }
    for b in base
        .functions
        .iter()
        .filter(|b| !target_names.contains(b.name.as_str()))
    {
        out.push(FunctionDelta {
            rank: 0,
            function: b.name.clone(),
            status: DeltaStatus::Removed,
            base: Some(PerCall::of(b)),
            target: None,
            self_change_percent: None,
            mean_change_percent: None,
            p99_change_percent: None,
            alloc_change_percent: None,
            regression_ns: -(b.self_wall_ns.min(i64::MAX as u64) as i64),
        });
    }
    let one_sided = |d: &FunctionDelta| matches!(d.status, DeltaStatus::Added | DeltaStatus::Removed);
    out.sort_by(|a, b| {
        one_sided(a)
            .cmp(&one_sided(b))
            .then(b.regression_ns.cmp(&a.regression_ns))
            .then(a.function.cmp(&b.function))
    });
    for (i, d) in out.iter_mut().enumerate() {
        d.rank = i + 1;
    }
    SnapshotDiff {
        base_taken_unix_ms: base.window.taken_unix_ms,
        target_taken_unix_ms: target.window.taken_unix_ms,
        regressed: out.iter().filter(|d| d.status == DeltaStatus::Regressed).count(),
        improved: out.iter().filter(|d| d.status == DeltaStatus::Improved).count(),
        functions: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, calls: u64, self_ns_per_call: u64) -> FunctionStats {
        FunctionStats {
            name: name.to_owned(),
            calls,
            total_wall_ns: calls * self_ns_per_call * 2,
            self_wall_ns: calls * self_ns_per_call,
            p99_ns: self_ns_per_call * 3,
            ..FunctionStats::default()
        }
    }

    fn snap(functions: Vec<FunctionStats>) -> Snapshot {
        Snapshot {
            functions,
            ..Snapshot::default()
        }
    }

    #[test]
    fn ranks_by_added_self_time() {
        let base = snap(vec![
            f("a", 100, 1000),
            f("b", 10, 1000),
            f("c", 100, 1000),
            f("gone", 5, 10),
        ]);
        // a: +10% on 1000 calls = 100 µs extra; b: +100% on 10 calls = 10 µs; c: -50%.
        let target = snap(vec![
            f("a", 1000, 1100),
            f("b", 10, 2000),
            f("c", 100, 500),
            f("new", 1, 50),
        ]);
        let d = diff(&base, &target);
        let names: Vec<_> = d.functions.iter().map(|x| (x.function.as_str(), x.status)).collect();
        assert_eq!(
            names,
            vec![
                ("a", DeltaStatus::Regressed),
                ("b", DeltaStatus::Regressed),
                ("c", DeltaStatus::Improved),
                ("new", DeltaStatus::Added),
                ("gone", DeltaStatus::Removed),
            ]
        );
        assert_eq!(d.functions[0].regression_ns, 100 * 1000);
        assert_eq!(d.functions[1].regression_ns, 10 * 1000);
        assert_eq!(d.functions[0].self_change_percent, Some(10.0));
        assert_eq!(d.functions[2].regression_ns, -50_000);
        assert_eq!((d.regressed, d.improved), (2, 1));
        assert_eq!(d.functions[4].rank, 5);
    }

    #[test]
    fn small_changes_are_unchanged() {
        let d = diff(&snap(vec![f("a", 100, 1000)]), &snap(vec![f("a", 100, 1040)]));
        assert_eq!(d.functions[0].status, DeltaStatus::Unchanged);
        let same = diff(&snap(vec![f("a", 1, 1)]), &snap(vec![f("a", 1, 1)]));
        assert_eq!(same.functions[0].regression_ns, 0);
    }
}
