//! Configuration: a builder, and the environment variables that override it.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ENABLE_PROFILING` | record calls (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`) | `true` |
//! | `PROFILING_BIND` | address of the standalone listener | `127.0.0.1:8080` |
//! | `PROFILING_AUTH_TOKEN` | bearer token required on every route but the health check | none |
//! | `PROFILING_MEMORY_INTERVAL_SECS` | seconds between memory samples | 5 |
//! | `PROFILING_LEAK_CHECK_INTERVAL_SECS` | seconds between background leak analyses (0: none) | 300 |
//! | `PROFILING_MEMORY_WARNING_MB` | RSS (MiB) that raises `warning` | 650 |
//! | `PROFILING_MEMORY_ALERT_MB` | RSS (MiB) that raises `alert` | 700 |
//! | `PROFILING_LEAK_GROWTH_MB_PER_HOUR` | growth rate that makes a leak suspect | 10 |
//! | `PROFILING_LARGE_ALLOC_BYTES` | size from which one allocation is recorded and a leak suspect | 50 MiB |
//! | `PROFILING_SNAPSHOT_DIR` | directory where snapshots are also written | none |
//! | `PROFILING_MAX_SNAPSHOTS` | snapshots kept in memory | 32 |
//! | `PROFILING_METRICS_PREFIX` | prefix of every Prometheus metric | `profiling` |
//! | `PROFILING_METRICS_PATH` | path of the Prometheus exposition | `/metrics` |
//! | `PROFILING_ALLOWED_HOSTS` | host names accepted in `Host`/`Origin` besides loopback, comma-separated (`*`: any) | none |
//!
//! A malformed value is an [`Error::InvalidEnv`] naming the variable: the server does not
//! start on a silent default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use profiling_core::{LeakOptions, MemoryThresholds};

use crate::error::{Error, Result};

/// Default address of the standalone listener: loopback only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Most snapshots that can be kept in memory.
pub const MAX_SNAPSHOTS_LIMIT: usize = 10_000;

