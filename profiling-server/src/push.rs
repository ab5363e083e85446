//! Push, for hosts nobody can scrape (`push` feature): every interval (default 15 s) the
//! instrumented call tree of that interval, and optionally a sampled CPU profile, are sent
//! to a Pyroscope-compatible ingest endpoint with the Connect API
//! (`POST {endpoint}/push.v1.PusherService/Push`, `Content-Type: application/proto`, body a
//! `push.v1.PushRequest` whose series carry `__name__`, `service_name` and the user's labels,
//! each sample a gzip pprof).
//!
//! - Auth: basic or bearer; `X-Scope-OrgID` for multi-tenant installs.
//! - A bounded queue between the collector and the sender: when the backend is slow or down,
//!   profiles that do not fit are dropped, and so are those still failing after the retries
//!   (exponential backoff), counted in `/metrics` as `{p}_push_dropped_total`; memory does
//!   not grow.
//! - The sampled CPU profile holds the process's one CPU sampler for most of each interval,
//!   so `/debug/pprof/profile` answers 429 meanwhile: it is off by default ([`PushConfig::cpu`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use profiling_core::render::fold::Weight;
use profiling_core::render::pprof::{gzip_profile, tree_profile_delta};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::state::ProfilingServer;

/// Profiles dropped since the process started (queue full, or retries exhausted).
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Profiles the backend accepted.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Profiles dropped so far by every pusher of the process.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Profiles accepted by the backend so far.
pub fn sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// The Connect API's messages (`push.v1`, `types.v1`), as Pyroscope defines them.
pub mod proto {
    /// `push.v1.PushRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        /// One series per profile type.
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }
    /// `push.v1.RawProfileSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawProfileSeries {
        /// `__name__`, `service_name` and user labels.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        /// The profiles.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<RawSample>,
    }
    /// `push.v1.RawSample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawSample {
        /// A pprof profile, gzip-compressed.
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
        /// A unique id.
        #[prost(string, tag = "2")]
        pub id: String,
    }
    /// `types.v1.LabelPair`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        /// Label name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Label value.
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// Credentials sent with every push.
#[derive(Clone, Debug)]
pub enum Auth {
    /// `Authorization: Basic base64(user:password)` (Grafana Cloud: user = tenant id).
    Basic { user: String, password: String },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

/// Where and how to push.
#[derive(Clone, Debug)]
#[must_use]
pub struct PushConfig {
    endpoint: String,
    service_name: String,
    labels: Vec<(String, String)>,
    interval: Duration,
    auth: Option<Auth>,
    tenant: Option<String>,
    queue: usize,
    retries: u32,
    backoff: Duration,
    cpu: bool,
}

impl PushConfig {
    /// Pushes to `endpoint` (e.g. `http://pyroscope:4040`) as `service_name`, every 15 s.
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            service_name: service_name.into(),
            labels: Vec::new(),
            interval: Duration::from_secs(15),
            auth: None,
            tenant: None,
            queue: 8,
            retries: 3,
            backoff: Duration::from_millis(500),
            cpu: false,
        }
    }
    /// Adds a label to every series (e.g. `env=prod`).
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }
    /// Interval between pushes (default 15 s; at least 1 s).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d.max(Duration::from_secs(1));
        self
    }
    /// Credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }
    /// `X-Scope-OrgID` for a multi-tenant backend.
    pub fn tenant(mut self, id: impl Into<String>) -> Self {
        self.tenant = Some(id.into());
        self
    }
    /// Pushes waiting to be sent at most (default 8); more are dropped.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
    /// Retries of a failed push (default 3), waiting `backoff`, then twice that, ... (default 500 ms).
    pub fn retries(mut self, n: u32, backoff: Duration) -> Self {
        self.retries = n;
        self.backoff = backoff;
        self
    }
    /// Also sample CPU for each interval minus 1 s and push it as `process_cpu` (default off:
    /// it holds the one CPU sampler of the process).
    pub fn cpu(mut self, on: bool) -> Self {
        self.cpu = on;
        self
    }
}

