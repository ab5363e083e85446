//! Soak tests, run on demand (not in the default `cargo test`): a long run of everything at
//! once, checked for exact figures, no deadlock and bounded memory (issue 9, "Proof").
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture --test-threads 1
//! cargo test --release --features profiling-full --test soak -- --ignored --nocapture --test-threads 1
//! ```
//!
//! The second form serves every route (flamegraphs, pprof, CPU profiles); without the feature
//! those answer 501, which the soak accepts only in such a build. `--nocapture` shows the
//! figures (`docs/reliability.md` quotes them).
//!
//! - `SOAK_SCALE` (default `1`, a positive number): calls per thread are 1,000,000 ×
//!   `SOAK_SCALE`. `SOAK_SCALE=0.05` runs in seconds.
//! - `SOAK_SECS` (default `60`): the workload repeats in rounds until the workers and the
//!   storm have run this long (one round takes about 2 s on 2 cores).
//! - `SOAK_TIMEOUT_SECS` (default `600`): the watchdog aborts the process (a failed run) if a
//!   test has not finished by then: a deadlock does not hang the run.
//!
//! `soak`: rounds of 16 worker slots × 1,000,000 `#[profiled]` calls, each slot a chain of 8
//! threads that make their share of the calls and exit (128 threads start and exit per
//! round); every 1,024th call allocates a 1 KiB buffer, freed at once on a thread that never
//! records (in the first round, every other one is kept to the end and then freed on other
//! such threads). Meanwhile 4 readers send every
//! route of the router through `Router::oneshot` in a loop (including `POST /snapshot`, with
//! snapshot files on disk; `POST /reset` once, at the end, since it would clear the counts
//! under test), and one more reader sends them over sockets to a standalone listener on a
//! loopback port (`ProfilingServer::start`), stopped at the end with a 2 s grace period. Then:
//!
//! - call counts are exact (every call of every thread, exited or not);
//! - the buffers' allocations are exact in the allocating function's figures, and freeing the
//!   kept buffers on plain threads takes live bytes down by exactly their size;
//! - no route answered 5xx; every error body is JSON; every route answered 2xx at least once;
//! - snapshot files on disk stay within the configured count;
//! - RSS is read before and after one, then 10 more requests of each kind, and at the end:
//!   each kind of request may add at most [`RSS_PER_KIND`], the whole run at most
//!   [`RSS_RUN`] (figures are printed).
//!
//! `cpu_profile_memory` (needs `profiling-full`): RSS before, during and after CPU profiles
//! and flamegraph requests. Each profile, the first one too, may raise RSS by
//! `RSS_DURING_PROFILE` while it runs, and leave at most `RSS_AFTER_PROFILE` of RSS and
//! `LIVE_HEAP_AFTER_PROFILE` of live heap behind.
//! Run it on the test binary as built (line tables, `[profile.release]` of this workspace)
//! and as users ship (Cargo's default release profile: no debug information):
//!
//! ```text
//! cargo test --release --features profiling-full --test soak -- --ignored --nocapture --test-threads 1 cpu_profile_memory
//! CARGO_PROFILE_RELEASE_DEBUG=false cargo test --release --features profiling-full --test soak -- --ignored --nocapture --test-threads 1 cpu_profile_memory
//! ```
//!
//! (Over 500 lines on purpose: one on-demand scenario whose workers, readers, route table and
//! RSS watch share its constants and its watchdog; read it from `soak()` down.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use profiling_core::profiled;
use profiling_core::record::alloc_report::allocation_totals;
use profiling_server::{Config, ProfilingServer};
use tower::ServiceExt;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

/// Worker slots (threads running at once).
const SLOTS: usize = 16;
/// Threads each slot runs one after the other (thread churn).
const GENERATIONS: usize = 8;
/// Readers sending requests at once.
const READERS: usize = 4;
/// One call in this many also calls [`soak_nested`].
const NESTED_EVERY: u64 = 256;
/// One call in this many allocates a buffer.
const BUF_EVERY: u64 = 1024;
const BUF: usize = 1024;
/// Snapshot files kept on disk.
const MAX_FILES: usize = 8;
/// Requests of each kind between two RSS readings.
const PER_KIND: usize = 10;

