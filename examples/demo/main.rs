//! The demo service: a small order API whose handlers and helpers are `#[profiled]`, a
//! built-in load generator that calls it over loopback so the rankings fill by themselves,
//! and the profiling routes mounted on the same port.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Then open the printed URL of the profiling page. Environment:
//!
//! - `DEMO_BIND` (default `127.0.0.1:8080`; a busy port falls back to a free one);
//! - `DEMO_DURATION_SECS`: stop by itself after that many seconds (for CI smoke runs) and
//!   print the ranking;
//! - `DEMO_RPS`: requests per second of the load generator (default 40, at most 500);
//! - every `PROFILING_*` variable of profiling-server (see docs/http-api.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profiling_core::{rank, RankOptions};
use profiling_server::{Config, ProfilingServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[cfg(not(feature = "jemalloc"))]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator<profiling_core::Jemalloc> =
    profiling_core::ProfilingAllocator::jemalloc();

mod service;

use service::{app, next_request, AppState, Rng, Store};

// ---------------------------------------------------------------------------------------
// The load generator: plain HTTP/1.1 over loopback, a bounded number of workers, each
// request with a timeout, at a modest rate.

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let status = std::str::from_utf8(&buf)
            .ok()
            .and_then(|t| t.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

async fn load_worker(addr: SocketAddr, seed: u64, interval: Duration, sent: Arc<AtomicU64>) {
    let mut rng = Rng(seed | 1);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = next_request(&mut rng, true);
        let result = send(addr, r.method, &r.path, &r.body).await;
        if result.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("environment variable {name} has an invalid value {v:?}: expected a whole number")),
        Err(_) => Ok(None),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let duration = env_u64("DEMO_DURATION_SECS")?.map(Duration::from_secs);
    let rps = env_u64("DEMO_RPS")?.unwrap_or(40).clamp(1, 500);
    let bind: SocketAddr = match std::env::var("DEMO_BIND") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("DEMO_BIND={v:?} is not an address like 127.0.0.1:8080"))?,
        Err(_) => "127.0.0.1:8080".parse()?,
    };

    let profiling = ProfilingServer::new(Config::from_env()?)?;
    let store: AppState = Arc::new(Store::default());
    let router = app(store).merge(profiling.router());

    let listener = match TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{bind} is busy; using a free port instead");
            TcpListener::bind(SocketAddr::new(bind.ip(), 0)).await?
        }
        Err(e) => return Err(e.into()),
    };
    let addr = listener.local_addr()?;
    println!("demo service listening on http://{addr}");
    println!("  profiling page     http://{addr}/api/profiling/");
    println!("  bottlenecks (JSON) http://{addr}/api/profiling/bottlenecks?limit=10");
    println!("  memory             http://{addr}/api/profiling/memory");
    println!("  cpu                http://{addr}/api/profiling/cpu");
    println!("  allocations        http://{addr}/api/profiling/allocations");
    println!("  Prometheus         http://{addr}/metrics");
    println!("  leak analysis      curl -X POST http://{addr}/api/profiling/leak-detection");
    println!("load generator: {rps} requests/s over loopback; Ctrl-C to stop");

    // Two workers share the rate.
    let sent = Arc::new(AtomicU64::new(0));
    let per_worker = Duration::from_micros(2 * 1_000_000 / rps);
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            tokio::spawn(load_worker(
                addr,
                0x9e37_79b9_7f4a_7c15 ^ (w + 1),
                per_worker,
                Arc::clone(&sent),
            ))
        })
        .collect();

    let started = Instant::now();
    let stop = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(stop).await?;
    for w in workers {
        w.abort();
    }
    let ranking = rank(&profiling.snapshot(), &RankOptions::new().limit(10));
    println!(
        "\nstopped after {:.1} s, {} requests; top functions by self time:\n{ranking}",
        started.elapsed().as_secs_f64(),
        sent.load(Ordering::Relaxed)
    );
    Ok(())
}
