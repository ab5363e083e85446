//! Where allocations are counted: [`ProfilingAllocator`], a `GlobalAlloc` wrapper.
//!
//! (Longer than 500 lines on purpose: the allocator, the per-thread counters it writes and
//! the list of live threads that readers walk share one thread-local layout and one safety
//! invariant, that a thread unlinks itself before its thread-local storage goes; kept in
//! one file so that every `unsafe` block sits next to the code that upholds it.)
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
//! allocation of the new. The counters live in thread-local storage, written by their
//! thread alone: the allocator never allocates or calls back into the recorder, and takes
//! a lock only at a thread's first counted event and at its exit. Recorded calls take the
//! difference of these counters between entry and exit, so bytes and counts are exact
//! requested sizes.
//! (Underneath, jemalloc rounds sizes up to its size classes; its own statistics, read by
//! [`crate::analyze::memory::allocator_stats`], show that rounding.)
//!
//! Process-wide figures (live heap, the size distribution) are exact over every thread,
//! whether or not it records calls: a thread's first counted event links its counters
//! into a list of live threads (once, under a mutex that nothing allocates under), which
//! readers walk; a thread-local destructor adds them to the retired totals and unlinks the
//! thread when it exits, and events after that go to the retired totals directly. The
//! per-event cost stays a few thread-local adds and one branch.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::record::heap_sample;

