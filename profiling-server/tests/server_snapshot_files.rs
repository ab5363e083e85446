//! The snapshot directory under repeated and hostile use: bounded in files and bytes, the
//! oldest deleted; created private (0700); never written through a planted symlink; ids that
//! keep counting across restarts; a start-up that does not open every file it finds.
//!
//! The bounds are set through the environment (`Config::builder().env_from`), as an operator
//! would set them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use profiling_server::{Config, ProfilingServer};
use serde_json::Value;
use tower::ServiceExt;

fn server(dir: &Path, vars: &[(&str, &str)]) -> ProfilingServer {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = Config::builder()
        .memory_interval(Duration::from_secs(3600))
        .leak_check_interval(None)
        .snapshot_dir(dir)
        .max_snapshots(2)
        .env_from(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap()
        .build()
        .unwrap();
    ProfilingServer::new(config).unwrap()
}

async fn take(app: &axum::Router) -> String {
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/profiling/snapshot")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// The `{id}.json` files of `dir`, sorted, and their total size.
fn json_files(dir: &Path) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            bytes += e.metadata().unwrap().len();
            names.push(name);
        }
    }
    names.sort();
    (names, bytes)
}

fn seq(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn repeated_snapshots_keep_at_most_the_configured_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let app = server(dir.path(), &[("PROFILING_MAX_SNAPSHOT_FILES", "3")]).router();
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(take(&app).await);
    }
    let (files, _) = json_files(dir.path());
    let mut newest: Vec<String> = ids[4..].iter().map(|id| format!("{id}.json")).collect();
    newest.sort();
    assert_eq!(files, newest, "the three newest are kept");
    // No temporary file is left either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[tokio::test]
async fn the_directory_is_bounded_in_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    // An old 2 MiB snapshot file left by an earlier run.
    std::fs::write(dir.path().join("1000-1.json"), vec![b' '; 2 << 20]).unwrap();
    let app = server(dir.path(), &[("PROFILING_MAX_SNAPSHOT_DISK_MB", "1")]).router();
    for _ in 0..3 {
        take(&app).await;
    }
    let (files, bytes) = json_files(dir.path());
    assert!(bytes <= 1 << 20, "{bytes} bytes in {files:?}");
    assert!(!files.contains(&"1000-1.json".to_owned()), "{files:?}");
    assert!(!files.is_empty());
}

#[tokio::test]
async fn ids_keep_counting_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let app = server(dir.path(), &[]).router();
        vec![take(&app).await, take(&app).await]
    };
    let app = server(dir.path(), &[]).router();
    let after = take(&app).await;
    let highest = first.iter().map(|id| seq(id)).max().unwrap();
    assert!(seq(&after) > highest, "{after} after {first:?}");
}

#[tokio::test]
async fn the_directory_is_created_private() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/snaps");
    let _s = server(&dir, &[]);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}

#[tokio::test]
async fn planted_symlinks_are_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let app = server(dir.path(), &[]).router();
    // Someone who may write to the directory plants symlinks at every temporary name that
    // a snapshot taken in a coming 2 s window could use (ids are `{ms}-{n}`), then waits for
    // the window to open.
    let now_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let start = now_ms() + 6000;
    for ms in start..start + 2000 {
        std::os::unix::fs::symlink(&victim, dir.path().join(format!(".{ms}-1.json.tmp"))).unwrap();
    }
    assert!(now_ms() < start, "planting took more than 6 s: the test cannot aim");
    std::thread::sleep(Duration::from_millis(start + 100 - now_ms()));
    take(&app).await;
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious",
        "written through a symlink"
    );
}

#[test]
fn start_up_does_not_open_files_that_are_not_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO under a snapshot's name: opening it for reading blocks until a writer comes.
    let ok = std::process::Command::new("mkfifo")
        .arg(dir.path().join("1000-1.json"))
        .status()
        .unwrap();
    assert!(ok.success());
    let path = dir.path().to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let s = server(&path, &[]);
        let _ = tx.send(s.config().snapshot_dir().is_some());
    });
    let started = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(started, Ok(true), "start-up blocked on the FIFO");
}
