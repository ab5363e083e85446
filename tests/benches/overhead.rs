//! Per-call overhead of `#[profiled]`, side by side with the uninstrumented baseline and with
//! peers, in one run. Run with:
//!
//! ```text
//! cargo bench -p profiling-integration --features bench-peers --bench overhead
//! ```
//!
//! Every instrumented function does the same tiny body as the baseline, so the difference
//! of the medians is the instrumentation's cost per call. The process uses the counting
//! allocator, as an application that wants allocation figures would.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use fastrace::collector::{Config, Reporter, SpanContext};
use fastrace::prelude::Span;
use tracing_subscriber::layer::SubscriberExt;
use workloads::*;

mod workloads;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

#[inline(never)]
fn puffin_fn(x: u64) -> u64 {
    puffin::profile_function!();
    black_box(x).wrapping_mul(3)
}

#[inline(never)]
fn puffin3_a(x: u64) -> u64 {
    puffin::profile_function!();
    puffin3_b(x)
}

#[inline(never)]
fn puffin3_b(x: u64) -> u64 {
    puffin::profile_function!();
    puffin3_c(x)
}

#[inline(never)]
fn puffin3_c(x: u64) -> u64 {
    puffin::profile_function!();
    black_box(x).wrapping_mul(3)
}

/// Calls `f` `iters` times, starting a new puffin frame every 100 calls as an application
/// does once per frame or request (puffin keeps every scope of the current frame until then).
fn in_puffin_frames(iters: u64, f: fn(u64) -> u64) -> Duration {
    let t = Instant::now();
    for i in 0..iters {
        black_box(f(black_box(i)));
        if i % 100 == 99 {
            puffin::GlobalProfiler::lock().new_frame();
        }
    }
    puffin::GlobalProfiler::lock().new_frame();
    t.elapsed()
}

#[fastrace::trace]
#[inline(never)]
fn fastrace_fn(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[hotpath::measure]
#[inline(never)]
fn hotpath_fn(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

struct DiscardReporter;

impl Reporter for DiscardReporter {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        black_box(spans);
    }
}

/// Runs `f` on `threads` threads at once, `iters` calls each; returns the slowest thread's time.
fn on_threads(threads: usize, iters: u64, f: fn(u64) -> u64) -> Duration {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                for i in 0..iters {
                    black_box(f(i));
                }
                t.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .max()
        .unwrap_or_default()
}

fn per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_call");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    g.bench_function("baseline", |b| b.iter(|| baseline(black_box(7))));

    #[cfg(target_arch = "x86_64")]
    g.bench_function("floor_two_tsc_reads", |b| b.iter(|| floor_two_tsc_reads(black_box(7))));

    profiling_core::set_enabled(true);
    g.bench_function("profiled_enabled", |b| b.iter(|| profiled_fn(black_box(7))));

    // An `async fn` that completes on its first poll, against the same body uninstrumented
    // and polled the same way.
    g.bench_function("baseline_async_ready", |b| {
        b.iter(|| poll_ready(baseline_async(black_box(7))))
    });
    g.bench_function("profiled_async_ready", |b| {
        b.iter(|| poll_ready(profiled_async(black_box(7))))
    });

    profiling_core::set_enabled(false);
    g.bench_function("profiled_disabled", |b| b.iter(|| profiled_fn(black_box(7))));
    profiling_core::set_enabled(true);

    g.bench_function("baseline_depth3", |b| b.iter(|| base3_a(black_box(7))));
    g.bench_function("profiled_depth3", |b| b.iter(|| depth3_a(black_box(7))));

    g.bench_function("baseline_4_threads", |b| {
        b.iter_custom(|iters| on_threads(4, iters, baseline))
    });
    g.bench_function("profiled_4_threads", |b| {
        b.iter_custom(|iters| on_threads(4, iters, profiled_fn))
    });

    {
        // The registry under a layer that does nothing: alone, a `Registry` never frees a
        // closed span's slot (closing goes through `Layered`), so its row would time a
        // subscriber that grows without bound. With `Identity` it is the registry as every
        // application runs it, minus the application's own layers.
        let subscriber = tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new());
        let _d = tracing::subscriber::set_default(subscriber);
        g.bench_function("tracing_instrument_registry", |b| b.iter(|| tracing_fn(black_box(7))));
    }
    {
        let subscriber = tracing_subscriber::registry().with(profiling_core::ProfilingLayer::default());
        let _d = tracing::subscriber::set_default(subscriber);
        g.bench_function("tracing_instrument_registry_profiling_layer", |b| {
            b.iter(|| tracing_fn(black_box(7)))
        });
    }

    fastrace::set_reporter(DiscardReporter, Config::default());
    // fastrace keeps at most a few thousand spans per local queue and silently drops the
    // rest, so a root span covering millions of calls would time mostly no-ops. Like a
    // traced service, each root covers a batch of 100 calls (one "request"); the root's own
    // cost is shared by those 100, and the reporter's collection is included.
    g.bench_function("fastrace_trace", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut done = 0;
            while done < iters {
                let root = Span::root("root", SpanContext::random());
                let guard = root.set_local_parent();
                let n = (iters - done).min(100);
                for i in 0..n {
                    black_box(fastrace_fn(black_box(i)));
                }
                done += n;
                drop(guard);
                drop(root);
            }
            fastrace::flush();
            t.elapsed()
        })
    });

    puffin::set_scopes_on(true);
    g.bench_function("puffin_profile_function", |b| {
        b.iter_custom(|iters| in_puffin_frames(iters, puffin_fn))
    });
    g.bench_function("puffin_depth3", |b| {
        b.iter_custom(|iters| in_puffin_frames(iters, puffin3_a))
    });
    puffin::set_scopes_on(false);

    {
        let _guard = hotpath::HotpathGuardBuilder::new("bench").build();
        g.bench_function("hotpath_measure", |b| b.iter(|| hotpath_fn(black_box(7))));
    }
    g.finish();
}

criterion_group!(benches, per_call);
criterion_main!(benches);
