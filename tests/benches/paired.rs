//! The ratios and differences the overhead targets are stated in (a flat call's cost over
//! the floor of two TSC reads; a nested call and an async call against a flat one; a
//! switched-off call over the baseline; `ProfilingLayer` over the bare registry), timed so
//! that the host's speed cancels out. Run with:
//!
//! ```text
//! cargo bench -p profiling-integration --bench paired
//! ```
//!
//! `overhead.rs` times each row for seconds, one row after another, and this machine's speed
//! for ordinary instructions moves by up to 18% between those moments (docs/performance.md,
//! eighth session): a ratio of two of its rows mixes two speeds. Here every round times a
//! short slice (2,000 calls, tens to hundreds of microseconds) of each row, in an order shuffled per
//! round, and each ratio is taken within its round; what is reported is the median over the
//! rounds with the middle half around it. The rows are the same functions as in
//! `overhead.rs` (`workloads.rs`), each called directly in its own loop.
//!
//! The host has phases: within one process the flat row's slices read either about 29 ns
//! or 38-46 ns, in runs of rounds, while a chain of dependent multiplies slows by only
//! 15-25%; the TSC reads of the floor row hardly slow at all. (A busy sibling hardware thread
//! on the host would do this; the guest cannot see it.) So every round also times that chain,
//! 100 dependent multiplies, as a probe of the host's speed, and the figures are given again
//! for the quiet rounds, whose probe ran within 2% of its fastest (1st percentile) reading,
//! and for the rest. Targets are read on the quiet rounds; the rest shows what a busy host
//! does to the same code.
//!
//! Options: `PAIRED_ROUNDS` (default 4,000) and `PAIRED_CALLS` (calls per slice, 2,000).

use std::hint::black_box;
use std::time::Instant;

use tracing_subscriber::layer::SubscriberExt;
use workloads::*;

mod workloads;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

/// The rows: a name each, in the order of [`time_row`]'s arms.
const ROWS: [&str; 11] = [
    "probe: 100 dependent multiplies (per call)",
    "baseline",
    "floor_two_tsc_reads",
    "profiled_enabled",
    "profiled_disabled",
    "baseline_async_ready",
    "profiled_async_ready",
    "baseline_depth3 (per call)",
    "profiled_depth3 (per call)",
    "tracing_instrument_registry",
    "tracing_instrument_registry_profiling_layer",
];
/// One round's nanoseconds per call, by row.
type Round = [f64; ROWS.len()];

/// A figure taken within each round: its name, how, and its unit.
type Figure = (&'static str, fn(&Round) -> f64, &'static str);

const PROBE: usize = 0;
const BASELINE: usize = 1;
const FLOOR: usize = 2;
const FLAT: usize = 3;
const OFF: usize = 4;
const BASELINE_ASYNC: usize = 5;
const ASYNC: usize = 6;
const BASELINE_NESTED: usize = 7;
const NESTED: usize = 8;
const REGISTRY: usize = 9;
const LAYER: usize = 10;

/// Nanoseconds per call of `f`, over `calls` calls.
#[inline(always)]
fn slice(calls: u64, f: impl Fn(u64) -> u64) -> f64 {
    let t = Instant::now();
    for i in 0..calls {
        black_box(f(black_box(i)));
    }
    t.elapsed().as_nanos() as f64 / calls as f64
}

/// The subscribers of the two `tracing` rows, as in `overhead.rs`: the registry under a
/// layer that does nothing (alone, a `Registry` never frees a closed span's slot), and under
/// `ProfilingLayer`.
struct Subscribers {
    registry: tracing::Dispatch,
    layer: tracing::Dispatch,
}

