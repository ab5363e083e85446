//! A thread's first recorded call and its exit wait neither for a snapshot reader nor for the
//! profiler's background thread (issue 9, "Work that must not pile up or stall the host";
//! `docs/reliability.md`, thread stall).
//!
//! A reader holds the thread registry's lock while it copies the registry; preempted there,
//! it held a starting thread for 5.5 ms once. And the kits' background thread, which folds
//! and zeroes what exited threads leave, falls behind on a loaded machine, so that starting
//! threads found no kit ready and called the allocator (88 ms once). Here the registry's lock
//! is held throughout, as by a reader that is never scheduled again, which also keeps the
//! kits' thread from folding anything: threads must still start, record and exit, each
//! finding a kit, and every call they made must be counted once.

use std::sync::mpsc;
use std::time::Duration;

use profiling_core::record::switches;
use profiling_core::{profiled, snapshot};

#[profiled]
fn work(n: u64) -> u64 {
    (0..n).map(std::hint::black_box).sum()
}

const THREADS: u64 = 200;

#[test]
fn threads_start_and_exit_while_a_reader_holds_the_registry() {
    // Kits made: 16 threads alive at once, whose kits come back used. Holding the lock below
    // stops the kits' thread in its first fold, with at most 8 of them out of the pool.
    let first: Vec<_> = (0..16).map(|_| std::thread::spawn(|| work(3))).collect();
    first.into_iter().for_each(|t| {
        t.join().unwrap();
    });
    let waited = std::time::Instant::now();
    while !switches::ready_for_new_thread() {
        assert!(waited.elapsed() < Duration::from_secs(10), "no kit made ready in 10 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let calls_before = snapshot()
        .function("thread_registry_stall::work")
        .map_or(0, |f| f.calls);
    let made_before = switches::kits_made_on_the_spot();

    let hold = switches::hold_thread_registry();
    let (done_tx, done_rx) = mpsc::channel();
    let starter = std::thread::spawn(move || {
        for _ in 0..THREADS {
            std::thread::spawn(|| work(3)).join().unwrap();
        }
        done_tx.send(()).unwrap();
    });
    // Not a timing figure: a liveness bound, 60 s for what takes milliseconds.
    let finished = done_rx.recv_timeout(Duration::from_secs(60)).is_ok();
    drop(hold);
    starter.join().unwrap();
    assert!(finished, "threads starting and exiting waited for the registry's lock");
    assert_eq!(
        switches::kits_made_on_the_spot() - made_before,
        0,
        "every thread found a kit: the one the thread before it left, without the kits' thread"
    );
    assert_eq!(
        snapshot().function("thread_registry_stall::work").map(|f| f.calls),
        Some(calls_before + THREADS),
        "each call of the exited threads counted once"
    );
}
