//! CPU time beside short blocking waits (issue 10, part 1): a function that computes in
//! ~20 µs bursts alternates with one that blocks for ~20 µs, so every attribution window
//! holds segments of opposite CPU/wall ratio. Each function's recorded CPU must be within
//! 10% of its truth: the thread CPU clock read around each of its calls by the caller.
//!
//! The reference reads sit in the caller, outside both functions, so their own cost (a
//! system call each) lands on the unannotated root, not on either function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use profiling_core::profiled;
use profiling_integration::{serial, spin_for, thread_cpu, within};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

const ROUNDS: usize = 2_000;
const TOLERANCE: f64 = 0.10;

/// 1 ns timer slack, so a 20 µs sleep is a 20 µs sleep and not 70.
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a value and no pointers.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

#[profiled]
fn burst() {
    spin_for(Duration::from_micros(20));
}

#[profiled]
fn short_sleep() {
    std::thread::sleep(Duration::from_micros(20));
}

#[profiled]
fn burst_beside_lock() {
    spin_for(Duration::from_micros(20));
}

#[profiled]
fn wait_for_lock(lock: &Mutex<u64>) {
    *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
}

/// Runs `f`, returning the thread CPU time it took as the caller sees it.
fn cpu_of(f: impl FnOnce()) -> Duration {
    let t = thread_cpu();
    f();
    thread_cpu() - t
}

#[profiled]
fn empty() {}

/// What `cpu_of` measures around an empty `#[profiled]` call: the half of each clock read
/// that falls inside the bracket (a system call, about 500 ns in a VM) and the recorder's own
/// entry and exit bookkeeping. Subtracted from each reference, since it is the cost of
/// measuring and not the function's. The median of many.
fn bracket_cost() -> Duration {
    median(|| cpu_of(empty))
}

/// Makes the calling thread's first recorded call (`call`), which asks for its switch
/// detector, and calls again each millisecond until the answer is picked up at a boundary
/// (or 1 s passes).
fn await_switch_detector(call: fn()) {
    call();
    let t = std::time::Instant::now();
    while profiling_core::record::awaiting_switch_detector() && t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
        call();
    }
}

fn median(f: impl Fn() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..ROUNDS).map(|_| f()).collect();
    v.sort();
    v[v.len() / 2]
}

/// The cost of measuring, subtracted from each reference reading.
#[derive(Clone, Copy)]
struct MeasuringCost {
    /// Around every call: see [`bracket_cost`].
    bracket: Duration,
    /// Around a call that was switched off its CPU (it blocked, slept or was preempted): the
    /// recorder then reads the thread CPU clock at the call's boundary (`record/cpu.rs`), a
    /// system call the bracket counts in full while the recorder books what follows its
    /// reading to the next segment. One clock read, the median of many.
    clock_read: Duration,
}

impl MeasuringCost {
    fn measure() -> Self {
        // A thread's first recorded call asks for its switch detector; until it arrives
        // (tens of µs, or the 12-23 ms the kernel took here to switch its perf hooks on for a
        // process's first one) the recorder reads the CPU clock at every boundary. Measure
        // the steady state: wait for it to arrive and be picked up at a boundary (the
        // recorder gives up waiting after 200 ms, and stops asking then too).
        await_switch_detector(empty);
        assert!(
            !profiling_core::record::awaiting_switch_detector(),
            "no answer to the detector request within 1 s"
        );
        let clock_read = median(|| {
            cpu_of(|| {
                std::hint::black_box(thread_cpu());
            })
        })
        .saturating_sub(median(|| cpu_of(|| {})));
        MeasuringCost {
            bracket: bracket_cost(),
            clock_read,
        }
    }

    /// The CPU `f` took by the thread's clock around it, less the cost of measuring.
    fn reference(&self, f: impl FnOnce()) -> Duration {
        let switches = context_switches();
        let cpu = cpu_of(f);
        let cost = if context_switches() != switches {
            self.bracket + self.clock_read
        } else {
            self.bracket
        };
        cpu.saturating_sub(cost)
    }
}

/// Voluntary and involuntary context switches of the calling thread so far.
fn context_switches() -> i64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD reads the calling thread's figures.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    u.ru_nvcsw + u.ru_nivcsw
}

