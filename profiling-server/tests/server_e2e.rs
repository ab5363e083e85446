//! End to end over a real socket: the standalone listener on an ephemeral loopback port,
//! with a plain HTTP/1.1 client, then a clean shutdown.

use std::time::Duration;

use profiling_server::{Config, ProfilingServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request with `Connection: close`; returns the status code and body.
async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_an_ephemeral_port_and_shuts_down() {
    let config = Config::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .memory_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    let handle = ProfilingServer::new(config).unwrap().spawn().await.unwrap();
    let addr = handle.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let (status, body) = request(addr, "GET", "/api/profiling/health").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let (status, body) = request(addr, "GET", "/api/profiling/bottlenecks?limit=5")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"bottlenecks\""), "{body}");

    let (status, body) = request(addr, "POST", "/api/profiling/snapshot").await.unwrap();
    assert_eq!(status, 201, "{body}");

    let (status, body) = request(addr, "GET", "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE profiling_build_info gauge"), "{body}");

    // The standalone listener answers unknown paths with a JSON 404.
    let (status, body) = request(addr, "GET", "/nope").await.unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("\"error\":\"no route for GET /nope\""), "{body}");

    handle.shutdown().await.unwrap();
    assert!(
        request(addr, "GET", "/api/profiling/health").await.is_err(),
        "still serving after shutdown"
    );
}

#[test]
fn start_serves_from_its_own_thread_without_a_runtime() {
    let config = Config::builder().bind("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let handle = ProfilingServer::new(config).unwrap().start().unwrap();
    let addr = handle.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, _) = rt.block_on(request(addr, "GET", "/api/profiling/memory")).unwrap();
    assert_eq!(status, 200);
    drop(handle); // stops and joins the server thread
    assert!(rt.block_on(request(addr, "GET", "/api/profiling/health")).is_err());

    // Binding an address in use is an error naming it, not a panic.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    let err = ProfilingServer::new(Config::builder().bind(taken).build().unwrap())
        .unwrap()
        .start()
        .unwrap_err();
    assert!(err.to_string().contains(&taken.to_string()), "{err}");
}

/// A 2 s CPU profile in flight does not hold up the health check.
#[cfg(feature = "profiling-full")]
#[test]
fn health_answers_during_a_cpu_profile() {
    let config = Config::builder().bind("127.0.0.1:0".parse().unwrap()).build().unwrap();
    let handle = ProfilingServer::new(config).unwrap().start().unwrap();
    let addr = handle.local_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let profile = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(request(addr, "GET", "/api/profiling/pprof?seconds=2"))
    });
    let started = std::time::Instant::now();
    while !profiling_core::render::cpu_profile::is_running() {
        assert!(started.elapsed() < Duration::from_secs(5), "the profile never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut took = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let (status, _) = rt.block_on(request(addr, "GET", "/api/profiling/health")).unwrap();
        took.push(t.elapsed());
        assert_eq!(status, 200);
    }
    assert!(
        !profile.is_finished(),
        "health answered only after the profile ({took:?})"
    );
    eprintln!("health answered in {took:?} during a CPU profile");
    let (status, _) = profile.join().unwrap().unwrap();
    assert_eq!(status, 200);
}
