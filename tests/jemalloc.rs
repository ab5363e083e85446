//! Allocation counting over jemalloc (`--features jemalloc`).
//!
//! The counting allocator records requested sizes, so figures are exact whatever the
//! underlying allocator. jemalloc itself serves a request from a size class (100 bytes come
//! from the 112-byte class, 1 MiB + 1 byte from a 1.25 MiB class); its own statistics
//! (`allocated`, `active`) show that rounding, the per-function figures do not.

use profiling_core::{profiled, snapshot};
use profiling_integration::serial;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator<profiling_core::Jemalloc> =
    profiling_core::ProfilingAllocator::jemalloc();

#[profiled]
fn odd_sizes() -> (Vec<u8>, Vec<u8>) {
    (Vec::with_capacity(100), Vec::with_capacity((1 << 20) + 1))
}

#[test]
fn counts_requested_sizes_exactly_over_jemalloc() {
    let _s = serial();
    let kept = odd_sizes();
    let s = snapshot();
    let f = s.function("jemalloc::odd_sizes").unwrap();
    assert_eq!(f.alloc_total.alloc_bytes, 100 + (1 << 20) + 1);
    assert_eq!(f.alloc_total.alloc_count, 2);
    assert_eq!(f.alloc_total.freed_count, 0);
    drop(kept);
}
