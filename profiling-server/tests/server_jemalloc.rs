//! With jemalloc as the global allocator, `memory` and `allocations` report its statistics
//! and the efficiency and fragmentation derived from them.
#![cfg(feature = "jemalloc")]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use profiling_core::{Jemalloc, ProfilingAllocator};
use profiling_server::{Config, ProfilingServer};
use serde_json::Value;
use tower::ServiceExt;

#[global_allocator]
static ALLOC: ProfilingAllocator<Jemalloc> = ProfilingAllocator::jemalloc();

async fn get(app: &axum::Router, uri: &str) -> Value {
    let resp = app
        .clone()
        .oneshot(Request::builder().uri(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn jemalloc_statistics_are_reported() {
    let app = ProfilingServer::new(Config::builder().leak_check_interval(None).build().unwrap())
        .unwrap()
        .router();
    let before = get(&app, "/api/profiling/memory").await["jemalloc"]["allocated"]
        .as_u64()
        .expect("jemalloc stats");
    // 32 MiB kept alive (and touched) must show in `allocated`; tolerance: other threads may
    // free up to 4 MiB meanwhile.
    let kept = std::hint::black_box(vec![3u8; 32 << 20]);
    let m = get(&app, "/api/profiling/memory").await;
    let j = &m["jemalloc"];
    let allocated = j["allocated"].as_u64().unwrap();
    assert!(allocated >= before + (28 << 20), "{before} -> {allocated}");
    assert!(j["active"].as_u64().unwrap() >= allocated);
    assert!(
        j["resident"].as_u64().unwrap() >= j["active"].as_u64().unwrap() / 2,
        "{j}"
    );

    let a = get(&app, "/api/profiling/allocations").await;
    let eff = a["efficiency"].as_f64().expect("efficiency");
    assert!(eff > 0.0 && eff <= 1.0, "{eff}");
    let frag = a["fragmentation_percent"].as_f64().expect("fragmentation");
    assert!((0.0..100.0).contains(&frag), "{frag}");
    assert!(a["unavailable_reason"].is_null());
    drop(kept);
}
