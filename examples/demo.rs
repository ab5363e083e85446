//! The demo service: a small order API whose handlers and helpers are `#[profiled]`, a
//! built-in load generator that calls it over loopback so the rankings fill by themselves,
//! and the profiling routes mounted on the same port.
//!
//! ```text
//! cargo run --release --features profiling-full --example demo
//! ```
//!
//! Then open the printed URL of the profiling page. Environment:
//!
//! - `DEMO_BIND` (default `127.0.0.1:8080`; a busy port falls back to a free one);
//! - `DEMO_DURATION_SECS`: stop by itself after that many seconds (for CI smoke runs) and
//!   print the ranking;
//! - `DEMO_RPS`: requests per second of the load generator (default 40, at most 500);
//! - every `PROFILING_*` variable of profiling-server (see docs/http-api.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use profiling_core::{profiled, rank, RankOptions};
use profiling_server::{Config, ProfilingServer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[cfg(not(feature = "jemalloc"))]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator<profiling_core::Jemalloc> =
    profiling_core::ProfilingAllocator::jemalloc();

// ---------------------------------------------------------------------------------------
// The domain: orders in an in-memory "database".

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LineItem {
    sku: String,
    quantity: u32,
    unit_cents: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<LineItem>,
    total_cents: u64,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    customer: String,
    items: Vec<LineItem>,
}

/// The most orders kept: the store evicts the oldest beyond it, so memory stays flat.
const MAX_ORDERS: usize = 5_000;

#[derive(Debug, Default)]
struct Store {
    orders: RwLock<BTreeMap<u64, Order>>,
    next_id: AtomicU64,
}

impl Store {
    #[profiled]
    fn insert(&self, customer: String, items: Vec<LineItem>) -> Order {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let total_cents = items.iter().map(|i| i.unit_cents * u64::from(i.quantity)).sum();
        let order = Order {
            id,
            customer,
            items,
            total_cents,
        };
        let mut orders = self.orders.write().unwrap_or_else(|p| p.into_inner());
        orders.insert(id, order.clone());
        while orders.len() > MAX_ORDERS {
            orders.pop_first();
        }
        order
    }

    #[profiled]
    fn get(&self, id: u64) -> Option<Order> {
        self.orders.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// A full scan, as a query without an index would do.
    #[profiled]
    fn by_customer(&self, customer: &str) -> Vec<Order> {
        self.orders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|o| o.customer == customer)
            .cloned()
            .collect()
    }
}

#[profiled]
fn parse_order(body: &str) -> Result<NewOrder, String> {
    serde_json::from_str::<NewOrder>(body).map_err(|e| e.to_string())
}

#[profiled]
fn validate(order: &NewOrder) -> Result<(), String> {
    if order.customer.trim().is_empty() {
        return Err("customer is empty".to_owned());
    }
    if order.items.is_empty() || order.items.iter().any(|i| i.quantity == 0) {
        return Err("an order needs items with a quantity".to_owned());
    }
    Ok(())
}

#[profiled]
fn encode_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// Allocation-heavy: builds every line of a report as its own String, then sorts them.
#[profiled]
fn build_report(orders: &[Order]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for o in orders {
        for i in &o.items {
            lines.push(format!(
                "{:>8} {:<12} {:<10} x{:<3} {:>10}",
                o.id, o.customer, i.sku, i.quantity, i.unit_cents
            ));
        }
    }
    lines.sort();
    lines.join("\n")
}

/// CPU-bound: FNV-1a over a buffer, many rounds.
#[profiled]
fn checksum(rounds: u32) -> u64 {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..rounds {
        for &b in &data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Waits on a simulated downstream service (a sleep: wall time, no CPU).
#[profiled]
async fn call_inventory_service(sku: &str) -> u32 {
    let ms = 15 + (sku.len() as u64 * 7) % 20;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (sku.len() as u32 * 13) % 100
}

/// Exports the store into one large buffer (a large allocation the allocator records).
#[profiled]
fn export_archive(orders: &[Order]) -> usize {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024 * 1024);
    for o in orders {
        buf.extend_from_slice(encode_json(o).as_bytes());
    }
    buf.len()
}

// ---------------------------------------------------------------------------------------
// Handlers.

type AppState = Arc<Store>;

#[profiled]
async fn create_order(State(store): State<AppState>, body: String) -> impl IntoResponse {
    let order = match parse_order(&body) {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = validate(&order) {
        return (StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let saved = store.insert(order.customer, order.items);
    (StatusCode::CREATED, encode_json(&saved))
}

#[profiled]
async fn get_order(State(store): State<AppState>, Path(id): Path<u64>) -> impl IntoResponse {
    match store.get(id) {
        Some(o) => (StatusCode::OK, encode_json(&o)),
        None => (StatusCode::NOT_FOUND, "no such order".to_owned()),
    }
}

#[derive(Debug, Deserialize)]
struct CustomerQuery {
    customer: String,
}

#[profiled]
async fn list_orders(State(store): State<AppState>, Query(q): Query<CustomerQuery>) -> String {
    encode_json(&store.by_customer(&q.customer))
}

#[profiled]
async fn report(State(store): State<AppState>) -> String {
    let orders: Vec<Order> = store
        .orders
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .rev()
        .take(500)
        .cloned()
        .collect();
    build_report(&orders)
}

#[profiled]
async fn availability(Path(sku): Path<String>) -> Json<serde_json::Value> {
    let stock = call_inventory_service(&sku).await;
    Json(serde_json::json!({ "sku": sku, "stock": stock }))
}

#[profiled]
async fn checksum_handler() -> String {
    checksum(200).to_string()
}

#[profiled]
async fn export(State(store): State<AppState>) -> String {
    let orders: Vec<Order> = store
        .orders
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    format!("{} bytes exported", export_archive(&orders))
}

fn app(store: AppState) -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/report", get(report))
        .route("/inventory/{sku}", get(availability))
        .route("/checksum", get(checksum_handler))
        .route("/export", get(export))
        .with_state(store)
}

// ---------------------------------------------------------------------------------------
// The load generator: plain HTTP/1.1 over loopback, a bounded number of workers, each
// request with a timeout, at a modest rate.

const CUSTOMERS: [&str; 6] = ["ada", "grace", "alan", "edsger", "barbara", "ken"];
const SKUS: [&str; 5] = ["keyboard", "mouse", "monitor-27", "usb-c-hub", "desk-lamp"];

async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let status = std::str::from_utf8(&buf)
            .ok()
            .and_then(|t| t.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// A small xorshift generator: the load pattern needs no cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

async fn load_worker(addr: SocketAddr, seed: u64, interval: Duration, sent: Arc<AtomicU64>) {
    let mut rng = Rng(seed | 1);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let roll = rng.next() % 1000;
        let result = match roll {
            0..=399 => {
                let items: Vec<String> = (0..1 + rng.next() % 4)
                    .map(|_| {
                        format!(
                            r#"{{"sku":"{}","quantity":{},"unit_cents":{}}}"#,
                            rng.pick(&SKUS),
                            1 + rng.next() % 5,
                            100 + rng.next() % 10_000
                        )
                    })
                    .collect();
                let body = format!(
                    r#"{{"customer":"{}","items":[{}]}}"#,
                    rng.pick(&CUSTOMERS),
                    items.join(",")
                );
                send(addr, "POST", "/orders", &body).await
            }
            400..=649 => send(addr, "GET", &format!("/orders/{}", 1 + rng.next() % 2000), "").await,
            650..=799 => send(addr, "GET", &format!("/orders?customer={}", rng.pick(&CUSTOMERS)), "").await,
            800..=879 => send(addr, "GET", &format!("/inventory/{}", rng.pick(&SKUS)), "").await,
            880..=949 => send(addr, "GET", "/checksum", "").await,
            950..=998 => send(addr, "GET", "/report", "").await,
            _ => send(addr, "GET", "/export", "").await,
        };
        if result.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------

fn env_u64(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("environment variable {name} has an invalid value {v:?}: expected a whole number")),
        Err(_) => Ok(None),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let duration = env_u64("DEMO_DURATION_SECS")?.map(Duration::from_secs);
    let rps = env_u64("DEMO_RPS")?.unwrap_or(40).clamp(1, 500);
    let bind: SocketAddr = match std::env::var("DEMO_BIND") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("DEMO_BIND={v:?} is not an address like 127.0.0.1:8080"))?,
        Err(_) => "127.0.0.1:8080".parse()?,
    };

    let profiling = ProfilingServer::new(Config::from_env()?)?;
    let store: AppState = Arc::new(Store::default());
    let router = app(store).merge(profiling.router());

    let listener = match TcpListener::bind(bind).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{bind} is busy; using a free port instead");
            TcpListener::bind(SocketAddr::new(bind.ip(), 0)).await?
        }
        Err(e) => return Err(e.into()),
    };
    let addr = listener.local_addr()?;
    println!("demo service listening on http://{addr}");
    println!("  profiling page     http://{addr}/api/profiling/");
    println!("  bottlenecks (JSON) http://{addr}/api/profiling/bottlenecks?limit=10");
    println!("  memory             http://{addr}/api/profiling/memory");
    println!("  cpu                http://{addr}/api/profiling/cpu");
    println!("  allocations        http://{addr}/api/profiling/allocations");
    println!("  Prometheus         http://{addr}/metrics");
    println!("  leak analysis      curl -X POST http://{addr}/api/profiling/leak-detection");
    println!("load generator: {rps} requests/s over loopback; Ctrl-C to stop");

    // Two workers share the rate.
    let sent = Arc::new(AtomicU64::new(0));
    let per_worker = Duration::from_micros(2 * 1_000_000 / rps);
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            tokio::spawn(load_worker(
                addr,
                0x9e37_79b9_7f4a_7c15 ^ (w + 1),
                per_worker,
                Arc::clone(&sent),
            ))
        })
        .collect();

    let started = Instant::now();
    let stop = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(stop).await?;
    for w in workers {
        w.abort();
    }
    let ranking = rank(&profiling.snapshot(), &RankOptions::new().limit(10));
    println!(
        "\nstopped after {:.1} s, {} requests; top functions by self time:\n{ranking}",
        started.elapsed().as_secs_f64(),
        sent.load(Ordering::Relaxed)
    );
    Ok(())
}
