//! Bounded cost per request: an abandoned expensive request keeps its permit while its work
//! runs, `/health` answers while another request is stuck, and stopping the server does not
//! wait for a stuck request.
//!
//! A request is made to stall for as long as a test wants by asking for a snapshot whose file
//! is a FIFO: loading it blocks in `read` until the test closes the FIFO's writing end (then
//! the file is empty, not a snapshot: 404). The test knows the load has started when it can
//! open the writing end (a non-blocking open succeeds only once a reader is there).

#![cfg(unix)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use profiling_server::{Config, ProfilingServer};
use tower::ServiceExt;

/// A snapshot file that stalls whoever loads it.
struct Stall {
    dir: tempfile::TempDir,
    id: &'static str,
}

impl Stall {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { dir, id: "1-1" }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Puts the FIFO in place (after the server started: start-up loads the directory).
    fn arm(&self) {
        let path = self.dir.path().join(format!("{}.json", self.id));
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(
            unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
            0,
            "mkfifo {}",
            path.display()
        );
    }

    /// Waits until a request is blocked reading the FIFO and returns its writing end: the
    /// request stays blocked until that is dropped.
    fn wait_for_reader(&self) -> File {
        let path = self.dir.path().join(format!("{}.json", self.id));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => return f,
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("no request ever read the snapshot file: {e}"),
            }
        }
    }

    fn uri(&self) -> String {
        format!("/api/profiling/snapshots/{}", self.id)
    }
}

fn config(dir: &Path) -> Config {
    Config::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .leak_check_interval(None)
        .snapshot_dir(dir)
        .build()
        .unwrap()
}

async fn status(app: &Router, method: Method, uri: &str) -> StatusCode {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_expensive_request_holds_the_permit_while_its_work_runs() {
    let stall = Stall::new();
    let app = ProfilingServer::new(config(stall.dir())).unwrap().router();
    stall.arm();
    let slow = tokio::spawn({
        let (app, uri) = (app.clone(), stall.uri());
        async move { status(&app, Method::GET, &uri).await }
    });
    let writer = stall.wait_for_reader();
    // The client goes away while the snapshot is being loaded.
    slow.abort();
    // (A handler blocked inside its poll cannot be cancelled: do not wait for it for ever.)
    let _ = tokio::time::timeout(Duration::from_secs(1), slow).await;
    // The load still runs, so the next expensive request is refused...
    assert_eq!(
        status(&app, Method::POST, "/api/profiling/snapshot").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...until it ends.
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match status(&app, Method::POST, "/api/profiling/snapshot").await {
            StatusCode::CREATED => break,
            StatusCode::TOO_MANY_REQUESTS if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("{other}"),
        }
    }
}

/// One HTTP/1.1 request over a real socket; the status code.
fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {buf:?}")))
}

#[test]
fn health_answers_while_another_request_is_stuck_and_stop_does_not_wait_for_it() {
    let stall = Stall::new();
    let handle = ProfilingServer::new(config(stall.dir()))
        .unwrap()
        .start()
        .unwrap()
        .with_shutdown_grace(Duration::from_millis(200));
    let addr = handle.local_addr();
    stall.arm();
    let slow = std::thread::spawn({
        let uri = stall.uri();
        move || get(addr, &uri)
    });
    let writer = stall.wait_for_reader();

    // The stuck request cannot end before `writer` is dropped: health answers before it.
    let t = Instant::now();
    assert_eq!(get(addr, "/api/profiling/health").unwrap(), 200);
    let health = t.elapsed();
    assert!(!slow.is_finished());
    eprintln!("health answered in {health:?} while a snapshot load was stuck");

    // Stopping gives the stuck request its grace period, then goes on without it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(handle);
        let _ = done_tx.send(());
    });
    let stopped = done_rx.recv_timeout(Duration::from_secs(10));
    drop(writer);
    assert!(stopped.is_ok(), "dropping the handle waited for the stuck request");
    assert!(
        get(addr, "/api/profiling/health").is_err(),
        "still serving after the stop"
    );
    let _ = slow.join();
}