/// The running pusher; dropping it stops it.
#[derive(Debug)]
pub struct PushHandle {
    collector: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl Drop for PushHandle {
    fn drop(&mut self) {
        self.collector.abort();
        self.sender.abort();
    }
}

/// Starts pushing `server`'s profiles. Call from within a Tokio runtime.
pub fn spawn(server: &ProfilingServer, config: PushConfig) -> PushHandle {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(config.queue);
    let config = Arc::new(config);
    let shared = Arc::clone(&server.shared);
    let c = Arc::clone(&config);
    let collector = tokio::spawn(async move {
        let mut earlier = shared.snapshot();
        let mut from = unix_secs();
        loop {
            let cpu = if c.cpu {
                crate::profiles::sample_cpu(
                    &shared,
                    c.interval
                        .saturating_sub(Duration::from_secs(1))
                        .max(Duration::from_secs(1)),
                    |p| p.pprof_gzip(),
                )
                .await
                .ok()
            } else {
                tokio::time::sleep(c.interval).await;
                None
            };
            let later = shared.snapshot();
            let until = unix_secs();
            let mut series = Vec::new();
            let tree = tree_profile_delta(&earlier, &later, Weight::Wall);
            if let Ok(gz) = gzip_profile(&tree) {
                series.push(one_series(&c, "wall", gz, from, until));
            }
            if let Some(gz) = cpu {
                series.push(one_series(&c, "process_cpu", gz, from, until));
            }
            let body = prost::Message::encode_to_vec(&proto::PushRequest { series });
            if tx.try_send(body).is_err() {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            earlier = later;
            from = until;
        }
    });
    let sender = tokio::spawn(send_loop(config, rx));
    PushHandle { collector, sender }
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn one_series(c: &PushConfig, name: &str, gz: Vec<u8>, from: u64, until: u64) -> proto::RawProfileSeries {
    let pair = |n: &str, v: &str| proto::LabelPair {
        name: n.to_owned(),
        value: v.to_owned(),
    };
    let mut labels = vec![pair("__name__", name), pair("service_name", &c.service_name)];
    labels.extend(c.labels.iter().map(|(n, v)| pair(n, v)));
    proto::RawProfileSeries {
        labels,
        samples: vec![proto::RawSample {
            raw_profile: gz,
            id: format!("{}-{name}-{from}-{until}", c.service_name),
        }],
    }
}

async fn send_loop(c: Arc<PushConfig>, mut rx: mpsc::Receiver<Vec<u8>>) {
    let client: Client<_, Full<axum::body::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("{}/push.v1.PusherService/Push", c.endpoint);
    while let Some(body) = rx.recv().await {
        let mut wait = c.backoff;
        let mut delivered = false;
        for attempt in 0..=c.retries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
            let Ok(req) = request(&c, &url, body.clone()) else {
                break;
            };
            match client.request(req).await {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    let _ = resp.into_body().collect().await;
                    delivered = true;
                    break;
                }
                // A request the backend refuses as malformed or unauthorized will not improve.
                Ok(resp) if resp.status().is_client_error() && resp.status() != StatusCode::TOO_MANY_REQUESTS => break,
                _ => {}
            }
        }
        let counter = if delivered { &SENT } else { &DROPPED };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn request(c: &PushConfig, url: &str, body: Vec<u8>) -> Result<Request<Full<axum::body::Bytes>>, axum::http::Error> {
    use base64::Engine;
    let mut b = Request::post(url)
        .header(header::CONTENT_TYPE, "application/proto")
        .header("Connect-Protocol-Version", "1");
    match &c.auth {
        Some(Auth::Basic { user, password }) => {
            let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            b = b.header(header::AUTHORIZATION, format!("Basic {creds}"));
        }
        Some(Auth::Bearer(t)) => b = b.header(header::AUTHORIZATION, format!("Bearer {t}")),
        None => {}
    }
    if let Some(t) = &c.tenant {
        b = b.header("X-Scope-OrgID", t);
    }
    b.body(Full::new(body.into()))
}
