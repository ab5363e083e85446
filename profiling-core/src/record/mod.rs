//! Recording: the hot path and the measurements it takes.
//!
//! What lives here: the `#[profiled]` guards and futures ([`guard`], [`future`]), the
//! `tracing` layer ([`layer`]), the per-thread engine ([`recorder`], [`storage`], [`tree`],
//! [`histogram`]), the clocks ([`clock`], [`cpu`]: where CPU time is measured), the counting
//! allocator ([`alloc`]) and its live-heap sampler ([`heap_sample`]), function registration
//! ([`callsite`]), the run-time switches
//! ([`config`]), process readings ([`process`]) and the [`snapshot`] types every other part
//! reads.
//!
//! May depend on: nothing above it (`analyze` and `render` depend on this module, never the
//! other way round).

pub mod alloc;
pub mod callsite;
pub mod clock;
pub mod config;
pub(crate) mod cpu;
pub(crate) mod future;
pub(crate) mod guard;
pub mod heap_sample;
pub(crate) mod histogram;
pub mod layer;
pub mod process;
pub(crate) mod recorder;
pub mod snapshot;
pub(crate) mod storage;
pub(crate) mod tree;
