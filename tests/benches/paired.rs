//! The ratios the overhead targets are stated in (a nested call and an async call against a
//! flat one; a flat call's cost over the floor of two TSC reads), timed so that the host's
//! speed cancels out. Run with:
//!
//! ```text
//! cargo bench -p profiling-integration --bench paired
//! ```
//!
//! `overhead.rs` times each row for seconds, one row after another, and this machine's speed
//! for ordinary instructions moves by up to 18% between those moments (docs/performance.md,
//! eighth session): a ratio of two of its rows mixes two speeds. Here every round times a
//! short slice (2,000 calls, tens of microseconds) of each row, in an order shuffled per
//! round, and each ratio is taken within its round; what is reported is the median over the
//! rounds with the middle half around it. The rows are the same functions as in
//! `overhead.rs` (`workloads.rs`), each called directly in its own loop.
//!
//! Options: `PAIRED_ROUNDS` (default 4,000) and `PAIRED_CALLS` (calls per slice, 2,000).

use std::hint::black_box;
use std::time::Instant;

use workloads::*;

mod workloads;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

/// The rows, in the order of [`time_row`].
const ROWS: [&str; 7] = [
    "baseline",
    "floor_two_tsc_reads",
    "profiled_enabled",
    "baseline_async_ready",
    "profiled_async_ready",
    "baseline_depth3",
    "profiled_depth3 (per call)",
];

/// Nanoseconds per call of `f`, over `calls` calls.
#[inline(always)]
fn slice(calls: u64, f: impl Fn(u64) -> u64) -> f64 {
    let t = Instant::now();
    for i in 0..calls {
        black_box(f(black_box(i)));
    }
    t.elapsed().as_nanos() as f64 / calls as f64
}

/// Nanoseconds per call of row `row` of [`ROWS`] (per instrumented call for the 3-deep rows).
fn time_row(row: usize, calls: u64) -> f64 {
    match row {
        0 => slice(calls, baseline),
        #[cfg(target_arch = "x86_64")]
        1 => slice(calls, floor_two_tsc_reads),
        #[cfg(not(target_arch = "x86_64"))]
        1 => f64::NAN,
        2 => slice(calls, profiled_fn),
        3 => slice(calls, |x| poll_ready(baseline_async(x))),
        4 => slice(calls, |x| poll_ready(profiled_async(x))),
        5 => slice(calls, base3_a) / 3.0,
        _ => slice(calls, depth3_a) / 3.0,
    }
}

/// Median and the middle half of `v`, sorted in place.
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names no row of this file runs nothing,
    // so that `cargo bench -- per_call/...` (the criterion benchmarks') skips it.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.is_some_and(|f| !"paired".contains(f.as_str())) {
        return;
    }
    let rounds = env_u64("PAIRED_ROUNDS", 4_000) as usize;
    let calls = env_u64("PAIRED_CALLS", 2_000);
    profiling_core::set_enabled(true);

    let mut order: Vec<usize> = (0..ROWS.len()).collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut per_row: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); ROWS.len()];
    let (mut nested, mut asynch, mut over_floor) = (Vec::new(), Vec::new(), Vec::new());
    // Warm-up rounds (caches, the recorder's tables, CPU attribution settled) are not kept.
    for round in 0..rounds + rounds / 10 {
        // Fisher-Yates with xorshift: a different order each round.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let mut t = [0.0; ROWS.len()];
        for &row in &order {
            t[row] = time_row(row, calls);
        }
        if round < rounds / 10 {
            continue;
        }
        for (row, v) in t.iter().enumerate() {
            per_row[row].push(*v);
        }
        nested.push(t[6] / t[2]);
        asynch.push(t[4] / t[2]);
        over_floor.push(t[2] - t[1]);
    }

    println!("paired: {rounds} rounds of {calls} calls per row, order shuffled per round");
    println!("| row | median ns per call | middle half |");
    println!("|---|---|---|");
    for (name, v) in ROWS.iter().zip(per_row.iter_mut()) {
        let (m, lo, hi) = quartiles(v);
        println!("| {name} | {m:.2} | {lo:.2}-{hi:.2} |");
    }
    println!("| ratio or difference, within each round | median | middle half |");
    println!("|---|---|---|");
    for (name, v, unit) in [
        ("nested per call / flat", &mut nested, "x"),
        ("async ready / flat", &mut asynch, "x"),
        ("flat - floor", &mut over_floor, " ns"),
    ] {
        let (m, lo, hi) = quartiles(v);
        println!("| {name} | {m:.3}{unit} | {lo:.3}-{hi:.3}{unit} |");
    }
}
