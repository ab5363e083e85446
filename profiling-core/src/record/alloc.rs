//! Where allocations are counted: [`ProfilingAllocator`], a `GlobalAlloc` wrapper.
//!
//! Install it once in the application:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();
//! # fn main() {}
//! ```
//!
//! Every allocation adds its requested size and 1 to the calling thread's counters, every
//! free likewise to the freed counters; `realloc` counts as one free of the old size and one
//! allocation of the new. The counters live in plain thread-local cells: the allocator never
//! allocates, locks or calls back into the recorder. Recorded calls take the difference of
//! these counters between entry and exit, so bytes and counts are exact requested sizes.
//! (Underneath, jemalloc rounds sizes up to its size classes; its own statistics, read by
//! [`crate::allocator_stats`], show that rounding.)
//!
//! Process-wide figures (live heap, the size distribution) are batched per thread and
//! published every 64 allocations or frees, or when a recording thread exits; a thread that
//! never records loses at most its last 63 events from those process-wide figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::record::heap_sample;

/// Number of power-of-two size buckets: bucket `i` holds sizes in `[2^i, 2^(i+1))`
/// (bucket 0 also holds size 0).
pub const SIZE_BUCKETS: usize = 48;
const FLUSH_EVERY: u32 = 64;
const LARGE_SLOTS: usize = 64;

/// A counting `GlobalAlloc` over `A` (the system allocator by default).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfilingAllocator<A = System> {
    inner: A,
}

impl ProfilingAllocator<System> {
    /// Counting over the system allocator.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A> ProfilingAllocator<A> {
    /// Counting over `inner`, e.g. `tikv_jemallocator::Jemalloc`.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }
}

#[cfg(feature = "jemalloc")]
impl ProfilingAllocator<tikv_jemallocator::Jemalloc> {
    /// Counting over jemalloc.
    pub const fn jemalloc() -> Self {
        Self {
            inner: tikv_jemallocator::Jemalloc,
        }
    }
}

/// Cumulative allocation counters of one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocCounters {
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Allocations.
    pub alloc_count: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Frees.
    pub freed_count: u64,
}

impl AllocCounters {
    /// `self - earlier`, field by field (saturating).
    #[inline(always)]
    pub fn since(&self, earlier: &AllocCounters) -> AllocCounters {
        AllocCounters {
            alloc_bytes: self.alloc_bytes.wrapping_sub(earlier.alloc_bytes),
            alloc_count: self.alloc_count.wrapping_sub(earlier.alloc_count),
            freed_bytes: self.freed_bytes.wrapping_sub(earlier.freed_bytes),
            freed_count: self.freed_count.wrapping_sub(earlier.freed_count),
        }
    }

    /// Field-by-field sum.
    #[inline(always)]
    pub fn add(&mut self, o: &AllocCounters) {
        self.alloc_bytes = self.alloc_bytes.wrapping_add(o.alloc_bytes);
        self.alloc_count = self.alloc_count.wrapping_add(o.alloc_count);
        self.freed_bytes = self.freed_bytes.wrapping_add(o.freed_bytes);
        self.freed_count = self.freed_count.wrapping_add(o.freed_count);
    }

    /// Field-by-field `self - o`, saturating at 0.
    #[inline(always)]
    pub fn saturating_sub(&self, o: &AllocCounters) -> AllocCounters {
        AllocCounters {
            alloc_bytes: self.alloc_bytes.saturating_sub(o.alloc_bytes),
            alloc_count: self.alloc_count.saturating_sub(o.alloc_count),
            freed_bytes: self.freed_bytes.saturating_sub(o.freed_bytes),
            freed_count: self.freed_count.saturating_sub(o.freed_count),
        }
    }

    /// Bytes allocated minus bytes freed (may be negative).
    pub fn net_bytes(&self) -> i64 {
        self.alloc_bytes as i64 - self.freed_bytes as i64
    }
}

