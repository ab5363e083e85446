//! Run-time switches: on/off, the call-tree cap, and their environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `ENABLE_PROFILING` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`) | `true` |
//! | `PROFILING_MAX_CALL_TREE_NODES` | cap on distinct call paths, see [`set_max_call_tree_nodes`] | 16384 |
//! | `PROFILING_LARGE_ALLOC_BYTES` | size from which one allocation is recorded as large | 50 MiB |
//! | `PROFILING_HEAP_SAMPLE_BYTES` | mean live-heap sampling interval, 0 (off) or 64..=2^30 | 524288 |

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
            reason: "expected true/false, 1/0, yes/no or on/off",
        }),
    }
}

fn parse_u64(name: &'static str, value: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| Error::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: "expected a non-negative whole number",
    })
}

/// Applies `ENABLE_PROFILING`, `PROFILING_MAX_CALL_TREE_NODES` and
/// `PROFILING_LARGE_ALLOC_BYTES` from the environment.
///
/// Called once, lazily, by the first recorded call (errors are then ignored and the
/// defaults kept); call it yourself at start-up to get malformed values as an error.
pub fn init_from_env() -> Result<()> {
    ENV_APPLIED.store(1, Ordering::Relaxed);
    if let Ok(v) = std::env::var("ENABLE_PROFILING") {
        set_enabled(parse_bool("ENABLE_PROFILING", &v)?);
    }
    if let Ok(v) = std::env::var("PROFILING_MAX_CALL_TREE_NODES") {
        let n = parse_u64("PROFILING_MAX_CALL_TREE_NODES", &v)?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        set_max_call_tree_nodes(n).map_err(|_| Error::InvalidEnv {
            name: "PROFILING_MAX_CALL_TREE_NODES",
            value: v.clone(),
            reason: "expected a number from 2 to 1048576",
        })?;
    }
    if let Ok(v) = std::env::var("PROFILING_LARGE_ALLOC_BYTES") {
        crate::record::alloc::set_large_allocation_threshold(parse_u64("PROFILING_LARGE_ALLOC_BYTES", &v)?);
    }
    if let Ok(v) = std::env::var("PROFILING_HEAP_SAMPLE_BYTES") {
        crate::record::heap_sample::set_heap_sample_bytes(parse_u64("PROFILING_HEAP_SAMPLE_BYTES", &v)?)?;
    }
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
    fn rejects_out_of_range_node_cap() {
        assert!(set_max_call_tree_nodes(1).is_err());
        assert!(set_max_call_tree_nodes(MAX_CALL_TREE_NODES_LIMIT + 1).is_err());
    }
}
