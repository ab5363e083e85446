//! The handlers: extract and validate, call `profiling-core`, serialize.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use profiling_core::{rank, FunctionStats, LeakReport, RankOptions, Ranking, SnapshotDiff, SortKey, Window};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::reports::{self, AllocationReport, CpuReport, MemoryReport};
use crate::snapshots::{valid_id, SnapshotSummary, StoredSnapshot};
use crate::state::{ProfilingServer, Shared};
use crate::{html, metrics};

/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Default `limit` of the rankings.
pub const DEFAULT_LIMIT: usize = 20;

type Server = State<ProfilingServer>;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// `?sort=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RankQuery {
    sort: Option<String>,
    limit: Option<String>,
}

fn parse_limit(v: Option<&str>, default: usize) -> Result<usize, ApiError> {
    let Some(v) = v else { return Ok(default) };
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
        Ok(n) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "limit must be a whole number between 1 and {MAX_LIMIT}, got {v:?}"
        ))),
    }
}

fn parse_sort(v: Option<&str>) -> Result<SortKey, ApiError> {
    v.map_or(Ok(SortKey::default()), |s| {
        s.parse::<SortKey>().map_err(|e| ApiError::BadRequest(e.to_string()))
    })
}

/// Runs blocking work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker task failed: {e}")))
}

pub(crate) async fn page(State(s): Server) -> Html<String> {
    let shared = &s.shared;
    let ranking = rank(&shared.snapshot(), &RankOptions::new().limit(100));
    let memory = reports::memory(shared);
    let cpu = reports::cpu(shared);
    Html(html::page(&ranking, &memory, &cpu, "."))
}

#[derive(Debug, Serialize)]
pub(crate) struct Health {
    status: &'static str,
    enabled: bool,
    uptime_secs: f64,
    version: &'static str,
}

