//! The demo's order service: a small order API whose handlers and helpers are `#[profiled]`.
//! Shared by the demo (`examples/demo/main.rs`) and the end-to-end overhead benchmark
//! (`tests/benches/end_to_end.rs`), so both measure the same code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use profiling_core::profiled;
use serde::{Deserialize, Serialize};

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
pub struct Store {
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

pub type AppState = Arc<Store>;

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

pub fn app(store: AppState) -> Router {
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
// The request mix of the load generator (and of the end-to-end benchmark).

pub const CUSTOMERS: [&str; 6] = ["ada", "grace", "alan", "edsger", "barbara", "ken"];
pub const SKUS: [&str; 5] = ["keyboard", "mouse", "monitor-27", "usb-c-hub", "desk-lamp"];

/// A small xorshift generator: the load pattern needs no cryptographic randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// One request of the mix.
#[derive(Debug)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// JSON body (empty for GET).
    pub body: String,
}

/// Draws the next request of the demo's mix: 40% new orders, 25% lookups by id, 15% scans by
/// customer, 8% inventory checks (a 15-35 ms wait; left out when `with_waits` is false), 7%
/// checksums, 5% reports, 0.1% exports.
pub fn next_request(rng: &mut Rng, with_waits: bool) -> Request {
    let get = |path: String| Request {
        method: "GET",
        path,
        body: String::new(),
    };
    loop {
        return match rng.next() % 1000 {
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
                Request {
                    method: "POST",
                    path: "/orders".to_owned(),
                    body,
                }
            }
            400..=649 => get(format!("/orders/{}", 1 + rng.next() % 2000)),
            650..=799 => get(format!("/orders?customer={}", rng.pick(&CUSTOMERS))),
            800..=879 if !with_waits => continue,
            800..=879 => get(format!("/inventory/{}", rng.pick(&SKUS))),
            880..=949 => get("/checksum".to_owned()),
            950..=998 => get("/report".to_owned()),
            _ => get("/export".to_owned()),
        };
    }
}
