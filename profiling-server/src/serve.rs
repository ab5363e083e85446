//! Serving on its own listener: [`ProfilingServer::serve`] (run until the future is
//! dropped), [`ProfilingServer::spawn`] (a task on the caller's tokio runtime) and
//! [`ProfilingServer::start`] (a thread with its own runtime, for applications that do not
//! use tokio). Both handles stop the server when dropped: requests in flight get
//! [`DEFAULT_SHUTDOWN_GRACE`] (or [`ServerHandle::with_shutdown_grace`]) to finish, then the
//! server stops without them (a CPU profile can run 60 s; a stop must not wait for it).
//!
//! `start`'s runtime has [`WORKER_THREADS`] async workers, and expensive work runs on the
//! blocking pool, so `/health` answers while any other request runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::routes::standalone_router;
use crate::state::ProfilingServer;

/// Time requests in flight get to finish when a server is stopped.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Async worker threads of the runtime [`ProfilingServer::start`] creates.
pub const WORKER_THREADS: usize = 2;

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

#[derive(Debug)]
enum Runner {
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
    Thread(std::thread::JoinHandle<()>),
}

/// A running standalone server. Dropping it stops the server (a thread-backed one is also
/// joined).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<Duration>>,
    grace: Duration,
    runner: Option<Runner>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long requests in flight may run on once the server is told to stop (default
    /// [`DEFAULT_SHUTDOWN_GRACE`]).
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(self.grace);
        }
    }

    /// Stops accepting, gives requests in flight the grace period to finish, and waits for
    /// the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop();
        match self.runner.take() {
            Some(Runner::Task(t)) => t
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
                .map_err(Error::Io),
            Some(Runner::Thread(t)) => tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
                .map_err(|_| Error::Io(std::io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
        if let Some(Runner::Thread(t)) = self.runner.take() {
            let _ = t.join();
        }
    }
}

/// Serves `app` until the stop signal, then gives requests in flight the grace period it
/// carries (a dropped sender stops at once).
async fn serve_until_stopped(
    listener: TcpListener,
    app: axum::Router,
    stop: oneshot::Receiver<Duration>,
) -> std::io::Result<()> {
    let (grace_tx, grace_rx) = oneshot::channel::<Duration>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = grace_tx.send(stop.await.unwrap_or(Duration::ZERO));
    });
    let deadline = async move {
        let grace = grace_rx.await.unwrap_or(Duration::ZERO);
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serve => served,
        () = deadline => {
            tracing::warn!("profiling server stopped with requests still in flight (grace period over)");
            Ok(())
        }
    }
}

impl ProfilingServer {
    /// The routes plus a JSON 404 for every unknown path: what the standalone listener
    /// serves. To mount in an application, use [`ProfilingServer::router`], which leaves
    /// paths outside the API to the application.
    pub fn standalone_router(&self) -> axum::Router {
        standalone_router(self.clone())
    }

    /// Serves on the configured address until the returned future is dropped or fails.
    pub async fn serve(self) -> Result<()> {
        let listener = bind(self.config().bind()).await?;
        tracing::info!(addr = %listener.local_addr()?, "profiling server listening");
        axum::serve(listener, standalone_router(self)).await.map_err(Error::Io)
    }

    /// Binds the configured address and serves on a task of the current tokio runtime.
    pub async fn spawn(self) -> Result<ServerHandle> {
        let listener = bind(self.config().bind()).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<Duration>();
        let task = tokio::spawn(serve_until_stopped(listener, standalone_router(self), rx));
        tracing::info!(%addr, "profiling server listening");
        Ok(ServerHandle {
            addr,
            stop: Some(tx),
            grace: DEFAULT_SHUTDOWN_GRACE,
            runner: Some(Runner::Task(task)),
        })
    }

    /// Binds the configured address and serves from a new thread with its own tokio runtime
    /// ([`WORKER_THREADS`] workers): one call, from any (non-async) code.
    pub fn start(self) -> Result<ServerHandle> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let (tx, rx) = oneshot::channel::<Duration>();
        let thread = std::thread::Builder::new()
            .name("profiling-server".to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKER_THREADS)
                    .thread_name("profiling-server")
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match bind(self.config().bind()).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    match listener.local_addr() {
                        Ok(a) => {
                            let _ = ready_tx.send(Ok(a));
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(Error::Io(e)));
                            return;
                        }
                    }
                    if let Err(e) = serve_until_stopped(listener, standalone_router(self), rx).await {
                        tracing::error!(error = %e, "profiling server stopped");
                    }
                });
                // Whatever outlived the grace period (a blocking task) is left to finish alone.
                rt.shutdown_timeout(Duration::ZERO);
            })?;
        let addr = match ready_rx.recv() {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Io(std::io::Error::other("server thread ended before binding")));
            }
        };
        tracing::info!(%addr, "profiling server listening");
        Ok(ServerHandle {
            addr,
            stop: Some(tx),
            grace: DEFAULT_SHUTDOWN_GRACE,
            runner: Some(Runner::Thread(thread)),
        })
    }
}
