//! The handlers: extract and validate, call `profiling-core`, serialize.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use profiling_core::analyze::call_paths::{self, FunctionDetail, LookupError};
use profiling_core::analyze::diff::SnapshotDiff;
use profiling_core::analyze::leak::LeakReport;
use profiling_core::analyze::ranking::{Ranking, SortKey};
use profiling_core::record::snapshot::{FunctionStats, Window};
use profiling_core::{rank, RankOptions, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::limit::{expensive, off_workers};
use crate::metrics;
use crate::reports::{self, AllocationReport, CpuReport, MemoryReport};
use crate::snapshots::{valid_id, SnapshotSummary, StoredSnapshot};
use crate::state::{ProfilingServer, ServerState};

/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Default `limit` of the rankings.
pub const DEFAULT_LIMIT: usize = 20;

type Server = State<ProfilingServer>;

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

pub(crate) async fn bottlenecks(State(s): Server, Query(q): Query<RankQuery>) -> Result<Json<Ranking>, ApiError> {
    let sort = parse_sort(q.sort.as_deref())?;
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_LIMIT)?;
    let options = RankOptions::new().sort(sort).limit(limit);
    Ok(Json(
        off_workers(&s.shared, move |shared| rank(&shared.snapshot(), &options)).await?,
    ))
}

#[derive(Debug, Serialize)]
pub(crate) struct Functions {
    window: Window,
    allocations_counted: bool,
    functions: Vec<FunctionStats>,
}

pub(crate) async fn functions(State(s): Server) -> Result<Json<Functions>, ApiError> {
    let snap = off_workers(&s.shared, ServerState::snapshot).await?;
    Ok(Json(Functions {
        window: snap.window,
        allocations_counted: snap.allocations_counted,
        functions: snap.functions,
    }))
}

/// One call path through a function.
pub(crate) async fn function(State(s): Server, Path(name): Path<String>) -> Result<Json<FunctionDetail>, ApiError> {
    let snap = s.shared.snapshot();
    call_paths::function_detail(&snap, &name)
        .map(Json)
        .map_err(|e| match e {
            LookupError::NotFound(_) => ApiError::NotFound(e.to_string()),
            LookupError::Ambiguous { .. } => ApiError::BadRequest(e.to_string()),
        })
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
    Query(q): Query<LimitQuery>,
) -> Result<Json<AllocationReport>, ApiError> {
    let limit = parse_limit(q.limit.as_deref(), DEFAULT_LIMIT)?;
    let report = off_workers(&s.shared, move |shared| {
        reports::allocations(
            &shared.snapshot(),
            profiling_core::record::alloc_report::allocation_totals(),
            limit,
        )
    });
    Ok(Json(report.await?))
}

pub(crate) async fn leak_detection(State(s): Server) -> Result<Json<LeakReport>, ApiError> {
    let report = expensive(&s.shared, |shared| {
        shared.sampler.sample_now();
        Ok(shared.sampler.analyze_leaks(&shared.config.leak))
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
    Query(SnapshotQuery { label }): Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    if label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ApiError::BadRequest("label must be at most 200 characters".to_owned()));
    }
    let summary: SnapshotSummary = expensive(&s.shared, |shared| {
        let profile = shared.snapshot();
        let taken = profile.window.taken_unix_ms;
        let snap = StoredSnapshot {
            id: shared.store.next_id(taken),
            taken_unix_ms: taken,
            label,
            profile,
            memory: reports::memory(shared),
            cpu: reports::cpu(shared),
            allocations: profiling_core::record::alloc_report::allocation_totals(),
        };
        Ok(shared.store.insert(snap)?)
    })
    .await?;
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
pub(crate) fn lookup(shared: &ServerState, id: &str) -> Result<Arc<StoredSnapshot>, ApiError> {
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

/// The newer side of a diff: a stored snapshot, or the live window.
#[derive(Debug)]
pub(crate) enum DiffTarget {
    Stored(Arc<StoredSnapshot>),
    Live(Snapshot),
}

impl DiffTarget {
    pub(crate) fn id(&self) -> String {
        match self {
            DiffTarget::Stored(s) => s.id.clone(),
            DiffTarget::Live(_) => "live".to_owned(),
        }
    }

    pub(crate) fn profile(&self) -> &Snapshot {
        match self {
            DiffTarget::Stored(s) => &s.profile,
            DiffTarget::Live(p) => p,
        }
    }
}

/// The two sides of a diff: snapshot `base`, and snapshot `target` or, without one, the live
/// window.
pub(crate) fn lookup_pair(
    shared: &ServerState,
    base: &str,
    target: Option<&str>,
) -> Result<(Arc<StoredSnapshot>, DiffTarget), ApiError> {
    let base = lookup(shared, base)?;
    let target = match target {
        Some(t) => DiffTarget::Stored(lookup(shared, t)?),
        None => DiffTarget::Live(shared.snapshot()),
    };
    Ok((base, target))
}

/// 400 for a diff without `base`.
pub(crate) fn missing_base() -> ApiError {
    ApiError::BadRequest("missing query parameter `base` (a snapshot id)".to_owned())
}

/// A stored snapshot (possibly loaded from its file), serialized off the async workers.
pub(crate) async fn snapshot(State(s): Server, Path(id): Path<String>) -> Result<Response, ApiError> {
    let json = expensive(&s.shared, move |shared| {
        serde_json::to_vec(&*lookup(shared, &id)?).map_err(|e| ApiError::Internal(e.to_string()))
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], json.await?).into_response())
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

pub(crate) async fn diff(State(s): Server, Query(q): Query<DiffQuery>) -> Result<Json<DiffResponse>, ApiError> {
    let base_id = q.base.ok_or_else(missing_base)?;
    let diff = expensive(&s.shared, move |shared| {
        let (base, target) = lookup_pair(shared, &base_id, q.target.as_deref())?;
        Ok(DiffResponse {
            diff: profiling_core::analyze::diff::diff(&base.profile, target.profile()),
            base: base_id,
            target: target.id(),
        })
    })
    .await?;
    Ok(Json(diff))
}

#[derive(Debug, Serialize)]
pub(crate) struct ResetResponse {
    reset: bool,
    window: Window,
}

pub(crate) async fn reset(State(s): Server) -> Result<Json<ResetResponse>, ApiError> {
    let window = off_workers(&s.shared, |shared| {
        profiling_core::reset();
        shared.snapshot().window
    });
    Ok(Json(ResetResponse {
        reset: true,
        window: window.await?,
    }))
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
