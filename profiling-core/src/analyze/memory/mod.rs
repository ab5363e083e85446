//! Memory over time: the background [`MemorySampler`] that keeps a bounded series of
//! readings and runs the leak analysis on a schedule ([`sampler`]), and the thresholds an
//! operator sets on resident memory ([`MemoryThresholds`], crossed at a [`Level`]).
//!
//! The readings themselves are taken in [`crate::record::memory_sample`] and
//! [`crate::record::allocator_stats`]; the growth rate is computed in
//! [`crate::analyze::trend`]. They are re-exported here under their former paths.

pub mod sampler;

use serde::{Deserialize, Serialize};

pub use crate::analyze::trend::{growth, regression, Growth, Regression, MIB};
pub use crate::record::allocator_stats::{allocator_stats, AllocatorStats};
pub use crate::record::memory_sample::{read_sample, FunctionObservation, FunctionRetention, MemorySample};
pub use sampler::{MemorySampler, SamplerConfig};

/// Memory thresholds, compared with RSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryThresholds {
    /// RSS from which the `warning` flag is raised, bytes.
    pub warning_bytes: u64,
    /// RSS from which the `alert` flag is raised, bytes.
    pub alert_bytes: u64,
}

impl Default for MemoryThresholds {
    fn default() -> Self {
        Self {
            warning_bytes: 650 * 1024 * 1024,
            alert_bytes: 700 * 1024 * 1024,
        }
    }
}

/// Which threshold a resident size has reached. Ordered: `Normal < Warning < Alert`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Below the warning threshold.
    #[default]
    Normal,
    /// At or above the warning threshold, below the alert threshold.
    Warning,
    /// At or above the alert threshold.
    Alert,
}

impl MemoryThresholds {
    /// The level `rss_bytes` has reached.
    pub fn level(&self, rss_bytes: u64) -> Level {
        if rss_bytes >= self.alert_bytes {
            Level::Alert
        } else if rss_bytes >= self.warning_bytes {
            Level::Warning
        } else {
            Level::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_inclusive_and_ordered() {
        let t = MemoryThresholds {
            warning_bytes: 100,
            alert_bytes: 200,
        };
        assert_eq!(t.level(99), Level::Normal);
        assert_eq!(t.level(100), Level::Warning);
        assert_eq!(t.level(199), Level::Warning);
        assert_eq!(t.level(200), Level::Alert);
        assert!(Level::Normal < Level::Warning && Level::Warning < Level::Alert);
    }
}