struct ThreadCounters {
    alloc_bytes: Cell<u64>,
    alloc_count: Cell<u64>,
    freed_bytes: Cell<u64>,
    freed_count: Cell<u64>,
    /// Innermost annotated function on this thread (u32::MAX: none), for large allocations.
    current_fn: Cell<u32>,
    /// Events since the last publish to the process-wide figures.
    pending: Cell<u32>,
    /// Set while the profiler itself allocates: such events are left out of the thread's
    /// counters (so they are never attributed to a user's function) but still counted
    /// process-wide.
    suspended: Cell<bool>,
    published: Cell<AllocCounters>,
    sizes: [Cell<u32>; SIZE_BUCKETS],
}

thread_local! {
    static COUNTERS: ThreadCounters = const {
        ThreadCounters {
            alloc_bytes: Cell::new(0),
            alloc_count: Cell::new(0),
            freed_bytes: Cell::new(0),
            freed_count: Cell::new(0),
            current_fn: Cell::new(u32::MAX),
            pending: Cell::new(0),
            suspended: Cell::new(false),
            published: Cell::new(AllocCounters { alloc_bytes: 0, alloc_count: 0, freed_bytes: 0, freed_count: 0 }),
            sizes: [const { Cell::new(0) }; SIZE_BUCKETS],
        }
    };
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
static G_ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static G_ALLOC_COUNT: AtomicU64 = AtomicU64::new(0);
static G_FREED_BYTES: AtomicU64 = AtomicU64::new(0);
static G_FREED_COUNT: AtomicU64 = AtomicU64::new(0);
static G_SIZES: [AtomicU64; SIZE_BUCKETS] = [const { AtomicU64::new(0) }; SIZE_BUCKETS];
static LARGE_THRESHOLD: AtomicU64 = AtomicU64::new(50 * 1024 * 1024);
static LARGE_NEXT: AtomicUsize = AtomicUsize::new(0);
static LARGE_SIZE: [AtomicU64; LARGE_SLOTS] = [const { AtomicU64::new(0) }; LARGE_SLOTS];
static LARGE_FN: [AtomicU32; LARGE_SLOTS] = [const { AtomicU32::new(u32::MAX) }; LARGE_SLOTS];
static LARGE_AT: [AtomicU64; LARGE_SLOTS] = [const { AtomicU64::new(0) }; LARGE_SLOTS];

/// Sets the size from which one allocation is recorded as large (default 50 MiB).
pub fn set_large_allocation_threshold(bytes: u64) {
    LARGE_THRESHOLD.store(bytes.max(1), Relaxed);
}

#[inline(always)]
fn size_bucket(size: usize) -> usize {
    let b = (usize::BITS - 1).saturating_sub(size.max(1).leading_zeros()) as usize;
    b.min(SIZE_BUCKETS - 1)
}

#[inline(always)]
fn on_alloc(size: usize) {
    let _ = COUNTERS.try_with(|c| {
        if c.suspended.get() {
            G_ALLOC_BYTES.fetch_add(size as u64, Relaxed);
            G_ALLOC_COUNT.fetch_add(1, Relaxed);
            G_SIZES[size_bucket(size)].fetch_add(1, Relaxed);
            return;
        }
        c.alloc_bytes.set(c.alloc_bytes.get().wrapping_add(size as u64));
        c.alloc_count.set(c.alloc_count.get().wrapping_add(1));
        let s = &c.sizes[size_bucket(size)];
        s.set(s.get().wrapping_add(1));
        if size as u64 >= LARGE_THRESHOLD.load(Relaxed) {
            record_large(size as u64, c.current_fn.get());
        }
        tick(c);
    });
}

#[inline(always)]
fn on_free(size: usize) {
    let _ = COUNTERS.try_with(|c| {
        if c.suspended.get() {
            G_FREED_BYTES.fetch_add(size as u64, Relaxed);
            G_FREED_COUNT.fetch_add(1, Relaxed);
            return;
        }
        c.freed_bytes.set(c.freed_bytes.get().wrapping_add(size as u64));
        c.freed_count.set(c.freed_count.get().wrapping_add(1));
        tick(c);
    });
}

#[inline(always)]
fn tick(c: &ThreadCounters) {
    let p = c.pending.get() + 1;
    if p >= FLUSH_EVERY {
        publish(c);
    } else {
        c.pending.set(p);
    }
}

#[cold]
fn record_large(size: u64, func: u32) {
    let slot = LARGE_NEXT.fetch_add(1, Relaxed) % LARGE_SLOTS;
    LARGE_SIZE[slot].store(size, Relaxed);
    LARGE_FN[slot].store(func, Relaxed);
    LARGE_AT[slot].store(crate::record::clock::unix_now_ns() / 1_000_000, Relaxed);
}

#[inline(never)]
fn publish(c: &ThreadCounters) {
    if !INSTALLED.load(Relaxed) {
        INSTALLED.store(true, Relaxed);
    }
    c.pending.set(0);
    let now = AllocCounters {
        alloc_bytes: c.alloc_bytes.get(),
        alloc_count: c.alloc_count.get(),
        freed_bytes: c.freed_bytes.get(),
        freed_count: c.freed_count.get(),
    };
    let d = now.since(&c.published.get());
    c.published.set(now);
    G_ALLOC_BYTES.fetch_add(d.alloc_bytes, Relaxed);
    G_ALLOC_COUNT.fetch_add(d.alloc_count, Relaxed);
    G_FREED_BYTES.fetch_add(d.freed_bytes, Relaxed);
    G_FREED_COUNT.fetch_add(d.freed_count, Relaxed);
    for (i, s) in c.sizes.iter().enumerate() {
        let n = s.get();
        if n != 0 {
            G_SIZES[i].fetch_add(n as u64, Relaxed);
            s.set(0);
        }
    }
}

/// Publishes this thread's pending counts (called when a recording thread exits).
pub(crate) fn publish_current_thread() {
    let _ = COUNTERS.try_with(publish);
}

/// This thread's cumulative counters.
#[inline(always)]
pub(crate) fn thread_counters() -> AllocCounters {
    COUNTERS
        .try_with(|c| AllocCounters {
            alloc_bytes: c.alloc_bytes.get(),
            alloc_count: c.alloc_count.get(),
            freed_bytes: c.freed_bytes.get(),
            freed_count: c.freed_count.get(),
        })
        .unwrap_or_default()
}

/// Runs `f` with this thread's allocation counting suspended: for the profiler's own
/// bookkeeping, which must never be attributed to the user's function that triggered it.
#[inline]
pub(crate) fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let prev = COUNTERS.try_with(|c| c.suspended.replace(true)).unwrap_or(false);
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = COUNTERS.try_with(|c| c.suspended.set(self.0));
        }
    }
    let _restore = Restore(prev);
    f()
}

