//! Go-compatible profile endpoints (`net/http/pprof` conventions), for scrapers such as
//! Grafana Alloy's `pyroscope.scrape` and Parca. Every answer is a gzip pprof protobuf with
//! `Content-Type: application/octet-stream` and a `Content-Disposition` filename, or a JSON
//! error (never HTML). Mounted under [`DEFAULT_PREFIX`] by the route table, behind the same
//! bearer-token check as every other route; [`router`] mounts them under another prefix.
//!
//! | path | answer |
//! |---|---|
//! | `/profile?seconds=N` | sampled CPU for N s (default 30, 1..=60; 400 otherwise; 429 while another runs) |
//! | `/heap`, `/allocs` | jemalloc heap profile (`heap-profile` feature and `_RJEM_MALLOC_CONF=prof:true`), else 501 saying how to switch it on |
//! | `/goroutine`, `/mutex`, `/block` | a valid profile with no samples (nothing of the kind exists here), so default scrape configs do not fail |
//! | `/wall`, `/cpu`, `/alloc`, `/calls` `?seconds=N` | the instrumented call tree over exactly the next N s (a delta between two snapshots); without `seconds`, the whole current window. All six sample types are present; the path picks the default one |
//!
//! Only with `profiling-full`; without it every path answers 501 naming the feature.

use axum::Router;

use crate::state::ProfilingServer;

/// Where the routes are mounted by default: Go's path, which scrapers probe.
pub const DEFAULT_PREFIX: &str = "/debug/pprof";

/// The paths under the prefix.
pub const PATHS: [&str; 10] = [
    "/profile",
    "/heap",
    "/allocs",
    "/goroutine",
    "/mutex",
    "/block",
    "/wall",
    "/cpu",
    "/alloc",
    "/calls",
];

/// The routes under `prefix` (e.g. `/internal/pprof`, no trailing `/`) with `server`'s
/// state and bearer-token check, to merge into an application's router when the default
/// prefix does not suit (the default mount stays).
pub fn router(server: &ProfilingServer, prefix: &str) -> Router {
    routes(prefix)
        .layer(axum::middleware::from_fn_with_state(
            crate::auth::Guard::new(server.config()),
            crate::auth::check,
        ))
        .with_state(server.clone())
}

/// The routes under `prefix` (no trailing `/`), without state or auth.
#[cfg(not(feature = "profiling-full"))]
pub(crate) fn routes(prefix: &str) -> Router<ProfilingServer> {
    use axum::http::Uri;
    use axum::routing::get;

    use crate::error::ApiError;

    async fn needs_full(uri: Uri) -> ApiError {
        ApiError::NotImplemented(format!(
            "{} needs the `profiling-full` feature of profiling-server (pprof outputs); rebuild with --features profiling-full",
            uri.path()
        ))
    }
    PATHS
        .iter()
        .fold(Router::new(), |r, p| r.route(&format!("{prefix}{p}"), get(needs_full)))
}

#[cfg(feature = "profiling-full")]
pub(crate) use full::routes;

#[cfg(feature = "profiling-full")]
mod full {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::rejection::QueryRejection;
    use axum::extract::{Query, State};
    use axum::http::header;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use profiling_core::render::cpu_profile;
    use profiling_core::render::fold::Weight;
    use profiling_core::render::heap_profile;
    use profiling_core::render::pprof::{gzip_profile, tree_profile, tree_profile_delta};
    use serde::Deserialize;

    use crate::error::ApiError;
    use crate::limit::blocking;
    use crate::profiles::sample_cpu;
    use crate::state::ProfilingServer;

    fn core_error(e: profiling_core::Error) -> ApiError {
        ApiError::from(e)
    }

    /// Go's default length of `/profile`, seconds.
    pub const DEFAULT_CPU_SECONDS: u64 = 30;

    /// `?seconds=`.
    #[derive(Debug, Default, Deserialize)]
    pub(crate) struct Seconds {
        seconds: Option<u64>,
    }

