//! Reads of a full, deep call tree cost O(nodes), not O(nodes × depth).
//!
//! A `#[profiled]` recursion deeper than the call-tree cap fills the whole tree with one
//! chain. Every read endpoint then walks that tree; before recursion was folded and paths
//! were built incrementally, each rebuilt every node's path (function detail: 1.8 s and
//! +576 MiB at depth 5,000). Time is not asserted here (overhead is measured, not timed in
//! tests): the bytes each request allocates are, against a bound linear in the nodes that the
//! quadratic code exceeded by two orders of magnitude.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use profiling_core::record::alloc_report::allocation_totals;
use profiling_core::record::config::set_max_call_tree_nodes;
use profiling_core::{profiled, snapshot, ProfilingAllocator};
use profiling_server::{Config, ProfilingServer};
use tower::ServiceExt;

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

/// Call-tree cap: the root and (about) 4,000 frames of `deep`.
const CAP: u32 = 4_001;
/// Deeper than the cap: the last 2,000 calls fold into the deepest node.
const DEPTH: u32 = 6_000;
/// Allowed allocation per node of the call tree, plus a constant for the response itself.
const BYTES_PER_NODE: u64 = 2 * 1024;
const BYTES_FIXED: u64 = 4 << 20;

#[profiled]
fn deep(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 + std::hint::black_box(deep(n - 1))
    }
}

/// Bytes allocated by the whole process so far (every thread's counts, published).
fn allocated() -> u64 {
    allocation_totals().counters.alloc_bytes
}

#[tokio::test(flavor = "current_thread")]
async fn reads_of_a_full_deep_call_tree_allocate_linearly_in_nodes() {
    let server = ProfilingServer::new(Config::builder().leak_check_interval(None).build().unwrap()).unwrap();
    let app = server.router();
    set_max_call_tree_nodes(CAP).unwrap();
    let depth = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| deep(DEPTH))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(depth, DEPTH);

    let snap = snapshot();
    let nodes = snap.call_tree.len() as u64;
    assert_eq!(snap.call_tree_nodes, CAP as usize, "the tree is full");
    let f = snap.function("server_deep_recursion::deep").unwrap();
    assert_eq!(f.calls, u64::from(DEPTH) + 1, "calls stay exact");
    // Nodes of the chain: all of the tree but the root (and any node another thread made).
    let chain = snap.call_tree.iter().filter(|n| n.function == Some(f.id)).count() as u64;
    assert!(
        chain + 2 >= u64::from(CAP),
        "{chain} nodes of deep under a cap of {CAP}"
    );
    assert_eq!(snap.folded_calls, u64::from(DEPTH) + 1 - chain);
    let bound = BYTES_PER_NODE * nodes + BYTES_FIXED;

    let mut uris = vec![
        "/api/profiling/functions/deep",
        "/api/profiling/bottlenecks",
        "/metrics",
    ];
    if cfg!(feature = "profiling-full") {
        uris.push("/api/profiling/folded?weight=calls");
        uris.push("/api/profiling/flamegraph?source=instrumented&weight=calls");
    }
    for uri in uris {
        let before = allocated();
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let spent = allocated() - before;
        assert_eq!(status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&body));
        assert!(
            spent <= bound,
            "{uri} allocated {spent} bytes for {nodes} nodes: more than {BYTES_PER_NODE} per node + {BYTES_FIXED}"
        );
        if uri == "/api/profiling/functions/deep" {
            let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(j["calls"], DEPTH + 1);
            let paths = j["call_paths"].as_array().unwrap();
            assert_eq!(paths.len(), 1, "the recursion is one path: {paths:?}");
            assert_eq!(paths[0]["path"], serde_json::json!(["server_deep_recursion::deep"]));
            // Calls past the cap were folded into the deepest node but not counted on it.
            assert_eq!(paths[0]["calls"], chain);
            assert_eq!(paths[0]["recursion_depth"], chain);
            assert_eq!(j["callers"][0]["function"], "server_deep_recursion::deep");
        }
        if uri.starts_with("/api/profiling/folded") {
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("server_deep_recursion::deep {chain}\n")
            );
        }
    }
}