/// RSS that 10 requests of one kind may add (after the soak's own traffic warmed up every
/// route).
const RSS_PER_KIND: u64 = 16 << 20;
/// RSS the whole soak may add, buffers freed and servers dropped: the tables of exited
/// threads are folded and freed, so what remains is allocator caches (glibc keeps freed
/// pages of its per-thread arenas) and the bounded stores.
const RSS_RUN: u64 = 128 << 20;
/// Live heap a CPU profile may leave behind: none of its own (its sample table is unmapped,
/// the symbolizer keeps no cache); this allows for the server's one-time state.
#[cfg(feature = "profiling-full")]
const LIVE_HEAP_AFTER_PROFILE: u64 = 2 << 20;
/// RSS a CPU profile may leave behind: what symbolizing needed is released after (freed
/// pages are returned with `malloc_trim`).
#[cfg(feature = "profiling-full")]
const RSS_AFTER_PROFILE: u64 = 8 << 20;
/// RSS a CPU profile may add while it runs. Issue 9 asks for at most +40 MiB; this workload
/// (two busy threads, profiles of 2 s) measured +8.5 MiB at most with this test binary's
/// line tables (+4.1 MiB with `PROFILING_CPU_SYMBOLIZE=symbols`; docs/reliability.md), so
/// the bound is tighter than the issue's, with room for the sample table's pages and a
/// noisy run. Before our own sampler replaced pprof-rs's (whose start parsed the binary's
/// debug information through `backtrace`, and whose stop allocated a fresh 65 MiB sample
/// table before freeing the old one), a profile peaked at +83 to +85 MiB and the first at
/// +150 MiB: this bound fails on that code.
#[cfg(feature = "profiling-full")]
const RSS_DURING_PROFILE: u64 = 16 << 20;

#[profiled]
fn soak_work(i: u64) -> Option<Vec<u8>> {
    if i.is_multiple_of(NESTED_EVERY) {
        std::hint::black_box(soak_nested(i));
    }
    i.is_multiple_of(BUF_EVERY).then(soak_make_buf)
}

