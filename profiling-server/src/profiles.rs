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
//! `seconds` is 1..=60 (default 10), else 400; one CPU profile at a time (429 otherwise).
//! Heap profiles that are off answer 501 with the way to switch them on.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use profiling_core::cpu_profile::{self, CpuSampler};
use profiling_core::{flamegraph, fold, heap_profile, Weight};
use serde::Deserialize;

use crate::error::ApiError;
use crate::handlers::lookup;
use crate::state::ProfilingServer;

/// Default length of a sampled CPU profile, seconds.
pub const DEFAULT_SECONDS: u64 = 10;

const SVG: &str = "image/svg+xml";
const FOLDED: &str = "text/plain; charset=utf-8";
const PPROF: &str = "application/octet-stream";

type Server = State<ProfilingServer>;

pub(crate) fn core_error(e: profiling_core::Error) -> ApiError {
    match e {
        profiling_core::Error::ProfilerBusy => ApiError::Busy,
        profiling_core::Error::InvalidConfig(m) => ApiError::BadRequest(m),
        profiling_core::Error::HeapProfilingUnavailable(m) => ApiError::NotImplemented(m),
        other => ApiError::Internal(other.to_string()),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker task failed: {e}")))
}

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

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Samples the process for `d` without holding a blocking thread while waiting: the sampler
/// starts here (429 if one is running), the wait is async, symbolizing is blocking. A client
/// that disconnects drops the future, and with it the sampler.
pub(crate) async fn sample_cpu(d: Duration) -> Result<cpu_profile::CpuProfile, ApiError> {
    let sampler = CpuSampler::start(cpu_profile::DEFAULT_FREQUENCY_HZ).map_err(core_error)?;
    tokio::time::sleep(d).await;
    blocking(move || sampler.finish()).await?.map_err(core_error)
}

/// `?source=&weight=&seconds=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FlamegraphQuery {
    source: Option<String>,
    weight: Option<String>,
    seconds: Option<u64>,
}

pub(crate) async fn flamegraph(
    State(s): Server,
    q: Result<Query<FlamegraphQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    match q.source.as_deref().unwrap_or("instrumented") {
        "instrumented" => {
            let w = weight(q.weight.as_deref())?;
            let shared = Arc::clone(&s.shared);
            let svg = blocking(move || flamegraph::render_snapshot(&shared.snapshot(), w)).await?;
            Ok(body(SVG, svg.map_err(core_error)?))
        }
        "cpu" => {
            if q.weight.as_deref().is_some_and(|w| w != "cpu") {
                return Err(ApiError::BadRequest(
                    "source=cpu is sampled CPU time; `weight` applies to source=instrumented".to_owned(),
                ));
            }
            let d = seconds(q.seconds)?;
            let profile = sample_cpu(d).await?;
            let svg = blocking(move || profile.flamegraph_svg()).await?;
            Ok(body(SVG, svg.map_err(core_error)?))
        }
        "heap" => {
            let svg = blocking(heap_profile::heap_flamegraph).await?;
            Ok(body(SVG, svg.map_err(core_error)?))
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

pub(crate) async fn folded(
    State(s): Server,
    q: Result<Query<FoldedQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let w = weight(query(q)?.weight.as_deref())?;
    let text = fold::fold_text(&s.shared.snapshot(), w);
    Ok(body(FOLDED, text.into_bytes()))
}

/// `?seconds=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PprofQuery {
    seconds: Option<u64>,
}

pub(crate) async fn pprof_cpu(q: Result<Query<PprofQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let d = seconds(query(q)?.seconds)?;
    let profile = sample_cpu(d).await?;
    let gz = blocking(move || profile.pprof_gzip()).await?.map_err(core_error)?;
    Ok(attachment("attachment; filename=\"cpu.pb.gz\"", gz))
}

pub(crate) async fn pprof_heap() -> Result<Response, ApiError> {
    let gz = blocking(heap_profile::heap_pprof).await?.map_err(core_error)?;
    Ok(attachment("attachment; filename=\"heap.pb.gz\"", gz))
}

/// `?base=&target=&weight=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffQuery {
    base: Option<String>,
    target: Option<String>,
    weight: Option<String>,
}

pub(crate) async fn flamegraph_diff(
    State(s): Server,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let w = weight(q.weight.as_deref())?;
    let base_id = q
        .base
        .ok_or_else(|| ApiError::BadRequest("missing query parameter `base` (a snapshot id)".to_owned()))?;
    let shared = Arc::clone(&s.shared);
    let base = lookup(&shared, &base_id)?;
    let target = q.target.map(|t| lookup(&shared, &t)).transpose()?;
    let svg = blocking(move || match target {
        Some(t) => flamegraph::render_diff(&base.profile, &t.profile, w),
        None => flamegraph::render_diff(&base.profile, &shared.snapshot(), w),
    })
    .await?;
    Ok(body(SVG, svg.map_err(core_error)?))
}
