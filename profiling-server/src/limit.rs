//! Where the cost of a request is bounded: work that walks or loads a whole profile runs off
//! the async workers ([`blocking`]), and at most one such request runs at a time
//! ([`expensive`]; the others get 429 with `Retry-After`).
//!
//! The permit lives as long as the work it limits: it moves into the blocking task and is
//! released when the work ends (or panics), not when the handler's future ends. A client that
//! disconnects drops the handler, not the work, so it cannot free the permit early and start
//! another one beside it.

use std::sync::Arc;

use crate::error::ApiError;
use crate::state::ServerState;

/// Runs `f` on tokio's blocking pool, off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// Runs `f` off the async workers without the permit: reads that build the current window
/// (rankings, metrics) but not a whole rendered profile, and must not queue behind one.
pub(crate) async fn off_workers<T, F>(shared: &Arc<ServerState>, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&ServerState) -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = Arc::clone(shared);
    blocking(move || f(&shared)).await
}

/// The one expensive-request permit, owned: released when dropped, wherever that happens.
#[derive(Debug)]
struct Permit(Arc<ServerState>);

impl Permit {
    /// The permit, or 429 when an expensive request is running.
    fn try_acquire(shared: &Arc<ServerState>) -> Result<Self, ApiError> {
        shared.try_expensive()?.forget();
        Ok(Self(Arc::clone(shared)))
    }

    /// The permit, once the running expensive request (if any) ends.
    #[cfg(feature = "profiling-full")]
    async fn acquire(shared: &Arc<ServerState>) -> Result<Self, ApiError> {
        let permit = shared
            .expensive
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        permit.forget();
        Ok(Self(Arc::clone(shared)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.expensive.add_permits(1);
    }
}

/// Runs `work` in a blocking task that owns `permit`.
async fn run<T, F>(permit: Permit, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&ServerState) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    blocking(move || work(&permit.0)).await?
}

/// Runs `work` off the async workers as the one expensive request allowed at a time: 429
/// ([`ApiError::Busy`]) when another is running.
pub(crate) async fn expensive<T, F>(shared: &Arc<ServerState>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&ServerState) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    run(Permit::try_acquire(shared)?, work).await
}

/// [`expensive`] that waits for the permit instead of answering 429: for work the client has
/// already paid for (the samples of a CPU profile, which has its own one-at-a-time rule).
#[cfg(feature = "profiling-full")]
pub(crate) async fn expensive_queued<T, F>(shared: &Arc<ServerState>, work: F) -> Result<T, ApiError>
where
    F: FnOnce(&ServerState) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    run(Permit::acquire(shared).await?, work).await
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::state::ProfilingServer;

    fn shared() -> Arc<ServerState> {
        let config = Config::builder().leak_check_interval(None).build().unwrap();
        Arc::clone(&ProfilingServer::new(config).unwrap().shared)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_request_keeps_its_permit_until_the_work_ends() {
        let shared = shared();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let request = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                expensive(&shared, move |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // The client goes away: the handler's future is dropped, the work goes on.
        request.abort();
        assert!(request.await.unwrap_err().is_cancelled());
        assert!(matches!(expensive(&shared, |_| Ok(())).await, Err(ApiError::Busy)));
        // The work ends: the permit comes back.
        release_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match expensive(&shared, |_| Ok(())).await {
                Ok(()) => break,
                Err(ApiError::Busy) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn work_that_panics_releases_the_permit_and_answers_500() {
        let shared = shared();
        let r: Result<(), ApiError> = expensive(&shared, |_| panic!("building the report failed")).await;
        let e = r.unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message(), "internal error");
        assert!(expensive(&shared, |_| Ok(())).await.is_ok());
    }
}
