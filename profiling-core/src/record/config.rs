//! Run-time switches: on/off, the call-tree cap, and their environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ENABLE_PROFILING` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) | `true` |
//! | `PROFILING_MAX_CALL_TREE_NODES` | cap on distinct call paths (2 to 1048576), see [`set_max_call_tree_nodes`] | 16384 |
//! | `PROFILING_LARGE_ALLOC_BYTES` | size from which one allocation is recorded as large (1 B to 1 TiB) | 50 MiB |
//! | `PROFILING_HEAP_SAMPLE_BYTES` | mean live-heap sampling interval, 0 (off) or 64..=2^30 | 524288 |
//! | `PROFILING_CPU_SYMBOLIZE` | (`profiling-full`) how CPU profiles are symbolized: `debuginfo` or `symbols` (see `render/cpu_profile/symbolize.rs`) | `debuginfo` |
//!
//! They are parsed in one place, [`EnvSettings`], which `profiling-server` reuses.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use crate::error::{Error, Result};

/// Hard upper bound of [`set_max_call_tree_nodes`]: storage is laid out for at most this many.
pub const MAX_CALL_TREE_NODES_LIMIT: u32 = 1 << 20;
/// Default cap on distinct call paths.
pub const DEFAULT_MAX_CALL_TREE_NODES: u32 = 16_384;

pub(crate) static ENABLED: AtomicBool = AtomicBool::new(true);
static ENV_APPLIED: AtomicU8 = AtomicU8::new(0);
pub(crate) static MAX_NODES: AtomicU32 = AtomicU32::new(DEFAULT_MAX_CALL_TREE_NODES);

/// Whether recording is on. One relaxed load: this is what a disabled call costs.
#[inline(always)]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns recording on or off at run time. Calls already running finish being recorded.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Sets the cap on distinct call-tree nodes (paths of annotated functions), process-wide.
///
/// Memory grows with distinct functions and paths, never with calls. When the cap is
/// reached, a call on a new path is folded into its parent's node: its self time,
/// CPU and allocations count as the parent's self figures in the tree (per-function
/// statistics stay exact), and [`crate::Snapshot::folded_calls`] counts such calls.
pub fn set_max_call_tree_nodes(n: u32) -> Result<()> {
    if !(2..=MAX_CALL_TREE_NODES_LIMIT).contains(&n) {
        return Err(Error::InvalidConfig(format!(
            "max call-tree nodes must be in 2..={MAX_CALL_TREE_NODES_LIMIT}, got {n}"
        )));
    }
    MAX_NODES.store(n, Ordering::Relaxed);
    Ok(())
}

/// The current cap on call-tree nodes.
pub fn max_call_tree_nodes() -> u32 {
    MAX_NODES.load(Ordering::Relaxed)
}

/// Parses a boolean the way the environment variables are documented.
pub fn parse_bool(name: &'static str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::InvalidEnv {
            name,
            value: value.to_owned(),
            reason: "expected true/false, 1/0, yes/no or on/off".into(),
        }),
    }
}

fn parse_u64(name: &'static str, value: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| Error::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: "expected a non-negative whole number".into(),
    })
}

/// The recording switches as the environment sets them, parsed (and range-checked) once, here:
/// [`init_from_env`] applies them, and `profiling-server` reads its copy of
/// `ENABLE_PROFILING` and `PROFILING_LARGE_ALLOC_BYTES` from here too. `None`: unset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvSettings {
    /// `ENABLE_PROFILING`.
    pub enabled: Option<bool>,
    /// `PROFILING_MAX_CALL_TREE_NODES`, in `2..=`[`MAX_CALL_TREE_NODES_LIMIT`].
    pub max_call_tree_nodes: Option<u32>,
    /// `PROFILING_LARGE_ALLOC_BYTES`, in `1..=`[`MAX_LARGE_ALLOCATION_BYTES`].
    pub large_allocation_bytes: Option<u64>,
}

/// Largest `PROFILING_LARGE_ALLOC_BYTES` accepted: 1 TiB.
pub const MAX_LARGE_ALLOCATION_BYTES: u64 = 1 << 40;

