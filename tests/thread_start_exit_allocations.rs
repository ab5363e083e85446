//! A thread's first recorded call and its exit do not call the allocator once the
//! profiler's background thread has made ready what a new thread needs (issue 9: a new
//! thread's allocations wait for the allocator's shared arena, for milliseconds under load;
//! `docs/reliability.md`, thread stall).
//!
//! Every allocation, free and reallocation of the process goes through [`Counting`], which
//! counts those of a thread while it watches. The exit is watched wherever the profiler's
//! exit hook runs: among the thread-local destructors (from that of a thread-local first
//! used after the first call to that of one used before: they run in reverse order), and
//! among the thread-specific keys' destructors, which run after them (from that of a key
//! created before the profiler's, which is created at the process's first recorded call,
//! to that of one created after: they run in the order of creation).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use profiling_core::{profiled, ProfilingAllocator};

/// The system allocator, counting the calls made by a thread while it watches.
struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = WATCHING.try_with(|w| {
        if w.get() {
            let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: ProfilingAllocator<Counting> = ProfilingAllocator::new(Counting);

#[profiled]
fn first_call(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

#[profiled]
fn outer(n: u64) -> u64 {
    (0..n).map(first_call).sum()
}

/// Allocator calls during the watched thread's exit, among key destructors, written by
/// [`stop_watching`].
static EXIT_CALLS: AtomicU64 = AtomicU64::new(u64::MAX);
/// The same among thread-local destructors, written by [`Watch`].
static EXIT_TLS_CALLS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Starts (`true`) or stops watching when its thread-local destructor runs.
struct Watch(bool);

impl Drop for Watch {
    fn drop(&mut self) {
        if self.0 {
            CALLS.with(|c| c.set(0));
            WATCHING.with(|w| w.set(true));
        } else {
            WATCHING.with(|w| w.set(false));
            EXIT_TLS_CALLS.store(CALLS.with(Cell::get), Relaxed);
        }
    }
}

thread_local! {
    /// Used after the first call: its destructor runs before the profiler's would.
    static TLS_BEGINS: Watch = const { Watch(true) };
    /// Used before the first call: its destructor runs after the profiler's would.
    static TLS_ENDS: Watch = const { Watch(false) };
}

extern "C" fn start_watching(_: *mut libc::c_void) {
    CALLS.with(|c| c.set(0));
    WATCHING.with(|w| w.set(true));
}

extern "C" fn stop_watching(_: *mut libc::c_void) {
    WATCHING.with(|w| w.set(false));
    EXIT_CALLS.store(CALLS.with(Cell::get), Relaxed);
}

fn key(dtor: extern "C" fn(*mut libc::c_void)) -> libc::pthread_key_t {
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: `k` is valid to write; the destructor does not unwind.
    assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(dtor)) }, 0);
    k
}

/// Waits (up to 10 s) for the background thread to have a kit and a request ready.
fn wait_until_ready() {
    let t = Instant::now();
    while !profiling_core::record::switches::ready_for_new_thread() {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing made ready in 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn first_call_and_exit_make_no_allocator_call() {
    let begins = key(start_watching);
    // The profiler's key is created at the process's first recorded call: this one.
    assert_eq!(outer(3), 6);
    let ends = key(stop_watching);
    // Threads that start and exit, as a service's would, so that kits come back for reuse.
    for _ in 0..4 {
        std::thread::spawn(|| outer(3)).join().unwrap();
    }
    for round in 0..8 {
        wait_until_ready();
        EXIT_CALLS.store(u64::MAX, Relaxed);
        EXIT_TLS_CALLS.store(u64::MAX, Relaxed);
        let first_call_calls = std::thread::spawn(move || {
            let one = std::ptr::NonNull::<u8>::dangling().as_ptr().cast();
            // SAFETY: keys of this process; the values are only markers.
            unsafe {
                libc::pthread_setspecific(begins, one);
                libc::pthread_setspecific(ends, one);
            }
            TLS_ENDS.with(|_| {});
            // The thread's own first allocations (the test harness's, the standard
            // library's) are done: only the first recorded call is watched.
            CALLS.with(|c| c.set(0));
            WATCHING.with(|w| w.set(true));
            let r = first_call(round);
            WATCHING.with(|w| w.set(false));
            assert_eq!(r, round + 1);
            let calls = CALLS.with(Cell::get);
            TLS_BEGINS.with(|_| {});
            calls
        })
        .join()
        .unwrap();
        assert_eq!(
            first_call_calls, 0,
            "round {round}: the first recorded call called the allocator"
        );
        assert_eq!(
            (EXIT_TLS_CALLS.load(Relaxed), EXIT_CALLS.load(Relaxed)),
            (0, 0),
            "round {round}: the profiler's exit hook called the allocator (thread-local, key destructors)"
        );
    }
    // A burst of new threads can outrun the background thread that makes switch-detector
    // requests ready: a first call that finds none goes without (the thread attributes CPU
    // by windows, and asks again at its reads) rather than make one.
    wait_until_ready();
    let switches = &profiling_core::record::switches::requests_not_ready;
    let held = profiling_core::record::switches::hold_detector_requests();
    let not_ready = switches();
    let first_call_calls = std::thread::spawn(|| {
        CALLS.with(|c| c.set(0));
        WATCHING.with(|w| w.set(true));
        let r = first_call(100);
        WATCHING.with(|w| w.set(false));
        assert_eq!(r, 101);
        CALLS.with(Cell::get)
    })
    .join()
    .unwrap();
    drop(held);
    // (Counted again at each read that asked again: its exit reads too.)
    assert!(switches() > not_ready, "the thread found no request ready");
    assert_eq!(
        first_call_calls, 0,
        "the first recorded call with no detector request ready called the allocator"
    );
    // The calls were all counted, none lost with the kits' reuse.
    let snap = profiling_core::snapshot();
    let calls: u64 = snap
        .functions
        .iter()
        .filter(|f| f.name.ends_with("first_call"))
        .map(|f| f.calls)
        .sum();
    assert_eq!(calls, 3 + 4 * 3 + 8 + 1);
}
