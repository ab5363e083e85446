//! The server's state: configuration, the memory sampler, the snapshot store and the guard
//! that keeps expensive requests from stacking up. [`ProfilingServer`] is a cheap handle
//! to it; the sampler thread stops when the last handle (and the last router made from
//! it) is dropped.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use profiling_core::analyze::memory::{MemorySampler, SamplerConfig};
use profiling_core::Snapshot;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::overhead;
use crate::snapshots::SnapshotStore;

#[derive(Debug)]
pub(crate) struct ServerState {
    pub(crate) config: Config,
    pub(crate) sampler: MemorySampler,
    pub(crate) store: SnapshotStore,
    pub(crate) expensive: Semaphore,
    pub(crate) started: Instant,
}

impl ServerState {
    /// A permit for an expensive request, or 429 when one is running.
    pub(crate) fn try_expensive(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.expensive.try_acquire().map_err(|_| ApiError::Busy)
    }

    /// The current window: where every route reads the recorded figures.
    pub(crate) fn snapshot(&self) -> Snapshot {
        profiling_core::snapshot()
    }
}

/// The profiling server: state shared by its routes. Clone it freely.
///
/// ```no_run
/// # async fn run() -> profiling_server::Result<()> {
/// use profiling_server::{Config, ProfilingServer};
///
/// let server = ProfilingServer::new(Config::from_env()?)?;
/// // Mount the routes in your own axum app...
/// let app = axum::Router::new().merge(server.router());
/// # let _ = app;
/// // ...or serve them on their own listener (PROFILING_BIND, default 127.0.0.1:8080).
/// let handle = server.spawn().await?;
/// println!("profiling at http://{}/api/profiling/", handle.local_addr());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ProfilingServer {
    pub(crate) shared: Arc<ServerState>,
}

impl ProfilingServer {
    /// Applies the configuration (recording on/off, large-allocation threshold), starts the
    /// memory sampler thread and opens the snapshot directory, loading the snapshots in it.
    pub fn new(config: Config) -> Result<Self> {
        if let Some(on) = config.enabled {
            profiling_core::set_enabled(on);
        }
        profiling_core::record::alloc::set_large_allocation_threshold(config.leak.large_allocation_bytes);
        let store = SnapshotStore::open(config.snapshot_dir.clone(), config.max_snapshots, config.snapshot_disk)?;
        // Measure the recording cost before the first sample, off the request path.
        let _ = overhead::calibration();
        let sampler = MemorySampler::start(SamplerConfig {
            interval: config.memory_interval,
            capacity: config.sample_capacity,
            function_capacity: 120,
            leak_check_interval: config.leak_check_interval,
            leak: config.leak.clone(),
            thresholds: config.thresholds,
        })?;
        Ok(Self {
            shared: Arc::new(ServerState {
                config,
                sampler,
                store,
                expensive: Semaphore::new(1),
                started: Instant::now(),
            }),
        })
    }

    /// [`ProfilingServer::new`] with [`Config::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(Config::from_env()?)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The routes, to serve or merge into an application's router.
    pub fn router(&self) -> Router {
        crate::routes::router(self.clone())
    }

    /// The current window as the API shows it.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Takes a memory sample now (in addition to the periodic ones).
    pub fn sample_now(&self) {
        self.shared.sampler.sample_now();
    }
}
