//! Configuration: a builder, and the environment variables that override it
//! ([`ConfigBuilder::env`], parsed in `config/env.rs`).
//!
//! | variable | meaning | accepted | default |
//! |---|---|---|---|
//! | `ENABLE_PROFILING` | record calls | `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` | `true` |
//! | `PROFILING_BIND` | address of the standalone listener | IP:port; not loopback needs a token (below) | `127.0.0.1:8080` |
//! | `PROFILING_AUTH_TOKEN` | bearer token required on every route but the health check | non-empty | none |
//! | `PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN` | allow a non-loopback `PROFILING_BIND` without a token | boolean | `false` |
//! | `PROFILING_MEMORY_INTERVAL_SECS` | seconds between memory samples | 1 to 86400 | 5 |
//! | `PROFILING_LEAK_CHECK_INTERVAL_SECS` | seconds between background leak analyses (0: none) | 0 to 604800 | 300 |
//! | `PROFILING_MEMORY_WARNING_MB` | RSS (MiB) that raises `warning` | 1 to 16777216 | 650 |
//! | `PROFILING_MEMORY_ALERT_MB` | RSS (MiB) that raises `alert` | 1 to 16777216 | 700 |
//! | `PROFILING_LEAK_GROWTH_MB_PER_HOUR` | growth rate that makes a leak suspect | above 0, at most 1048576 | 10 |
//! | `PROFILING_LARGE_ALLOC_BYTES` | size from which one allocation is recorded and a leak suspect | 1 to 2^40 | 50 MiB |
//! | `PROFILING_SNAPSHOT_DIR` | directory where snapshots are also written | a path | none |
//! | `PROFILING_MAX_SNAPSHOTS` | snapshots kept in memory | 1 to 10000 | 32 |
//! | `PROFILING_MAX_SNAPSHOT_FILES` | snapshot files kept in the directory (oldest deleted) | 1 to 100000 | 256 |
//! | `PROFILING_MAX_SNAPSHOT_DISK_MB` | MiB the snapshot files may take together (oldest deleted) | 1 to 1048576 | 1024 |
//! | `PROFILING_METRICS_PREFIX` | prefix of every Prometheus metric | `[a-zA-Z_][a-zA-Z0-9_]*` | `profiling` |
//! | `PROFILING_METRICS_PATH` | path of the Prometheus exposition | starts with `/`, no space | `/metrics` |
//! | `PROFILING_ALLOWED_HOSTS` | host names accepted in `Host`/`Origin` besides loopback, comma-separated (`*`: any) | names | none |
//!
//! A malformed or out-of-range value is an [`profiling_core::Error::InvalidEnv`] naming the variable, and a
//! builder value out of the same range an [`Error::InvalidConfig`]: the server does not start
//! on a silent default, nor on a value that would fail later.
//!
//! (Over 500 lines only with its unit tests: the code is the first 366 lines, the tests the
//! other 161, kept beside it as the house does for pure functions.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use profiling_core::analyze::leak::LeakOptions;
use profiling_core::analyze::memory::MemoryThresholds;
use profiling_core::render::snapshot_file::DiskLimits;

use crate::error::{Error, Result};

mod env;

pub use env::ranges;

/// Default address of the standalone listener: loopback only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Most snapshots that can be kept in memory.
pub const MAX_SNAPSHOTS_LIMIT: usize = 10_000;

