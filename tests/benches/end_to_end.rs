//! End-to-end overhead: the demo's order service driven at full speed, profiling on and off.
//!
//! ```text
//! cargo bench --bench end_to_end                      # 6 pairs of 3 s rounds (one each way)
//! E2E_ROUNDS=10 E2E_ROUND_SECS=5 cargo bench --bench end_to_end
//! ```
//!
//! The handlers of `examples/demo/service.rs` (the same code the demo serves) are called
//! in-process through the axum `Router` (`tower::ServiceExt::oneshot`: routing, extraction,
//! the handlers and every `#[profiled]` function under them, response bodies collected) by
//! `E2E_CONCURRENCY` tasks (default 16) on a two-worker Tokio runtime, as fast as they go.
//! The counting allocator is installed in both modes, as in a service that has profiling
//! compiled in. Rounds come in pairs, one with profiling on and one off
//! ([`profiling_core::set_enabled`]), in alternating order, after an uncounted warm-up round;
//! the ratios are taken within each pair (adjacent in time, so drift of the machine cancels)
//! and their median and range printed. Besides throughput, each round's requests per second
//! of process CPU time: on a machine shared with other work, that figure does not move with
//! the share of the cores the benchmark got. Each round starts from the same store size. The request mix is the demo's without its simulated 15-35 ms
//! downstream wait (that route is a sleep: it would only add idle time to both modes).
//!
//! Driving the router in-process leaves out the network stack, which costs the same with
//! profiling on and off: the ratio here is therefore an upper bound of the loss a service
//! behind a socket sees.

#[path = "../../examples/demo/service.rs"]
#[allow(dead_code)]
mod service;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One round's figures.
struct Round {
    requests: u64,
    secs: f64,
    /// CPU time of the whole process over the round, s.
    cpu_secs: f64,
    /// Request latencies, ns, sorted.
    latencies: Vec<u64>,
}

impl Round {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    /// Requests per second of CPU time used by the process: what profiling costs, whatever
    /// share of the machine other processes took during the round.
    fn per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu_secs
    }

    fn quantile(&self, q: f64) -> u64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or(0)
    }
}

async fn round(app: axum::Router, concurrency: u64, length: Duration, seed: u64) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_at_start = profiling_core::record::clock::process_cpu_ns();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let app = app.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut rng = service::Rng((seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
                let mut latencies = Vec::with_capacity(1 << 16);
                while !stop.load(Ordering::Relaxed) {
                    let r = service::next_request(&mut rng, false);
                    let req = Request::builder()
                        .method(r.method)
                        .uri(r.path)
                        .header("content-type", "application/json")
                        .body(Body::from(r.body))
                        .expect("a request built from the demo's mix is valid");
                    let t0 = Instant::now();
                    let res = app.clone().oneshot(req).await.expect("the router is infallible");
                    let body = res.into_body().collect().await.expect("in-memory bodies do not fail");
                    std::hint::black_box(body);
                    latencies.push(t0.elapsed().as_nanos() as u64);
                    // A served request ends at a socket; here, give the other tasks their turn.
                    tokio::task::yield_now().await;
                }
                latencies
            })
        })
        .collect();
    // A plain thread ends the round: the runtime's timers only fire when a worker parks,
    // and at full load none does.
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        std::thread::sleep(length);
        stopper.store(true, Ordering::Relaxed);
    });
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("a load task does not panic"));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = (profiling_core::record::clock::process_cpu_ns() - cpu_at_start) as f64 / 1e9;
    latencies.sort_unstable();
    Round {
        requests: latencies.len() as u64,
        secs,
        cpu_secs,
        latencies,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a quick run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { env_or("E2E_ROUNDS", 6) };
    let length = Duration::from_millis(if quick { 200 } else { env_or("E2E_ROUND_SECS", 3) * 1000 });
    let concurrency = env_or("E2E_CONCURRENCY", 16);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    // Rounds come in pairs, one each way, in alternating order (on-off, off-on, ...), after
    // one warm-up round that is not counted: a pair's two rounds are adjacent in time, so
    // the ratio within a pair cancels drift of the machine, and neither mode always goes
    // first.
    let mut pairs: Vec<(Round, Round)> = Vec::new();
    runtime.block_on(async {
        if !quick {
            let app = service::app(Arc::new(service::Store::default()));
            round(app, concurrency, length, u64::MAX).await;
        }
        for pair in 0..rounds {
            let mut on_off: [Option<Round>; 2] = [None, None];
            for k in 0..2 {
                let enabled = (pair + k) % 2 == 0;
                profiling_core::set_enabled(enabled);
                let app = service::app(Arc::new(service::Store::default()));
                let result = round(app, concurrency, length, pair).await;
                println!(
                    "pair {:>2} profiling {:<3}: {:>9.0} req/s  {:>9.0} req/CPU-s  p50 {:>7.1} µs  p99 {:>8.1} µs  ({} requests)",
                    pair + 1,
                    if enabled { "on" } else { "off" },
                    result.throughput(),
                    result.per_cpu_second(),
                    result.quantile(0.50) as f64 / 1e3,
                    result.quantile(0.99) as f64 / 1e3,
                    result.requests
                );
                on_off[usize::from(!enabled)] = Some(result);
            }
            if let [Some(on), Some(off)] = on_off {
                pairs.push((on, off));
            }
        }
    });
    profiling_core::set_enabled(true);

    let med =
        |f: &dyn Fn(&Round) -> f64, on: bool| median(pairs.iter().map(|(a, b)| f(if on { a } else { b })).collect());
    let ratio = |f: &dyn Fn(&Round) -> f64| {
        let mut r: Vec<f64> = pairs.iter().map(|(on, off)| f(on) / f(off)).collect();
        r.sort_by(f64::total_cmp);
        let (lo, hi) = (r.first().copied().unwrap_or(0.0), r.last().copied().unwrap_or(0.0));
        (median(r), lo, hi)
    };
    let p99 = |r: &Round| r.quantile(0.99) as f64;
    let calls: u64 = profiling_core::snapshot().functions.iter().map(|f| f.calls).sum();
    println!(
        "\n{rounds} pairs of rounds of {:.1} s, {concurrency} concurrent tasks, 2 workers; medians over the pairs, ratios within each pair (range in brackets)",
        length.as_secs_f64()
    );
    println!("| figure | profiling off | profiling on | on / off, median of pairs [min, max] |");
    println!("|---|---|---|---|");
    for (name, f, scale) in [
        ("throughput (req/s)", &Round::throughput as &dyn Fn(&Round) -> f64, 1.0),
        ("requests per CPU second", &Round::per_cpu_second, 1.0),
        ("p99 latency (µs)", &p99, 1e3),
    ] {
        let (r, lo, hi) = ratio(f);
        println!(
            "| {name} | {:.1} | {:.1} | {r:.4} ({:+.2}%) [{lo:.4}, {hi:.4}] |",
            med(f, false) / scale,
            med(f, true) / scale,
            (r - 1.0) * 100.0
        );
    }
    println!("profiled calls recorded while on: {calls}");
}
