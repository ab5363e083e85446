//! `/metrics` checked by Prometheus's own tools, over a real socket: `promtool check metrics`
//! on the exposition each kind of client gets, and a real `prometheus` server (Debian's
//! package) scraping a live `ProfilingServer`, queried over its HTTP API.
//!
//! `promtool check metrics` lints the text format 0.0.4 only (it reports OpenMetrics'
//! `# HELP x` + `x_total` as "no help text", which is the bug this fixed); the OpenMetrics
//! exposition is checked by the real server, which asks for it and parses it strictly.
//!
//! The tools are skipped with a loud message when absent, and required under
//! `PROFILING_REQUIRE_TOOLS=1` (`.ci/run` installs them and sets it).

mod fleet_tools;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_tools::{http_get, run_with_stdin, tool, HttpResponse, KillOnDrop};
use profiling_core::profiled;
use profiling_server::{Config, ProfilingServer, ServerHandle};

/// The recorder is process-wide.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What Prometheus 2.42 (Debian's) sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[profiled]
fn spin_heavy() {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(6) {
        std::hint::spin_loop();
    }
}

async fn serve() -> ServerHandle {
    let config = Config::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .metrics_prefix("myapp")
        .memory_interval(Duration::from_millis(30))
        .leak_check_interval(None)
        .build()
        .unwrap();
    ProfilingServer::new(config).unwrap().spawn().await.unwrap()
}

