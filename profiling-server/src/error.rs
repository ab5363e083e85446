//! The two error types: [`Error`] for start-up (configuration, binding), and [`ApiError`], the
//! one error every handler returns, turned into a JSON `{"error": "..."}` response.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Everything that can go wrong when configuring or starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed, or a thread or runtime could not be started.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An error from `profiling-core`, among them a malformed or out-of-range environment
    /// variable ([`profiling_core::Error::InvalidEnv`], for the server's variables too).
    #[error(transparent)]
    Core(#[from] profiling_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error of every handler: a status and a message, sent as `{"error": "..."}`.
///
/// 5xx responses carry a fixed message; the cause goes to the log only.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed (unknown sort key, bad limit, bad id).
    BadRequest(String),
    /// 401: a bearer token is configured and the request did not carry it.
    Unauthorized,
    /// 403: the `Host` or `Origin` is not accepted (see `auth.rs`).
    Forbidden(String),
    /// 404: no such function, snapshot or route.
    NotFound(String),
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 429: an expensive request is already running.
    Busy,
    /// 501: the route needs a cargo feature this build lacks.
    NotImplemented(String),
    /// 500: something failed on our side; the detail is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Busy => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m) | ApiError::Forbidden(m) | ApiError::NotFound(m) | ApiError::NotImplemented(m) => {
                m.clone()
            }
            ApiError::Unauthorized => "missing or invalid bearer token".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this route".to_owned(),
            ApiError::Busy => "another expensive profiling request is running; retry shortly".to_owned(),
            ApiError::Internal(_) => "internal error".to_owned(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.message())
    }
}

impl std::error::Error for ApiError {}

/// The one place where a core error gets its status: a busy profiler is 429, a value out of
/// range 400, a build without heap profiling 501; anything else is ours (500, logged, not sent).
impl From<profiling_core::Error> for ApiError {
    fn from(e: profiling_core::Error) -> Self {
        use profiling_core::Error as E;
        match e {
            E::ProfilerBusy => ApiError::Busy,
            E::InvalidConfig(m) => ApiError::BadRequest(m),
            E::HeapProfilingUnavailable(m) => ApiError::NotImplemented(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("worker task failed: {e}"))
    }
}

/// Malformed query strings and path segments are the client's: 400 with axum's explanation.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "profiling API internal error");
        }
        let status = self.status();
        let mut resp = (status, Json(serde_json::json!({ "error": self.message() }))).into_response();
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Busy => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}