    fn seconds(q: Result<Query<Seconds>, QueryRejection>) -> Result<Option<Duration>, ApiError> {
        let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        q.seconds
            .map(|n| {
                let d = Duration::from_secs(n);
                cpu_profile::check_duration(d).map(|()| d).map_err(core_error)
            })
            .transpose()
    }

    fn pprof(filename: &str, gz: Vec<u8>) -> Response {
        let disposition = format!("attachment; filename=\"{filename}\"");
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            gz,
        )
            .into_response()
    }

    async fn profile(
        State(s): State<ProfilingServer>,
        q: Result<Query<Seconds>, QueryRejection>,
    ) -> Result<Response, ApiError> {
        let d = seconds(q)?.unwrap_or(Duration::from_secs(DEFAULT_CPU_SECONDS));
        let gz = sample_cpu(&s.shared, d, |p| p.pprof_gzip()).await?;
        Ok(pprof("profile", gz))
    }

    async fn heap(filename: &'static str) -> Result<Response, ApiError> {
        let gz = blocking(heap_profile::heap_pprof_or_live).await?.map_err(core_error)?;
        Ok(pprof(filename, gz))
    }

    /// A valid profile with `sample_types` and no sample.
    fn empty(
        filename: &'static str,
        sample_types: &'static [(&'static str, &'static str)],
    ) -> Result<Response, ApiError> {
        let p = profiling_core::render::pprof::empty_profile(sample_types);
        Ok(pprof(filename, gzip_profile(&p).map_err(core_error)?))
    }

    /// The call tree over the next `seconds` (or the whole window), `weight` first.
    async fn tree(
        server: ProfilingServer,
        q: Result<Query<Seconds>, QueryRejection>,
        weight: Weight,
        filename: &'static str,
    ) -> Result<Response, ApiError> {
        let d = seconds(q)?;
        let shared = Arc::clone(&server.shared);
        let p = match d {
            None => blocking(move || tree_profile(&shared.snapshot(), weight)).await?,
            Some(d) => {
                let s = Arc::clone(&shared);
                let earlier = blocking(move || s.snapshot()).await?;
                tokio::time::sleep(d).await;
                blocking(move || tree_profile_delta(&earlier, &shared.snapshot(), weight)).await?
            }
        };
        Ok(pprof(filename, gzip_profile(&p).map_err(core_error)?))
    }

    /// The routes under `prefix` (no trailing `/`), without state or auth.
    pub(crate) fn routes(prefix: &str) -> Router<ProfilingServer> {
        type Q = Result<Query<Seconds>, QueryRejection>;
        const CONTENTION: &[(&str, &str)] = &[("contentions", "count"), ("delay", "nanoseconds")];
        let tree_route = |weight: Weight, name: &'static str| {
            get(move |State(s): State<ProfilingServer>, q: Q| tree(s, q, weight, name))
        };
        Router::new()
            .route(&format!("{prefix}/profile"), get(profile))
            .route(&format!("{prefix}/heap"), get(|| heap("heap")))
            .route(&format!("{prefix}/allocs"), get(|| heap("allocs")))
            .route(
                &format!("{prefix}/goroutine"),
                get(|| async { empty("goroutine", &[("goroutine", "count")]) }),
            )
            .route(&format!("{prefix}/mutex"), get(|| async { empty("mutex", CONTENTION) }))
            .route(&format!("{prefix}/block"), get(|| async { empty("block", CONTENTION) }))
            .route(&format!("{prefix}/wall"), tree_route(Weight::Wall, "wall"))
            .route(&format!("{prefix}/cpu"), tree_route(Weight::Cpu, "cpu"))
            .route(&format!("{prefix}/alloc"), tree_route(Weight::AllocBytes, "alloc"))
            .route(&format!("{prefix}/calls"), tree_route(Weight::Calls, "calls"))
    }
}
