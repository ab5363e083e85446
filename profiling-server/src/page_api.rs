//! The two JSON documents the page needs that no other route serves:
//!
//! - `GET /api/profiling/call-tree`: the live window as one [`Snapshot`] (every function's
//!   figures and the call tree), what the in-browser flame graph and the callers/callees of a
//!   function page are drawn from. The same document a stored snapshot carries as `profile`.
//! - `GET /api/profiling/samples`: the sampler's window (RSS, heap and process CPU per
//!   sample, CPU percent between consecutive samples), for the memory and CPU charts, and the
//!   last background leak analysis, for the overview's alerts.
//!
//! Thin like every handler: read core, serialize; the snapshot walk runs off the async workers.

use axum::extract::State;
use axum::Json;
use profiling_core::analyze::leak::LeakReport;
use profiling_core::analyze::memory::MemorySample;
use profiling_core::Snapshot;
use serde::Serialize;

use crate::error::ApiError;
use crate::reports::cpu_between;
use crate::state::ProfilingServer;

/// `GET /api/profiling/call-tree`.
pub(crate) async fn call_tree(State(s): State<ProfilingServer>) -> Result<Json<Snapshot>, ApiError> {
    let shared = s.shared.clone();
    tokio::task::spawn_blocking(move || shared.snapshot())
        .await
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("worker task failed: {e}")))
}

/// One sample of the sampler's window, with the CPU use since the one before.
#[derive(Debug, Serialize)]
pub(crate) struct Sample {
    #[serde(flatten)]
    sample: MemorySample,
    /// Process CPU since the previous sample, percent of one core (`null` for the first).
    cpu_percent: Option<f64>,
}

/// `GET /api/profiling/samples`.
#[derive(Debug, Serialize)]
pub(crate) struct Samples {
    /// Seconds between samples.
    interval_secs: f64,
    /// The samples kept, oldest first.
    samples: Vec<Sample>,
    /// The latest background leak analysis (`null` before the first one ran).
    last_leak_report: Option<LeakReport>,
}

pub(crate) async fn samples(State(s): State<ProfilingServer>) -> Json<Samples> {
    let raw = s.shared.sampler.samples();
    let cpu = std::iter::once(None).chain(raw.windows(2).map(|w| cpu_between(&w[0], &w[1]).map(|c| c.0)));
    Json(Samples {
        interval_secs: s.shared.config.memory_interval.as_secs_f64(),
        samples: raw
            .iter()
            .zip(cpu)
            .map(|(&sample, cpu_percent)| Sample { sample, cpu_percent })
            .collect(),
        last_leak_report: s.shared.sampler.last_leak_report(),
    })
}