/// The server's configuration. Build it with [`Config::builder`] or [`Config::from_env`].
///
/// Its `Debug` output shows every setting but the token, which it redacts.
#[derive(Clone)]
pub struct Config {
    pub(crate) enabled: Option<bool>,
    pub(crate) bind: SocketAddr,
    pub(crate) auth_token: Option<String>,
    pub(crate) allow_remote_without_token: bool,
    pub(crate) memory_interval: Duration,
    pub(crate) leak_check_interval: Option<Duration>,
    pub(crate) thresholds: MemoryThresholds,
    pub(crate) leak: LeakOptions,
    pub(crate) snapshot_dir: Option<PathBuf>,
    pub(crate) max_snapshots: usize,
    pub(crate) snapshot_disk: DiskLimits,
    pub(crate) metrics_prefix: String,
    pub(crate) sample_capacity: usize,
    pub(crate) metrics_path: String,
    pub(crate) allowed_hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: None,
            bind: DEFAULT_BIND,
            auth_token: None,
            allow_remote_without_token: false,
            memory_interval: Duration::from_secs(5),
            leak_check_interval: Some(Duration::from_secs(300)),
            thresholds: MemoryThresholds::default(),
            leak: LeakOptions::default(),
            snapshot_dir: None,
            max_snapshots: 32,
            snapshot_disk: DiskLimits::default(),
            metrics_prefix: "profiling".to_owned(),
            sample_capacity: 720,
            metrics_path: "/metrics".to_owned(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("enabled", &self.enabled)
            .field("bind", &self.bind)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<redacted>"))
            .field("allow_remote_without_token", &self.allow_remote_without_token)
            .field("memory_interval", &self.memory_interval)
            .field("leak_check_interval", &self.leak_check_interval)
            .field("thresholds", &self.thresholds)
            .field("leak", &self.leak)
            .field("snapshot_dir", &self.snapshot_dir)
            .field("max_snapshots", &self.max_snapshots)
            .field("snapshot_disk", &self.snapshot_disk)
            .field("metrics_prefix", &self.metrics_prefix)
            .field("sample_capacity", &self.sample_capacity)
            .finish()
    }
}

impl Config {
    /// A builder with the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The defaults overridden by the environment.
    pub fn from_env() -> Result<Config> {
        Config::builder().env()?.build()
    }

    /// Address of the standalone listener.
    pub fn bind(&self) -> SocketAddr {
        self.bind
    }

    /// Whether a bearer token is required.
    pub fn auth_required(&self) -> bool {
        self.auth_token.is_some()
    }

    /// Directory where snapshots are written, if any.
    pub fn snapshot_dir(&self) -> Option<&std::path::Path> {
        self.snapshot_dir.as_deref()
    }

    /// Prefix of the Prometheus metrics.
    pub fn metrics_prefix(&self) -> &str {
        &self.metrics_prefix
    }
}

