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
//!   among the frames that ran in between, split at context switches (see [`guide`]).
//! - **Windows**: figures accumulate from process start until [`reset`].
//!
//! ## Where things live
//!
//! The crate root holds what a program writes: [`profiled`], [`ProfilingAllocator`],
//! [`ProfilingLayer`], [`snapshot`] and [`Snapshot`], [`rank`] with [`RankOptions`], the
//! switches [`set_enabled`], [`is_enabled`], [`init_from_env`] and [`reset`], and [`Error`].
//! Everything else is reached through three modules, each depending only on the ones before it:
//!
//! - [`record`]: the hot path and its measurements (clocks, CPU attribution, the counting
//!   allocator, the call tree, the snapshot types), e.g.
//!   [`record::alloc_report::allocation_totals`], [`record::snapshot::FunctionStats`].
//! - [`analyze`]: what the figures mean (rankings, diffs, memory trends, leaks, the live heap),
//!   e.g. [`analyze::leak::analyze`], [`analyze::diff::diff`], [`analyze::ranking::SortKey`].
//! - [`render`]: figures as text, files and profiles (tables, folded stacks, flamegraphs,
//!   pprof, snapshot files), e.g. [`render::fold::fold`], [`render::table::render_table`].
//!
//! Human units (`1.5 MiB`, `20.0 ms`) are formatted by [`units`].
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

// The crate root holds what a user writes; everything else is reached through the three
// wings, by paths that say where it lives (`profiling_core::analyze::leak::LeakReport`,
// `profiling_core::render::fold::fold`, `profiling_core::record::alloc_report::allocation_totals`).
pub use analyze::ranking::{rank, RankOptions};
pub use error::{Error, Result};
pub use profiling_macros::profiled;
pub use record::alloc::ProfilingAllocator;
pub use record::config::{init_from_env, is_enabled, set_enabled};
pub use record::layer::ProfilingLayer;
pub use record::reset;
pub use record::snapshot::{snapshot, Snapshot};

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
