//! Where the environment variables of the server are parsed (the table is in
//! [`crate::config`]), and the ranges every duration and size is held to ([`ranges`]), for
//! the environment and the builder alike. The recording switches (`ENABLE_PROFILING`,
//! `PROFILING_LARGE_ALLOC_BYTES`) are parsed by `profiling-core`'s
//! [`EnvSettings`](profiling_core::record::config::EnvSettings) and reused here.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::{valid_metric_prefix, ConfigBuilder};
use crate::error::{Error, Result};

/// The accepted range of every duration and size setting, inclusive, as documented.
pub mod ranges {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    /// `PROFILING_MEMORY_INTERVAL_SECS`, in seconds.
    pub const MEMORY_INTERVAL_SECS: RangeInclusive<u64> = 1..=86_400;
    /// [`ConfigBuilder::memory_interval`](crate::ConfigBuilder::memory_interval): 1 ms to a day.
    pub const MEMORY_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(86_400);
    /// `PROFILING_LEAK_CHECK_INTERVAL_SECS`, in seconds (0: no background analysis).
    pub const LEAK_CHECK_INTERVAL_SECS: RangeInclusive<u64> = 0..=604_800;
    /// [`ConfigBuilder::leak_check_interval`](crate::ConfigBuilder::leak_check_interval) when
    /// `Some`: 1 ms to a week.
    pub const LEAK_CHECK_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(604_800);
    /// `PROFILING_MEMORY_WARNING_MB` and `PROFILING_MEMORY_ALERT_MB`, in MiB (up to 16 TiB).
    pub const MEMORY_THRESHOLD_MB: RangeInclusive<u64> = 1..=16 << 20;
    /// The same thresholds in bytes.
    pub const MEMORY_THRESHOLD_BYTES: RangeInclusive<u64> = 1 << 20..=16 << 40;
    /// `PROFILING_LEAK_GROWTH_MB_PER_HOUR`: above 0 and at most this.
    pub const MAX_LEAK_GROWTH_MB_PER_HOUR: f64 = 1_048_576.0;
    /// `PROFILING_LARGE_ALLOC_BYTES` (checked by `profiling-core`).
    pub const LARGE_ALLOCATION_BYTES: RangeInclusive<u64> =
        1..=profiling_core::record::config::MAX_LARGE_ALLOCATION_BYTES;
    /// `PROFILING_MAX_SNAPSHOTS`.
    pub const MAX_SNAPSHOTS: RangeInclusive<usize> = 1..=super::super::MAX_SNAPSHOTS_LIMIT;
    /// `PROFILING_MAX_SNAPSHOT_FILES`.
    pub const MAX_SNAPSHOT_FILES: RangeInclusive<usize> = 1..=100_000;
    /// `PROFILING_MAX_SNAPSHOT_DISK_MB`, in MiB (up to 1 TiB).
    pub const MAX_SNAPSHOT_DISK_MB: RangeInclusive<u64> = 1..=1 << 20;
    /// The same bound in bytes.
    pub const MAX_SNAPSHOT_DISK_BYTES: RangeInclusive<u64> = 1 << 20..=1 << 40;
    /// [`ConfigBuilder::sample_capacity`](crate::ConfigBuilder::sample_capacity).
    pub const SAMPLE_CAPACITY: RangeInclusive<usize> = 2..=1_000_000;
}

fn invalid(name: &'static str, value: &str, reason: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::Core(profiling_core::Error::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: reason.into(),
    })
}

/// A whole number in `range`, or an error that names the variable and the range.
fn ranged(name: &'static str, v: &str, range: RangeInclusive<u64>) -> Result<u64> {
    let reason = || format!("expected a whole number from {} to {}", range.start(), range.end());
    let n = v.trim().parse::<u64>().map_err(|_| invalid(name, v, reason()))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(invalid(name, v, reason()))
    }
}

