//! The push client against a local receiver that speaks Pyroscope's Connect API: it decodes
//! each `push.v1.PushRequest` with the protobuf types and each profile with the pprof ones,
//! and checks labels, auth headers, sample types and the window. A backend that keeps
//! failing makes the client drop (counted in `/metrics`), not queue without bound.
//!
//! Tolerance: an interval of 1 s yields profiles whose duration is 0.5 s to 2.5 s (timer
//! jitter on a loaded machine).

mod fleet_tools;

use std::io::Read;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use profiling_core::profiled;
use profiling_core::render::cpu_profile::protos::{Message, Profile};
use profiling_server::push::{self, proto::PushRequest, Auth, PushConfig};
use profiling_server::{Config, ProfilingServer};
use tokio::sync::mpsc;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[profiled]
fn pushed_worker() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(3) {
        std::hint::spin_loop();
    }
}

/// A receiver on a loopback port answering `status`; every request goes to the channel.
async fn receiver(status: StatusCode) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/push.v1.PusherService/Push",
        post(move |h: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((h, body));
                status
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

fn server() -> ProfilingServer {
    ProfilingServer::new(Config::builder().leak_check_interval(None).build().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_the_instrumented_window_with_labels_and_auth() {
    let _g = LOCK.lock().await;
    let (url, mut rx) = receiver(StatusCode::OK).await;
    let s = server();
    let worker = profiling_integration::Background::run(|| {
        pushed_worker();
        std::thread::sleep(Duration::from_millis(2));
    });
    let sent_before = push::sent();
    let handle = push::spawn(
        &s,
        PushConfig::new(url, "checkout")
            .label("env", "test")
            .interval(Duration::from_secs(1))
            .auth(Auth::Bearer("tok".to_owned()))
            .tenant("tenant-1"),
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        got.push(r.expect("a push within 10 s").expect("receiver alive"));
    }
    // The receiver records a request before answering it: wait for the client to count it.
    for _ in 0..100 {
        if push::sent() >= sent_before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(push::sent() >= sent_before + 2);
    drop(handle);
    worker.stop();

    for (headers, body) in &got {
        assert_eq!(headers["content-type"], "application/proto");
        assert_eq!(headers["authorization"], "Bearer tok");
        assert_eq!(headers["x-scope-orgid"], "tenant-1");
        let req = PushRequest::decode(&body[..]).expect("a PushRequest");
        assert_eq!(req.series.len(), 1, "CPU is off by default");
        let series = &req.series[0];
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("__name__", "wall"), ("service_name", "checkout"), ("env", "test")]
        );
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&series.samples[0].raw_profile[..])
            .read_to_end(&mut raw)
            .expect("gzip");
        let p = Profile::decode(&raw[..]).expect("pprof");
        let types: Vec<&str> = p
            .sample_type
            .iter()
            .map(|t| p.string_table[t.ty as usize].as_str())
            .collect();
        assert_eq!(
            types,
            ["wall", "cpu", "off_cpu", "alloc_space", "alloc_objects", "calls"]
        );
        assert!(
            (500_000_000..=2_500_000_000).contains(&p.duration_nanos),
            "window {} ns",
            p.duration_nanos
        );
        let names: Vec<&str> = p
            .function
            .iter()
            .map(|f| p.string_table[f.name as usize].as_str())
            .collect();
        assert!(names.iter().any(|n| n.ends_with("pushed_worker")), "{names:?}");
        let calls: i64 = p.sample.iter().map(|s| s.value[5]).sum();
        assert!(calls > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_means_drops_counted_in_metrics_not_memory() {
    let _g = LOCK.lock().await;
    let (url, mut rx) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let config = Config::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .leak_check_interval(None)
        .build()
        .unwrap();
    let s = ProfilingServer::new(config).unwrap();
    let dropped_before = push::dropped();
    let handle = push::spawn(
        &s,
        PushConfig::new(url, "checkout")
            .interval(Duration::from_secs(1))
            .queue(1)
            .retries(2, Duration::from_millis(20)),
    );
    // Each push is tried 3 times (1 + 2 retries), then dropped.
    let mut attempts = 0;
    while push::dropped() < dropped_before + 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        r.expect("attempts keep coming").expect("receiver alive");
        attempts += 1;
    }
    drop(handle);
    assert!(attempts >= 6, "{attempts} attempts for 2 drops");
    let listener = s.spawn().await.unwrap();
    let r = fleet_tools::http_get(listener.local_addr(), "/metrics", &[])
        .await
        .unwrap();
    let text = r.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("profiling_push_dropped_total "))
        .unwrap_or_else(|| panic!("{text}"));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v >= (dropped_before + 2) as f64, "{line}");
    listener.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_the_sampled_cpu_profile_too_when_asked_with_basic_auth() {
    let _g = LOCK.lock().await;
    let (url, mut rx) = receiver(StatusCode::OK).await;
    let s = server();
    let handle = push::spawn(
        &s,
        PushConfig::new(url, "checkout")
            .interval(Duration::from_secs(2))
            .cpu(true)
            .auth(Auth::Basic {
                user: "123".to_owned(),
                password: "pw".to_owned(),
            }),
    );
    let (headers, body) = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("a push within 15 s")
        .expect("receiver alive");
    drop(handle);
    // base64("123:pw")
    assert_eq!(headers["authorization"], "Basic MTIzOnB3");
    let req = PushRequest::decode(&body[..]).unwrap();
    let names: Vec<&str> = req.series.iter().map(|s| s.labels[0].value.as_str()).collect();
    assert_eq!(names, ["wall", "process_cpu"]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&req.series[1].samples[0].raw_profile[..])
        .read_to_end(&mut raw)
        .unwrap();
    let p = Profile::decode(&raw[..]).unwrap();
    let types: Vec<&str> = p
        .sample_type
        .iter()
        .map(|t| p.string_table[t.ty as usize].as_str())
        .collect();
    assert_eq!(types, ["samples", "cpu"]);
    assert!(!p.mapping.is_empty() && p.mapping[0].has_functions);
}
