//! Handlers of the `profiling-full` routes: flamegraphs (instrumented, sampled CPU, heap),
//! folded stacks, pprof protobufs and differential flamegraphs. Thin: validate, call
//! `profiling_core::{flamegraph, cpu_profile, heap_profile}`, set the content type.
//!
//! - `GET /api/profiling/flamegraph?source=instrumented|cpu|heap&weight=..&seconds=N` (SVG)
//! - `GET /api/profiling/folded?weight=..` (text)
//! - `GET /api/profiling/pprof?seconds=N` (gzip protobuf, CPU)
//! - `GET /api/profiling/pprof/heap` (gzip protobuf)
//! - `GET /api/profiling/flamegraph/diff?base={id}&target={id}&weight=..` (SVG; no
//!   `target`: the live window)
//!
//! `seconds` is 1..=60 (default 10, [`cpu_profile::MAX_SECONDS`]), else 400; one CPU profile at
//! a time (429 otherwise). Everything that builds or loads a whole profile is an expensive
//! request (`limit.rs`: one at a time, off the async workers, 429 with `Retry-After`).
//! Heap profiles that are off answer 501 with the way to switch them on.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use profiling_core::render::cpu_profile::{self, CpuSampler};
use profiling_core::render::flamegraph;
use profiling_core::render::fold::{self, Weight};
use profiling_core::render::heap_profile;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::Query;
use crate::handlers::{lookup_pair, missing_base};
use crate::limit::{expensive, expensive_queued};
use crate::state::{ProfilingServer, ServerState};

/// Default length of a sampled CPU profile, seconds.
pub const DEFAULT_SECONDS: u64 = 10;

const SVG: &str = "image/svg+xml";
const FOLDED: &str = "text/plain; charset=utf-8";
const PPROF: &str = "application/octet-stream";

type Server = State<ProfilingServer>;

fn body(content_type: &'static str, bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

fn attachment(name: &'static str, bytes: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, PPROF), (header::CONTENT_DISPOSITION, name)],
        bytes,
    )
        .into_response()
}

fn weight(w: Option<&str>) -> Result<Weight, ApiError> {
    w.map_or(Ok(Weight::default()), |w| {
        w.parse::<Weight>().map_err(|e| ApiError::BadRequest(e.to_string()))
    })
}

fn seconds(s: Option<u64>) -> Result<Duration, ApiError> {
    match s.unwrap_or(DEFAULT_SECONDS) {
        n @ 1..=cpu_profile::MAX_SECONDS => Ok(Duration::from_secs(n)),
        n => Err(ApiError::BadRequest(format!(
            "seconds must be 1 to {}, got {n}",
            cpu_profile::MAX_SECONDS
        ))),
    }
}

/// A sampled CPU profile of `d`, turned into `render`'s output. The sampler starts here (429
/// if one is running) and the wait is async: a client that disconnects drops the sampler and
/// nothing goes on. Symbolizing and rendering then run as an expensive request, waiting for
/// the permit rather than throwing the samples away.
pub(crate) async fn sample_cpu<T, F>(shared: &Arc<ServerState>, d: Duration, render: F) -> Result<T, ApiError>
where
    F: FnOnce(&cpu_profile::CpuProfile) -> profiling_core::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let sampler = CpuSampler::start(cpu_profile::DEFAULT_FREQUENCY_HZ)?;
    tokio::time::sleep(d).await;
    expensive_queued(shared, move |_| Ok(render(&sampler.finish()?)?)).await
}

/// `?source=&weight=&seconds=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FlamegraphQuery {
    source: Option<String>,
    weight: Option<String>,
    seconds: Option<u64>,
}

pub(crate) async fn flamegraph(State(s): Server, Query(q): Query<FlamegraphQuery>) -> Result<Response, ApiError> {
    match q.source.as_deref().unwrap_or("instrumented") {
        "instrumented" => {
            let w = weight(q.weight.as_deref())?;
            let svg = expensive(&s.shared, move |shared| {
                Ok(flamegraph::render_snapshot(&shared.snapshot(), w)?)
            });
            Ok(body(SVG, svg.await?))
        }
        "cpu" => {
            if q.weight.as_deref().is_some_and(|w| w != "cpu") {
                return Err(ApiError::BadRequest(
                    "source=cpu is sampled CPU time; `weight` applies to source=instrumented".to_owned(),
                ));
            }
            let d = seconds(q.seconds)?;
            let svg = sample_cpu(&s.shared, d, cpu_profile::CpuProfile::flamegraph_svg).await?;
            Ok(body(SVG, svg))
        }
        "heap" => {
            let svg = expensive(&s.shared, |_| Ok(heap_profile::heap_flamegraph()?)).await?;
            Ok(body(SVG, svg))
        }
        other => Err(ApiError::BadRequest(format!(
            "unknown source {other:?}; expected instrumented, cpu or heap"
        ))),
    }
}

/// `?weight=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FoldedQuery {
    weight: Option<String>,
}

pub(crate) async fn folded(State(s): Server, Query(q): Query<FoldedQuery>) -> Result<Response, ApiError> {
    let w = weight(q.weight.as_deref())?;
    let text = expensive(&s.shared, move |shared| Ok(fold::fold_text(&shared.snapshot(), w))).await?;
    Ok(body(FOLDED, text.into_bytes()))
}

/// `?seconds=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PprofQuery {
    seconds: Option<u64>,
}

pub(crate) async fn pprof_cpu(State(s): Server, Query(q): Query<PprofQuery>) -> Result<Response, ApiError> {
    let d = seconds(q.seconds)?;
    let gz = sample_cpu(&s.shared, d, cpu_profile::CpuProfile::pprof_gzip).await?;
    Ok(attachment("attachment; filename=\"cpu.pb.gz\"", gz))
}

pub(crate) async fn pprof_heap(State(s): Server) -> Result<Response, ApiError> {
    let gz = expensive(&s.shared, |_| Ok(heap_profile::heap_pprof_or_live()?)).await?;
    Ok(attachment("attachment; filename=\"heap.pb.gz\"", gz))
}

/// `?base=&target=&weight=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffQuery {
    base: Option<String>,
    target: Option<String>,
    weight: Option<String>,
}

pub(crate) async fn flamegraph_diff(State(s): Server, Query(q): Query<DiffQuery>) -> Result<Response, ApiError> {
    let w = weight(q.weight.as_deref())?;
    let base_id = q.base.ok_or_else(missing_base)?;
    let svg = expensive(&s.shared, move |shared| {
        let (base, target) = lookup_pair(shared, &base_id, q.target.as_deref())?;
        Ok(flamegraph::render_diff(&base.profile, target.profile(), w)?)
    });
    Ok(body(SVG, svg.await?))
}