/// Sets the innermost annotated function of this thread, returning the previous one.
#[inline(always)]
pub(crate) fn swap_current_function(f: u32) -> u32 {
    COUNTERS.try_with(|c| c.current_fn.replace(f)).unwrap_or(u32::MAX)
}

/// Whether a [`ProfilingAllocator`] is the global allocator (seen at least one publish).
pub fn counting_allocator_installed() -> bool {
    INSTALLED.load(Relaxed) || COUNTERS.try_with(|c| c.alloc_count.get() > 0).unwrap_or(false)
}

/// One allocation at or above the large-allocation threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeAllocation {
    /// Requested size.
    pub bytes: u64,
    /// Innermost annotated function at the time, if any.
    pub function: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Process-wide figures counted by [`ProfilingAllocator`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationTotals {
    /// Whether the counting allocator is installed; all figures are 0 when it is not.
    pub installed: bool,
    /// Totals since the process started.
    pub counters: AllocCounters,
    /// Live heap: bytes allocated and not yet freed.
    pub live_bytes: u64,
    /// `(lower bound, count)` per power-of-two size bucket, non-empty buckets only.
    pub size_distribution: Vec<SizeBucket>,
    /// The most recent large allocations (at most 64).
    pub large_allocations: Vec<LargeAllocation>,
    /// Threshold for [`AllocationTotals::large_allocations`], bytes.
    pub large_allocation_threshold: u64,
}

/// One power-of-two size bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeBucket {
    /// Smallest size in the bucket (bytes).
    pub min_bytes: u64,
    /// Largest size in the bucket (bytes).
    pub max_bytes: u64,
    /// Allocations of a size in the bucket.
    pub count: u64,
}