/// Number of power-of-two size buckets: bucket `i` holds sizes in `[2^i, 2^(i+1))`
/// (bucket 0 also holds size 0).
pub const SIZE_BUCKETS: usize = 48;
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

    /// Allocations plus frees: it changes at every event (what [`thread_events`] reads).
    #[inline(always)]
    pub(crate) fn events(&self) -> u64 {
        self.alloc_count.wrapping_add(self.freed_count)
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

/// One thread's allocation counters. Cumulative since the thread started; only the thread
/// writes them (relaxed load and store, no locked instruction), readers of the process-wide
/// totals read them while the thread is registered in [`LIVE`].
///
/// Kept small (64 bytes), what every recorded call reads first: the size buckets live in
/// their own thread-local, [`SIZES`].
#[repr(C)]
struct ThreadCounters {
    alloc_bytes: AtomicU64,
    alloc_count: AtomicU64,
    freed_bytes: AtomicU64,
    freed_count: AtomicU64,
    /// Set while the profiler itself allocates: such events are left out of the thread's
    /// counters (so they are never attributed to a user's function) but still counted
    /// process-wide.
    suspended: Cell<bool>,
    /// [`UNREGISTERED`], [`REGISTERED`] or [`EXITED`]: where the process-wide totals find
    /// this thread's events.
    state: Cell<u8>,
    /// Links of the list of live threads, guarded by [`LIVE`].
    prev: AtomicPtr<ThreadCounters>,
    next: AtomicPtr<ThreadCounters>,
    /// This thread's [`SIZES`], for readers (set when it registers).
    sizes: AtomicPtr<SizeCounts>,
}

/// Allocations per size bucket, cumulative.
type SizeCounts = [AtomicU64; SIZE_BUCKETS];

/// No event counted yet: not in the list of live threads.
const UNREGISTERED: u8 = 0;
/// In the list of live threads: readers add this thread's counters.
const REGISTERED: u8 = 1;
/// The thread's exit hook has run: its counters were added to the retired totals, and each
/// later event (other thread-local destructors) goes straight to them.
const EXITED: u8 = 2;

thread_local! {
    static COUNTERS: ThreadCounters = const {
        ThreadCounters {
            alloc_bytes: AtomicU64::new(0),
            alloc_count: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            freed_count: AtomicU64::new(0),
            suspended: Cell::new(false),
            state: Cell::new(UNREGISTERED),
            prev: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicPtr::new(std::ptr::null_mut()),
            sizes: AtomicPtr::new(std::ptr::null_mut()),
        }
    };
    /// This thread's allocations per size bucket (written by the thread only).
    static SIZES: SizeCounts = const { [const { AtomicU64::new(0) }; SIZE_BUCKETS] };
    /// Registered at a thread's first counted event; its destructor retires the thread.
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

/// The list of threads whose counters readers must add: its head, behind a mutex that also
/// guards every link. Held only to link, unlink or read the list: nothing under it
/// allocates, so the allocator may take it.
static LIVE: Mutex<LiveList> = Mutex::new(LiveList(std::ptr::null()));

struct LiveList(*const ThreadCounters);

// SAFETY: the pointers are to live threads' counters, dereferenced only under the mutex,
// and a thread unlinks itself (under the mutex) before its thread-local storage goes.
unsafe impl Send for LiveList {}

fn lock_live() -> MutexGuard<'static, LiveList> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Events of threads that have exited, and of the profiler's own bookkeeping.
static RETIRED: Retired = Retired {
    alloc_bytes: AtomicU64::new(0),
    alloc_count: AtomicU64::new(0),
    freed_bytes: AtomicU64::new(0),
    freed_count: AtomicU64::new(0),
    sizes: [const { AtomicU64::new(0) }; SIZE_BUCKETS],
};

struct Retired {
    alloc_bytes: AtomicU64,
    alloc_count: AtomicU64,
    freed_bytes: AtomicU64,
    freed_count: AtomicU64,
    sizes: [AtomicU64; SIZE_BUCKETS],
}

impl Retired {
    fn add_alloc(&self, size: usize) {
        self.alloc_bytes.fetch_add(size as u64, Relaxed);
        self.alloc_count.fetch_add(1, Relaxed);
        self.sizes[size_bucket(size)].fetch_add(1, Relaxed);
    }

    fn add_free(&self, size: usize) {
        self.freed_bytes.fetch_add(size as u64, Relaxed);
        self.freed_count.fetch_add(1, Relaxed);
    }
}

static INSTALLED: AtomicBool = AtomicBool::new(false);
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

/// Single-writer add: a load and a store, no locked instruction.
#[inline(always)]
fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
}

#[inline(always)]
fn on_alloc(size: usize) {
    let _ = COUNTERS.try_with(|c| {
        if c.suspended.get() {
            RETIRED.add_alloc(size);
            return;
        }
        bump(&c.alloc_bytes, size as u64);
        bump(&c.alloc_count, 1);
        let _ = SIZES.try_with(|z| bump(&z[size_bucket(size)], 1));
        if size as u64 >= LARGE_THRESHOLD.load(Relaxed) {
            record_large(size as u64, crate::record::recorder::innermost_frame().0);
        }
        if c.state.get() != REGISTERED {
            not_registered(c, || RETIRED.add_alloc(size));
        }
    });
}

#[inline(always)]
fn on_free(size: usize) {
    let _ = COUNTERS.try_with(|c| {
        if c.suspended.get() {
            RETIRED.add_free(size);
            return;
        }
        bump(&c.freed_bytes, size as u64);
        bump(&c.freed_count, 1);
        if c.state.get() != REGISTERED {
            not_registered(c, || RETIRED.add_free(size));
        }
    });
}

/// A counted event on a thread that is not in the list of live threads: its first event
/// registers it; after its exit hook ran, `retire_event` books the event directly.
#[cold]
#[inline(never)]
fn not_registered(c: &ThreadCounters, retire_event: impl FnOnce()) {
    match c.state.get() {
        UNREGISTERED => register(c),
        EXITED => retire_event(),
        _ => {}
    }
}

#[cold]
fn record_large(size: u64, func: u32) {
    let slot = LARGE_NEXT.fetch_add(1, Relaxed) % LARGE_SLOTS;
    LARGE_SIZE[slot].store(size, Relaxed);
    LARGE_FN[slot].store(func, Relaxed);
    LARGE_AT[slot].store(crate::record::clock::unix_now_ns() / 1_000_000, Relaxed);
}

/// Links this thread into the list of live threads and arms its exit hook.
fn register(c: &ThreadCounters) {
    INSTALLED.store(true, Relaxed);
    // Before anything that may allocate: a nested event then sees a registered thread.
    c.state.set(REGISTERED);
    let me = c as *const ThreadCounters as *mut ThreadCounters;
    let sizes = SIZES.try_with(|z| z as *const SizeCounts as *mut SizeCounts);
    c.sizes.store(sizes.unwrap_or(std::ptr::null_mut()), Relaxed);
    {
        let mut head = lock_live();
        c.prev.store(std::ptr::null_mut(), Relaxed);
        c.next.store(head.0 as *mut ThreadCounters, Relaxed);
        if !head.0.is_null() {
            // SAFETY: a linked thread's counters are alive (see `LiveList`); we hold the lock.
            unsafe { &*head.0 }.prev.store(me, Relaxed);
        }
        head.0 = me;
    }
    // Touching the hook registers its destructor (glibc's `__cxa_thread_atexit_impl`, or
    // std's fallback list). Failing that (thread-local storage already being torn down),
    // retire now: events from here on go straight to the retired totals.
    if EXIT_HOOK.try_with(|_| ()).is_err() {
        retire(c);
    }
}

/// Adds this thread's counters to the retired totals and unlinks it, at once for readers.
fn retire(c: &ThreadCounters) {
    let mut head = lock_live();
    if c.state.get() != REGISTERED {
        return;
    }
    RETIRED.alloc_bytes.fetch_add(c.alloc_bytes.load(Relaxed), Relaxed);
    RETIRED.alloc_count.fetch_add(c.alloc_count.load(Relaxed), Relaxed);
    RETIRED.freed_bytes.fetch_add(c.freed_bytes.load(Relaxed), Relaxed);
    RETIRED.freed_count.fetch_add(c.freed_count.load(Relaxed), Relaxed);
    // SAFETY: the thread's own sizes, alive while it is (see `LiveList`).
    if let Some(sizes) = unsafe { c.sizes.load(Relaxed).as_ref() } {
        for (r, s) in RETIRED.sizes.iter().zip(sizes) {
            r.fetch_add(s.load(Relaxed), Relaxed);
        }
    }
    let prev = c.prev.load(Relaxed);
    let next = c.next.load(Relaxed);
    // SAFETY: neighbours in the list are alive (see `LiveList`); we hold the lock.
    unsafe {
        if prev.is_null() {
            head.0 = next;
        } else {
            (*prev).next.store(next, Relaxed);
        }
        if !next.is_null() {
            (*next).prev.store(prev, Relaxed);
        }
    }
    c.state.set(EXITED);
}

/// Retires its thread's allocation counters when the thread exits.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let _ = COUNTERS.try_with(retire);
    }
}

