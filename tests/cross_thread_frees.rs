//! Process-wide allocation totals are exact across threads: memory allocated on one thread
//! and freed on another counts once on each side, whether or not either thread ever records
//! a `#[profiled]` call, and whether or not it has exited.
//!
//! The checks read the process-wide live heap, so they run in one test, on one thread, in a
//! file that holds nothing else: another test thread exiting (and freeing its own state)
//! in the middle of a reading would move it.
//!
//! The profiler's own state that comes from the heap counts in the live bytes: a
//! `#[profiled]` call can allocate some (a thread's tables and node chunks, when no kit was
//! ready; the histogram arena's segments are mapped outside the heap on Unix). So the
//! recorded calls that make the buffers run before the first reading, and the readings see
//! only the frees under test.

use std::sync::{mpsc, Arc, Barrier};

use profiling_core::profiled;
use profiling_core::record::alloc_report::allocation_totals;

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

const BUF: usize = 64 * 1024;

#[profiled]
fn make_buffer(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

fn live_bytes() -> u64 {
    allocation_totals().live_bytes
}

/// Makes the one-time state of this test thread (its recorder tables) and of std's
/// threads exist before the first reading.
fn warm_up_threads() {
    drop(make_buffer(BUF));

    std::thread::spawn(|| {}).join().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let h = std::thread::spawn(move || drop(rx.recv()));
    tx.send(Vec::with_capacity(BUF)).unwrap();
    h.join().unwrap();
    // A blocking receive caches a wake-up context in this thread's storage.
    let (tx, rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tx.send(()).unwrap()
    });
    rx.recv().unwrap();
    h.join().unwrap();
}

#[test]
fn live_bytes_are_exact_across_threads() {
    warm_up_threads();
    buffers_freed_on_plain_threads_are_subtracted();
    buffers_allocated_on_live_plain_threads_are_counted();
}

fn buffers_freed_on_plain_threads_are_subtracted() {
    const THREADS: usize = 1_000;
    // Allocated by a recording thread (this one), before the first reading: see the module
    // docs for what a recorded call may allocate besides the buffer.
    let bufs: Vec<Vec<u8>> = (0..THREADS).map(|_| make_buffer(BUF)).collect();
    let before = live_bytes();
    // Freed by 1,000 threads that never record a call, each joined before the next starts.
    for buf in bufs {
        std::thread::spawn(move || drop(buf)).join().unwrap();
    }
    let after = live_bytes();
    // The outer Vec's own buffer (THREADS pointers-and-lengths) was freed by the loop too.
    let expected = (THREADS * BUF + THREADS * std::mem::size_of::<Vec<u8>>()) as i64;
    assert_eq!(
        before as i64 - after as i64,
        expected,
        "live bytes fell by {} after {THREADS} cross-thread frees of {BUF} bytes each (and the {} bytes of the list that held them)",
        before as i64 - after as i64,
        THREADS * std::mem::size_of::<Vec<u8>>()
    );
}

fn buffers_allocated_on_live_plain_threads_are_counted() {
    let before = live_bytes();
    // 100 plain threads allocate a buffer each, hand it over, and stay alive while the
    // buffers are freed here: their allocations must count before they exit.
    const THREADS: usize = 100;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let done = Arc::new(Barrier::new(THREADS + 1));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let tx = tx.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                tx.send(vec![1u8; BUF]).unwrap();
                drop(tx);
                done.wait();
            })
        })
        .collect();
    drop(tx);
    let bufs: Vec<Vec<u8>> = rx.iter().take(THREADS).collect();
    drop(rx);
    assert_eq!(bufs.len(), THREADS);
    let held = live_bytes();
    // The threads are alive; what they allocated and handed over is live.
    assert!(
        held >= before + (THREADS * BUF) as u64,
        "live bytes {held} < {} before + {} held",
        before,
        THREADS * BUF
    );
    drop(bufs);
    let freed = live_bytes();
    done.wait();
    drop(done);
    for h in handles {
        h.join().unwrap();
    }
    let after = live_bytes();
    assert!(
        freed + (THREADS * BUF) as u64 <= held,
        "freeing {} bytes took live bytes from {held} to {freed}",
        THREADS * BUF
    );
    assert_eq!(after as i64 - before as i64, 0, "live bytes after every thread exited");
}