fn recorded_cpu(name: &str) -> u64 {
    let snap = profiling_core::snapshot();
    let f = snap
        .function(&format!("cpu_truth::{name}"))
        .unwrap_or_else(|| panic!("{name} was recorded"));
    assert_eq!(f.calls, ROUNDS as u64, "{name}: every call counted");
    f.cpu_self_ns
}

#[track_caller]
fn check(name: &str, truth: Duration) {
    let got = recorded_cpu(name);
    let want = truth.as_nanos() as u64;
    eprintln!(
        "{name}: recorded {got} ns, truth {want} ns ({:+.2}%)",
        (got as f64 / want as f64 - 1.0) * 100.0
    );
    assert!(
        want >= 1_000_000,
        "{name}: the workload has at least 1 ms of CPU ({want} ns)"
    );
    assert!(
        within(got, want, TOLERANCE),
        "{name}: recorded {got} ns of CPU, the thread clock around its calls says {want} ns ({:+.1}%)",
        (got as f64 / want as f64 - 1.0) * 100.0
    );
}

#[test]
fn compute_bursts_beside_short_sleeps() {
    let _serial = serial();
    let (mut compute, mut wait) = (Duration::ZERO, Duration::ZERO);
    std::thread::spawn(move || {
        tight_timer_slack();
        let cost = MeasuringCost::measure();
        for _ in 0..ROUNDS {
            compute += cost.reference(burst);
            wait += cost.reference(short_sleep);
        }
        check("burst", compute);
        check("short_sleep", wait);
    })
    .join()
    .expect("the checks pass");
}

#[test]
fn compute_bursts_beside_waits_on_a_lock_held_by_another_thread() {
    let _serial = serial();
    let lock = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(Barrier::new(2));
    // The holder keeps the lock 20 µs at a time, letting go for a moment in between.
    let holder = {
        let (lock, stop, started) = (Arc::clone(&lock), Arc::clone(&stop), Arc::clone(&started));
        std::thread::spawn(move || {
            tight_timer_slack();
            started.wait();
            while !stop.load(Ordering::Relaxed) {
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                spin_for(Duration::from_micros(20));
                drop(guard);
                std::thread::sleep(Duration::from_micros(5));
            }
        })
    };
    let worker = {
        let lock = Arc::clone(&lock);
        std::thread::spawn(move || {
            tight_timer_slack();
            let cost = MeasuringCost::measure();
            started.wait();
            let (mut compute, mut wait) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..ROUNDS {
                compute += cost.reference(burst_beside_lock);
                wait += cost.reference(|| wait_for_lock(&lock));
            }
            (compute, wait, cost.clock_read)
        })
    };
    let (compute, wait, cost_read) = worker.join().expect("the worker finishes");
    stop.store(true, Ordering::Relaxed);
    holder.join().expect("the holder stops");
    check("burst_beside_lock", compute);
    // The waits' own CPU is small: the lock is handed over by a futex wake, under 1 µs a call,
    // the order of one read of the CPU clock (100-400 ns here), which the recorder makes at
    // the end of every wait that blocked. So the figure is checked against the failure the
    // issue saw (a waiter credited with its neighbour's CPU: 129%) to 10% + 0.3 ms above its
    // reference, and below it to 0.3 ms plus two clock reads per call (the reference's
    // correction for the recorder's read is a median; a read after a switch costs more).
    let got = recorded_cpu("wait_for_lock");
    let want = wait.as_nanos() as u64;
    let read = cost_read.as_nanos() as u64;
    eprintln!("wait_for_lock: recorded {got} ns, truth {want} ns, one clock read {read} ns");
    assert!(
        got <= want + want / 10 + 300_000,
        "wait_for_lock: recorded {got} ns of CPU, more than its {want} ns by the clock around it"
    );
    assert!(
        got + 300_000 + 2 * read * ROUNDS as u64 >= want,
        "wait_for_lock: recorded {got} ns of CPU, far less than its {want} ns by the clock around it"
    );
}

#[profiled]
fn tick() {}

/// Spins `d` of CPU in 50 µs steps, with a recorded call between steps (boundaries, where
/// the recorder reads its CPU clock and changes attribution).
fn spin_with_ticks(d: Duration) {
    let start = thread_cpu();
    while thread_cpu() - start < d {
        spin_for(Duration::from_micros(50));
        tick();
    }
}

