//! The error type of `profiling-core`.

/// Everything that can go wrong in `profiling-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds a value that cannot be parsed.
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        name: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: std::borrow::Cow<'static, str>,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot could not be (de)serialized.
    #[error("snapshot JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The allocator statistics could not be read.
    #[error("allocator statistics unavailable: {0}")]
    AllocatorStats(String),
    /// Rendering a report failed.
    #[error("render error: {0}")]
    Render(String),
    /// A sampling CPU profile could not be taken.
    #[error("CPU profiler error: {0}")]
    Profiler(String),
    /// A CPU profile is already being taken (one at a time per process).
    #[error("a CPU profile is already being taken; one runs at a time, retry when it ends")]
    ProfilerBusy,
    /// A file is not a snapshot as written by this crate.
    #[error("{path} is not a profiling snapshot (JSON as written by PROFILING_FLAMEGRAPH or the HTTP API): {reason}")]
    InvalidSnapshot {
        /// The file concerned.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A heap profile cannot be served; the message says why and how to switch it on.
    #[error("heap profile unavailable: {0}")]
    HeapProfilingUnavailable(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