/// Nanoseconds per call of row `row` of [`ROWS`] (per instrumented call for the 3-deep rows).
fn time_row(row: usize, calls: u64, subscribers: &Subscribers) -> f64 {
    match row {
        PROBE => slice(calls / 16, probe),
        BASELINE => slice(calls, baseline),
        #[cfg(target_arch = "x86_64")]
        FLOOR => slice(calls, floor_two_tsc_reads),
        #[cfg(not(target_arch = "x86_64"))]
        FLOOR => f64::NAN,
        FLAT => slice(calls, profiled_fn),
        OFF => {
            profiling_core::set_enabled(false);
            let t = slice(calls, profiled_fn);
            profiling_core::set_enabled(true);
            t
        }
        BASELINE_ASYNC => slice(calls, |x| poll_ready(baseline_async(x))),
        ASYNC => slice(calls, |x| poll_ready(profiled_async(x))),
        BASELINE_NESTED => slice(calls, base3_a) / 3.0,
        NESTED => slice(calls, depth3_a) / 3.0,
        REGISTRY => tracing::dispatcher::with_default(&subscribers.registry, || slice(calls, tracing_fn)),
        _ => tracing::dispatcher::with_default(&subscribers.layer, || slice(calls, tracing_fn)),
    }
}

/// The host's speed for ordinary instructions: a chain of dependent multiplies, which the
/// TSC reads of the other rows do not slow or speed up.
#[inline(never)]
fn probe(x: u64) -> u64 {
    let mut v = black_box(x) | 1;
    for _ in 0..100 {
        v = v.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 1;
    }
    v
}

/// Median and the middle half of `v`, sorted in place.
fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
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
    let subscribers = Subscribers {
        registry: tracing::Dispatch::new(
            tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new()),
        ),
        layer: tracing::Dispatch::new(tracing_subscriber::registry().with(profiling_core::ProfilingLayer::default())),
    };

    let mut order: Vec<usize> = (0..ROWS.len()).collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut kept: Vec<Round> = Vec::with_capacity(rounds);
    // Warm-up rounds (caches, the recorder's tables, CPU attribution settled) are not kept.
    for round in 0..rounds + rounds / 10 {
        // Fisher-Yates with xorshift: a different order each round.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let mut t: Round = [0.0; ROWS.len()];
        for &row in &order {
            t[row] = time_row(row, calls, &subscribers);
        }
        if round >= rounds / 10 {
            kept.push(t);
        }
    }

    println!("paired: {rounds} rounds of {calls} calls per row, order shuffled per round");
    let mut probes: Vec<f64> = kept.iter().map(|t| t[PROBE]).collect();
    probes.sort_by(f64::total_cmp);
    let quiet_limit = probes[probes.len() / 100] * 1.02;
    let quiet: Vec<_> = kept.iter().filter(|t| t[PROBE] <= quiet_limit).copied().collect();
    let busy: Vec<_> = kept.iter().filter(|t| t[PROBE] > quiet_limit).copied().collect();
    println!(
        "quiet rounds (probe at most {quiet_limit:.1} ns): {} of {}",
        quiet.len(),
        kept.len()
    );
    let groups = [("every round", &kept), ("quiet rounds", &quiet), ("the rest", &busy)];
    println!();
    println!("ns per call, median of the rounds [middle half]:");
    println!();
    println!("| row | {} | {} | {} |", groups[0].0, groups[1].0, groups[2].0);
    println!("|---|---|---|---|");
    for (row, name) in ROWS.iter().enumerate() {
        let cells: Vec<String> = groups.iter().map(|(_, r)| summary(r, |t| t[row], "")).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let figures: [Figure; 5] = [
        ("flat - floor", |t| t[FLAT] - t[FLOOR], " ns"),
        ("nested per call / flat", |t| t[NESTED] / t[FLAT], "x"),
        ("async ready / flat", |t| t[ASYNC] / t[FLAT], "x"),
        ("switched off - baseline", |t| t[OFF] - t[BASELINE], " ns"),
        ("layer - registry", |t| t[LAYER] - t[REGISTRY], " ns"),
    ];
    for (name, f, unit) in figures {
        let cells: Vec<String> = groups.iter().map(|(_, r)| summary(r, f, unit)).collect();
        println!("| {name}, within each round | {} |", cells.join(" | "));
    }
}

/// `f` of each round in `rounds`: its median and middle half.
fn summary(rounds: &[Round], f: impl Fn(&Round) -> f64, unit: &str) -> String {
    let mut v: Vec<f64> = rounds.iter().map(f).collect();
    if v.is_empty() {
        return "-".into();
    }
    let (m, lo, hi) = quartiles(&mut v);
    format!("{m:.3}{unit} [{lo:.3}-{hi:.3}]")
}