/// This thread's cumulative counters.
#[inline(always)]
pub(crate) fn thread_counters() -> AllocCounters {
    COUNTERS
        .try_with(|c| {
            // SAFETY: only this thread writes these counters, so plain reads by it race with
            // no write (other threads only read them). Plain reads, unlike atomic ones, can
            // be combined by the compiler: this runs twice on every recorded call.
            unsafe {
                AllocCounters {
                    alloc_bytes: *c.alloc_bytes.as_ptr(),
                    alloc_count: *c.alloc_count.as_ptr(),
                    freed_bytes: *c.freed_bytes.as_ptr(),
                    freed_count: *c.freed_count.as_ptr(),
                }
            }
        })
        .unwrap_or_default()
}

/// This thread's allocations plus frees so far: it changes at every event, so
/// [`thread_counters`] need be read only when it moved.
#[inline(always)]
pub(crate) fn thread_events() -> u64 {
    COUNTERS
        .try_with(|c| {
            // SAFETY: as in `thread_counters`.
            unsafe { (*c.alloc_count.as_ptr()).wrapping_add(*c.freed_count.as_ptr()) }
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

/// Whether a [`ProfilingAllocator`] is the global allocator (it has counted an event).
pub fn counting_allocator_installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// One large allocation as recorded: the function is still an id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LargeRecord {
    pub(crate) bytes: u64,
    /// Innermost annotated function at the time (`u32::MAX`: none).
    pub(crate) func: u32,
    pub(crate) at_unix_ms: u64,
}

/// The most recent large allocations, oldest first (at most 64).
pub(crate) fn recent_large_allocations() -> Vec<LargeRecord> {
    let n = LARGE_NEXT.load(Relaxed);
    (n.saturating_sub(LARGE_SLOTS)..n)
        .map(|k| {
            let s = k % LARGE_SLOTS;
            LargeRecord {
                bytes: LARGE_SIZE[s].load(Relaxed),
                func: LARGE_FN[s].load(Relaxed),
                at_unix_ms: LARGE_AT[s].load(Relaxed),
            }
        })
        .collect()
}

/// The size from which one allocation is recorded as large.
pub(crate) fn large_allocation_threshold() -> u64 {
    LARGE_THRESHOLD.load(Relaxed)
}

/// Process-wide counts of every thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProcessCounts {
    pub(crate) counters: AllocCounters,
    /// Allocations per power-of-two size bucket (see [`SIZE_BUCKETS`]).
    pub(crate) sizes: [u64; SIZE_BUCKETS],
}

/// Reads the process-wide counts: the retired totals plus every live thread's counters,
/// read under the list's lock so that a thread exiting meanwhile is counted once.
pub(crate) fn process_counts() -> ProcessCounts {
    let head = lock_live();
    let mut counters = AllocCounters {
        alloc_bytes: RETIRED.alloc_bytes.load(Relaxed),
        alloc_count: RETIRED.alloc_count.load(Relaxed),
        freed_bytes: RETIRED.freed_bytes.load(Relaxed),
        freed_count: RETIRED.freed_count.load(Relaxed),
    };
    let mut sizes: [u64; SIZE_BUCKETS] = std::array::from_fn(|i| RETIRED.sizes[i].load(Relaxed));
    let mut t = head.0;
    while !t.is_null() {
        // SAFETY: a linked thread's counters are alive (see `LiveList`); we hold the lock.
        let c = unsafe { &*t };
        counters.add(&AllocCounters {
            alloc_bytes: c.alloc_bytes.load(Relaxed),
            alloc_count: c.alloc_count.load(Relaxed),
            freed_bytes: c.freed_bytes.load(Relaxed),
            freed_count: c.freed_count.load(Relaxed),
        });
        // SAFETY: as above: a linked thread's sizes are alive.
        if let Some(z) = unsafe { c.sizes.load(Relaxed).as_ref() } {
            for (sum, s) in sizes.iter_mut().zip(z) {
                *sum += s.load(Relaxed);
            }
        }
        t = c.next.load(Relaxed);
    }
    ProcessCounts { counters, sizes }
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
