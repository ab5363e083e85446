//! The browser side of the page test: ChromeDriver on a free loopback port, a headless
//! Chromium session with the flags this machine needs, and the few helpers the steps use
//! (poll a JavaScript condition, click, screenshot).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// ChromeDriver on a free loopback port, killed when dropped.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub fn start(program: &Path) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn browser(driver: &Driver, chromium: &Path, profile_dir: &Path) -> Result<Client> {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(format!("--user-data-dir={}", profile_dir.display())))
    .collect::<Vec<_>>();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium.display().to_string(), "args": args },
    });
    let caps = caps.as_object().cloned().ok_or("capabilities are an object")?;
    Ok(ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await?)
}

/// Polls the JavaScript expression `expr` until it is truthy; its value.
pub async fn wait_for(c: &Client, expr: &str, what: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.execute(&format!("return {expr};"), vec![]).await?;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let status = c
                .execute("return document.getElementById('status').textContent", vec![])
                .await?;
            return Err(format!("timed out waiting for {what} ({expr}); page status: {status}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn js(c: &Client, expr: &str) -> Result<Value> {
    Ok(c.execute(&format!("return {expr};"), vec![]).await?)
}

pub async fn click(c: &Client, css: &str) -> Result {
    c.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("page-screenshots")
}

pub async fn screenshot(c: &Client, name: &str) -> Result {
    // Let the charts and the refresh settle, and take the tooltip away.
    c.execute(
        "document.querySelectorAll('.tooltip').forEach(t => t.hidden = true); window.scrollTo(0, 0);",
        vec![],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{name}.png")), png)?;
    Ok(())
}