async fn metrics(addr: SocketAddr, accept: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    let r = http_get(addr, "/metrics", &headers).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// The value of the first sample line starting with `prefix`.
fn value(text: &str, prefix: &str, contains: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(contains))
        .unwrap_or_else(|| panic!("no sample {prefix}..{contains}.. in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `promtool check metrics` on `body`: must exit 0 and report no lint problem.
fn promtool_clean(body: &str) {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let out = run_with_stdin(Command::new(promtool).args(["check", "metrics"]), body.as_bytes());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n---\n{body}"
    );
}

const NAMES: [&str; 12] = [
    "myapp_function_calls_total",
    "myapp_function_self_seconds_total",
    "myapp_function_cpu_seconds_total",
    "myapp_function_allocated_bytes_total",
    "myapp_process_cpu_seconds_total",
    "myapp_memory_rss_bytes",
    "myapp_memory_growth_bytes_per_second",
    "myapp_cpu_usage_ratio",
    "myapp_recording_overhead_ratio",
    "myapp_recording_enabled",
    "myapp_threads",
    "myapp_build_info",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_unless_openmetrics_is_asked_for_and_promtool_accepts_it() {
    let _g = LOCK.lock().await;
    profiling_core::reset();
    for _ in 0..5 {
        spin_heavy();
    }
    let handle = serve().await;
    tokio::time::sleep(Duration::from_millis(100)).await; // two memory samples
    let addr = handle.local_addr();

    for accept in [None, Some("*/*"), Some("text/plain")] {
        let r = metrics(addr, accept).await;
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        let text = r.text();
        // A counter's HELP, TYPE and samples share the `_total` name; no OpenMetrics trailer.
        assert!(text.contains("# TYPE myapp_function_calls_total counter\n"), "{text}");
        assert!(text.contains("# HELP myapp_function_calls_total "), "{text}");
        assert!(text.contains("# TYPE myapp_build_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        for name in NAMES {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
        }
        assert_eq!(value(&text, "myapp_function_calls_total{", "spin_heavy"), 5.0);
        // The histogram's +Inf bucket counts every call.
        assert_eq!(
            value(&text, "myapp_function_latency_seconds_bucket{le=\"+Inf\"", "spin_heavy"),
            5.0
        );
        for ratio in ["myapp_recording_overhead_ratio", "myapp_recording_enabled"] {
            let v = value(&text, ratio, "");
            assert!((0.0..=1.0).contains(&v), "{ratio} = {v}");
        }
        promtool_clean(&text);
    }

    let r = metrics(addr, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = r.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE myapp_function_calls counter\n"), "{om}");
    assert!(om.contains("# TYPE myapp_build info\n"), "{om}");
    assert_eq!(value(&om, "myapp_function_calls_total{", "spin_heavy"), 5.0);
    handle.shutdown().await.unwrap();
}

/// Prometheus HTTP API: an instant query's answer, checked to be a success.
async fn query_json(prom: SocketAddr, q: &str) -> Option<serde_json::Value> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let r = http_get(prom, &format!("/api/v1/query?query={enc}"), &[]).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    assert_eq!(v["status"], "success", "{q}: {v}");
    Some(v)
}

/// The first value of an instant query's vector, if any.
async fn query(prom: SocketAddr, q: &str) -> Option<f64> {
    query_json(prom, q).await?["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_and_queries_it() {
    let Some(prometheus) = tool("prometheus", "prometheus") else {
        return;
    };
    let _g = LOCK.lock().await;
    profiling_core::reset();
    let handle = serve().await;
    let target = handle.local_addr();
    // The workload: spin 6 ms, sleep 4 ms, until the test ends.
    let worker = profiling_integration::Background::run(|| {
        spin_heavy();
        std::thread::sleep(Duration::from_millis(4));
    });

    let dir = tempfile_dir();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: profiling\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let prom: SocketAddr = format!("127.0.0.1:{}", fleet_tools::free_port()).parse().unwrap();
    let _child = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    // Up, then enough scrapes for a 5 s rate.
    let mut up = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        up = query(prom, "up{job=\"profiling\"}").await;
        if up.is_some() {
            break;
        }
    }
    assert_eq!(up, Some(1.0), "Prometheus never scraped the target successfully");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(query(prom, "up{job=\"profiling\"}").await, Some(1.0));

    // spin_heavy is busy about 6 ms of every ~10 ms (more when sleeps overrun).
    let self_rate = query(
        prom,
        "rate(myapp_function_self_seconds_total{function=~\".*spin_heavy\"}[5s])",
    )
    .await
    .expect("rate of self seconds");
    assert!((0.2..=1.0).contains(&self_rate), "self seconds per second: {self_rate}");
    // Every call spins 6 ms of wall time, so the median is never under the 5 ms bound; on a
    // loaded machine (2 shared cores in CI) preemption stretches calls, hence the loose top.
    let p50 = query(
        prom,
        "histogram_quantile(0.5, rate(myapp_function_latency_seconds_bucket{function=~\".*spin_heavy\"}[5s]))",
    )
    .await
    .expect("median latency");
    assert!((0.005..=0.050).contains(&p50), "p50 latency: {p50} s");
    let info = query(prom, "myapp_build_info").await;
    assert_eq!(info, Some(1.0));
    dashboard_queries_answer(prom).await;

    worker.stop();
    handle.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("profiling-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Prometheus configuration shown in docs/fleet.md is one `promtool` accepts.
#[test]
fn the_documented_scrape_config_passes_promtool() {
    let Some(promtool) = tool("promtool", "prometheus") else {
        return;
    };
    let doc = include_str!("../docs/fleet.md");
    let start = doc.find("```yaml\n# prometheus.yml").expect("the block") + "```yaml\n".len();
    let block = &doc[start..start + doc[start..].find("```").unwrap()];
    let path = std::env::temp_dir().join(format!("fleet-prometheus-{}.yml", std::process::id()));
    std::fs::write(&path, block).unwrap();
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every query of docs/grafana-dashboard.json is valid PromQL that returns data from a live
/// target (the first query of each panel; the rest only need to parse), with the dashboard's
/// variables filled in as Grafana would and this test's prefix.
async fn dashboard_queries_answer(prom: SocketAddr) {
    let dash: serde_json::Value = serde_json::from_str(include_str!("../docs/grafana-dashboard.json")).unwrap();
    assert!(dash["schemaVersion"].as_u64().is_some());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        for (i, target) in panel["targets"].as_array().unwrap().iter().enumerate() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5s")
                .replace("$job", "profiling")
                .replace("profiling_", "myapp_");
            let v = query_json(prom, &expr).await.expect("an answer");
            if i == 0 {
                assert!(
                    !v["data"]["result"].as_array().unwrap().is_empty(),
                    "{}: no data for {expr}",
                    panel["title"]
                );
            }
        }
    }
}
