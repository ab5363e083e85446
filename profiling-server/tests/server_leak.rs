//! Leak detection on real workloads, through the HTTP API: a function that keeps 64 KiB
//! per call is found with its evidence; a steady workload that frees what it allocates
//! yields no suspect.
//!
//! The synthetic-series cases (exact growth rates, old windows, large allocations) are unit
//! tests of `profiling_core::analyze::leak::analyze` in `profiling-core/src/leak.rs`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use profiling_core::{profiled, ProfilingAllocator};
use profiling_server::{Config, ProfilingServer};
use serde_json::Value;
use tower::ServiceExt;

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[profiled]
fn leaky_cache_insert() {
    KEPT.lock().unwrap().push(vec![7u8; 64 * 1024]);
}

#[profiled]
fn steady_request() -> usize {
    let buf = vec![1u8; 64 * 1024];
    let s = serde_json::to_string(&buf[..256]).unwrap();
    s.len() + std::hint::black_box(&buf).len()
}

/// Runs `work` every 2 ms for `secs` while the sampler samples every 50 ms, then asks the
/// API for a leak analysis.
async fn run_and_analyze(work: fn(), secs: f64) -> Value {
    profiling_core::reset();
    let config = Config::builder()
        .memory_interval(Duration::from_millis(50))
        .leak_check_interval(None)
        .build()
        .unwrap();
    let server = ProfilingServer::new(config).unwrap();
    let app = server.router();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        work();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/profiling/leak-detection")
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn a_function_that_keeps_memory_is_found() {
    let _g = LOCK.lock().await;
    let report = run_and_analyze(leaky_cache_insert, 1.5).await;
    assert_eq!(report["leak_suspected"], true, "{report:#}");
    assert_eq!(report["series"], "heap");
    let suspects = report["suspects"].as_array().unwrap();
    let kinds: Vec<&str> = suspects.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"steady_growth"), "{kinds:?}");
    let f = suspects
        .iter()
        .find(|s| s["kind"] == "retaining_function")
        .unwrap_or_else(|| panic!("no retaining function in {report:#}"));
    assert!(f["function"].as_str().unwrap().ends_with("::leaky_cache_insert"), "{f}");
    println!("evidence: {}", f["evidence"]);
    // 64 KiB per call exactly (requested sizes are counted).
    assert!(f["evidence"].as_str().unwrap().contains("64.0 KiB per call"), "{f}");
    KEPT.lock().unwrap().clear();
}

#[tokio::test]
async fn a_steady_workload_has_no_suspect() {
    let _g = LOCK.lock().await;
    let report = run_and_analyze(
        || {
            steady_request();
        },
        1.5,
    )
    .await;
    assert_eq!(report["suspects"].as_array().unwrap().len(), 0, "{report:#}");
    assert_eq!(report["leak_suspected"], false);
    // Enough samples for every analysis to have run (1.5 s at 50 ms; at least 6 even when slow).
    assert!(report["samples"].as_u64().unwrap() >= 6, "{report:#}");
}
