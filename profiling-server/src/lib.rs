//! # profiling-server
//!
//! The HTTP side of the profiling framework: a JSON API over what `profiling-core`
//! records (bottleneck rankings, per-function statistics, memory, CPU, allocations, leak
//! analysis, snapshots and their diffs), Prometheus metrics, and a self-contained page for
//! people.
//!
//! ## Getting started
//!
//! Mount the routes in an axum application:
//!
//! ```no_run
//! # async fn run() -> profiling_server::Result<()> {
//! let profiling = profiling_server::ProfilingServer::from_env()?;
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .merge(profiling_server::router(&profiling));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! or, in an application that is not axum (nor even async), serve them on their own
//! listener (`PROFILING_BIND`, default `127.0.0.1:8080`) from a thread:
//!
//! ```
//! use profiling_server::{Config, ProfilingServer};
//!
//! let config = Config::builder().bind("127.0.0.1:0".parse().unwrap()).build()?;
//! let handle = ProfilingServer::new(config)?.start()?;
//! println!("open http://{}/api/profiling/", handle.local_addr());
//! drop(handle); // stops the server
//! # Ok::<(), profiling_server::Error>(())
//! ```
//!
//! ## Key concepts
//!
//! - **Configuration** comes from [`Config::builder`] and the environment
//!   ([`Config::from_env`]); a malformed variable is an error naming it. See [`config`].
//! - **Errors** are JSON `{"error": "..."}` with the right status ([`ApiError`]); bad input is
//!   400 or 404, never a panic; requests that build or load a whole profile run one at a
//!   time off the async workers (429 with `Retry-After` for the others).
//! - **Access**: only loopback and configured host names in `Host`, no cross-origin state
//!   change, an optional bearer token (see [`http_api`]). If your application already serves
//!   `/metrics`, set [`ConfigBuilder::metrics_path`]; to mount under a prefix,
//!   `Router::nest("/ops", profiling_server::router(&server))`.
//! - **Background sampling**: one thread reads RSS, heap and CPU every interval and keeps a
//!   bounded ring for the growth regression and the leak analysis; it stops when the
//!   server (and every router made from it) is dropped.
//! - **Snapshots** are kept in memory (bounded) and, with `PROFILING_SNAPSHOT_DIR`, written
//!   atomically to disk.
//!
//! Every endpoint, with real requests and responses, is in [`http_api`].

mod auth;
pub mod config;
pub mod debug_pprof;
mod error;
mod extract;
mod handlers;
mod limit;
mod metrics;
mod overhead;
mod page;
mod page_api;
#[cfg(feature = "profiling-full")]
mod profiles;
#[cfg(feature = "push")]
pub mod push;
mod reports;
mod routes;
mod serve;
mod snapshots;
mod state;

pub use config::{Config, ConfigBuilder, DEFAULT_BIND};
pub use error::{ApiError, Error, Result};
pub use handlers::{DEFAULT_LIMIT, MAX_LIMIT};
pub use metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, LATENCY_BUCKETS};
pub use overhead::{calibration, Calibration};
pub use reports::{AllocationReport, CpuReport, FunctionAllocations, MemoryReport};
pub use routes::{API_PREFIX, HEALTH_PATH};
pub use serve::{ServerHandle, DEFAULT_SHUTDOWN_GRACE, WORKER_THREADS};
pub use snapshots::{SnapshotSummary, StoredSnapshot};
pub use state::ProfilingServer;

/// The routes of `server`, to merge into an application's router. Same as
/// [`ProfilingServer::router`].
pub fn router(server: &ProfilingServer) -> axum::Router {
    server.router()
}

#[doc = include_str!("../../docs/http-api.md")]
pub mod http_api {}