#[profiled]
fn soak_nested(i: u64) -> u64 {
    std::hint::black_box(i).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[profiled]
fn soak_make_buf() -> Vec<u8> {
    vec![1u8; BUF]
}

fn scale() -> f64 {
    std::env::var("SOAK_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// Least time the workers and the storm run (`SOAK_SECS`, default 60): rounds of the
/// workload repeat until it is over.
fn min_duration() -> Duration {
    let secs = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn calls_per_slot() -> u64 {
    ((1_000_000.0 * scale()).round() as u64).max(1)
}

/// Aborts the process if not dropped within `SOAK_TIMEOUT_SECS`: a deadlock fails the run.
struct Watchdog(#[allow(dead_code)] mpsc::Sender<()>);

fn watchdog(what: &'static str) -> Watchdog {
    let secs = std::env::var("SOAK_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(600);
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("{what}: not finished after {secs} s (SOAK_TIMEOUT_SECS): deadlock or livelock; aborting");
            std::process::abort();
        }
    });
    Watchdog(tx)
}

/// This process's resident set (`VmRSS`) and its peak (`VmHWM`), bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn mib_i(b: i64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The two-worker runtime the server's requests run on, as `ProfilingServer::start` has.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Fails unless `what` grew by at most `bound` bytes.
fn assert_grew_at_most(what: &str, grew: i64, bound: u64) {
    assert!(
        grew <= bound as i64,
        "{what}: {:+.1} MiB (bound {} MiB)",
        mib_i(grew),
        bound >> 20
    );
}

/// One request of the soak: method, path (built when sent: some need a snapshot id).
#[derive(Clone, Copy, Debug)]
enum Route {
    Get(&'static str),
    Post(&'static str),
    /// `GET` of the path with the latest snapshot id appended.
    GetWithId(&'static str),
}

impl Route {
    fn label(&self) -> String {
        match self {
            Route::Get(p) => format!("GET {p}"),
            Route::Post(p) => format!("POST {p}"),
            Route::GetWithId(p) => format!("GET {p}<id>"),
        }
    }
}

/// Every route of the router but `POST /reset` (sent once, at the end).
fn routes() -> Vec<Route> {
    use Route::*;
    let mut r = vec![
        Get("/api/profiling/health"),
        Get("/api/profiling/bottlenecks"),
        Get("/api/profiling/functions"),
        Get("/api/profiling/functions/soak_work"),
        Get("/api/profiling/memory"),
        Get("/api/profiling/cpu"),
        Get("/api/profiling/allocations"),
        Post("/api/profiling/leak-detection"),
        Post("/api/profiling/snapshot"),
        Get("/api/profiling/snapshots"),
        GetWithId("/api/profiling/snapshots/"),
        GetWithId("/api/profiling/diff?base="),
        Get("/api/profiling/call-tree"),
        Get("/api/profiling/samples"),
        Get("/api/profiling/flamegraph"),
        Get("/api/profiling/flamegraph?source=heap"),
        Get("/api/profiling/flamegraph?source=cpu&seconds=1"),
        GetWithId("/api/profiling/flamegraph/diff?base="),
        Get("/api/profiling/folded"),
        Get("/api/profiling/pprof?seconds=1"),
        Get("/api/profiling/pprof/heap"),
        Get("/api/profiling/no-such-route"),
        Get("/monitoring/profiling/memory"),
        Get("/monitoring/profiling/leaks"),
        Get("/monitoring/profiling/allocations"),
        Get("/metrics"),
        Get("/debug/pprof/profile?seconds=1"),
        Get("/api/profiling/"),
        Get("/api/profiling/page/app.js"),
    ];
    for p in [
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/goroutine",
        "/debug/pprof/mutex",
        "/debug/pprof/block",
        "/debug/pprof/wall",
        "/debug/pprof/cpu",
        "/debug/pprof/alloc",
        "/debug/pprof/calls",
    ] {
        r.push(Get(p));
    }
    r
}

/// Statuses a route may answer besides 2xx. 429: another expensive request runs. 404: the
/// unknown route, or a snapshot id evicted meanwhile. 501: a `profiling-full` route in a
/// build without it.
fn acceptable(route: &Route, status: StatusCode) -> bool {
    let path = match route {
        Route::Get(p) | Route::Post(p) | Route::GetWithId(p) => *p,
    };
    status.is_success()
        || status == StatusCode::PERMANENT_REDIRECT
        || status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::NOT_FOUND && (matches!(route, Route::GetWithId(_)) || path.contains("no-such")))
        || (status == StatusCode::NOT_IMPLEMENTED && not_built(path))
}

/// Whether the route is off here (it answers 501 saying how to switch it on): the
/// `profiling-full` routes in a build without it, and jemalloc heap flamegraphs, which need
/// jemalloc installed as the global allocator with profiling on from the process start (this
/// test counts over the system allocator).
fn not_built(path: &str) -> bool {
    !cfg!(feature = "profiling-full") || path.contains("source=heap")
}

struct Tally {
    /// Per route label: count per status.
    statuses: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    latest_id: Mutex<Option<String>>,
    requests: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    /// Fails if any answer so far was a 5xx or an error that is not JSON.
    fn assert_no_failure(&self) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} bad answers, first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}

async fn send(app: &Router, route: Route, tally: &Tally) -> StatusCode {
    let (method, uri) = match route {
        Route::Get(p) => (Method::GET, p.to_owned()),
        Route::Post(p) => (Method::POST, p.to_owned()),
        Route::GetWithId(p) => {
            let id = tally
                .latest_id
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "1-1".to_owned());
            (Method::GET, format!("{p}{id}"))
        }
    };
    let req = Request::builder()
        .method(method)
        .uri(&uri)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    tally.requests.fetch_add(1, Ordering::Relaxed);
    *tally
        .statuses
        .lock()
        .unwrap()
        .entry(route.label())
        .or_default()
        .entry(status.as_u16())
        .or_default() += 1;
    if !acceptable(&route, status) {
        tally.failures.lock().unwrap().push(format!(
            "{uri}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    if status.is_client_error() || status.is_server_error() {
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !json.as_ref().is_some_and(|v| v["error"].is_string()) {
            tally.failures.lock().unwrap().push(format!(
                "{uri}: {status} with a body that is not a JSON error: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
    }
    if status == StatusCode::CREATED && matches!(route, Route::Post(p) if p.ends_with("/snapshot")) {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if let Some(id) = v["id"].as_str() {
            *tally.latest_id.lock().unwrap() = Some(id.to_owned());
        }
    }
    status
}

/// One request over a real socket (`Connection: close`) to the standalone listener; the
/// status is tallied under `socket <route>`.
async fn send_socket(addr: std::net::SocketAddr, route: Route, tally: &Tally) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (method, path) = match route {
        Route::Get(p) => ("GET", p.to_owned()),
        Route::Post(p) => ("POST", p.to_owned()),
        // Ids of the other server's snapshots: 404 here, which is what is checked.
        Route::GetWithId(p) => ("GET", format!("{p}1-1")),
    };
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    tally.requests.fetch_add(1, Ordering::Relaxed);
    *tally
        .statuses
        .lock()
        .unwrap()
        .entry(format!("socket {}", route.label()))
        .or_default()
        .entry(status.as_u16())
        .or_default() += 1;
    if !acceptable(&route, status) {
        tally
            .failures
            .lock()
            .unwrap()
            .push(format!("socket {method} {path}: {head}"));
    }
    Ok(())
}

fn live_bytes() -> u64 {
    allocation_totals().live_bytes
}

/// What the workers hand back: buffers kept to the end, and counts of what they did.
struct Work {
    kept: Vec<Vec<u8>>,
    freed_at_once: u64,
}

/// 16 slots × 8 generations of threads making `calls` calls in all per slot; buffers go to a
/// plain thread that frees every other one at once and keeps the rest.
fn run_workers(calls: u64, keep: bool) -> Work {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1024);
    // Never records a call: frees every other buffer as it comes, keeps the others.
    let sink = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut freed = 0u64;
        for (n, buf) in rx.into_iter().enumerate() {
            if n % 2 == 0 || !keep {
                drop(buf);
                freed += 1;
            } else {
                kept.push(buf);
            }
        }
        Work {
            kept,
            freed_at_once: freed,
        }
    });
    let slots: Vec<_> = (0..SLOTS)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let per_gen = calls / GENERATIONS as u64;
                let mut start = 0u64;
                for g in 0..GENERATIONS as u64 {
                    let n = per_gen + u64::from(g < calls % GENERATIONS as u64);
                    let tx = tx.clone();
                    let range = start..start + n;
                    start += n;
                    std::thread::spawn(move || {
                        for i in range {
                            if let Some(buf) = soak_work(i) {
                                tx.send(buf).unwrap();
                            }
                        }
                    })
                    .join()
                    .unwrap();
                }
                assert_eq!(start, calls);
            })
        })
        .collect();
    drop(tx);
    for s in slots {
        s.join().unwrap();
    }
    sink.join().unwrap()
}

