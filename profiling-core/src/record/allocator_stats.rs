//! Where the allocator's own statistics are read: [`allocator_stats`], jemalloc's
//! `stats.*` counters (allocated, active, resident, mapped, retained, metadata), and the
//! efficiency and fragmentation figures derived from them. A reading, like
//! [`crate::record::process`]; available with the `jemalloc` feature when jemalloc is the
//! global allocator, an [`Error::AllocatorStats`] saying why otherwise.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Allocator statistics read from jemalloc (bytes).
///
/// - `allocated`: bytes in live allocations (jemalloc size classes, so above requested sizes);
/// - `active`: bytes in pages that hold live allocations;
/// - `resident`: bytes of allocator memory resident in RAM (data, metadata, dirty pages);
/// - `mapped`: bytes in mapped extents; `retained`: bytes kept mapped but returned to the OS;
/// - `metadata`: bytes of allocator bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes in active pages.
    pub active: u64,
    /// Resident allocator bytes.
    pub resident: u64,
    /// Mapped bytes.
    pub mapped: u64,
    /// Retained bytes.
    pub retained: u64,
    /// Metadata bytes.
    pub metadata: u64,
}

impl AllocatorStats {
    /// `allocated / active`: the share of active pages that holds live allocations.
    pub fn efficiency(&self) -> Option<f64> {
        (self.active > 0).then(|| self.allocated as f64 / self.active as f64)
    }

    /// `(resident - allocated) / resident`, in percent: the share of the allocator's resident
    /// memory that holds no live allocation (free space in pages, dirty pages, metadata).
    pub fn fragmentation_percent(&self) -> Option<f64> {
        (self.resident > 0).then(|| self.resident.saturating_sub(self.allocated) as f64 / self.resident as f64 * 100.0)
    }
}

/// Reads jemalloc's statistics (advancing its epoch first so they are current).
///
/// [`Error::AllocatorStats`] without the `jemalloc` feature, and when jemalloc is linked but
/// is not the global allocator.
pub fn allocator_stats() -> Result<AllocatorStats> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        let e = |err: tikv_jemalloc_ctl::Error| Error::AllocatorStats(err.to_string());
        epoch::advance().map_err(e)?;
        let stats = AllocatorStats {
            allocated: stats::allocated::read().map_err(e)? as u64,
            active: stats::active::read().map_err(e)? as u64,
            resident: stats::resident::read().map_err(e)? as u64,
            mapped: stats::mapped::read().map_err(e)? as u64,
            retained: stats::retained::read().map_err(e)? as u64,
            metadata: stats::metadata::read().map_err(e)? as u64,
        };
        if !jemalloc_is_global() {
            return Err(Error::AllocatorStats(
                "jemalloc is linked but is not the global allocator".to_owned(),
            ));
        }
        Ok(stats)
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        Err(Error::AllocatorStats(
            "built without the `jemalloc` feature of profiling-core".to_owned(),
        ))
    }
}

/// Whether the global allocator is jemalloc: a 4 MiB probe allocation must show in
/// jemalloc's `stats.allocated` (checked once; 1 MiB of slack for other threads).
#[cfg(feature = "jemalloc")]
fn jemalloc_is_global() -> bool {
    static IS_GLOBAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IS_GLOBAL.get_or_init(|| {
        use tikv_jemalloc_ctl::{epoch, stats};
        const PROBE: usize = 4 << 20;
        let read = || epoch::advance().ok().and_then(|_| stats::allocated::read().ok());
        let Some(before) = read() else { return false };
        let probe = std::hint::black_box(vec![1u8; PROBE]);
        let after = read();
        drop(probe);
        after.is_some_and(|a| a >= before + PROBE - (1 << 20))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_figures() {
        let s = AllocatorStats {
            allocated: 75,
            active: 100,
            resident: 150,
            ..Default::default()
        };
        assert_eq!(s.efficiency(), Some(0.75));
        assert_eq!(s.fragmentation_percent(), Some(50.0));
        assert_eq!(AllocatorStats::default().efficiency(), None);
    }
}
