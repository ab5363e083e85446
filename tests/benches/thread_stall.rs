//! How long an application thread is held up by readers: the latency of a thread's first
//! `#[profiled]` call (which registers it) and of its exit (which retires its figures),
//! while several threads take snapshots in a loop. Run with:
//!
//! ```text
//! cargo bench --bench thread_stall -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Before the criterion run, it prints the worst case over rounds of 64 threads starting
//! and exiting under the storm. A thread's exit latency runs from its last instruction to
//! `join` returning, so it includes the operating system's thread teardown.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use profiling_core::profiled;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

const READERS: usize = 4;
const THREADS: usize = 64;
/// Depth of the recursion each thread makes: one call-tree node per level, so every live
/// thread has tables for readers to merge.
const DEPTH: u32 = 300;

#[profiled]
fn first_call(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[profiled]
fn recurse(n: u32) -> u64 {
    if n == 0 {
        1
    } else {
        recurse(n - 1).wrapping_add(black_box(n as u64))
    }
}

/// Readers taking snapshots in a loop until dropped.
struct Storm {
    stop: Arc<AtomicBool>,
    readers: Vec<std::thread::JoinHandle<u64>>,
}

impl Storm {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let readers = (0..READERS)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        black_box(profiling_core::snapshot());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        Storm { stop, readers }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// First-call and exit latency of one application thread.
#[derive(Clone, Copy, Debug, Default)]
struct Blocked {
    first_call: Duration,
    exit: Duration,
}

/// Starts `n` threads at once; each makes its first call, recurses, and exits.
fn wave(n: usize) -> Vec<Blocked> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                black_box(first_call(i as u64));
                let first_call = t.elapsed();
                black_box(recurse(DEPTH));
                (first_call, Instant::now())
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            let (first_call, last) = h.join().unwrap();
            Blocked {
                first_call,
                exit: last.elapsed(),
            }
        })
        .collect()
}

fn report_worst_case() {
    let _storm = Storm::start();
    std::thread::sleep(Duration::from_millis(50));
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(wave(THREADS));
    }
    let pct = |mut v: Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * q) as usize]
    };
    let first: Vec<_> = all.iter().map(|b| b.first_call).collect();
    let exit: Vec<_> = all.iter().map(|b| b.exit).collect();
    eprintln!(
        "thread_stall: {} threads ({} waves of {THREADS}) under {READERS} snapshot readers\n  \
         first call: p50 {:?}  p99 {:?}  max {:?}\n  exit:       p50 {:?}  p99 {:?}  max {:?}",
        all.len(),
        all.len() / THREADS,
        pct(first.clone(), 0.5),
        pct(first.clone(), 0.99),
        pct(first, 1.0),
        pct(exit.clone(), 0.5),
        pct(exit.clone(), 0.99),
        pct(exit, 1.0),
    );
}

fn thread_stall(c: &mut Criterion) {
    report_worst_case();
    let mut g = c.benchmark_group("thread_stall");
    let storm = Storm::start();
    // Per thread: first-call latency plus exit latency, threads started 64 at a time.
    g.bench_function("first_call_plus_exit_under_snapshot_storm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(THREADS);
                total += wave(n).iter().map(|b| b.first_call + b.exit).sum::<Duration>();
                left -= n;
            }
            total
        })
    });
    drop(storm);
    g.finish();
}

criterion_group!(benches, thread_stall);
criterion_main!(benches);
