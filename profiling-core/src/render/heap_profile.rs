//! Where jemalloc heap profiles are read: live (in-use) bytes by allocation stack, sampled by
//! jemalloc itself, as a gzip pprof protobuf or a flamegraph SVG (jemalloc_pprof).
//!
//! Three things must hold, and each missing one is an
//! [`Error::HeapProfilingUnavailable`] that says how to fix it, never a panic:
//! 1. built with the `heap-profile` feature (jemalloc compiled with profiling support);
//! 2. jemalloc is the global allocator (`ProfilingAllocator::jemalloc()`);
//! 3. profiling switched on at start-up: `_RJEM_MALLOC_CONF=prof:true,prof_active:true,lg_prof_sample:19`
//!    (one sample per 512 KiB allocated on average; lower `lg_prof_sample` samples more).
//!
//! Only with the `profiling-full` feature; without `heap-profile` every call is the error.

use crate::error::{Error, Result};

/// How to switch heap profiling on, quoted in every error.
pub const HOW_TO_ENABLE: &str = "build with the `heap-profile` feature, install \
`ProfilingAllocator::jemalloc()` as the #[global_allocator], and start the process with \
`_RJEM_MALLOC_CONF=prof:true,prof_active:true,lg_prof_sample:19`";

/// Whether heap profiles can be served now; `Err` says why not and how to fix it.
pub fn check_available() -> Result<()> {
    imp::check_available()
}

/// The heap profile as a gzip pprof protobuf (`inuse_space`, bytes).
pub fn heap_pprof() -> Result<Vec<u8>> {
    imp::heap_pprof()
}

/// The heap profile as a flamegraph SVG: frames as wide as the bytes in use they allocated.
pub fn heap_flamegraph() -> Result<Vec<u8>> {
    imp::heap_flamegraph()
}

#[cfg(not(feature = "heap-profile"))]
mod imp {
    use super::*;

    fn off() -> Error {
        Error::HeapProfilingUnavailable(format!(
            "this build has no jemalloc heap profiling; to switch it on, {HOW_TO_ENABLE}"
        ))
    }

    pub(super) fn check_available() -> Result<()> {
        Err(off())
    }

    pub(super) fn heap_pprof() -> Result<Vec<u8>> {
        Err(off())
    }

    pub(super) fn heap_flamegraph() -> Result<Vec<u8>> {
        Err(off())
    }
}

#[cfg(feature = "heap-profile")]
mod imp {
    use super::*;
    use tikv_jemalloc_ctl::raw;

    fn unavailable(why: &str) -> Error {
        Error::HeapProfilingUnavailable(format!("{why}; to switch it on, {HOW_TO_ENABLE}"))
    }

    pub(super) fn check_available() -> Result<()> {
        // SAFETY: "opt.prof" and "prof.active" are documented as readable booleans
        // (jemalloc(3)); with a jemalloc built without profiling they fail, not crash.
        let prof: bool = unsafe { raw::read(b"opt.prof\0") }
            .map_err(|e| unavailable(&format!("jemalloc was built without profiling support ({e})")))?;
        if !prof {
            return Err(unavailable("jemalloc heap profiling is off (opt.prof is false)"));
        }
        // SAFETY: as above.
        let active: bool = unsafe { raw::read(b"prof.active\0") }.unwrap_or(false);
        if !active {
            return Err(unavailable(
                "jemalloc heap profiling is enabled but not active (prof.active is false; add prof_active:true)",
            ));
        }
        tikv_jemalloc_ctl::epoch::advance().map_err(|e| unavailable(&format!("jemalloc statistics: {e}")))?;
        let allocated = tikv_jemalloc_ctl::stats::allocated::read()
            .map_err(|e| unavailable(&format!("jemalloc statistics: {e}")))?;
        if allocated == 0 {
            return Err(unavailable(
                "jemalloc is not the global allocator (it has allocated nothing)",
            ));
        }
        Ok(())
    }

    fn with_ctl<T, E: std::fmt::Display>(
        f: impl FnOnce(&mut jemalloc_pprof::JemallocProfCtl) -> std::result::Result<T, E>,
    ) -> Result<T> {
        check_available()?;
        let ctl = jemalloc_pprof::PROF_CTL
            .as_ref()
            .ok_or_else(|| unavailable("jemalloc heap profiling is off"))?;
        let mut ctl = ctl
            .try_lock()
            .map_err(|_| Error::HeapProfilingUnavailable("a heap profile is being dumped; retry".to_owned()))?;
        f(&mut ctl).map_err(|e| Error::Profiler(format!("heap profile dump failed: {e}")))
    }

    pub(super) fn heap_pprof() -> Result<Vec<u8>> {
        with_ctl(|ctl| ctl.dump_pprof())
    }

    pub(super) fn heap_flamegraph() -> Result<Vec<u8>> {
        with_ctl(|ctl| {
            // SAFETY: "prof.lg_sample" is a documented readable size_t.
            let lg: usize = unsafe { raw::read(b"prof.lg_sample\0") }.unwrap_or(19);
            let mut opts = jemalloc_pprof::FlamegraphOptions::default();
            opts.title = "Heap in use (jemalloc sampled profile)".to_owned();
            opts.subtitle = Some(format!(
                "Width: bytes allocated and not yet freed, by allocation stack; one sample per ~{} allocated.",
                crate::render::flamegraph::format_value(1u64 << lg.min(63), crate::render::flamegraph::Unit::Bytes)
            ));
            opts.count_name = "bytes".to_owned();
            opts.hash = true;
            opts.deterministic = true;
            ctl.dump_flamegraph_with_options(&mut opts)
        })
    }
}

#[cfg(all(test, not(feature = "heap-profile")))]
mod tests {
    use super::*;

    #[test]
    fn off_without_the_feature_says_how_to_switch_on() {
        let e = heap_pprof().unwrap_err().to_string();
        assert!(e.contains("_RJEM_MALLOC_CONF=prof:true"), "{e}");
        assert!(e.contains("heap-profile"), "{e}");
        assert!(heap_flamegraph().is_err());
    }
}

/// A heap profile in gzipped pprof: jemalloc's when its profiling is on, otherwise the
/// sampled live heap by call path ([`crate::render::live_heap`]), whichever global allocator
/// is in use; an error only when neither exists (live-heap sampling switched off).
pub fn heap_pprof_or_live() -> Result<Vec<u8>> {
    match heap_pprof() {
        Ok(gz) => Ok(gz),
        Err(Error::HeapProfilingUnavailable(reason)) => {
            if crate::record::heap_sample::heap_sample_bytes() == 0 {
                return Err(Error::HeapProfilingUnavailable(format!(
                    "{reason}; live-heap sampling is off too (PROFILING_HEAP_SAMPLE_BYTES=0)"
                )));
            }
            crate::render::live_heap::pprof_gzip()
        }
        Err(e) => Err(e),
    }
}