pub(crate) async fn health(State(s): Server) -> Json<Health> {
    Json(Health {
        status: "ok",
        enabled: profiling_core::is_enabled(),
        uptime_secs: s.shared.started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

pub(crate) async fn bottlenecks(
    State(s): Server,
    q: Result<Query<RankQuery>, QueryRejection>,
) -> Result<Json<Ranking>, ApiError> {
    let q = query(q)?;
    let sort = parse_sort(q.sort.as_deref())?;
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_LIMIT)?;
    Ok(Json(rank(
        &s.shared.snapshot(),
        &RankOptions::new().sort(sort).limit(limit),
    )))
}

#[derive(Debug, Serialize)]
pub(crate) struct Functions {
    window: Window,
    allocations_counted: bool,
    functions: Vec<FunctionStats>,
}

pub(crate) async fn functions(State(s): Server) -> Json<Functions> {
    let snap = s.shared.snapshot();
    Json(Functions {
        window: snap.window,
        allocations_counted: snap.allocations_counted,
        functions: snap.functions,
    })
}

/// One call path through a function.
#[derive(Debug, Serialize)]
pub(crate) struct CallPath {
    path: Vec<String>,
    calls: u64,
    self_wall_ns: u64,
    self_cpu_ns: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FunctionDetail {
    window: Window,
    #[serde(flatten)]
    function: FunctionStats,
    call_paths: Vec<CallPath>,
}

pub(crate) async fn function(
    State(s): Server,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<FunctionDetail>, ApiError> {
    let name = path(name)?;
    let snap = s.shared.snapshot();
    let suffix = format!("::{name}");
    let found: Vec<&FunctionStats> = match snap.function(&name) {
        Some(f) => vec![f],
        None => snap.functions.iter().filter(|f| f.name.ends_with(&suffix)).collect(),
    };
    let f = match found.as_slice() {
        [f] => (*f).clone(),
        [] => {
            return Err(ApiError::NotFound(format!(
                "no function named {name:?} has been called in this window"
            )))
        }
        many => {
            return Err(ApiError::BadRequest(format!(
                "{name:?} is ambiguous: {}; use the full name",
                many.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let mut call_paths: Vec<CallPath> = snap
        .call_tree
        .iter()
        .filter(|n| n.function == Some(f.id) && n.calls > 0)
        .map(|n| CallPath {
            path: snap.path(n.id).into_iter().map(str::to_owned).collect(),
            calls: n.calls,
            self_wall_ns: n.self_wall_ns,
            self_cpu_ns: n.self_cpu_ns,
        })
        .collect();
    call_paths.sort_by_key(|p| std::cmp::Reverse(p.self_wall_ns));
    Ok(Json(FunctionDetail {
        window: snap.window.clone(),
        function: f,
        call_paths,
    }))
}

pub(crate) async fn memory(State(s): Server) -> Json<MemoryReport> {
    Json(reports::memory(&s.shared))
}

pub(crate) async fn cpu(State(s): Server) -> Json<CpuReport> {
    Json(reports::cpu(&s.shared))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LimitQuery {
    limit: Option<String>,
}

pub(crate) async fn allocations(
    State(s): Server,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<AllocationReport>, ApiError> {
    let limit = parse_limit(query(q)?.limit.as_deref(), DEFAULT_LIMIT)?;
    let snap = s.shared.snapshot();
    Ok(Json(reports::allocations(
        &snap,
        profiling_core::allocation_totals(),
        limit,
    )))
}

pub(crate) async fn leak_detection(State(s): Server) -> Result<Json<LeakReport>, ApiError> {
    let shared: Arc<Shared> = Arc::clone(&s.shared);
    let _permit = shared.try_expensive()?;
    let worker = Arc::clone(&shared);
    let report = blocking(move || {
        worker.sampler.sample_now();
        worker.sampler.analyze_leaks(&worker.config.leak)
    })
    .await?;
    Ok(Json(report))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SnapshotQuery {
    label: Option<String>,
}

pub(crate) async fn take_snapshot(
    State(s): Server,
    q: Result<Query<SnapshotQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let label = query(q)?.label;
    if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ApiError::BadRequest("label must be at most 200 characters".to_owned()));
    }
    let shared = Arc::clone(&s.shared);
    let _permit = shared.try_expensive()?;
    let worker = Arc::clone(&shared);
    let summary: SnapshotSummary = blocking(move || {
        let profile = worker.snapshot();
        let taken = profile.window.taken_unix_ms;
        let snap = StoredSnapshot {
            id: worker.store.next_id(taken),
            taken_unix_ms: taken,
            label,
            profile,
            memory: reports::memory(&worker),
            cpu: reports::cpu(&worker),
            allocations: profiling_core::allocation_totals(),
        };
        worker.store.insert(snap)
    })
    .await?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let location = format!("/api/profiling/snapshots/{}", summary.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(summary)).into_response())
}

#[derive(Debug, Serialize)]
pub(crate) struct SnapshotList {
    snapshots: Vec<SnapshotSummary>,
    max_in_memory: usize,
    directory: Option<String>,
}

pub(crate) async fn snapshots(State(s): Server) -> Json<SnapshotList> {
    Json(SnapshotList {
        snapshots: s.shared.store.list(),
        max_in_memory: s.shared.config.max_snapshots,
        directory: s.shared.config.snapshot_dir.as_ref().map(|d| d.display().to_string()),
    })
}

/// A stored snapshot by id: 400 for a malformed id, 404 for an unknown one.
pub(crate) fn lookup(shared: &Shared, id: &str) -> Result<Arc<StoredSnapshot>, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::BadRequest(format!(
            "malformed snapshot id {id:?}: expected 1 to 64 of A-Z a-z 0-9 _ -"
        )));
    }
    shared
        .store
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no snapshot with id {id:?}")))
}

pub(crate) async fn snapshot(State(s): Server, id: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let id = path(id)?;
    let snap = lookup(&s.shared, &id)?;
    Ok(Json(&*snap).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DiffQuery {
    base: Option<String>,
    target: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DiffResponse {
    base: String,
    target: String,
    #[serde(flatten)]
    diff: SnapshotDiff,
}

pub(crate) async fn diff(
    State(s): Server,
    q: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffResponse>, ApiError> {
    let q = query(q)?;
    let base_id = q
        .base
        .ok_or_else(|| ApiError::BadRequest("missing query parameter `base` (a snapshot id)".to_owned()))?;
    let shared = Arc::clone(&s.shared);
    let _permit = shared.try_expensive()?;
    let base = lookup(&shared, &base_id)?;
    let target = q.target.map(|t| lookup(&shared, &t)).transpose()?;
    let worker = Arc::clone(&shared);
    let (target_id, diff) = blocking(move || match target {
        Some(t) => (t.id.clone(), profiling_core::diff_snapshots(&base.profile, &t.profile)),
        None => (
            "live".to_owned(),
            profiling_core::diff_snapshots(&base.profile, &worker.snapshot()),
        ),
    })
    .await?;
    Ok(Json(DiffResponse {
        base: base_id,
        target: target_id,
        diff,
    }))
}

#[derive(Debug, Serialize)]
pub(crate) struct ResetResponse {
    reset: bool,
    window: Window,
}

pub(crate) async fn reset(State(s): Server) -> Json<ResetResponse> {
    profiling_core::reset();
    Json(ResetResponse {
        reset: true,
        window: s.shared.snapshot().window,
    })
}

pub(crate) use metrics::handler as metrics;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None, 20).unwrap(), 20);
        assert_eq!(parse_limit(Some("5"), 20).unwrap(), 5);
        for bad in ["0", "1001", "-1", "ten", "", "99999999999999999999999"] {
            let e = parse_limit(Some(bad), 20).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn sort_keys() {
        assert_eq!(parse_sort(None).unwrap(), SortKey::SelfWall);
        assert_eq!(parse_sort(Some("cpu")).unwrap(), SortKey::Cpu);
        assert!(parse_sort(Some("bogus")).unwrap_err().message().contains("valid keys"));
    }
}