/// Builds a [`Config`]. Setters take the value; [`ConfigBuilder::env`] applies the
/// environment on top of what was set so far.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Turns recording on or off when the server starts (default: leave it as it is).
    pub fn enabled(mut self, on: bool) -> Self {
        self.config.enabled = Some(on);
        self
    }

    /// Address of the standalone listener (default `127.0.0.1:8080`).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every route but the health check.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.config.auth_token = Some(token.into());
        self
    }

    /// Allows a non-loopback [`bind`](Self::bind) address without an auth token (default
    /// `false`: such a configuration is refused, as anyone who can reach the port could read
    /// every profile and reset the figures).
    pub fn allow_remote_without_token(mut self, allow: bool) -> Self {
        self.config.allow_remote_without_token = allow;
        self
    }

    /// Time between memory samples (default 5 s).
    pub fn memory_interval(mut self, d: Duration) -> Self {
        self.config.memory_interval = d;
        self
    }

    /// Time between background leak analyses (default 300 s; `None`: never).
    pub fn leak_check_interval(mut self, d: Option<Duration>) -> Self {
        self.config.leak_check_interval = d;
        self
    }

    /// RSS from which `warning` is raised, MiB (default 650).
    pub fn memory_warning_mb(mut self, mb: u64) -> Self {
        self.config.thresholds.warning_bytes = mb.saturating_mul(1 << 20);
        self
    }

    /// RSS from which `alert` is raised, MiB (default 700).
    pub fn memory_alert_mb(mut self, mb: u64) -> Self {
        self.config.thresholds.alert_bytes = mb.saturating_mul(1 << 20);
        self
    }

    /// Thresholds of the leak analysis.
    pub fn leak_options(mut self, o: LeakOptions) -> Self {
        self.config.leak = o;
        self
    }

    /// Also writes snapshots to this directory (atomically: temp file, then rename).
    pub fn snapshot_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.snapshot_dir = Some(dir.into());
        self
    }

    /// Snapshots kept in memory (default 32); the oldest is dropped first.
    pub fn max_snapshots(mut self, n: usize) -> Self {
        self.config.max_snapshots = n;
        self
    }

    /// Most snapshot files kept in the snapshot directory (default 256); the oldest are
    /// deleted first.
    pub fn max_snapshot_files(mut self, n: usize) -> Self {
        self.config.snapshot_disk.max_files = n;
        self
    }

    /// Most bytes the snapshot files may take together, MiB (default 1024); the oldest are
    /// deleted first.
    pub fn max_snapshot_disk_mb(mut self, mb: u64) -> Self {
        self.config.snapshot_disk.max_bytes = mb.saturating_mul(1 << 20);
        self
    }

    /// Prefix of every Prometheus metric (default `profiling`).
    pub fn metrics_prefix(mut self, p: impl Into<String>) -> Self {
        self.config.metrics_prefix = p.into();
        self
    }

    /// Memory samples kept (default 720: an hour at 5 s).
    pub fn sample_capacity(mut self, n: usize) -> Self {
        self.config.sample_capacity = n;
        self
    }

    /// Path of the Prometheus exposition (default `/metrics`), e.g. when the application
    /// already serves its own `/metrics`.
    pub fn metrics_path(mut self, p: impl Into<String>) -> Self {
        self.config.metrics_path = p.into();
        self
    }

    /// Also accepts this host name (no port) in `Host` and `Origin`, besides the loopback
    /// ones; `*` accepts any. See the server's `auth.rs`.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.config.allowed_hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// Checks the values and returns the configuration.
    pub fn build(self) -> Result<Config> {
        let c = self.config;
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if !ranges::MEMORY_INTERVAL.contains(&c.memory_interval) {
            return bad(format!(
                "the memory interval must be from 1 ms to 86400 s, got {:?}",
                c.memory_interval
            ));
        }
        if c.leak_check_interval
            .is_some_and(|d| !ranges::LEAK_CHECK_INTERVAL.contains(&d))
        {
            return bad(format!(
                "the leak-check interval must be from 1 ms to 604800 s (or None), got {:?}",
                c.leak_check_interval
            ));
        }
        let t = c.thresholds;
        for (name, bytes) in [("warning", t.warning_bytes), ("alert", t.alert_bytes)] {
            if !ranges::MEMORY_THRESHOLD_BYTES.contains(&bytes) {
                return bad(format!(
                    "the memory {name} threshold must be from 1 MiB to 16 TiB, got {bytes} bytes"
                ));
            }
        }
        if t.warning_bytes > t.alert_bytes {
            return bad(format!(
                "memory warning threshold ({} MiB) is above the alert threshold ({} MiB)",
                t.warning_bytes >> 20,
                t.alert_bytes >> 20
            ));
        }
        let growth = c.leak.growth_threshold_mb_per_hour;
        if !(growth > 0.0 && growth <= ranges::MAX_LEAK_GROWTH_MB_PER_HOUR) {
            return bad(format!(
                "the leak growth threshold must be above 0 and at most {} MiB/hour, got {growth}",
                ranges::MAX_LEAK_GROWTH_MB_PER_HOUR
            ));
        }
        if !ranges::LARGE_ALLOCATION_BYTES.contains(&c.leak.large_allocation_bytes) {
            return bad(format!(
                "the large-allocation size must be from 1 byte to 1 TiB, got {}",
                c.leak.large_allocation_bytes
            ));
        }
        if !ranges::MAX_SNAPSHOTS.contains(&c.max_snapshots) {
            return bad(format!(
                "max snapshots must be in 1..={MAX_SNAPSHOTS_LIMIT}, got {}",
                c.max_snapshots
            ));
        }
        if !ranges::MAX_SNAPSHOT_FILES.contains(&c.snapshot_disk.max_files) {
            return bad(format!(
                "max snapshot files must be from 1 to 100000, got {}",
                c.snapshot_disk.max_files
            ));
        }
        if !ranges::MAX_SNAPSHOT_DISK_BYTES.contains(&c.snapshot_disk.max_bytes) {
            return bad(format!(
                "the snapshot directory bound must be from 1 MiB to 1 TiB, got {} bytes",
                c.snapshot_disk.max_bytes
            ));
        }
        if !ranges::SAMPLE_CAPACITY.contains(&c.sample_capacity) {
            return bad(format!(
                "memory samples kept must be from 2 to 1000000, got {}",
                c.sample_capacity
            ));
        }
        if !valid_metric_prefix(&c.metrics_prefix) {
            return bad(format!(
                "metrics prefix {:?} is not a valid Prometheus name",
                c.metrics_prefix
            ));
        }
        if c.auth_token.as_deref().is_some_and(|t| t.is_empty()) {
            return bad("the auth token must not be empty".to_owned());
        }
        if !c.metrics_path.starts_with('/') || c.metrics_path.contains(char::is_whitespace) {
            return Err(Error::InvalidConfig(format!(
                "metrics path {:?} must start with / and hold no space (PROFILING_METRICS_PATH)",
                c.metrics_path
            )));
        }
        if !c.bind.ip().is_loopback() && c.auth_token.is_none() && !c.allow_remote_without_token {
            return bad(format!(
                "refusing to serve on {} without PROFILING_AUTH_TOKEN: it is not a loopback address, so \
                 anyone who reaches the port could read every profile and reset the figures; set \
                 PROFILING_AUTH_TOKEN (or Config::builder().auth_token(..)), bind 127.0.0.1, or set \
                 PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN=1 (allow_remote_without_token(true)) if the network \
                 is trusted",
                c.bind
            ));
        }
        Ok(c)
    }
}

