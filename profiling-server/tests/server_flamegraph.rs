//! The `profiling-full` routes through `Router::oneshot`: SVGs, folded text, pprof
//! protobufs, differential flamegraphs, bounds on `seconds`, one CPU profile at a time, and
//! the heap routes' error when heap profiling is off.
#![cfg(feature = "profiling-full")]

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use profiling_core::{profiled, ProfilingAllocator};
use profiling_server::{Config, ProfilingServer};
use tower::ServiceExt;

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[profiled]
fn fg_outer() {
    fg_inner();
}

#[profiled]
fn fg_inner() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(3) {
        std::hint::spin_loop();
    }
}

fn app() -> Router {
    let cfg = Config::builder()
        .memory_interval(Duration::from_millis(50))
        .leak_check_interval(None)
        .build()
        .unwrap();
    ProfilingServer::new(cfg).unwrap().router()
}

async fn call(app: &Router, method: Method, uri: &str) -> (StatusCode, String, Vec<u8>) {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ct, body)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String, Vec<u8>) {
    call(app, Method::GET, uri).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn instrumented_flamegraph_and_folded() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    fg_outer();
    let app = app();
    let (st, ct, body) = get(&app, "/api/profiling/flamegraph").await;
    assert_eq!(st, StatusCode::OK, "{}", text(&body));
    assert_eq!(ct, "image/svg+xml");
    let svg = text(&body);
    assert!(
        svg.contains("server_flamegraph::fg_inner") && svg.contains("Self wall time"),
        "svg"
    );

    let (st, _, body) = get(&app, "/api/profiling/flamegraph?source=instrumented&weight=calls").await;
    assert_eq!(st, StatusCode::OK);
    assert!(text(&body).contains("Calls — window"));

    let (st, ct, body) = get(&app, "/api/profiling/folded?weight=calls").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ct.starts_with("text/plain"));
    assert!(
        text(&body)
            .lines()
            .any(|l| l == "server_flamegraph::fg_outer;server_flamegraph::fg_inner 1"),
        "{}",
        text(&body)
    );

    for bad in [
        "/api/profiling/folded?weight=heat",
        "/api/profiling/flamegraph?weight=heat",
        "/api/profiling/flamegraph?source=gpu",
        "/api/profiling/flamegraph?source=cpu&seconds=0",
        "/api/profiling/flamegraph?source=cpu&seconds=61",
        "/api/profiling/pprof?seconds=61",
        "/api/profiling/pprof?seconds=abc",
        "/api/profiling/flamegraph/diff",
        "/api/profiling/flamegraph/diff?base=../x",
    ] {
        let (st, _, body) = get(&app, bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {}", text(&body));
        assert!(text(&body).contains("\"error\""), "{bad}");
    }
    let (st, _, _) = get(&app, "/api/profiling/flamegraph/diff?base=nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn differential_flamegraph_between_stored_snapshots() {
    let _g = LOCK.lock().await;
    let app = app();
    fg_outer();
    let (st, _, body) = call(&app, Method::POST, "/api/profiling/snapshot").await;
    assert_eq!(st, StatusCode::CREATED, "{}", text(&body));
    let base: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let base = base["id"].as_str().unwrap().to_owned();
    fg_outer();
    fg_outer();
    let (_, _, body) = call(&app, Method::POST, "/api/profiling/snapshot").await;
    let target: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let target = target["id"].as_str().unwrap().to_owned();
    let (st, ct, body) = get(
        &app,
        &format!("/api/profiling/flamegraph/diff?base={base}&target={target}&weight=calls"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{}", text(&body));
    assert_eq!(ct, "image/svg+xml");
    assert!(text(&body).contains("Differential: calls"));
    // Against the live window.
    let (st, _, _) = get(&app, &format!("/api/profiling/flamegraph/diff?base={base}")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_pprof_and_flamegraph_one_at_a_time() {
    let _g = LOCK.lock().await;
    let app = app();
    let spinner = std::thread::spawn(|| {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(1500) {
            std::hint::black_box(fg_spin());
        }
    });
    let first = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/profiling/pprof?seconds=1").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, _, body) = get(&app, "/api/profiling/flamegraph?source=cpu&seconds=1").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{}", text(&body));
    let (st, ct, gz) = first.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{}", text(&gz));
    assert_eq!(ct, "application/octet-stream");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip");
    let (st, ct, body) = get(&app, "/api/profiling/flamegraph?source=cpu&seconds=1").await;
    assert_eq!(st, StatusCode::OK, "{}", text(&body));
    assert_eq!(ct, "image/svg+xml");
    assert!(text(&body).contains("CPU (sampled)"));
    spinner.join().unwrap();
}

#[inline(never)]
fn fg_spin() -> u64 {
    (0..10_000u64).fold(0, |a, b| a.wrapping_mul(31).wrapping_add(b))
}

#[tokio::test]
async fn heap_routes_say_how_to_switch_heap_profiling_on() {
    let _g = LOCK.lock().await;
    let app = app();
    // Without jemalloc profiling the pprof heap profile comes from the sampled live heap.
    let (st, _, body) = get(&app, "/api/profiling/pprof/heap").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzipped pprof");
    for uri in ["/api/profiling/flamegraph?source=heap"] {
        let (st, _, body) = get(&app, uri).await;
        assert_eq!(st, StatusCode::NOT_IMPLEMENTED, "{uri}: {}", text(&body));
        assert!(text(&body).contains("_RJEM_MALLOC_CONF=prof:true"), "{}", text(&body));
    }
}
