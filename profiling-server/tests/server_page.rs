//! The page: static assets with their content types and cache validators, served without
//! the token (they hold no data) while the JSON they render from stays behind it, and the
//! two documents only the page reads (`call-tree`, `samples`).
//!
//! The recorder is process-wide: tests take `LOCK`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use profiling_core::profiled;
use profiling_server::{Config, ConfigBuilder, ProfilingServer};
use serde_json::Value;
use tower::ServiceExt;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[profiled]
fn page_outer() {
    for _ in 0..3 {
        page_inner();
    }
}

#[profiled]
fn page_inner() {
    std::thread::sleep(Duration::from_millis(2));
}

fn quick() -> ConfigBuilder {
    Config::builder()
        .memory_interval(Duration::from_millis(20))
        .leak_check_interval(None)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn get(app: &Router, uri: &str, headers: &[(header::HeaderName, &str)]) -> Resp {
    let mut req = Request::builder().method(Method::GET).uri(uri);
    for (k, v) in headers {
        req = req.header(k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn app(b: ConfigBuilder) -> (ProfilingServer, Router) {
    let s = ProfilingServer::new(b.build().unwrap()).unwrap();
    let r = s.router();
    (s, r)
}

#[tokio::test]
async fn assets_have_their_content_types_and_revalidate_with_etags() {
    let _g = LOCK.lock().await;
    let (_s, app) = app(quick());
    let page = get(&app, "/api/profiling/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(page.header(header::CACHE_CONTROL), "no-cache");
    assert_eq!(page.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    // Self-contained: every script and style is one of ours, loaded by a relative path.
    assert!(page.body.contains(r#"src="page/app.js""#) && page.body.contains(r#"href="page/style.css""#));
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "{}",
        page.body
    );
    // Rendered in the browser: the server writes no figure and no table row into it.
    assert!(!page.body.contains("<tr") && !page.body.contains("<td"));

    for (file, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("flame.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let r = get(&app, &format!("/api/profiling/page/{file}"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{file}");
        assert_eq!(r.header(header::CONTENT_TYPE), ty, "{file}");
        assert!(
            !r.body.contains("http://") && !r.body.contains("https://"),
            "{file} names an external URL"
        );
        let etag = r.header(header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = get(
            &app,
            &format!("/api/profiling/page/{file}"),
            &[(header::IF_NONE_MATCH, &etag)],
        )
        .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{file}");
        assert!(again.body.is_empty());
        let stale = get(
            &app,
            &format!("/api/profiling/page/{file}"),
            &[(header::IF_NONE_MATCH, "\"0\"")],
        )
        .await;
        assert_eq!(stale.status, StatusCode::OK, "{file}");
    }
    let r = get(&app, "/api/profiling/page/secrets.txt", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].as_str().unwrap().contains("secrets.txt"));
    let r = get(&app, "/api/profiling/page/..%2Fsrc%2Flib.rs", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/profiling/")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");

    let r = get(&app, "/api/profiling", &[]).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header(header::LOCATION), "/api/profiling/");
}

#[tokio::test]
async fn behind_a_token_the_page_loads_and_its_data_does_not() {
    let _g = LOCK.lock().await;
    let (_s, app) = app(quick().auth_token("s3cret"));
    for uri in ["/api/profiling", "/api/profiling/", "/api/profiling/page/app.js"] {
        let r = get(&app, uri, &[]).await;
        assert!(
            r.status.is_success() || r.status.is_redirection(),
            "{uri}: {}",
            r.status
        );
    }
    for uri in ["/api/profiling/call-tree", "/api/profiling/samples"] {
        assert_eq!(get(&app, uri, &[]).await.status, StatusCode::UNAUTHORIZED, "{uri}");
        let r = get(&app, uri, &[(header::AUTHORIZATION, "Bearer s3cret")]).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn call_tree_holds_functions_and_their_edges() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    page_outer();
    let (_s, app) = app(quick());
    let r = get(&app, "/api/profiling/call-tree", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    let id_of = |suffix: &str| {
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {v}"))["id"]
            .clone()
    };
    let (outer, inner) = (id_of("page_outer"), id_of("page_inner"));
    let nodes = v["call_tree"].as_array().unwrap();
    let outer_node = nodes.iter().find(|n| n["function"] == outer).expect("an outer node");
    let inner_node = nodes.iter().find(|n| n["function"] == inner).expect("an inner node");
    assert_eq!(inner_node["parent"], outer_node["id"], "inner is called from outer");
    assert_eq!(inner_node["calls"], 3);
    assert!(
        inner_node["self_wall_ns"].as_u64().unwrap() >= 6_000_000,
        "{inner_node}"
    );
}

#[tokio::test]
async fn samples_are_the_sampler_window_with_cpu_between_them() {
    let _g = LOCK.lock().await;
    let (s, app) = app(quick());
    // Samples are stamped in milliseconds: spin a few between them, or on a fast machine all
    // three land in one millisecond and no interval has a length to divide by.
    let spin = || {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(5) {
            std::hint::black_box(0u64);
        }
    };
    spin();
    s.sample_now();
    spin();
    s.sample_now();
    let v = get(&app, "/api/profiling/samples", &[]).await.json();
    let samples = v["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "{v}");
    assert!(
        samples[0]["cpu_percent"].is_null(),
        "the first sample has no predecessor"
    );
    for w in samples.windows(2) {
        assert!(
            w[1]["at_unix_ms"].as_u64() >= w[0]["at_unix_ms"].as_u64(),
            "oldest first"
        );
        assert!(w[1]["rss_bytes"].as_u64().unwrap() > 0);
    }
    assert!(
        samples.iter().skip(1).any(|s| s["cpu_percent"].is_number()),
        "some interval has a CPU figure: {v}"
    );
    assert_eq!(v["interval_secs"], 0.02);
    assert!(v["last_leak_report"].is_null(), "leak checks are off in this config");
}