pub(crate) fn valid_metric_prefix(p: &str) -> bool {
    let mut chars = p.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_are_loopback_and_documented_values() {
        let c = Config::builder().build().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.memory_interval, Duration::from_secs(5));
        assert_eq!(c.leak_check_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.thresholds.warning_bytes, 650 << 20);
        assert_eq!(c.thresholds.alert_bytes, 700 << 20);
        assert!(c.auth_token.is_none() && c.snapshot_dir.is_none());
    }

    #[test]
    fn environment_overrides_the_builder() {
        let c = Config::builder()
            .env_from(env(&[
                ("PROFILING_BIND", "0.0.0.0:9000"),
                ("PROFILING_AUTH_TOKEN", "s3cret"),
                ("PROFILING_MEMORY_INTERVAL_SECS", "2"),
                ("PROFILING_LEAK_CHECK_INTERVAL_SECS", "0"),
                ("PROFILING_MEMORY_WARNING_MB", "100"),
                ("PROFILING_MEMORY_ALERT_MB", "200"),
                ("PROFILING_SNAPSHOT_DIR", "/tmp/snaps"),
                ("ENABLE_PROFILING", "off"),
                ("PROFILING_LARGE_ALLOC_BYTES", "1048576"),
            ]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.auth_token.as_deref(), Some("s3cret"));
        assert_eq!(c.memory_interval, Duration::from_secs(2));
        assert_eq!(c.leak_check_interval, None);
        assert_eq!(c.thresholds.alert_bytes, 200 << 20);
        assert_eq!(c.enabled, Some(false));
        assert_eq!(c.leak.large_allocation_bytes, 1 << 20);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (k, v) in [
            ("PROFILING_MEMORY_INTERVAL_SECS", "five"),
            ("PROFILING_MEMORY_INTERVAL_SECS", "0"),
            ("PROFILING_LEAK_CHECK_INTERVAL_SECS", "-1"),
            ("PROFILING_MEMORY_WARNING_MB", "6.5"),
            ("PROFILING_MEMORY_ALERT_MB", ""),
            ("PROFILING_BIND", "localhost"),
            ("PROFILING_AUTH_TOKEN", " "),
            ("ENABLE_PROFILING", "maybe"),
            ("PROFILING_METRICS_PREFIX", "9bad"),
            ("PROFILING_MAX_SNAPSHOTS", "100000"),
            ("PROFILING_LARGE_ALLOC_BYTES", "50MB"),
            ("PROFILING_LEAK_GROWTH_MB_PER_HOUR", "-1"),
            ("PROFILING_SNAPSHOT_DIR", ""),
        ] {
            let err = Config::builder().env_from(env(&[(k, v)])).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(k), "{k}={v}: {msg}");
        }
    }

    #[test]
    fn inconsistent_thresholds_are_rejected() {
        let err = Config::builder().memory_warning_mb(800).build().unwrap_err();
        assert!(err.to_string().contains("warning threshold"), "{err}");
    }

    /// `env` then `build`: what start-up does.
    fn start_up(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::builder().env_from(env(pairs))?.build()
    }

    #[test]
    fn durations_and_sizes_outside_their_range_stop_start_up() {
        // Each of these passed validation once; the first panicked later in the sampler thread.
        for (k, v) in [
            ("PROFILING_MEMORY_INTERVAL_SECS", "18446744073709551615"),
            ("PROFILING_MEMORY_INTERVAL_SECS", "86401"),
            ("PROFILING_LEAK_CHECK_INTERVAL_SECS", "18446744073709551615"),
            ("PROFILING_LEAK_CHECK_INTERVAL_SECS", "604801"),
            ("PROFILING_MEMORY_WARNING_MB", "18446744073709551615"),
            ("PROFILING_MEMORY_ALERT_MB", "18446744073709551615"),
            ("PROFILING_LEAK_GROWTH_MB_PER_HOUR", "1e300"),
            ("PROFILING_LARGE_ALLOC_BYTES", "18446744073709551615"),
            ("PROFILING_MAX_SNAPSHOTS", "0"),
        ] {
            let msg = match start_up(&[(k, v)]) {
                Ok(c) => panic!("{k}={v} accepted: {c:?}"),
                Err(e) => e.to_string(),
            };
            assert!(msg.contains(k), "{k}={v}: {msg}");
        }
        // The bounds themselves are accepted.
        for (k, v) in [
            ("PROFILING_MEMORY_INTERVAL_SECS", "86400"),
            ("PROFILING_LEAK_CHECK_INTERVAL_SECS", "604800"),
            ("PROFILING_MEMORY_ALERT_MB", "16777216"),
        ] {
            start_up(&[(k, v)]).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
        }
        // The builder is held to the same ranges.
        for b in [
            Config::builder().memory_interval(Duration::MAX),
            Config::builder().leak_check_interval(Some(Duration::MAX)),
            Config::builder().leak_check_interval(Some(Duration::ZERO)),
            Config::builder().memory_alert_mb(u64::MAX),
            Config::builder().sample_capacity(usize::MAX),
        ] {
            assert!(b.clone().build().is_err(), "{b:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let builder = Config::builder()
            .env_from(env(&[("PROFILING_AUTH_TOKEN", "hunter2-secret")]))
            .unwrap();
        let config = builder.clone().build().unwrap();
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{builder:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("auth_token"), "{shown}");
        }
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token_or_an_explicit_opt_out() {
        let err = start_up(&[("PROFILING_BIND", "0.0.0.0:9000")]).unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:9000")
                && err.contains("PROFILING_AUTH_TOKEN")
                && err.contains("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN"),
            "{err}"
        );
        assert!(Config::builder().bind("[::]:0".parse().unwrap()).build().is_err());
        assert!(Config::builder()
            .bind("192.168.1.4:80".parse().unwrap())
            .build()
            .is_err());
        start_up(&[("PROFILING_BIND", "0.0.0.0:9000"), ("PROFILING_AUTH_TOKEN", "t")]).unwrap();
        start_up(&[
            ("PROFILING_BIND", "0.0.0.0:9000"),
            ("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN", "1"),
        ])
        .unwrap();
        for loopback in ["127.0.0.1:0", "127.0.0.2:8080", "[::1]:8080"] {
            Config::builder().bind(loopback.parse().unwrap()).build().unwrap();
        }
        let e = start_up(&[("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN", "perhaps")]).unwrap_err();
        assert!(e.to_string().contains("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN"), "{e}");
    }
}
