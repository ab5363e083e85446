//! The Go-compatible scrape endpoints (`/debug/pprof/*`) over a real socket: content type,
//! filename, limits, errors as JSON, empty-but-valid profiles for what this process has
//! not, the instrumented tree as a delta profile of exactly the requested window, and the
//! answers read by `go tool pprof`.
//!
//! Tolerances: the worker spins 5 ms then sleeps 5 ms, so over a 1 s window its self wall
//! time is between 0.2 s and 1.05 s (a loaded machine stretches both parts); the profile's
//! duration is the window within 0.5 s.

mod fleet_tools;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use fleet_tools::{http_get, tool, HttpResponse};
use profiling_core::profiled;
use profiling_core::render::cpu_profile::protos::{Message, Profile};
use profiling_integration::Background;
use profiling_server::{Config, ProfilingServer, ServerHandle};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[profiled]
fn window_worker_spin() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(5) {
        std::hint::spin_loop();
    }
}

#[profiled]
fn before_the_window() {
    std::hint::black_box(vec![0u8; 4096]);
}

async fn serve(token: Option<&str>) -> ServerHandle {
    let mut b = Config::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .leak_check_interval(None);
    if let Some(t) = token {
        b = b.auth_token(t);
    }
    ProfilingServer::new(b.build().unwrap()).unwrap().spawn().await.unwrap()
}

fn decode(r: &HttpResponse) -> Profile {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut raw)
        .expect("gzip");
    Profile::decode(&raw[..]).expect("a pprof Profile")
}

fn types(p: &Profile) -> Vec<String> {
    p.sample_type
        .iter()
        .map(|t| format!("{}/{}", p.string_table[t.ty as usize], p.string_table[t.unit as usize]))
        .collect()
}

/// Sum of sample type `index` over samples whose stack has a function containing `needle`.
fn total_in(p: &Profile, index: usize, needle: &str) -> i64 {
    let has = |loc: u64| {
        p.location[loc as usize - 1].line.iter().any(|l| {
            let f = &p.function[l.function_id as usize - 1];
            p.string_table[f.name as usize].contains(needle)
        })
    };
    p.sample
        .iter()
        .filter(|s| s.location_id.iter().any(|&l| has(l)))
        .map(|s| s.value[index])
        .sum()
}

