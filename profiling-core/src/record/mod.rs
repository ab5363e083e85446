//! Recording: the hot path and the measurements it takes.
//!
//! What lives here: the `#[profiled]` guards and futures (`guard.rs`, `future.rs`), the
//! `tracing` layer ([`layer`]), the per-thread engine (`recorder.rs`: the frame stack; `call.rs`;
//! `storage.rs`, `tree.rs`, `histogram.rs`), the registry of recording threads (`threads.rs`)
//! and the window they record in (`window.rs`), the clocks ([`clock`], `cpu.rs`: where CPU
//! time is measured, with [`switches`]), the counting allocator ([`alloc`]), its report
//! ([`alloc_report`]) and its live-heap sampler ([`heap_sample`]), function registration ([`callsite`]), the run-time switches
//! ([`config`]), process readings ([`process`]), memory samples ([`memory_sample`]), the
//! allocator's statistics ([`allocator_stats`]) and the [`snapshot`] types every other part
//! reads.
//!
//! May depend on: nothing above it (`analyze` and `render` depend on this module, never the
//! other way round).

pub mod alloc;
pub mod alloc_report;
pub mod allocator_stats;
pub(crate) mod call;
pub mod callsite;
pub mod clock;
pub mod config;
pub(crate) mod cpu;
pub(crate) mod future;
pub(crate) mod guard;
pub mod heap_sample;
pub(crate) mod histogram;
pub(crate) mod kits;
pub mod layer;
pub(crate) mod lock;
pub mod memory_sample;
pub mod process;
pub(crate) mod recorder;
pub mod snapshot;
pub(crate) mod storage;
pub mod switches;
pub(crate) mod threads;
pub(crate) mod tree;
pub(crate) mod window;

pub use cpu::WINDOW_NS as CPU_ATTRIBUTION_WINDOW_NS;
pub use recorder::{awaiting_switch_detector, cpu_attributed_by_frames, current_depth, exclude_current_thread};
pub use threads::reset;