impl EnvSettings {
    /// Reads the variables through `lookup` (for tests and embedding).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut s = Self::default();
        if let Some(v) = lookup("ENABLE_PROFILING") {
            s.enabled = Some(parse_bool("ENABLE_PROFILING", &v)?);
        }
        if let Some(v) = lookup("PROFILING_MAX_CALL_TREE_NODES") {
            let n = parse_u64("PROFILING_MAX_CALL_TREE_NODES", &v)?;
            s.max_call_tree_nodes = Some(
                u32::try_from(n)
                    .ok()
                    .filter(|n| (2..=MAX_CALL_TREE_NODES_LIMIT).contains(n))
                    .ok_or(Error::InvalidEnv {
                        name: "PROFILING_MAX_CALL_TREE_NODES",
                        value: v.clone(),
                        reason: "expected a number from 2 to 1048576".into(),
                    })?,
            );
        }
        if let Some(v) = lookup("PROFILING_LARGE_ALLOC_BYTES") {
            let n = parse_u64("PROFILING_LARGE_ALLOC_BYTES", &v)?;
            if !(1..=MAX_LARGE_ALLOCATION_BYTES).contains(&n) {
                return Err(Error::InvalidEnv {
                    name: "PROFILING_LARGE_ALLOC_BYTES",
                    value: v,
                    reason: "expected a number of bytes from 1 to 1099511627776 (1 TiB)".into(),
                });
            }
            s.large_allocation_bytes = Some(n);
        }
        Ok(s)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Applies the settings that are set.
    pub fn apply(&self) {
        if let Some(on) = self.enabled {
            set_enabled(on);
        }
        if let Some(n) = self.max_call_tree_nodes {
            MAX_NODES.store(n, Ordering::Relaxed);
        }
        if let Some(b) = self.large_allocation_bytes {
            crate::record::alloc::set_large_allocation_threshold(b);
        }
    }
}

/// Applies `ENABLE_PROFILING`, `PROFILING_MAX_CALL_TREE_NODES` and
/// `PROFILING_LARGE_ALLOC_BYTES` from the environment ([`EnvSettings`]).
///
/// Called once, lazily, by the first recorded call (errors are then ignored and the
/// defaults kept); call it yourself at start-up to get malformed values as an error. Nothing
/// is applied when one value is malformed.
pub fn init_from_env() -> Result<()> {
    ENV_APPLIED.store(1, Ordering::Relaxed);
    EnvSettings::from_env()?.apply();
    if let Ok(v) = std::env::var("PROFILING_HEAP_SAMPLE_BYTES") {
        crate::record::heap_sample::set_heap_sample_bytes(parse_u64("PROFILING_HEAP_SAMPLE_BYTES", &v)?)?;
    }
    // Read again when a CPU profile starts; checked here so a bad value fails at start-up.
    #[cfg(feature = "profiling-full")]
    crate::render::cpu_profile::symbolize::Mode::from_env()?;
    Ok(())
}

/// Applies the environment once, on the first recording thread (slow path only).
pub(crate) fn ensure_env_applied() {
    if ENV_APPLIED.load(Ordering::Relaxed) == 0 {
        let _ = init_from_env();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_booleans_and_rejects_garbage() {
        assert!(parse_bool("X", "TRUE").unwrap());
        assert!(!parse_bool("X", " off ").unwrap());
        let err = parse_bool("ENABLE_PROFILING", "maybe").unwrap_err();
        assert!(err.to_string().contains("ENABLE_PROFILING"), "{err}");
    }

    #[test]
    fn environment_is_parsed_with_ranges() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_owned())
        };
        let s = EnvSettings::from_lookup(env(&[
            ("ENABLE_PROFILING", "off"),
            ("PROFILING_MAX_CALL_TREE_NODES", "100"),
            ("PROFILING_LARGE_ALLOC_BYTES", "1024"),
        ]))
        .unwrap();
        assert_eq!(
            (s.enabled, s.max_call_tree_nodes, s.large_allocation_bytes),
            (Some(false), Some(100), Some(1024))
        );
        assert_eq!(EnvSettings::from_lookup(env(&[])).unwrap(), EnvSettings::default());
        for (k, v) in [
            ("PROFILING_MAX_CALL_TREE_NODES", "1"),
            ("PROFILING_MAX_CALL_TREE_NODES", "18446744073709551615"),
            ("PROFILING_LARGE_ALLOC_BYTES", "0"),
            ("PROFILING_LARGE_ALLOC_BYTES", "1099511627777"),
            ("PROFILING_LARGE_ALLOC_BYTES", "50MB"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(k, v)]));
            let e = EnvSettings::from_lookup(env(pairs)).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn rejects_out_of_range_node_cap() {
        assert!(set_max_call_tree_nodes(1).is_err());
        assert!(set_max_call_tree_nodes(MAX_CALL_TREE_NODES_LIMIT + 1).is_err());
    }
}