fn to_usize(range: &RangeInclusive<usize>) -> RangeInclusive<u64> {
    *range.start() as u64..=*range.end() as u64
}

impl ConfigBuilder {
    /// Applies the process environment (see [`crate::config`]).
    pub fn env(self) -> Result<Self> {
        profiling_core::init_from_env()?;
        self.env_from(|name| std::env::var(name).ok())
    }

    /// Applies variables read through `lookup` (for tests and embedding).
    pub fn env_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let c = &mut self.config;
        // The recording switches are parsed by profiling-core, once.
        let core = profiling_core::record::config::EnvSettings::from_lookup(&lookup)?;
        if let Some(on) = core.enabled {
            c.enabled = Some(on);
        }
        if let Some(bytes) = core.large_allocation_bytes {
            c.leak.large_allocation_bytes = bytes;
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
                // The value is blank: nothing secret is echoed.
                return Err(invalid(
                    "PROFILING_AUTH_TOKEN",
                    &v,
                    "must not be empty (unset it to disable auth)",
                ));
            }
            c.auth_token = Some(v.trim().to_owned());
        }
        if let Some(v) = lookup("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN") {
            c.allow_remote_without_token =
                profiling_core::record::config::parse_bool("PROFILING_ALLOW_REMOTE_WITHOUT_TOKEN", &v)?;
        }
        if let Some(v) = lookup("PROFILING_MEMORY_INTERVAL_SECS") {
            let n = ranged("PROFILING_MEMORY_INTERVAL_SECS", &v, ranges::MEMORY_INTERVAL_SECS)?;
            c.memory_interval = Duration::from_secs(n);
        }
        if let Some(v) = lookup("PROFILING_LEAK_CHECK_INTERVAL_SECS") {
            let n = ranged(
                "PROFILING_LEAK_CHECK_INTERVAL_SECS",
                &v,
                ranges::LEAK_CHECK_INTERVAL_SECS,
            )?;
            c.leak_check_interval = (n > 0).then(|| Duration::from_secs(n));
        }
        if let Some(v) = lookup("PROFILING_MEMORY_WARNING_MB") {
            c.thresholds.warning_bytes = ranged("PROFILING_MEMORY_WARNING_MB", &v, ranges::MEMORY_THRESHOLD_MB)? << 20;
        }
        if let Some(v) = lookup("PROFILING_MEMORY_ALERT_MB") {
            c.thresholds.alert_bytes = ranged("PROFILING_MEMORY_ALERT_MB", &v, ranges::MEMORY_THRESHOLD_MB)? << 20;
        }
        if let Some(v) = lookup("PROFILING_LEAK_GROWTH_MB_PER_HOUR") {
            let x: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|x: &f64| *x > 0.0 && *x <= ranges::MAX_LEAK_GROWTH_MB_PER_HOUR)
                .ok_or_else(|| {
                    invalid(
                        "PROFILING_LEAK_GROWTH_MB_PER_HOUR",
                        &v,
                        "expected a number above 0 and at most 1048576",
                    )
                })?;
            c.leak.growth_threshold_mb_per_hour = x;
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
            c.max_snapshots = ranged("PROFILING_MAX_SNAPSHOTS", &v, to_usize(&ranges::MAX_SNAPSHOTS))? as usize;
        }
        if let Some(v) = lookup("PROFILING_MAX_SNAPSHOT_FILES") {
            c.snapshot_disk.max_files = ranged(
                "PROFILING_MAX_SNAPSHOT_FILES",
                &v,
                to_usize(&ranges::MAX_SNAPSHOT_FILES),
            )? as usize;
        }
        if let Some(v) = lookup("PROFILING_MAX_SNAPSHOT_DISK_MB") {
            c.snapshot_disk.max_bytes =
                ranged("PROFILING_MAX_SNAPSHOT_DISK_MB", &v, ranges::MAX_SNAPSHOT_DISK_MB)? << 20;
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
}
