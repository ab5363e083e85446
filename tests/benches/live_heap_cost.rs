//! Cost of live-heap sampling on the allocation and free paths (docs/guide.md, "Live heap").
//!
//! ```text
//! cargo bench --bench live_heap_cost -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! One allocation and free of 64 bytes, side by side in one run:
//! - `system`: `System` directly (baseline);
//! - `counting, sampling off`: [`ProfilingAllocator`] with `PROFILING_HEAP_SAMPLE_BYTES=0` and
//!   no sampled block live (the free path skips the table);
//! - `counting, sampling 512 KiB`: the default rate, with 1,000 sampled blocks live so every
//!   free probes the table (one hashed bucket of 8 slots); the difference to the line above is
//!   the decrement on allocation plus the probe on free (a 64-byte allocation is sampled once
//!   every 8,192 on average);
//! - `counting, every allocation sampled`: a 64-byte interval, so most allocations take the
//!   sampled path (a lock, a clock read, a table insert) and their free a table removal.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use profiling_core::record::heap_sample::{heap_sampler_stats, set_heap_sample_bytes, DEFAULT_HEAP_SAMPLE_BYTES};
use profiling_core::ProfilingAllocator;

#[global_allocator]
static GLOBAL: ProfilingAllocator = ProfilingAllocator::system();

fn alloc_free<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a non-zero-size layout, and the block is freed with the same layout.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        if !p.is_null() {
            a.dealloc(p, layout);
        }
    }
}

fn bench(c: &mut Criterion) {
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let counting = ProfilingAllocator::system();
    let mut g = c.benchmark_group("alloc_free_64B");
    g.bench_function("system", |b| b.iter(|| alloc_free(&System, layout)));

    set_heap_sample_bytes(0).expect("off");
    g.bench_function("counting, sampling off", |b| b.iter(|| alloc_free(&counting, layout)));

    // Keep sampled blocks live so that every free below probes the table.
    set_heap_sample_bytes(64).expect("rate");
    let live: Vec<Box<[u8; 256]>> = (0..1000).map(|_| Box::new([0u8; 256])).collect();
    assert!(heap_sampler_stats().live_samples > 0, "no sampled block live");
    set_heap_sample_bytes(DEFAULT_HEAP_SAMPLE_BYTES).expect("rate");
    g.bench_function("counting, sampling 512 KiB", |b| {
        b.iter(|| alloc_free(&counting, layout))
    });

    set_heap_sample_bytes(64).expect("rate");
    g.bench_function("counting, every allocation sampled", |b| {
        b.iter(|| alloc_free(&counting, layout))
    });
    set_heap_sample_bytes(DEFAULT_HEAP_SAMPLE_BYTES).expect("rate");
    g.finish();
    drop(live);
}

criterion_group!(benches, bench);
criterion_main!(benches);