fn json_error(r: &HttpResponse, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["error"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_paths_answer_profiles_or_json_errors() {
    let _g = LOCK.lock().await;
    let h = serve(None).await;
    let addr = h.local_addr();
    for (path, want) in [
        ("goroutine", vec!["goroutine/count"]),
        ("mutex", vec!["contentions/count", "delay/nanoseconds"]),
        ("block", vec!["contentions/count", "delay/nanoseconds"]),
    ] {
        let r = http_get(addr, &format!("/debug/pprof/{path}"), &[]).await.unwrap();
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{path}\"").as_str())
        );
        let p = decode(&r);
        assert!(p.sample.is_empty());
        assert_eq!(types(&p), want);
    }
    for q in ["seconds=0", "seconds=61", "seconds=ten"] {
        let r = http_get(addr, &format!("/debug/pprof/profile?{q}"), &[]).await.unwrap();
        json_error(&r, 400);
        let r = http_get(addr, &format!("/debug/pprof/wall?{q}"), &[]).await.unwrap();
        json_error(&r, 400);
    }
    // No jemalloc profiling in this process: the sampled live heap answers, as gzipped pprof.
    for path in ["heap", "allocs"] {
        let r = http_get(addr, &format!("/debug/pprof/{path}"), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/octet-stream"));
        assert_eq!(&r.body[..2], &[0x1f, 0x8b], "{path}: gzip");
    }
    h.shutdown().await.unwrap();

    // Same auth as every other route.
    let h = serve(Some("s3cret")).await;
    let addr = h.local_addr();
    let r = http_get(addr, "/debug/pprof/goroutine", &[]).await.unwrap();
    json_error(&r, 401);
    let r = http_get(addr, "/debug/pprof/goroutine", &[("Authorization", "Bearer s3cret")])
        .await
        .unwrap();
    decode(&r);
    h.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_over_http_has_real_mappings_and_reads_in_go_tool_pprof() {
    let _g = LOCK.lock().await;
    let h = serve(None).await;
    let worker = Background::run(|| {
        window_worker_spin();
    });
    let r = http_get(h.local_addr(), "/debug/pprof/profile?seconds=1", &[])
        .await
        .unwrap();
    worker.stop();
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    let p = decode(&r);
    assert_eq!(types(&p), ["samples/count", "cpu/nanoseconds"]);
    assert!(!p.sample.is_empty());
    let main = &p.mapping[0];
    let exe = std::env::current_exe().unwrap();
    assert_eq!(p.string_table[main.filename as usize], exe.to_string_lossy());
    assert!(!p.string_table[main.build_id as usize].is_empty());
    assert!(main.has_functions && main.memory_limit > main.memory_start);
    assert!(p.location.iter().all(|l| l.address != 0));
    assert!(total_in(&p, 0, "window_worker_spin") > 0);
    h.shutdown().await.unwrap();

    if let Some(go) = tool("go", "golang-go") {
        let file = std::env::temp_dir().join(format!("debug-pprof-{}.pb.gz", std::process::id()));
        std::fs::write(&file, &r.body).unwrap();
        let out = Command::new(go)
            .args(["tool", "pprof", "-top"])
            .arg(&exe)
            .arg(&file)
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap();
        let top = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(top.contains("window_worker_spin"), "{top}");
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_is_a_delta_of_exactly_the_window() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    let h = serve(None).await;
    let addr = h.local_addr();
    for _ in 0..10 {
        before_the_window();
    }
    let worker = Background::run(|| {
        window_worker_spin();
        std::thread::sleep(Duration::from_millis(5));
    });
    let r = http_get(addr, "/debug/pprof/wall?seconds=1", &[]).await.unwrap();
    let whole = http_get(addr, "/debug/pprof/calls", &[]).await.unwrap();
    worker.stop();
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=\"wall\""));
    let p = decode(&r);
    assert_eq!(
        types(&p),
        [
            "wall/nanoseconds",
            "cpu/nanoseconds",
            "off_cpu/nanoseconds",
            "alloc_space/bytes",
            "alloc_objects/count",
            "calls/count"
        ]
    );
    assert_eq!(p.string_table[p.default_sample_type as usize], "wall");
    let wall = total_in(&p, 0, "window_worker_spin");
    assert!(
        (200_000_000..=1_050_000_000).contains(&wall),
        "self wall in 1 s: {wall} ns"
    );
    assert!(
        (p.duration_nanos - 1_000_000_000).abs() < 500_000_000,
        "{}",
        p.duration_nanos
    );
    // Called only before the window: absent from the delta, present in the whole window.
    assert_eq!(total_in(&p, 5, "before_the_window"), 0);
    let w = decode(&whole);
    assert_eq!(w.string_table[w.default_sample_type as usize], "calls");
    assert_eq!(total_in(&w, 5, "before_the_window"), 10);
    assert_eq!(total_in(&w, 3, "before_the_window"), 10 * 4096);
    h.shutdown().await.unwrap();

    if let Some(go) = tool("go", "golang-go") {
        let file = std::env::temp_dir().join(format!("debug-wall-{}.pb.gz", std::process::id()));
        std::fs::write(&file, &r.body).unwrap();
        let out = Command::new(go)
            .args(["tool", "pprof", "-top", "-sample_index=wall"])
            .arg(&file)
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap();
        let top = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            top.contains("Type: wall") && top.contains("window_worker_spin"),
            "{top}"
        );
        let _ = std::fs::remove_file(file);
    }
}