fn function_calls(snap: &profiling_core::Snapshot, name: &str) -> (u64, u64, u64) {
    let f = snap
        .functions
        .iter()
        .find(|f| f.name == name || f.name.rsplit("::").next() == Some(name))
        .unwrap_or_else(|| {
            let names: Vec<&str> = snap.functions.iter().map(|f| f.name.as_str()).collect();
            panic!("{name} not in the snapshot: {names:?}")
        });
    (f.calls, f.alloc_total.alloc_count, f.alloc_total.alloc_bytes)
}

#[test]
#[ignore = "soak: minutes; run on demand (see the module docs)"]
fn soak() {
    let _serial = profiling_integration::serial();
    let _watchdog = watchdog("soak");
    let t0 = Instant::now();
    let calls = calls_per_slot();
    let (rss_start, _) = rss();
    let live_start = live_bytes();
    profiling_core::set_enabled(true);
    profiling_core::reset();

    let dir = std::env::temp_dir().join(format!("profiling-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ProfilingServer::new(
        Config::builder()
            .memory_interval(Duration::from_millis(200))
            .leak_check_interval(None)
            .snapshot_dir(&dir)
            .max_snapshots(8)
            .max_snapshot_files(MAX_FILES)
            .build()
            .unwrap(),
    )
    .unwrap();
    let app = server.router();
    let rt = runtime();
    let tally = Arc::new(Tally {
        statuses: Mutex::new(BTreeMap::new()),
        latest_id: Mutex::new(None),
        requests: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
    });

    // A standalone listener on a loopback port (its own runtime thread), read over sockets.
    let listener = ProfilingServer::new(
        Config::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .leak_check_interval(None)
            .build()
            .unwrap(),
    )
    .unwrap()
    .start()
    .unwrap()
    .with_shutdown_grace(Duration::from_secs(2));
    let addr = listener.local_addr();

    // The storm: every route, in a loop, from READERS tasks through `Router::oneshot` and one
    // over sockets, while the workers run.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|k| {
            let (app, tally, stop) = (app.clone(), Arc::clone(&tally), Arc::clone(&stop));
            rt.spawn(async move {
                let routes = routes();
                let mut i = k * routes.len() / READERS;
                while !stop.load(Ordering::Relaxed) {
                    send(&app, routes[i % routes.len()], &tally).await;
                    i += 1;
                }
            })
        })
        .collect();
    let socket_reader = {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        rt.spawn(async move {
            let routes = routes();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = send_socket(addr, routes[i % routes.len()], &tally).await {
                    tally.failures.lock().unwrap().push(format!("socket {addr}: {e}"));
                }
                i += 1;
            }
        })
    };
    // The first round's kept buffers stay to the end; later rounds free every buffer.
    let mut work = run_workers(calls, true);
    let mut rounds = 1u64;
    let mut freed_at_once = work.freed_at_once;
    while t0.elapsed() < min_duration() {
        freed_at_once += run_workers(calls, false).freed_at_once;
        rounds += 1;
    }
    work.freed_at_once = freed_at_once;
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for r in readers {
            r.await.unwrap();
        }
        socket_reader.await.unwrap();
    });
    // Stops the listener: requests in flight get the grace period, then it is joined.
    drop(listener);
    let t_work = t0.elapsed();

    // Exact call counts, and exact allocations of the allocating function.
    let snap = profiling_core::snapshot();
    let slots = SLOTS as u64;
    let (work_calls, work_allocs, work_bytes) = function_calls(&snap, "soak_work");
    let (nested_calls, _, _) = function_calls(&snap, "soak_nested");
    let (buf_calls, buf_allocs, buf_bytes) = function_calls(&snap, "soak_make_buf");
    let bufs = rounds * slots * calls.div_ceil(BUF_EVERY);
    assert_eq!(work_calls, rounds * slots * calls, "calls of soak_work");
    assert_eq!(
        nested_calls,
        rounds * slots * calls.div_ceil(NESTED_EVERY),
        "calls of soak_nested"
    );
    assert_eq!(buf_calls, bufs, "calls of soak_make_buf");
    assert_eq!(
        (buf_allocs, buf_bytes),
        (bufs, bufs * BUF as u64),
        "allocations of soak_make_buf"
    );
    assert_eq!(
        (work_allocs, work_bytes),
        (bufs, bufs * BUF as u64),
        "allocations under soak_work"
    );
    assert_eq!(work.freed_at_once + work.kept.len() as u64, bufs);
    assert!(
        snap.threads.exited >= rounds * (SLOTS * GENERATIONS) as u64,
        "{} threads exited",
        snap.threads.exited
    );

    // Every route answered, none with 5xx, errors in JSON.
    tally.assert_no_failure();
    let statuses = tally.statuses.lock().unwrap().clone();
    let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert!(
        files <= MAX_FILES,
        "{files} snapshot files on disk, at most {MAX_FILES} kept"
    );

    // RSS before and after PER_KIND requests of each kind, one at a time: with nothing else
    // running, every route answers 2xx (but the unknown one, and what this build leaves out).
    let mut per_kind = Vec::new();
    rt.block_on(async {
        for route in routes() {
            let path = match route {
                Route::Get(p) | Route::Post(p) | Route::GetWithId(p) => p,
            };
            // One request first: a kind's one-time state is not growth.
            let (first, _) = rss();
            send(&app, route, &tally).await;
            let (before, _) = rss();
            for _ in 0..PER_KIND {
                let status = send(&app, route, &tally).await;
                let expected = if path.contains("no-such") {
                    status == StatusCode::NOT_FOUND
                } else {
                    status.is_success() || (status == StatusCode::NOT_IMPLEMENTED && not_built(path))
                };
                assert!(
                    expected,
                    "{} answered {status} with nothing else running",
                    route.label()
                );
            }
            let (after, _) = rss();
            per_kind.push((route.label(), first, before, after));
        }
    });

    tally.assert_no_failure();

    // POST /reset, once: the counts start again.
    let reset = rt.block_on(async {
        let req = Request::post("/api/profiling/reset")
            .header("host", "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    });
    assert!(reset.is_success(), "POST /reset answered {reset}");
    let after_reset = profiling_core::snapshot();
    assert!(
        after_reset
            .functions
            .iter()
            .all(|f| f.calls == 0 || !f.name.starts_with("soak_")),
        "counts after reset"
    );

    // Everything but the kept buffers goes: the server (its sampler thread is joined), the
    // runtime (its threads are joined).
    let requests = tally.requests.load(Ordering::Relaxed);
    drop(app);
    drop(server);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);

    // Exact live bytes: the kept buffers, freed on 16 plain threads, take live bytes down by
    // exactly their size (and the lists' own buffers).
    let mut kept = work.kept;
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::with_capacity(16);
    let per_chunk = kept.len().div_ceil(16).max(1);
    while !kept.is_empty() {
        let at = kept.len().saturating_sub(per_chunk);
        chunks.push(kept.split_off(at));
    }
    drop(kept);
    let word = std::mem::size_of::<Vec<u8>>();
    let expected: usize = chunks.capacity() * word
        + chunks
            .iter()
            .map(|c| c.capacity() * word + c.iter().map(Vec::capacity).sum::<usize>())
            .sum::<usize>();
    let kept_bufs: usize = chunks.iter().map(Vec::len).sum();
    let live_before = live_bytes();
    for chunk in chunks {
        std::thread::spawn(move || drop(chunk)).join().unwrap();
    }
    let live_after = live_bytes();
    assert_eq!(
        live_before as i64 - live_after as i64,
        expected as i64,
        "freeing {kept_bufs} kept buffers of {BUF} bytes on plain threads"
    );

    let (rss_end, hwm) = rss();
    let elapsed = t0.elapsed();
    println!(
        "soak: SOAK_SCALE={} ({} calls per slot and round), {rounds} rounds, SOAK_SECS={}, profiling-full: {}",
        scale(),
        calls,
        min_duration().as_secs(),
        cfg!(feature = "profiling-full")
    );
    println!(
        "soak: {} threads x {rounds} rounds, calls: soak_work {work_calls}, soak_nested {nested_calls}, soak_make_buf {buf_calls} (exact); \
         {} threads exited; {} buffers freed at once on a plain thread, {kept_bufs} freed at the end: live bytes -{} (exact)",
        SLOTS * GENERATIONS,
        snap.threads.exited,
        work.freed_at_once,
        live_before - live_after
    );
    println!(
        "soak: workers + storm {:.1} s, {} requests ({:.0}/s), whole test {:.1} s",
        t_work.as_secs_f64(),
        requests,
        requests as f64 / t_work.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    for (route, counts) in &statuses {
        println!("soak: storm {route}: {counts:?}");
    }
    let mut worst = (String::new(), i64::MIN);
    for (label, first, before, after) in &per_kind {
        let d = *after as i64 - *before as i64;
        println!(
            "soak: rss {label}: first request {:+.2} MiB; {:.1} -> {:.1} MiB ({:+.2} MiB) over {PER_KIND} more",
            mib_i(*before as i64 - *first as i64),
            mib(*before),
            mib(*after),
            mib_i(d)
        );
        if d > worst.1 {
            worst = (label.clone(), d);
        }
    }
    println!(
        "soak: rss start {:.1} MiB, end {:.1} MiB ({:+.1} MiB), peak {:.1} MiB; live heap start {:.2} MiB, end {:.2} MiB",
        mib(rss_start),
        mib(rss_end),
        mib_i(rss_end as i64 - rss_start as i64),
        mib(hwm),
        mib(live_start),
        mib(live_after)
    );
    assert_grew_at_most(
        &format!("RSS over {PER_KIND} requests of {}", worst.0),
        worst.1,
        RSS_PER_KIND,
    );
    assert_grew_at_most("RSS over the run", rss_end as i64 - rss_start as i64, RSS_RUN);
}

/// Resets this process's `VmHWM` to its current RSS (`echo 5 > /proc/self/clear_refs`,
/// Linux 4.0 and later), so that `VmHWM` read later is the exact peak since. False if the
/// kernel refused.
#[cfg(feature = "profiling-full")]
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Reads `VmRSS` every 20 ms until dropped; the highest reading is the peak over its life
/// (a window, unlike `VmHWM` without [`reset_peak_rss`], which is the process's peak since it
/// started). Where `VmHWM` cannot be reset, this is the peak the test uses.
#[cfg(feature = "profiling-full")]
struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

#[cfg(feature = "profiling-full")]
impl RssWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = rss().0;
            while !s.load(Ordering::Relaxed) {
                peak = peak.max(rss().0);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(rss().0)
        });
        RssWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

/// Keeps two threads busy in `#[profiled]` calls, so CPU profiles have samples to symbolize.
#[cfg(feature = "profiling-full")]
fn busy_threads(stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(soak_work(i));
                    i += 1;
                }
            })
        })
        .collect()
}

