//! Every endpoint through `Router::oneshot`, with good and bad input, auth, and the
//! Prometheus exposition checked by a parser.
//!
//! The recorder, the allocator counters and `reset` are process-wide: tests take `LOCK`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use profiling_core::{profiled, ProfilingAllocator};
use profiling_server::{Config, ConfigBuilder, ProfilingServer};
use serde_json::Value;
use tower::ServiceExt;

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[profiled]
fn spin_heavy() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(6) {
        std::hint::spin_loop();
    }
}

#[profiled]
fn spin_light() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(1) {
        std::hint::spin_loop();
    }
}

#[profiled]
fn allocate_64k() -> usize {
    let v = vec![1u8; 64 * 1024];
    std::hint::black_box(&v).len()
}

fn workload() {
    for _ in 0..5 {
        spin_heavy();
        spin_light();
        allocate_64k();
    }
}

fn quick() -> ConfigBuilder {
    Config::builder()
        .memory_interval(Duration::from_millis(30))
        .leak_check_interval(None)
}

fn server(b: ConfigBuilder) -> (ProfilingServer, Router) {
    let s = ProfilingServer::new(b.build().unwrap()).unwrap();
    let r = s.router();
    (s, r)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().expect("an error message").to_owned()
    }
}

async fn call(app: &Router, method: Method, uri: &str, token: Option<&str>) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    Resp { status, headers, body }
}

async fn get(app: &Router, uri: &str) -> Resp {
    call(app, Method::GET, uri, None).await
}

async fn post(app: &Router, uri: &str) -> Resp {
    call(app, Method::POST, uri, None).await
}

#[tokio::test]
async fn health_page_and_redirect() {
    let _g = LOCK.lock().await;
    workload();
    let (_s, app) = server(quick());
    let r = get(&app, "/api/profiling/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");

    let r = get(&app, "/api/profiling/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // The page's assets and the JSON it renders from: tests/server_page.rs.

    let r = get(&app, "/api/profiling").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers[header::LOCATION], "/api/profiling/");
}

#[tokio::test]
async fn bottlenecks_rank_known_workloads_and_reject_bad_input() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    workload();
    let (_s, app) = server(quick());
    let r = get(&app, "/api/profiling/bottlenecks").await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["sort"], "self_wall");
    let list = j["bottlenecks"].as_array().unwrap();
    let pos = |suffix: &str| {
        list.iter()
            .position(|b| b["function"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} missing from {list:?}"))
    };
    // 5 x 6 ms outranks 5 x 1 ms by self time.
    assert!(pos("::spin_heavy") < pos("::spin_light"));
    let heavy = &list[pos("::spin_heavy")];
    for key in [
        "rank",
        "function",
        "file",
        "line",
        "calls",
        "total_wall_ns",
        "self_wall_ns",
        "cpu_ns",
        "alloc_bytes",
        "alloc_count",
        "freed_bytes",
        "p50_ns",
        "p95_ns",
        "p99_ns",
        "share",
        "impact_score",
        "classification",
        "recommendations",
    ] {
        assert!(heavy.get(key).is_some(), "missing {key} in {heavy}");
    }
    assert_eq!(heavy["calls"], 5);
    // Tolerance: at least the 30 ms spun, at most 3x that on a loaded 2-core machine.
    let self_ns = heavy["self_wall_ns"].as_u64().unwrap();
    assert!((30_000_000..90_000_000).contains(&self_ns), "{self_ns}");

    let r = get(&app, "/api/profiling/bottlenecks?sort=alloc_bytes&limit=1").await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["sort"], "alloc_bytes");
    assert_eq!(j["bottlenecks"].as_array().unwrap().len(), 1);
    assert!(j["bottlenecks"][0]["function"]
        .as_str()
        .unwrap()
        .ends_with("::allocate_64k"));

    for (uri, needle) in [
        ("/api/profiling/bottlenecks?sort=bogus", "unknown sort key"),
        ("/api/profiling/bottlenecks?limit=0", "between 1 and 1000"),
        ("/api/profiling/bottlenecks?limit=1000000", "between 1 and 1000"),
        ("/api/profiling/bottlenecks?limit=ten", "whole number"),
        ("/api/profiling/bottlenecks?limit=-3", "whole number"),
        ("/api/profiling/allocations?limit=0", "between 1 and 1000"),
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.error().contains(needle), "{uri}: {}", r.error());
    }
}

