//! The page in a real browser: Debian's Chromium, headless, driven through ChromeDriver
//! (WebDriver) by fantoccini, against a profiled workload and the profiling server on
//! loopback. It loads the page, waits for data, opens a function, zooms and searches the
//! flame graph (and keeps the zoom across a reload), takes and diffs two snapshots, and
//! enters a bearer token, asserting on the DOM, never on pixels. A screenshot of each view
//! is written to `<target dir>/page-screenshots/` for people to look at (docs/page.md shows
//! copies).
//!
//! Needs `chromium` and `chromedriver` on `PATH` (Debian: `apt-get install chromium
//! chromium-driver`; `.ci/run` installs them). Without them the test says so and passes,
//! except under CI (`CI` set), where their absence fails it.

mod browser;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::{browser, click, js, on_path, screenshot, wait_for, Driver, Result};
use fantoccini::{Client, Locator};
use profiling_core::{profiled, ProfilingAllocator};
use profiling_server::{Config, ProfilingServer, ServerHandle};

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

// ---------------------------------------------------------------------------------------
// The workload: a request handler with three annotated callees, one of which gets slower
// on demand (so a diff has a regression to show).

/// Microseconds `slow_query` sleeps per call.
static QUERY_US: AtomicU64 = AtomicU64::new(300);

#[profiled]
fn handle_request(i: u64) -> usize {
    let parsed = parse_input(i);
    slow_query();
    render_output(parsed)
}

#[profiled]
fn parse_input(i: u64) -> Vec<u64> {
    let t = Instant::now();
    let mut v: Vec<u64> = (0..2_000).map(|x| x ^ i).collect();
    while t.elapsed() < Duration::from_micros(200) {
        v.rotate_left(1);
    }
    v
}

#[profiled]
fn slow_query() {
    std::thread::sleep(Duration::from_micros(QUERY_US.load(Ordering::Relaxed)));
}

#[profiled]
fn render_output(v: Vec<u64>) -> usize {
    let s: String = v.iter().take(500).map(|x| format!("{x},")).collect();
    s.len()
}

/// Runs the workload on a thread until dropped.
struct Workload {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workload {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) {
                std::hint::black_box(handle_request(i));
                i += 1;
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_real_browser() -> Result {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver")) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("SKIPPED the_page_in_a_real_browser: chromium or chromedriver not on PATH (apt-get install chromium chromium-driver)");
        return Ok(());
    };
    let _workload = Workload::start();
    let config = Config::builder()
        .bind("127.0.0.1:0".parse()?)
        .memory_interval(Duration::from_millis(250))
        .leak_check_interval(None)
        .build()?;
    let server: ServerHandle = ProfilingServer::new(config)?.start()?;
    let base = format!("http://{}/api/profiling/", server.local_addr());
    let guarded_config = Config::builder()
        .bind("127.0.0.1:0".parse()?)
        .leak_check_interval(None)
        .auth_token(TOKEN)
        .build()?;
    let guarded: ServerHandle = ProfilingServer::new(guarded_config)?.start()?;
    let guarded_base = format!("http://{}/api/profiling/", guarded.local_addr());

