//! # profiling-core
//!
//! The recording engine of the profiling framework: annotate functions with
//! [`#[profiled]`](profiled) (or keep your `tracing` spans and add [`ProfilingLayer`]) and
//! get, for every function, calls, inclusive and exclusive wall time, thread CPU time,
//! allocation deltas, latency percentiles, and for async functions busy time apart from
//! latency, plus the call tree those figures came from.
//!
//! ## Getting started
//!
//! ```
//! use profiling_core::profiled;
//!
//! #[profiled]
//! fn parse(input: &str) -> usize {
//!     input.split(',').count()
//! }
//!
//! # fn main() {
//! for _ in 0..10 {
//!     parse("a,b,c");
//! }
//! let snap = profiling_core::snapshot();
//! let f = snap.function(concat!(module_path!(), "::parse")).unwrap();
//! assert_eq!(f.calls, 10);
//! # }
//! ```
//!
//! Allocations are counted when the [`ProfilingAllocator`] is the global allocator.
//!
//! ## Key concepts
//!
//! - **Total vs self**: total (inclusive) wall time of a call runs from entry to exit;
//!   self (exclusive) time subtracts the time spent in annotated callees. A recursive
//!   function counts every call but its outermost total only.
//! - **Busy vs latency**: an async call's latency runs from first poll to completion; its
//!   busy time is the sum of its polls. A future that sleeps 20 ms has ~20 ms latency and
//!   ~0 busy time.
//! - **CPU time** is the thread CPU clock, read at most once per 50 µs of wall time and shared
//!   among the frames that ran in between (see `cpu.rs` and `docs/guide.md`).
//! - **Windows**: figures accumulate from process start until [`reset`].
//!
//! ## Performance
//!
//! See [`performance`] for measured costs and the command that reproduces them, and
//! [`guide`] for the whole story: getting started, concepts, how each figure is measured
//! and its limits, configuration.

pub mod analyze;
mod error;
mod names;
pub mod record;
pub mod render;
pub mod units;

#[cfg(feature = "profiling-full")]
pub use render::{cpu_profile, flamegraph, heap_profile};
pub use render::{fold, report};

pub use analyze::diff::{diff as diff_snapshots, DeltaStatus, FunctionDelta, PerCall, SnapshotDiff, UNCHANGED_PERCENT};
pub use analyze::leak::{analyze as analyze_leaks, LeakOptions, LeakReport, LeakSuspect, SuspectKind};
pub use analyze::memory::{
    allocator_stats, growth, read_sample, regression, AllocatorStats, FunctionObservation, FunctionRetention, Growth,
    MemorySample, MemorySampler, MemoryThresholds, Regression, SamplerConfig, MIB,
};
pub use analyze::ranking::{
    classify, impact_score, rank, thresholds as ranking_thresholds, Bottleneck, Classification, ParseSortKeyError,
    Profile, RankOptions, Ranking, RankingWindow, Shares, SortKey, WindowStart,
};
pub use error::{Error, Result};
pub use profiling_macros::profiled;
pub use record::alloc::{
    counting_allocator_installed, set_large_allocation_threshold, AllocCounters, ProfilingAllocator, SIZE_BUCKETS,
};
pub use record::alloc_report::{allocation_totals, AllocationTotals, LargeAllocation, SizeBucket};
pub use record::callsite::{CallsiteKind, FunctionMeta, MAX_FUNCTIONS};
pub use record::clock::{process_cpu_ns, uses_tsc};
pub use record::config::{
    init_from_env, is_enabled, max_call_tree_nodes, parse_bool, set_enabled, set_max_call_tree_nodes,
    DEFAULT_MAX_CALL_TREE_NODES, MAX_CALL_TREE_NODES_LIMIT,
};
pub use record::cpu::WINDOW_NS as CPU_ATTRIBUTION_WINDOW_NS;
pub use record::layer::ProfilingLayer;
pub use record::process::{available_cpus, load_average, process_stats, LoadAverage, ProcessStats};
pub use record::recorder::{current_depth, exclude_current_thread};
pub use record::snapshot::{snapshot, CallTreeNode, FunctionStats, Snapshot, ThreadCounts, Window};
pub use record::threads::reset;
pub use render::fold::{fold, fold_text, FoldedStack, Weight};
pub use render::table::render_table;
pub use units::{fmt_bytes, fmt_count, fmt_ns};

#[cfg(feature = "jemalloc")]
pub use tikv_jemallocator::Jemalloc;

#[doc = include_str!("../../docs/guide.md")]
pub mod guide {}

#[doc = include_str!("../../docs/performance.md")]
pub mod performance {}

#[cfg(feature = "profiling-full")]
#[doc = include_str!("../../docs/flamegraphs.md")]
pub mod flamegraphs_guide {}

/// Items used by the code `#[profiled]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::callsite::{Callsite, CallsiteKind};
    pub use crate::record::future::Instrumented;
    pub use crate::record::guard::{enter, enter_in_impl, SyncGuard};
    pub use tracing;
}