/// Spins 10 ms of CPU, lets `release` go, then spins until the thread attributes CPU by
/// frames with its detector picked up, and 10 ms more.
#[profiled]
fn open_across_the_change(release: impl FnOnce()) {
    assert!(
        !profiling_core::record::cpu_attributed_by_frames(),
        "the thread started with no detector request: by windows"
    );
    spin_with_ticks(Duration::from_millis(10));
    release();
    let t = std::time::Instant::now();
    while (!profiling_core::record::cpu_attributed_by_frames() || profiling_core::record::awaiting_switch_detector())
        && t.elapsed() < Duration::from_secs(2)
    {
        spin_with_ticks(Duration::from_millis(1));
    }
    assert!(
        profiling_core::record::cpu_attributed_by_frames() && !profiling_core::record::awaiting_switch_detector(),
        "the thread asked again and picked its detector up"
    );
    spin_with_ticks(Duration::from_millis(10));
}

/// A thread that starts with no switch-detector request ready attributes CPU by windows,
/// asks again at its reads, and attributes by frames once it has one (`record/cpu.rs`). A
/// frame open across the change books the CPU of its whole run once: windows booked what came
/// before the change, the frame books what came after.
#[test]
fn a_frame_open_while_attribution_changes_books_its_cpu_once() {
    let _serial = serial();
    let held = std::sync::Mutex::new(Some(profiling_core::record::switches::hold_detector_requests()));
    // 20 ms of spinning by the thread clock, ticks included.
    check_frame_on_a_thread(
        "open_across_the_change",
        || open_across_the_change(|| drop(held.lock().unwrap().take())),
        Duration::from_millis(15),
        TOLERANCE,
    );
}

/// The recorded self CPU of `tick`, on every thread so far.
fn ticks_cpu() -> u64 {
    let snap = profiling_core::snapshot();
    snap.function("cpu_truth::tick").map_or(0, |f| f.cpu_self_ns)
}

/// Runs `frame`, the `#[profiled]` function `name` (which calls [`tick`]), on a thread of
/// its own, and checks its recorded self CPU against the thread clock around it less what
/// the ticks in it recorded (their own CPU is theirs), within `tolerance`. The workload has
/// at least `least` of CPU.
#[track_caller]
fn check_frame_on_a_thread(name: &str, frame: impl FnOnce() + Send, least: Duration, tolerance: f64) {
    let ticks_before = ticks_cpu();
    let cpu = std::thread::scope(|s| s.spawn(|| cpu_of(frame)).join().unwrap());
    let want = (cpu.as_nanos() as u64).saturating_sub(ticks_cpu() - ticks_before);
    let snap = profiling_core::snapshot();
    let got = snap
        .function(&format!("cpu_truth::{name}"))
        .unwrap_or_else(|| panic!("{name} was recorded"))
        .cpu_self_ns;
    eprintln!(
        "{name}: recorded {got} ns of self CPU, truth {want} ns (thread clock {} ns, ticks {} ns)",
        cpu.as_nanos(),
        ticks_cpu() - ticks_before
    );
    assert!(
        want >= least.as_nanos() as u64,
        "{name}: the workload has at least {least:?} of CPU ({want} ns)"
    );
    assert!(
        within(got, want, tolerance),
        "{name}: recorded {got} ns of self CPU, the thread clock says {want} ns"
    );
}

/// Set by [`stall`] once the thread it interrupted is held; [`stall`] returns once
/// `STALL_RELEASED` is set.
static STALLED: AtomicBool = AtomicBool::new(false);
static STALL_RELEASED: AtomicBool = AtomicBool::new(false);

/// A signal handler that holds the thread it runs on until `STALL_RELEASED`, sleeping
/// (`nanosleep` and atomics are async-signal-safe).
extern "C" fn stall(_: libc::c_int) {
    STALLED.store(true, Ordering::SeqCst);
    while !STALL_RELEASED.load(Ordering::SeqCst) {
        let ms = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        // SAFETY: `ms` is a valid timespec; no remainder is asked for.
        unsafe { libc::nanosleep(&ms, std::ptr::null_mut()) };
    }
}

/// Releases the stalled thread when dropped, also when an assertion fails first.
struct ReleaseStall;

impl Drop for ReleaseStall {
    fn drop(&mut self) {
        STALL_RELEASED.store(true, Ordering::SeqCst);
    }
}