    let driver = Driver::start(&chromedriver)?;
    let profile = std::env::temp_dir().join(format!("page-browser-{}", std::process::id()));
    let c = browser(&driver, &chromium, &profile).await?;
    // The steps run as a task so that a failed assertion (a panic) still closes the
    // browser before the test reports it.
    let session = c.clone();
    let steps = tokio::spawn(async move { drive(&session, &base, &guarded_base).await.map_err(|e| e.to_string()) });
    let outcome = steps.await;
    let closed = c.close().await;
    let _ = std::fs::remove_dir_all(&profile);
    match outcome {
        Ok(result) => result?,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => return Err(join.into()),
    }
    closed?;
    Ok(())
}

async fn drive(c: &Client, base: &str, guarded_base: &str) -> Result {
    overview(c, base).await?;
    functions(c, base).await?;
    flame(c, base).await?;
    snapshots(c, base).await?;
    token(c, guarded_base).await?;
    Ok(())
}

const TOKEN: &str = "s3cret-token";

/// Behind a token: the page loads, asks for the token once, keeps it for the tab.
async fn token(c: &Client, base: &str) -> Result {
    c.goto(base).await?;
    wait_for(c, "document.getElementById('token-dialog').open", "the token dialog").await?;
    assert_eq!(
        js(c, "document.querySelectorAll('.bars li').length").await?,
        0,
        "no data without the token"
    );
    c.find(Locator::Css("#token-input")).await?.send_keys(TOKEN).await?;
    screenshot(c, "token").await?;
    click(c, "#token-save").await?;
    wait_for(c, "document.querySelector('.cards b')", "data with the token").await?;
    assert_eq!(js(c, "sessionStorage.getItem('profiling-token')").await?, TOKEN);
    assert_eq!(js(c, "document.getElementById('token-dialog').open").await?, false);
    // A reload keeps it: no dialog, data again.
    c.refresh().await?;
    wait_for(c, "document.querySelector('.cards b')", "data after a reload").await?;
    assert_eq!(js(c, "document.getElementById('token-dialog').open").await?, false);
    Ok(())
}

async fn overview(c: &Client, base: &str) -> Result {
    c.goto(base).await?;
    wait_for(
        c,
        "document.querySelectorAll('.bars li').length >= 3",
        "the top-function bars",
    )
    .await?;
    wait_for(
        c,
        "document.querySelectorAll('.chart polyline').length >= 2",
        "the memory and CPU charts",
    )
    .await?;
    let cards = js(c, "document.querySelector('.cards').textContent").await?;
    for label in ["RSS", "Heap", "CPU", "Window", "Functions"] {
        assert!(
            cards.as_str().unwrap_or_default().contains(label),
            "{label} card missing: {cards}"
        );
    }
    let bars = js(
        c,
        "[...document.querySelectorAll('.bars a')].map(a => a.title).join(' ')",
    )
    .await?;
    assert!(bars.as_str().unwrap_or_default().contains("slow_query"), "{bars}");
    assert_eq!(
        js(c, "document.querySelector('nav a[aria-current=page]').dataset.view").await?,
        "overview"
    );
    // A leak analysis run from the page lands among the alerts.
    click(c, "section[aria-labelledby=alerts-h] button").await?;
    let leak = wait_for(
        c,
        "[...document.querySelectorAll('.alert')].map(a => a.textContent).find(t => /leak suspected/i.test(t))",
        "the leak analysis result",
    )
    .await?;
    let leak = leak.as_str().unwrap_or_default();
    assert!(
        leak.starts_with("Leak suspected (") || leak.starts_with("No leak suspected over "),
        "{leak}"
    );
    screenshot(c, "overview").await
}

async fn functions(c: &Client, base: &str) -> Result {
    c.goto(&format!("{base}#functions")).await?;
    wait_for(
        c,
        "document.querySelectorAll('#functions-table tbody tr a').length >= 4",
        "the ranking table",
    )
    .await?;
    // Sort by p99, descending: the rows come in that order and the heading says so.
    click(c, "#functions-table th button[data-key=p99_ns]").await?;
    let sort = js(c, "document.querySelector('th[aria-sort]').textContent + ' ' + document.querySelector('th[aria-sort]').getAttribute('aria-sort')").await?;
    assert_eq!(sort, "p99 descending");
    assert!(js(c, "location.hash")
        .await?
        .as_str()
        .unwrap_or_default()
        .contains("sort=p99_ns"));
    // Filter by name.
    c.find(Locator::Css("#fn-filter")).await?.send_keys("parse").await?;
    wait_for(
        c,
        "document.querySelectorAll('#functions-table tbody tr').length === 1",
        "one filtered row",
    )
    .await?;
    screenshot(c, "functions").await?;
    // Open the function.
    click(c, "#functions-table tbody a").await?;
    wait_for(
        c,
        "document.querySelectorAll('.figures dt').length > 10",
        "the function's figures",
    )
    .await?;
    let h1 = js(c, "document.querySelector('h1').textContent").await?;
    assert!(h1.as_str().unwrap_or_default().ends_with("parse_input"), "{h1}");
    wait_for(
        c,
        "document.querySelectorAll('.histogram rect').length >= 1",
        "the latency histogram",
    )
    .await?;
    let callers = wait_for(
        c,
        "document.querySelector('[aria-labelledby=callers-h] table')?.textContent",
        "the callers",
    )
    .await?;
    assert!(
        callers.as_str().unwrap_or_default().contains("handle_request"),
        "{callers}"
    );
    let share = js(
        c,
        "document.querySelector('[aria-labelledby=callers-h] tbody td:nth-child(3)').textContent",
    )
    .await?;
    assert_eq!(share, "100.0 %", "parse_input is only called from handle_request");
    // The figures and the edges come from one reading: the calls agree.
    let calls = js(c, "[document.querySelector('.figures dd').textContent, document.querySelector('[aria-labelledby=callers-h] tbody td:nth-child(2)').textContent]").await?;
    assert_eq!(calls[0], calls[1], "calls in the figures and from the one caller");
    screenshot(c, "function").await
}

async fn flame(c: &Client, base: &str) -> Result {
    c.goto(&format!("{base}#flame")).await?;
    wait_for(
        c,
        "document.querySelector('svg.flame g.frame[data-name$=handle_request]')",
        "the flame graph",
    )
    .await?;
    // Zoom into handle_request: it becomes the full-width focus, its parent an ancestor row.
    click(c, "svg.flame g.frame[data-name$=handle_request]").await?;
    wait_for(c, "location.hash.includes('focus=')", "the zoom in the URL").await?;
    let focus = js(c, "document.querySelector('svg.flame g.focus').dataset.name").await?;
    assert!(
        focus.as_str().unwrap_or_default().ends_with("handle_request"),
        "{focus}"
    );
    let widths = js(c, "[document.querySelector('svg.flame g.focus rect').getAttribute('width'), document.querySelector('svg.flame').getAttribute('width')]").await?;
    let (fw, sw) = (
        widths[0].as_str().unwrap_or("0").parse::<f64>()?,
        widths[1].as_str().unwrap_or("0").parse::<f64>()?,
    );
    assert!(fw >= sw - 2.0, "the zoomed frame spans the graph: {fw} of {sw}");
    assert!(js(c, "document.querySelectorAll('svg.flame g.ancestor').length").await? == 1);
    // The zoom survives a reload (it is in the URL).
    c.refresh().await?;
    wait_for(
        c,
        "document.querySelector('svg.flame g.focus')?.dataset.name.endsWith('handle_request')",
        "the zoom after a reload",
    )
    .await?;
    // Search highlights and says how much it covers.
    c.find(Locator::Css("#flame-search")).await?.send_keys("query").await?;
    let found = wait_for(
        c,
        "document.getElementById('flame-found').textContent",
        "the search result",
    )
    .await?;
    assert!(
        found.as_str().unwrap_or_default().starts_with("1 matching frames"),
        "{found}"
    );
    assert_eq!(
        js(
            c,
            "document.querySelector('svg.flame g.match').dataset.name.endsWith('slow_query')"
        )
        .await?,
        true
    );
    // Another weight redraws the graph.
    c.find(Locator::Css("#flame-weight"))
        .await?
        .select_by_value("alloc_bytes")
        .await?;
    wait_for(
        c,
        "location.hash.includes('weight=alloc_bytes')",
        "the weight in the URL",
    )
    .await?;
    // The keyboard: Escape on the focused frame zooms out to the root.
    c.execute("document.querySelector('svg.flame g.focus').focus()", vec![])
        .await?;
    c.find(Locator::Css("svg.flame g.focus"))
        .await?
        .send_keys("\u{E00C}")
        .await?;
    wait_for(
        c,
        "!document.querySelector('svg.flame g.ancestor')",
        "the zoom-out by Escape",
    )
    .await?;
    // And Enter on a frame zooms into it.
    c.execute(
        "document.querySelector('svg.flame g.frame[data-name$=handle_request]').focus()",
        vec![],
    )
    .await?;
    c.find(Locator::Css("svg.flame g.frame[data-name$=handle_request]"))
        .await?
        .send_keys("\u{E007}")
        .await?;
    wait_for(
        c,
        "document.querySelector('svg.flame g.focus')?.dataset.name.endsWith('handle_request')",
        "the zoom by Enter",
    )
    .await?;
    click(c, "#flame-reset").await?;
    c.find(Locator::Css("#flame-search")).await?.clear().await?;
    c.execute(
        "document.getElementById('flame-search').dispatchEvent(new Event('input'))",
        vec![],
    )
    .await?;
    c.find(Locator::Css("#flame-weight"))
        .await?
        .select_by_value("wall")
        .await?;
    if cfg!(feature = "profiling-full") {
        c.find(Locator::Css("#cpu-seconds")).await?.select_by_value("2").await?;
        click(c, "#cpu-sample").await?;
        wait_for(
            c,
            "document.querySelector('#cpu-profile object')",
            "the sampled CPU flame graph",
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        click(c, "#cpu-sample").await?;
        let msg = wait_for(c, "document.querySelector('#cpu-profile p:not(:empty)')?.textContent.includes('profiling-full') && document.querySelector('#cpu-profile p').textContent", "the missing-feature message").await?;
        assert!(msg.as_str().unwrap_or_default().contains("profiling-full"), "{msg}");
    }
    screenshot(c, "flame").await
}

async fn snapshots(c: &Client, base: &str) -> Result {
    // A fresh window, so the calls after the slowdown weigh as much as those before it.
    profiling_core::reset();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    c.goto(&format!("{base}#snapshots")).await?;
    wait_for(c, "document.getElementById('snap-take')", "the snapshot form").await?;
    c.find(Locator::Css("#snap-label")).await?.send_keys("before").await?;
    click(c, "#snap-take").await?;
    wait_for(
        c,
        "document.getElementById('snap-msg').textContent.startsWith('took')",
        "the first snapshot",
    )
    .await?;
    // slow_query gets ten times slower; enough calls at the new speed to move its mean.
    QUERY_US.store(3_000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    c.find(Locator::Css("#snap-label")).await?.send_keys("after").await?;
    click(c, "#snap-take").await?;
    wait_for(
        c,
        "document.querySelectorAll('#snapshots-table tbody tr').length === 2",
        "two snapshots listed",
    )
    .await?;
    // The page picked the first as base, the second as target, and diffed them.
    wait_for(c, "document.querySelector('#deltas-table')", "the per-function deltas").await?;
    wait_for(
        c,
        "document.querySelectorAll('#diff-flame g.frame').length >= 4",
        "the differential flame graph",
    )
    .await?;
    let hash = js(c, "location.hash").await?;
    assert!(
        hash.as_str().unwrap_or_default().contains("base=") && hash.as_str().unwrap_or_default().contains("target="),
        "{hash}"
    );
    let regressed = js(
        c,
        "[...document.querySelectorAll('#deltas-table tr.regressed td.fn')].map(td => td.textContent).join(' ')",
    )
    .await?;
    assert!(
        regressed.as_str().unwrap_or_default().contains("slow_query"),
        "slow_query regressed: {regressed}"
    );
    // Its frame is red (grew), not white or blue.
    let fill = js(
        c,
        "document.querySelector('#diff-flame g.frame[data-name$=slow_query] rect').getAttribute('fill')",
    )
    .await?;
    assert!(fill.as_str().unwrap_or_default().starts_with("hsl(0,"), "{fill}");
    screenshot(c, "snapshots").await
}