/// Reads the process-wide allocation figures.
pub fn allocation_totals() -> AllocationTotals {
    let _ = COUNTERS.try_with(publish);
    let counters = AllocCounters {
        alloc_bytes: G_ALLOC_BYTES.load(Relaxed),
        alloc_count: G_ALLOC_COUNT.load(Relaxed),
        freed_bytes: G_FREED_BYTES.load(Relaxed),
        freed_count: G_FREED_COUNT.load(Relaxed),
    };
    let names = crate::record::callsite::all_functions();
    let n = LARGE_NEXT.load(Relaxed);
    let mut large = Vec::new();
    for k in n.saturating_sub(LARGE_SLOTS)..n {
        let s = k % LARGE_SLOTS;
        let f = LARGE_FN[s].load(Relaxed);
        large.push(LargeAllocation {
            bytes: LARGE_SIZE[s].load(Relaxed),
            function: names.get(f as usize).map(|m| m.name.clone()),
            at_unix_ms: LARGE_AT[s].load(Relaxed),
        });
    }
    AllocationTotals {
        installed: counting_allocator_installed(),
        live_bytes: counters.alloc_bytes.saturating_sub(counters.freed_bytes),
        counters,
        size_distribution: G_SIZES
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let count = c.load(Relaxed);
                (count > 0).then(|| SizeBucket {
                    min_bytes: if i == 0 { 0 } else { 1 << i },
                    max_bytes: (1u64 << (i + 1)) - 1,
                    count,
                })
            })
            .collect(),
        large_allocations: large,
        large_allocation_threshold: LARGE_THRESHOLD.load(Relaxed),
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and only
// adds bookkeeping in thread-local cells and atomics, which neither allocates nor unwinds.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ProfilingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
            heap_sample::on_alloc(p, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
            heap_sample::on_alloc(p, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        heap_sample::on_free(ptr);
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) };
        on_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        heap_sample::on_free(ptr);
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_free(layout.size());
            on_alloc(new_size);
            heap_sample::on_alloc(p, new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_are_powers_of_two() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(1), 0);
        assert_eq!(size_bucket(2), 1);
        assert_eq!(size_bucket(3), 1);
        assert_eq!(size_bucket(1024), 10);
        assert_eq!(size_bucket(1 << 20), 20);
        assert_eq!(size_bucket(usize::MAX), SIZE_BUCKETS - 1);
    }

    #[test]
    fn counters_subtract_and_add() {
        let a = AllocCounters {
            alloc_bytes: 10,
            alloc_count: 2,
            freed_bytes: 4,
            freed_count: 1,
        };
        let b = AllocCounters {
            alloc_bytes: 30,
            alloc_count: 5,
            freed_bytes: 4,
            freed_count: 1,
        };
        let d = b.since(&a);
        assert_eq!(
            d,
            AllocCounters {
                alloc_bytes: 20,
                alloc_count: 3,
                freed_bytes: 0,
                freed_count: 0
            }
        );
        let mut s = a;
        s.add(&d);
        assert_eq!(s, b);
        assert_eq!(b.net_bytes(), 26);
    }
}