#[tokio::test]
async fn functions_and_one_function() {
    let _g = LOCK.lock().await;
    workload();
    let (_s, app) = server(quick());
    let r = get(&app, "/api/profiling/functions").await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    let f = j["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().ends_with("::spin_light"))
        .unwrap()
        .clone();
    for key in ["calls", "cpu_total_ns", "alloc_total", "histogram", "p99_ns"] {
        assert!(f.get(key).is_some(), "{key}");
    }
    let full = f["name"].as_str().unwrap();

    let r = get(&app, &format!("/api/profiling/functions/{full}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["name"], full);
    assert!(!j["call_paths"].as_array().unwrap().is_empty());

    // The short name works when it is unique.
    let r = get(&app, "/api/profiling/functions/spin_light").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["name"], full);

    let r = get(&app, "/api/profiling/functions/no_such_function").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("no_such_function"));

    // Not UTF-8 once decoded: a malformed path.
    let r = get(&app, "/api/profiling/functions/%FF").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

#[tokio::test]
async fn memory_cpu_and_allocations() {
    let _g = LOCK.lock().await;
    workload();
    let (s, app) = server(quick().memory_warning_mb(1).memory_alert_mb(1_000_000));
    // Samples are stamped in milliseconds: the CPU percent needs the two to be at least one
    // apart, which on a fast machine the start-up sample and this one are not by themselves.
    spin_heavy();
    s.sample_now();
    let r = get(&app, "/api/profiling/memory").await;
    assert_eq!(r.status, StatusCode::OK);
    let m = r.json();
    assert!(m["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(m["virtual_bytes"].as_u64().unwrap() >= m["rss_bytes"].as_u64().unwrap());
    assert!(
        m["heap_bytes"].as_u64().unwrap() > 0,
        "the counting allocator is installed"
    );
    assert_eq!(m["growth_series"], "heap");
    assert!(m["growth_rate_mb_per_hour"].is_f64(), "{m}");
    assert_eq!(m["warning"], true);
    assert_eq!(m["alert"], false);
    assert!(m["jemalloc"].is_null(), "{}", m["jemalloc"]);
    // The legacy alias serves the same document.
    let legacy = get(&app, "/monitoring/profiling/memory").await.json();
    assert_eq!(legacy["alert_threshold_mb"], m["alert_threshold_mb"]);

    let c = get(&app, "/api/profiling/cpu").await.json();
    assert!(c["cpu_percent"].as_f64().unwrap() >= 0.0, "{c}");
    assert!(c["interval_secs"].as_f64().unwrap() > 0.0);
    assert!(c["threads"].as_u64().unwrap() >= 2, "test thread + sampler: {c}");
    assert!(c["load_average"]["one"].as_f64().unwrap() >= 0.0);
    assert!(c["process_cpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(c["profiling_overhead_percent"].as_f64().unwrap() >= 0.0);

    let a = get(&app, "/api/profiling/allocations?limit=5").await.json();
    assert_eq!(a["counted"], true);
    let top = a["top_functions"].as_array().unwrap();
    assert!(top.len() <= 5);
    let f = top
        .iter()
        .find(|f| f["function"].as_str().unwrap().ends_with("::allocate_64k"))
        .expect("allocate_64k in the top functions");
    // Exactly 64 KiB per call are requested by the function itself.
    assert_eq!(f["bytes_per_call"], 64 * 1024);
    assert!(a["size_distribution"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["min_bytes"] == 65536));
    assert!(a["efficiency"].is_null() && a["fragmentation_percent"].is_null());
    assert!(a["unavailable_reason"].as_str().unwrap().contains("jemalloc"));
    assert_eq!(
        get(&app, "/monitoring/profiling/allocations").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn leak_detection_endpoint_and_alias() {
    let _g = LOCK.lock().await;
    let (_s, app) = server(quick());
    let r = post(&app, "/api/profiling/leak-detection").await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    for key in [
        "leak_suspected",
        "suspects",
        "series",
        "samples",
        "growth_rate_mb_per_hour",
        "options",
        "notes",
    ] {
        assert!(j.get(key).is_some(), "{key} in {j}");
    }
    assert_eq!(j["options"]["growth_threshold_mb_per_hour"], 10.0);
    assert_eq!(get(&app, "/monitoring/profiling/leaks").await.status, StatusCode::OK);
    // Wrong method: 405 with a JSON body.
    let r = get(&app, "/api/profiling/leak-detection").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.error().contains("method"));
}

#[tokio::test]
async fn snapshots_are_kept_listed_diffed_and_persisted() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    workload();
    let dir = tempfile::tempdir().unwrap();
    let (_s, app) = server(quick().snapshot_dir(dir.path()).max_snapshots(2));

    let r = post(&app, "/api/profiling/snapshot?label=before").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let base = r.json();
    let base_id = base["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers[header::LOCATION],
        format!("/api/profiling/snapshots/{base_id}")
    );
    assert_eq!(base["label"], "before");
    assert!(base["calls"].as_u64().unwrap() >= 15);

    // The file is there, complete, with no temporary file beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec![format!("{base_id}.json")]);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(dir.path().join(&names[0])).unwrap()).unwrap();
    assert_eq!(on_disk["id"], base_id);

    let r = get(&app, &format!("/api/profiling/snapshots/{base_id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let full = r.json();
    for key in ["profile", "memory", "cpu", "allocations"] {
        assert!(full.get(key).is_some(), "{key}");
    }

    // More work for spin_light only, then a second snapshot and the diff.
    for _ in 0..5 {
        spin_light();
    }
    let target_id = post(&app, "/api/profiling/snapshot").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = get(&app, &format!("/api/profiling/diff?base={base_id}&target={target_id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let d = r.json();
    assert_eq!(d["base"], base_id);
    assert_eq!(d["target"], target_id);
    let fns = d["functions"].as_array().unwrap();
    assert!(fns
        .iter()
        .any(|f| f["function"].as_str().unwrap().ends_with("::spin_light")));
    assert_eq!(fns[0]["rank"], 1);
    let live = get(&app, &format!("/api/profiling/diff?base={base_id}")).await.json();
    assert_eq!(live["target"], "live");

    // Bounded: a third snapshot evicts the first from memory; its file still answers.
    let third = post(&app, "/api/profiling/snapshot").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = get(&app, "/api/profiling/snapshots").await.json();
    let ids: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![target_id.as_str(), third.as_str()]);
    assert_eq!(
        get(&app, &format!("/api/profiling/snapshots/{base_id}")).await.status,
        StatusCode::OK
    );

    // A new server on the same directory finds them.
    let (_s2, app2) = server(quick().snapshot_dir(dir.path()).max_snapshots(8));
    let list = get(&app2, "/api/profiling/snapshots").await.json();
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 3);

    for (uri, status, needle) in [
        ("/api/profiling/snapshots/1-999", StatusCode::NOT_FOUND, "no snapshot"),
        (
            "/api/profiling/snapshots/bad.id",
            StatusCode::BAD_REQUEST,
            "malformed snapshot id",
        ),
        ("/api/profiling/diff", StatusCode::BAD_REQUEST, "base"),
        ("/api/profiling/diff?base=1-999", StatusCode::NOT_FOUND, "no snapshot"),
        (
            "/api/profiling/diff?base=..%2Fetc",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, status, "{uri}: {}", r.text());
        assert!(r.error().contains(needle), "{uri}: {}", r.error());
    }
    let r = post(&app, &format!("/api/profiling/snapshot?label={}", "x".repeat(201))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reset_starts_a_new_window() {
    let _g = LOCK.lock().await;
    workload();
    let (_s, app) = server(quick());
    let before = get(&app, "/api/profiling/bottlenecks").await.json();
    let epoch = before["window"]["epoch"].as_u64().unwrap();
    assert!(!before["bottlenecks"].as_array().unwrap().is_empty());
    let r = post(&app, "/api/profiling/reset").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["window"]["epoch"].as_u64().unwrap(), epoch + 1);
    let after = get(&app, "/api/profiling/bottlenecks").await.json();
    assert!(after["bottlenecks"].as_array().unwrap().is_empty(), "{after}");
    assert_eq!(
        get(&app, "/api/profiling/reset").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn bearer_token_guards_everything_but_health() {
    let _g = LOCK.lock().await;
    let (_s, app) = server(quick().auth_token("s3cret"));
    for uri in [
        "/api/profiling/bottlenecks",
        "/metrics",
        "/api/profiling/call-tree",
        "/monitoring/profiling/memory",
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(r.error().contains("bearer token"));
        let r = call(&app, Method::GET, uri, Some("wrong")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        let r = call(&app, Method::GET, uri, Some("s3cret")).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
    let r = call(&app, Method::POST, "/api/profiling/reset", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(&app, "/api/profiling/health").await.status, StatusCode::OK);
}

#[cfg(not(feature = "profiling-full"))]
#[tokio::test]
async fn full_feature_routes_answer_501_naming_the_feature() {
    let _g = LOCK.lock().await;
    let (_s, app) = server(quick());
    for uri in [
        "/api/profiling/flamegraph",
        "/api/profiling/flamegraph/diff",
        "/api/profiling/folded",
        "/api/profiling/pprof",
        "/api/profiling/pprof/heap",
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{uri}");
        assert!(r.error().contains("profiling-full"), "{}", r.error());
    }
}