#[cfg(feature = "profiling-full")]
#[test]
#[ignore = "soak: a minute; run on demand (see the module docs)"]
fn cpu_profile_memory() {
    let _serial = profiling_integration::serial();
    let _watchdog = watchdog("cpu_profile_memory");
    profiling_core::set_enabled(true);
    let server = ProfilingServer::new(Config::builder().leak_check_interval(None).build().unwrap()).unwrap();
    let app = server.router();
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = busy_threads(&stop);
    let get = |uri: &str| {
        let req = Request::get(uri)
            .header("host", "127.0.0.1")
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        rt.block_on(async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body.len())
        })
    };
    // Every other route's one-time state first (the page, the JSON reports).
    for uri in ["/api/profiling/bottlenecks", "/api/profiling/flamegraph", "/metrics"] {
        assert_eq!(get(uri).0, StatusCode::OK, "{uri}");
    }
    let requests = [
        "/api/profiling/pprof?seconds=2",
        "/api/profiling/flamegraph?source=cpu&seconds=2",
        "/debug/pprof/profile?seconds=2",
        "/api/profiling/flamegraph",
        "/api/profiling/folded",
        "/api/profiling/pprof?seconds=2",
    ];
    let (rss_start, _) = rss();
    let live_start = live_bytes();
    let mut worst_during = (String::new(), 0i64);
    let mut worst_live = 0i64;
    let mut worst_after = (String::new(), i64::MIN);
    for uri in requests {
        let (before, _) = rss();
        let live_before = live_bytes();
        let exact = reset_peak_rss();
        let watch = RssWatch::start();
        let (status, len) = get(uri);
        let peak = watch.peak();
        let (after, hwm) = rss();
        let peak = if exact { peak.max(hwm) } else { peak };
        let live_after = live_bytes();
        assert_eq!(status, StatusCode::OK, "{uri}");
        println!(
            "cpu_profile_memory: {uri} ({len} bytes): rss before {:.1} MiB, peak during {:.1} MiB ({:+.1}), after {:.1} MiB ({:+.1}); live heap {:+.2} MiB",
            mib(before),
            mib(peak),
            mib_i(peak as i64 - before as i64),
            mib(after),
            mib_i(after as i64 - before as i64),
            mib_i(live_after as i64 - live_before as i64)
        );
        let during = peak as i64 - before as i64;
        if during > worst_during.1 {
            worst_during = (uri.to_owned(), during);
        }
        worst_live = worst_live.max(live_after as i64 - live_start as i64);
        if after as i64 - before as i64 > worst_after.1 {
            worst_after = (uri.to_owned(), after as i64 - before as i64);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    let (rss_end, hwm) = rss();
    println!(
        "cpu_profile_memory: rss start {:.1} MiB, end {:.1} MiB, process peak {:.1} MiB; live heap start {:.2} MiB, end {:.2} MiB",
        mib(rss_start),
        mib(rss_end),
        mib(hwm),
        mib(live_start),
        mib(live_bytes())
    );
    drop(app);
    drop(server);
    drop(rt);
    assert_grew_at_most("the live heap after CPU profiles", worst_live, LIVE_HEAP_AFTER_PROFILE);
    assert_grew_at_most(
        &format!("RSS left by {}", worst_after.0),
        worst_after.1,
        RSS_AFTER_PROFILE,
    );
    assert_grew_at_most(
        &format!("RSS while {} ran", worst_during.0),
        worst_during.1,
        RSS_DURING_PROFILE,
    );
}
