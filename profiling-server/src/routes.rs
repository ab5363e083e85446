//! The route table. Every path the server answers is listed here; handlers live in
//! `handlers.rs`.
//!
//! Expensive routes (`POST snapshot`, `POST leak-detection`, `GET diff`, `GET snapshots/{id}`,
//! the legacy `leaks`, and with `profiling-full` flamegraphs, folded stacks, heap profiles and
//! the symbolizing of CPU profiles) run at most one at a time, off the async workers; a second
//! concurrent one gets 429 (`limit.rs`).

use axum::extract::OriginalUri;
use axum::http::Method;
use axum::middleware;
use axum::routing::{any, get, post};
use axum::Router;

use crate::auth;
use crate::error::ApiError;
use crate::handlers as h;
use crate::state::ProfilingServer;

/// Prefix of the JSON API and the page.
pub const API_PREFIX: &str = "/api/profiling";
/// The health route, answered without a token.
pub const HEALTH_PATH: &str = "/api/profiling/health";

/// The routes, to merge into any application router: no fallback outside the API prefix
/// (unknown paths under it answer a JSON 404), a known path with the wrong method answers
/// 405 with a JSON body.
pub(crate) fn router(server: ProfilingServer) -> Router {
    let api = Router::new()
        .route("/health", get(h::health))
        .route("/bottlenecks", get(h::bottlenecks))
        .route("/functions", get(h::functions))
        .route("/functions/{name}", get(h::function))
        .route("/memory", get(h::memory))
        .route("/cpu", get(h::cpu))
        .route("/allocations", get(h::allocations))
        .route("/leak-detection", post(h::leak_detection))
        .route("/snapshot", post(h::take_snapshot))
        .route("/snapshots", get(h::snapshots))
        .route("/snapshots/{id}", get(h::snapshot))
        .route("/diff", get(h::diff))
        .route("/reset", post(h::reset))
        .route("/call-tree", get(crate::page_api::call_tree))
        .route("/samples", get(crate::page_api::samples))
        .merge(full_routes())
        // A route, not a fallback: it moves with the router when mounted under a prefix.
        .route("/{*unknown}", any(not_found));
    // Legacy aliases, kept for compatibility.
    let legacy = Router::new()
        .route("/memory", get(h::memory))
        .route("/leaks", get(h::leak_detection))
        .route("/allocations", get(h::allocations));
    Router::new()
        .nest(API_PREFIX, api)
        .nest("/monitoring/profiling", legacy)
        .route(&server.config().metrics_path, get(h::metrics))
        .merge(crate::debug_pprof::routes(crate::debug_pprof::DEFAULT_PREFIX))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            auth::Guard::new(server.config()),
            auth::check,
        ))
        // The page holds no data: served outside the token check (its scripts send the token).
        .merge(crate::page::routes())
        .with_state(server)
}

/// The routes plus a JSON answer for unknown paths (404): what the standalone listener
/// serves.
pub(crate) fn standalone_router(server: ProfilingServer) -> Router {
    router(server).fallback(not_found)
}

async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// The `profiling-full` feature's routes (flamegraph and pprof outputs, `profiles.rs`), under
/// the API prefix. Without the feature the same paths answer 501 naming it.
fn full_routes() -> Router<ProfilingServer> {
    #[cfg(feature = "profiling-full")]
    use crate::profiles as p;
    #[cfg(not(feature = "profiling-full"))]
    mod p {
        pub(super) use super::needs_full as flamegraph;
        pub(super) use super::needs_full as flamegraph_diff;
        pub(super) use super::needs_full as folded;
        pub(super) use super::needs_full as pprof_cpu;
        pub(super) use super::needs_full as pprof_heap;
    }
    Router::new()
        .route("/flamegraph", get(p::flamegraph))
        .route("/flamegraph/diff", get(p::flamegraph_diff))
        .route("/folded", get(p::folded))
        .route("/pprof", get(p::pprof_cpu))
        .route("/pprof/heap", get(p::pprof_heap))
}

/// What a `profiling-full` route answers in a build without the feature.
#[cfg(not(feature = "profiling-full"))]
async fn needs_full(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotImplemented(format!(
        "{} needs the `profiling-full` feature of profiling-server (flamegraph and pprof outputs); rebuild with --features profiling-full",
        uri.path()
    ))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::config::Config;
    use crate::state::ProfilingServer;

    #[tokio::test]
    async fn expensive_requests_do_not_stack_up() {
        let server = ProfilingServer::new(Config::builder().leak_check_interval(None).build().unwrap()).unwrap();
        let app = server.router();
        let send = |method: &str, uri: &str| {
            let app = app.clone();
            let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap() }
        };
        // An expensive request is running: it holds the one permit.
        let permit = server.shared.try_expensive().unwrap();
        let mut limited = vec![
            ("POST", "/api/profiling/leak-detection"),
            ("POST", "/api/profiling/snapshot"),
            ("GET", "/api/profiling/diff?base=1-1"),
            ("GET", "/api/profiling/snapshots/1-1"),
            ("GET", "/monitoring/profiling/leaks"),
        ];
        // Everything that builds or loads a whole profile.
        if cfg!(feature = "profiling-full") {
            limited.extend([
                ("GET", "/api/profiling/flamegraph"),
                ("GET", "/api/profiling/flamegraph?source=heap"),
                ("GET", "/api/profiling/flamegraph/diff?base=1-1"),
                ("GET", "/api/profiling/folded"),
                ("GET", "/api/profiling/pprof/heap"),
            ]);
        }
        for (m, uri) in limited {
            let resp = send(m, uri).await;
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{uri}");
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        // Cheap ones are not held back.
        assert_eq!(send("GET", "/api/profiling/memory").await.status(), StatusCode::OK);
        drop(permit);
        assert_eq!(
            send("POST", "/api/profiling/leak-detection").await.status(),
            StatusCode::OK
        );
    }
}