/// The server's configuration. Build it with [`Config::builder`] or [`Config::from_env`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) enabled: Option<bool>,
    pub(crate) bind: SocketAddr,
    pub(crate) auth_token: Option<String>,
    pub(crate) memory_interval: Duration,
    pub(crate) leak_check_interval: Option<Duration>,
    pub(crate) thresholds: MemoryThresholds,
    pub(crate) leak: LeakOptions,
    pub(crate) snapshot_dir: Option<PathBuf>,
    pub(crate) max_snapshots: usize,
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
            memory_interval: Duration::from_secs(5),
            leak_check_interval: Some(Duration::from_secs(300)),
            thresholds: MemoryThresholds::default(),
            leak: LeakOptions::default(),
            snapshot_dir: None,
            max_snapshots: 32,
            metrics_prefix: "profiling".to_owned(),
            sample_capacity: 720,
            metrics_path: "/metrics".to_owned(),
            allowed_hosts: Vec::new(),
        }
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

    /// Applies the process environment (see the module docs).
    pub fn env(self) -> Result<Self> {
        profiling_core::init_from_env()?;
        self.env_from(|name| std::env::var(name).ok())
    }

    /// Applies variables read through `lookup` (for tests and embedding).
    pub fn env_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let c = &mut self.config;
        if let Some(v) = lookup("ENABLE_PROFILING") {
            c.enabled = Some(
                profiling_core::parse_bool("ENABLE_PROFILING", &v)
                    .map_err(|_| invalid("ENABLE_PROFILING", &v, "expected true/false, 1/0, yes/no or on/off"))?,
            );
        }
        if let Some(v) = lookup("PROFILING_BIND") {
            c.bind = v.trim().parse().map_err(|_| {
                invalid(
                    "PROFILING_BIND",
                    &v,
                    "expected an IP address and port, e.g. 127.0.0.1:8080",
                )
            })?;
        }
        if let Some(v) = lookup("PROFILING_AUTH_TOKEN") {
            if v.trim().is_empty() {
                return Err(invalid(
                    "PROFILING_AUTH_TOKEN",
                    &v,
                    "must not be empty (unset it to disable auth)",
                ));
            }
            c.auth_token = Some(v.trim().to_owned());
        }
        if let Some(v) = lookup("PROFILING_MEMORY_INTERVAL_SECS") {
            let n = positive("PROFILING_MEMORY_INTERVAL_SECS", &v)?;
            c.memory_interval = Duration::from_secs(n);
        }
        if let Some(v) = lookup("PROFILING_LEAK_CHECK_INTERVAL_SECS") {
            let n = number("PROFILING_LEAK_CHECK_INTERVAL_SECS", &v)?;
            c.leak_check_interval = (n > 0).then(|| Duration::from_secs(n));
        }
        if let Some(v) = lookup("PROFILING_MEMORY_WARNING_MB") {
            c.thresholds.warning_bytes = positive("PROFILING_MEMORY_WARNING_MB", &v)?.saturating_mul(1 << 20);
        }
        if let Some(v) = lookup("PROFILING_MEMORY_ALERT_MB") {
            c.thresholds.alert_bytes = positive("PROFILING_MEMORY_ALERT_MB", &v)?.saturating_mul(1 << 20);
        }
        if let Some(v) = lookup("PROFILING_LEAK_GROWTH_MB_PER_HOUR") {
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite() && *x > 0.0)
                .ok_or_else(|| invalid("PROFILING_LEAK_GROWTH_MB_PER_HOUR", &v, "expected a positive number"))?;
            c.leak.growth_threshold_mb_per_hour = x;
        }
        if let Some(v) = lookup("PROFILING_LARGE_ALLOC_BYTES") {
            // Also read by profiling-core; the server applies it to the leak analysis too.
            c.leak.large_allocation_bytes = positive("PROFILING_LARGE_ALLOC_BYTES", &v)?;
        }
        if let Some(v) = lookup("PROFILING_SNAPSHOT_DIR") {
            if v.trim().is_empty() {
                return Err(invalid(
                    "PROFILING_SNAPSHOT_DIR",
                    &v,
                    "must not be empty (unset it to keep snapshots in memory only)",
                ));
            }
            c.snapshot_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("PROFILING_MAX_SNAPSHOTS") {
            let n = positive("PROFILING_MAX_SNAPSHOTS", &v)?;
            if n as usize > MAX_SNAPSHOTS_LIMIT {
                return Err(invalid("PROFILING_MAX_SNAPSHOTS", &v, "expected at most 10000"));
            }
            c.max_snapshots = n as usize;
        }
        if let Some(v) = lookup("PROFILING_METRICS_PREFIX") {
            if !valid_metric_prefix(v.trim()) {
                return Err(invalid(
                    "PROFILING_METRICS_PREFIX",
                    &v,
                    "expected [a-zA-Z_][a-zA-Z0-9_]*",
                ));
            }
            c.metrics_prefix = v.trim().to_owned();
        }
        if let Some(v) = lookup("PROFILING_METRICS_PATH") {
            c.metrics_path = v.trim().to_owned();
        }
        if let Some(v) = lookup("PROFILING_ALLOWED_HOSTS") {
            let hosts = v
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty());
            c.allowed_hosts.extend(hosts);
        }
        Ok(self)
    }

    /// Checks the values and returns the configuration.
    pub fn build(self) -> Result<Config> {
        let c = self.config;
        if c.memory_interval.is_zero() {
            return Err(Error::InvalidConfig("the memory interval must be above 0".to_owned()));
        }
        if c.thresholds.warning_bytes > c.thresholds.alert_bytes {
            return Err(Error::InvalidConfig(format!(
                "memory warning threshold ({} MiB) is above the alert threshold ({} MiB)",
                c.thresholds.warning_bytes >> 20,
                c.thresholds.alert_bytes >> 20
            )));
        }
        if c.max_snapshots == 0 || c.max_snapshots > MAX_SNAPSHOTS_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "max snapshots must be in 1..={MAX_SNAPSHOTS_LIMIT}, got {}",
                c.max_snapshots
            )));
        }
        if !valid_metric_prefix(&c.metrics_prefix) {
            return Err(Error::InvalidConfig(format!(
                "metrics prefix {:?} is not a valid Prometheus name",
                c.metrics_prefix
            )));
        }
        if c.auth_token.as_deref().is_some_and(|t| t.is_empty()) {
            return Err(Error::InvalidConfig("the auth token must not be empty".to_owned()));
        }
        if !c.metrics_path.starts_with('/') || c.metrics_path.contains(char::is_whitespace) {
            return Err(Error::InvalidConfig(format!(
                "metrics path {:?} must start with / and hold no space (PROFILING_METRICS_PATH)",
                c.metrics_path
            )));
        }
        if c.sample_capacity < 2 {
            return Err(Error::InvalidConfig("keep at least 2 memory samples".to_owned()));
        }
        Ok(c)
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn number(name: &'static str, v: &str) -> Result<u64> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| invalid(name, v, "expected a non-negative whole number"))
}

fn positive(name: &'static str, v: &str) -> Result<u64> {
    match number(name, v)? {
        0 => Err(invalid(name, v, "expected a whole number above 0")),
        n => Ok(n),
    }
}

fn valid_metric_prefix(p: &str) -> bool {
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
}
