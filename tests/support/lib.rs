//! Workloads whose true cost is known, shared by the truth tests, examples and benchmarks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Burns CPU on the calling thread for `d` of wall time.
pub fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        churn();
    }
}

/// Burns exactly `d` of CPU time on the calling thread (to the clock's precision), however
/// loaded the machine is: the wall time it takes is at least `d`.
pub fn spin_cpu(d: Duration) {
    let start = thread_cpu();
    while thread_cpu() - start < d {
        for _ in 0..32 {
            churn();
        }
    }
}

/// About 64 dependent multiply-adds of user-space CPU (a few hundred ns), in any build: each
/// step goes through `black_box`, so an optimized build cannot fold the loop into a constant
/// (it did: `spin_cpu` was then ~96% CPU-clock system calls in release builds, measured
/// with `perf record -e cpu-clock`, and a sampled profile rightly put it under
/// `[system call]`). The clock is read once per 32 of these, so its system call is a small
/// share of a spin.
fn churn() {
    let mut x = 0u64;
    for i in 0..64 {
        x = std::hint::black_box(x)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i);
    }
    std::hint::black_box(x);
}

/// The calling thread's CPU clock.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer, constant clock id.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Whether `got` is within `tol` (a fraction) of `want`.
pub fn within(got: u64, want: u64, tol: f64) -> bool {
    let (g, w) = (got as f64, want as f64);
    (g - w).abs() <= w * tol
}

/// Serializes tests of one binary that measure time or touch process-global state.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spins `ms` of wall time; returns how long that took by `Instant`: the reference a
/// recorded figure is checked against.
pub fn timed_spin(ms: u64) -> Duration {
    let t = Instant::now();
    spin_for(Duration::from_millis(ms));
    t.elapsed()
}

/// Asserts that a recorded wall time covers the `reference` interval (measured with
/// `Instant` inside the function) plus at most `slack_ns` of overhead.
#[track_caller]
pub fn assert_covers(got_ns: u64, reference: Duration, slack_ns: u64, what: &str) {
    let r = reference.as_nanos() as u64;
    assert!(
        got_ns >= r && got_ns <= r + slack_ns,
        "{what}: recorded {got_ns} ns, reference {r} ns (+0..{slack_ns} ns)"
    );
}

/// How long a call took by `Instant`, measured inside the called function (`inner`) and
/// around the call (`outer`). The call's recorded wall time lies between the two whatever
/// the scheduler does: a preemption between the call's frame and the inner reads counts in
/// the recording and in `outer` alike.
#[derive(Clone, Copy, Debug)]
pub struct Bracket {
    pub inner: Duration,
    pub outer: Duration,
}

/// Calls `f`, which returns its own inner measurement (e.g. [`timed_spin`]).
pub fn bracket(f: impl FnOnce() -> Duration) -> Bracket {
    let t = Instant::now();
    let inner = f();
    Bracket {
        inner,
        outer: t.elapsed(),
    }
}

/// Asserts that a recorded wall time lies within `b`, give or take `slack_ns` at either
/// end: the room two clocks need (the recorder converts TSC ticks with a factor calibrated
/// at its start, `Instant` reads `CLOCK_MONOTONIC`; one run beside 8 spinning processes
/// recorded 10 µs less than the inner time of a 40 ms call).
#[track_caller]
pub fn assert_bracketed(got_ns: u64, b: Bracket, slack_ns: u64, what: &str) {
    let (inner, outer) = (b.inner.as_nanos() as u64, b.outer.as_nanos() as u64);
    assert!(
        got_ns + slack_ns >= inner && got_ns <= outer + slack_ns,
        "{what}: recorded {got_ns} ns, inner {inner} ns, outer {outer} ns (±{slack_ns} ns)"
    );
}

/// A workload running in a loop on a thread of its own until [`Background::stop`].
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Background {
    /// Runs `round` again and again on a new thread.
    pub fn run(round: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    round();
                }
            })
        };
        Background { stop, thread }
    }

    /// Stops after the current round and waits for the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the background workload does not panic");
    }
}