/// The id of this process's thread named `name` (the kernel keeps 15 bytes of a name).
fn thread_named(name: &str) -> Option<libc::pid_t> {
    let kept = &name.as_bytes()[..name.len().min(15)];
    std::fs::read_dir("/proc/self/task").ok()?.flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        (comm.trim_end().as_bytes() == kept).then(|| task.file_name().to_str()?.parse().ok())?
    })
}

/// Holds the switch detectors' background thread in a signal handler, as a long stall of
/// that thread would: requests made meanwhile go unanswered.
fn stall_the_detectors_thread() -> ReleaseStall {
    // The thread names itself as it starts, which may be after the first request returned.
    let t = std::time::Instant::now();
    let tid = loop {
        match thread_named("profiling-switches") {
            Some(tid) => break tid,
            None if t.elapsed() < Duration::from_secs(2) => std::thread::sleep(Duration::from_millis(1)),
            None => panic!("the switch detectors' thread runs"),
        }
    };
    // SAFETY: a zeroed sigaction is valid; the handler only touches atomics and sleeps.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = stall as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        assert_eq!(libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1), 0);
    }
    let release = ReleaseStall;
    let t = std::time::Instant::now();
    while !STALLED.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the detectors' thread took the signal"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    release
}

/// Spins, with a recorded call each millisecond, until the thread stops waiting for its
/// detector (it gives up after 200 ms without an answer), then 10 ms more by windows.
#[profiled]
fn open_when_the_wait_ends() {
    assert!(
        profiling_core::record::awaiting_switch_detector(),
        "the thread asked for a detector at its first call: by frames until the answer"
    );
    let t = std::time::Instant::now();
    while profiling_core::record::awaiting_switch_detector() && t.elapsed() < Duration::from_secs(2) {
        spin_for(Duration::from_millis(1));
        tick();
    }
    assert!(
        !profiling_core::record::cpu_attributed_by_frames(),
        "the thread gave up waiting: by windows"
    );
    spin_with_ticks(Duration::from_millis(10));
}

/// A thread that gives up on a detector that never comes (its background thread stalled)
/// changes from frames to windows while a frame is open. The frame books the CPU of its
/// whole run once: it books what ran by frames at the change, windows book the rest.
#[test]
fn a_frame_open_when_the_thread_gives_up_its_detector_books_its_cpu_once() {
    let _serial = serial();
    // A first call starts the background thread; a new thread then finds a request ready.
    tick();
    let t = std::time::Instant::now();
    while !profiling_core::record::switches::ready_for_new_thread() && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _release = stall_the_detectors_thread();
    // 200 ms of wall time waiting by frames (all of it CPU on an idle machine), then 10 ms
    // of CPU by windows.
    check_frame_on_a_thread(
        "open_when_the_wait_ends",
        open_when_the_wait_ends,
        Duration::from_millis(100),
        TOLERANCE,
    );
}

/// Spins `d` of this thread's CPU with a recorded call each 50 µs, beside threads that
/// compete for the cores.
#[profiled]
fn spin_beside_contenders(d: Duration) {
    spin_with_ticks(d);
}

/// With its switch detector on and more runnable threads than cores, a thread is switched
/// out about once per time slice, and the kernel tends to do it at the return of the CPU
/// clock's read (reading the clock updates the thread's runtime, which can end its slice):
/// that switched-out time must not count as the frame's CPU. (Five threads spin beside it on
/// the two cores of the machines this project is tested on.)
#[test]
fn a_frame_beside_contending_threads_is_not_credited_their_time() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let contenders: Vec<_> = (0..5)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    check_frame_on_a_thread(
        "spin_beside_contenders",
        || {
            // Its detector first, so that the frame is attributed by frames throughout.
            await_switch_detector(tick);
            assert!(
                profiling_core::record::cpu_attributed_by_frames(),
                "the thread has its switch detector"
            );
            spin_beside_contenders(Duration::from_millis(300));
        },
        Duration::from_millis(270),
        // Within 0.1% in five runs; when the time switched out at reads counted as the
        // frame's CPU, more than 1% over in 8 of 9 runs (up to +7.4%).
        0.01,
    );
    stop.store(true, Ordering::Relaxed);
    for c in contenders {
        c.join().unwrap();
    }
}
