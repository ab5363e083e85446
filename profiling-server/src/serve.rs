//! Serving on its own listener: [`ProfilingServer::serve`] (run until the future is
//! dropped), [`ProfilingServer::spawn`] (a task on the caller's tokio runtime) and
//! [`ProfilingServer::start`] (a thread with its own runtime, for applications that do not
//! use tokio). Both handles stop the server when dropped.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::routes::standalone_router;
use crate::state::ProfilingServer;

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
    stop: Option<oneshot::Sender<()>>,
    runner: Option<Runner>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
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
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(Runner::Thread(t)) = self.runner.take() {
            let _ = t.join();
        }
    }
}

impl ProfilingServer {
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
        let (tx, rx) = oneshot::channel::<()>();
        let app = standalone_router(self);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(%addr, "profiling server listening");
        Ok(ServerHandle {
            addr,
            stop: Some(tx),
            runner: Some(Runner::Task(task)),
        })
    }

    /// Binds the configured address and serves from a new thread with its own
    /// single-threaded tokio runtime: one call, from any (non-async) code.
    pub fn start(self) -> Result<ServerHandle> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("profiling-server".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
                    let served = axum::serve(listener, standalone_router(self))
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "profiling server stopped");
                    }
                });
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
            runner: Some(Runner::Thread(thread)),
        })
    }
}
