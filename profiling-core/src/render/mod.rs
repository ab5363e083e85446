//! Rendering: turning snapshots and analyses into things people and tools read.
//!
//! What lives here: text tables ([`table`]), markup escaping ([`escape`]), folded stacks
//! ([`fold`]), flamegraph SVGs ([`flamegraph`], `profiling-full`), sampled CPU profiles
//! ([`cpu_profile`], `profiling-full`), jemalloc heap profiles ([`heap_profile`]), pprof
//! encoding with real mappings and the instrumented tree as pprof ([`pprof`],
//! `profiling-full`), live heap by call path as folded stacks, flamegraph and pprof
//! ([`live_heap`]), snapshot files ([`snapshot_file`]: the one place that writes and reads
//! them) and the
//! report written at exit ([`report`]).
//!
//! May depend on: [`crate::record`] and [`crate::analyze`].

#[cfg(feature = "profiling-full")]
pub mod cpu_profile;
pub mod escape;
#[cfg(feature = "profiling-full")]
pub mod flamegraph;
pub mod fold;
#[cfg(feature = "profiling-full")]
pub mod heap_profile;
pub mod live_heap;
#[cfg(feature = "profiling-full")]
pub mod pprof;
pub mod report;
pub mod snapshot_file;
pub mod table;
