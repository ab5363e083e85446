//! Rendering: turning snapshots and analyses into things people and tools read.
//!
//! What lives here: text tables ([`table`]), folded stacks ([`fold`]), flamegraph SVGs
//! ([`flamegraph`], `profiling-full`), sampled CPU profiles and pprof ([`cpu_profile`],
//! `profiling-full`), jemalloc heap profiles ([`heap_profile`]), live heap by call path as
//! folded stacks, flamegraph and pprof ([`live_heap`]), snapshot files and the
//! report written at exit ([`report`]).
//!
//! May depend on: [`crate::record`] and [`crate::analyze`].

#[cfg(feature = "profiling-full")]
pub mod cpu_profile;
#[cfg(feature = "profiling-full")]
pub mod flamegraph;
pub mod fold;
#[cfg(feature = "profiling-full")]
pub mod heap_profile;
pub mod live_heap;
pub mod report;
pub mod table;
