//! The route table. Every path the server answers is listed here; handlers live in
//! `handlers.rs`.
//!
//! Expensive routes (`POST snapshot`, `POST leak-detection`, `GET diff` and the legacy
//! `leaks`) run at most one at a time; a second concurrent one gets 429.

use axum::http::{Method, Uri};
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;

use crate::auth;
use crate::error::ApiError;
use crate::handlers as h;
use crate::state::ProfilingServer;

/// Prefix of the JSON API and the page.
pub const API_PREFIX: &str = "/api/profiling";
/// The health route, answered without a token.
pub const HEALTH_PATH: &str = "/api/profiling/health";

/// The routes without a fallback for unknown paths, so they merge into any application
/// router. A known path with the wrong method answers 405 with a JSON body.
pub(crate) fn router(server: ProfilingServer) -> Router {
    let api = Router::new()
        .route(
            "/api/profiling",
            get(|| async { Redirect::permanent("/api/profiling/") }),
        )
        .route("/api/profiling/", get(h::page))
        .route("/api/profiling/health", get(h::health))
        .route("/api/profiling/bottlenecks", get(h::bottlenecks))
        .route("/api/profiling/functions", get(h::functions))
        .route("/api/profiling/functions/{name}", get(h::function))
        .route("/api/profiling/memory", get(h::memory))
        .route("/api/profiling/cpu", get(h::cpu))
        .route("/api/profiling/allocations", get(h::allocations))
        .route("/api/profiling/leak-detection", post(h::leak_detection))
        .route("/api/profiling/snapshot", post(h::take_snapshot))
        .route("/api/profiling/snapshots", get(h::snapshots))
        .route("/api/profiling/snapshots/{id}", get(h::snapshot))
        .route("/api/profiling/diff", get(h::diff))
        .route("/api/profiling/reset", post(h::reset))
        .route("/metrics", get(h::metrics))
        // Legacy aliases, kept for compatibility.
        .route("/monitoring/profiling/memory", get(h::memory))
        .route("/monitoring/profiling/leaks", get(h::leak_detection))
        .route("/monitoring/profiling/allocations", get(h::allocations))
        .merge(full_routes())
        .merge(crate::debug_pprof::routes(crate::debug_pprof::DEFAULT_PREFIX))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    api.layer(middleware::from_fn_with_state(server.clone(), auth::require_token))
        .with_state(server)
}

/// The routes plus a JSON answer for unknown paths (404): what the standalone listener
/// serves.
pub(crate) fn standalone_router(server: ProfilingServer) -> Router {
    router(server).fallback(not_found)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Flamegraph and pprof outputs: the `profiling-full` feature's routes. Without the feature
/// they answer 501 naming it.
#[cfg(not(feature = "profiling-full"))]
fn full_routes() -> Router<ProfilingServer> {
    async fn needs_full(uri: Uri) -> ApiError {
        ApiError::NotImplemented(format!(
            "{} needs the `profiling-full` feature of profiling-server (flamegraph and pprof outputs); rebuild with --features profiling-full",
            uri.path()
        ))
    }
    Router::new()
        .route("/api/profiling/flamegraph", get(needs_full))
        .route("/api/profiling/flamegraph/diff", get(needs_full))
        .route("/api/profiling/folded", get(needs_full))
        .route("/api/profiling/pprof", get(needs_full))
        .route("/api/profiling/pprof/heap", get(needs_full))
}

/// Flamegraph and pprof outputs: the `profiling-full` feature's handlers (`profiles.rs`).
#[cfg(feature = "profiling-full")]
fn full_routes() -> Router<ProfilingServer> {
    use crate::profiles as p;
    Router::new()
        .route("/api/profiling/flamegraph", get(p::flamegraph))
        .route("/api/profiling/flamegraph/diff", get(p::flamegraph_diff))
        .route("/api/profiling/folded", get(p::folded))
        .route("/api/profiling/pprof", get(p::pprof_cpu))
        .route("/api/profiling/pprof/heap", get(p::pprof_heap))
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
        for (m, uri) in [
            ("POST", "/api/profiling/leak-detection"),
            ("POST", "/api/profiling/snapshot"),
            ("GET", "/api/profiling/diff?base=1-1"),
            ("GET", "/monitoring/profiling/leaks"),
        ] {
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
