//! Where the cost of a request is bounded: work that walks or loads a whole profile runs off
//! the async workers ([`blocking`]), and at most one such request runs at a time
//! ([`expensive`]; the others get 429 with `Retry-After`).

use std::sync::Arc;

use crate::error::ApiError;
use crate::state::Shared;

/// Runs `f` on tokio's blocking pool, off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Runs `work` off the async workers as the one expensive request allowed at a time: 429
/// ([`ApiError::Busy`]) when another is running.
pub(crate) async fn expensive<T, F>(shared: &Arc<Shared>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let _permit = shared.try_expensive()?;
    let worker = Arc::clone(shared);
    blocking(move || work(&worker)).await?
}
