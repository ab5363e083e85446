//! What to do about a function, in words: one recommendation per classification plus tail
//! latency and wrapper advice, each quoting the figures that call for it; and the notes about
//! a whole ranking.

use crate::analyze::ranking::classify::{cpu_ratio, thresholds::*, Classification};
use crate::record::callsite::CallsiteKind;
use crate::record::snapshot::{FunctionStats, Snapshot};
use crate::units::{fmt_bytes, fmt_count, fmt_ns, fmt_percent_rounded as pct};

/// Recommendations for a function with these classifications, each quoting its evidence.
pub(crate) fn recommend(f: &FunctionStats, classifications: &[Classification], cpu_measured: bool) -> Vec<String> {
    let calls = f.calls.max(1);
    let mut out = Vec::new();
    let cpu_ratio = cpu_ratio(f).min(1.0);
    let (alloc_bytes, alloc_count) = (f.alloc_self.alloc_bytes, f.alloc_self.alloc_count);
    for c in classifications {
        let text = match c {
            Classification::AllocHeavy => format!(
                "allocates {} per call in {} allocations ({} per call, {} in all): reuse buffers, \
                 preallocate with `with_capacity`, or borrow instead of cloning",
                fmt_bytes(alloc_bytes / calls),
                fmt_count(alloc_count),
                fmt_count(alloc_count / calls),
                fmt_bytes(alloc_bytes),
            ),
            Classification::WaitBound => {
                let busy = if matches!(f.kind, CallsiteKind::Async | CallsiteKind::Span) {
                    format!("; it ran {} of {} latency", fmt_ns(f.busy_ns), fmt_ns(f.total_wall_ns))
                } else {
                    String::new()
                };
                format!(
                    "waits: only {} of its {} self time is on CPU ({} CPU){busy}: look for blocking \
                     I/O, lock contention, sleeps or sequential awaits (or a run queue, if the machine is \
                     oversubscribed); overlap independent waits",
                    pct(cpu_ratio),
                    fmt_ns(f.self_wall_ns),
                    fmt_ns(f.cpu_self_ns),
                )
            }
            Classification::HotLoop => format!(
                "{} calls of {} each on average: the per-call cost dominates; batch the work, hoist \
                 invariant work out of the loop, or inline it (and drop `#[profiled]` from this leaf)",
                fmt_count(f.calls),
                fmt_ns(f.mean_ns),
            ),
            Classification::CpuBound => format!(
                "computes: {} of its {} self time is on CPU over {} call{} ({} per call): improve the \
                 algorithm or data layout, cache results, or parallelize; a sampling profile shows \
                 the hot lines",
                pct(cpu_ratio),
                fmt_ns(f.self_wall_ns),
                fmt_count(f.calls),
                if f.calls == 1 { "" } else { "s" },
                fmt_ns(f.self_wall_ns / calls),
            ),
            Classification::Balanced => format!(
                "{} of its {} self time is on CPU: both computation and waiting (I/O, locks, or \
                 the run queue of an oversubscribed machine) matter; check the waits first",
                pct(cpu_ratio),
                fmt_ns(f.self_wall_ns),
            ),
            Classification::Negligible if cpu_measured => format!(
                "{} of self time in all (below {}): not worth optimizing on this evidence",
                fmt_ns(f.self_wall_ns),
                fmt_ns(MIN_JUDGED_SELF_WALL_NS),
            ),
            Classification::Negligible => format!(
                "{} of self time; CPU time was not measured, so computing and waiting cannot \
                 be told apart",
                fmt_ns(f.self_wall_ns)
            ),
        };
        out.push(text);
    }
    if f.calls >= TAIL_MIN_CALLS && f.p50_ns > 0 && f.p99_ns >= TAIL_MIN_P99_OVER_P50 * f.p50_ns {
        out.push(format!(
            "tail latency: p99 {} is {}x the median {} over {} calls: look for contention, cold \
             caches or rare slow paths",
            fmt_ns(f.p99_ns),
            f.p99_ns / f.p50_ns,
            fmt_ns(f.p50_ns),
            fmt_count(f.calls),
        ));
    }
    if f.total_wall_ns >= MIN_JUDGED_SELF_WALL_NS
        && (f.self_wall_ns as f64) <= WRAPPER_MAX_SELF_FRACTION * f.total_wall_ns as f64
    {
        out.push(format!(
            "{} of its {} total time is spent in profiled callees: look at those instead",
            pct(1.0 - f.self_wall_ns as f64 / f.total_wall_ns as f64),
            fmt_ns(f.total_wall_ns),
        ));
    }
    out
}

/// Caveats about a whole ranking of `snap`.
pub(crate) fn notes(snap: &Snapshot, cpu_measured: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if !snap.allocations_counted {
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
    notes
}

#[cfg(test)]
mod tests {
    use crate::analyze::ranking::tests::{func, snap, MS};
    use crate::analyze::ranking::{rank, Classification, RankOptions};
    use crate::record::alloc::AllocCounters;
    use crate::record::callsite::CallsiteKind;

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
    fn notes_name_missing_cpu_and_folded_calls() {
        let mut s = snap(vec![func(1, "m::f", 1, 5 * MS, 5 * MS, 0)], true);
        s.folded_calls = 1_500;
        let r = rank(&s, &RankOptions::new());
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(r.notes[0].starts_with("no CPU time was measured"));
        assert!(r.notes[1].starts_with("1.5k calls were folded"), "{}", r.notes[1]);
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
}
