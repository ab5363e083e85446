//! How long an application thread is held up by readers: the latency of a thread's first
//! `#[profiled]` call (which registers it) and of its exit (which retires its figures),
//! while several threads take snapshots in a loop. Run with:
//!
//! ```text
//! cargo bench --bench thread_stall -- --warm-up-time 1 --measurement-time 2
//! cargo bench --features jemalloc --bench thread_stall -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Before the criterion run, it prints the worst case over rounds of 64 threads starting
//! and exiting under the storm (after a first round, shown apart: the process's first
//! threads pay one-off costs). A thread's exit latency is the time the profiler's exit hook
//! takes, wherever it runs: among the thread-local destructors (stamps taken by two
//! thread-locals registered before and after the profiler's, destructors running in reverse
//! order) plus among the POSIX thread-specific keys' destructors, which run after them
//! (stamps taken by the destructors of a key created before the profiler's and one created
//! after, run in the order of creation). The operating system's thread teardown is left out.
//!
//! On a loaded machine wall time mostly measures waiting for a CPU, which no lock causes.
//! So each interval is also read from the thread's CPU clock (time on CPU) and its
//! `/proc/thread-self/schedstat` (time runnable on a run queue): *blocked* = wall - on CPU -
//! runnable, the time the thread slept (on a lock). Criterion measures the blocked time per
//! thread.
//!
//! On a virtual machine *blocked* also holds the time the hypervisor took the thread's CPU
//! away (steal). `THREAD_STALL_PROBE_SECS=30` runs only a probe of that floor: the same
//! readings around a call that records nothing, back to back, with the machine's steal
//! around each interval over 1 ms. The report prints, for each first call blocked over
//! 200 µs, its page faults and the steal around it, and a control: the same readings around
//! an unrecorded call just before each first call.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use profiling_core::profiled;

/// The system allocator by default; jemalloc (the allocator the docs recommend) with
/// `--features jemalloc`. The allocator matters here: the process's threads share its locks.
#[cfg(not(feature = "jemalloc"))]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator<profiling_core::Jemalloc> =
    profiling_core::ProfilingAllocator::jemalloc();

/// Snapshot readers of the storm; `THREAD_STALL_READERS=0` gives the baseline without them.
fn readers() -> usize {
    std::env::var("THREAD_STALL_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}
const THREADS: usize = 64;
/// Depth of the recursion each thread makes: one call-tree node per level, so every live
/// thread has tables for readers to merge.
const DEPTH: u32 = 300;

#[profiled]
fn first_call(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

/// What the control interval times: the same as [`first_call`], not annotated.
#[inline(never)]
fn unrecorded(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[profiled]
fn recurse(n: u32) -> u64 {
    if n == 0 {
        1
    } else {
        recurse(n - 1).wrapping_add(black_box(n as u64))
    }
}

/// Readers taking snapshots in a loop until dropped.
struct Storm {
    stop: Arc<AtomicBool>,
    readers: Vec<std::thread::JoinHandle<u64>>,
}

impl Storm {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let readers = (0..readers())
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        black_box(profiling_core::snapshot());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        Storm { stop, readers }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A reading of the calling thread's clocks.
#[derive(Clone, Copy, Debug)]
struct Clocks {
    wall: Instant,
    on_cpu_ns: u64,
    runnable_ns: u64,
    /// Page faults the thread has taken (minor and major): a fault on a page not yet mapped
    /// can wait for the kernel's memory-map lock, which threads starting and exiting take.
    faults: u64,
    /// Voluntary context switches: the thread gave up its CPU (to sleep on a lock, or in
    /// the kernel). Time the hypervisor takes away is not one.
    sleeps: u64,
}

impl Clocks {
    /// Reads without allocating (a stamp is taken inside the measured intervals, where an
    /// allocation could itself wait for the allocator's locks).
    ///
    /// Time on CPU comes from the thread's CPU clock, not from `schedstat`'s first field:
    /// the kernel brings that field up to date only at a scheduler tick or switch (every
    /// 4 ms at `CONFIG_HZ=250`), so read while the thread runs it lags by up to a tick, and
    /// a difference of two readings could count up to 4 ms of running as asleep. The
    /// CPU clock is brought up to date by the read itself. Time runnable (`schedstat`'s
    /// second field) only changes when the thread is put on a CPU, so it is current
    /// whenever the thread reads it.
    ///
    /// The three clocks cannot be read at one instant: if the thread waits for a CPU
    /// between the reads, that wait would count in the wall time and not in the runnable
    /// time (or the other way round), and show up as blocked. So the runnable time is read
    /// before and after the other two, and the reading taken again until both agree.
    fn now() -> Self {
        let mut before = runnable_ns();
        for _ in 0..100 {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: `ts` is a valid timespec to write; the clock id is a constant.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            let wall = Instant::now();
            let ru = rusage();
            let after = runnable_ns();
            if after == before {
                return Clocks {
                    wall,
                    on_cpu_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
                    runnable_ns: before,
                    faults: ru.0,
                    sleeps: ru.1,
                };
            }
            before = after;
        }
        panic!("the thread was preempted during each of 100 readings of its clocks");
    }

    /// Wall time since `earlier`, and the part of it the thread slept (neither on a CPU
    /// nor waiting for one).
    fn since(&self, earlier: &Clocks) -> (Duration, Duration) {
        let wall = self.wall.saturating_duration_since(earlier.wall);
        let busy_or_queued =
            (self.on_cpu_ns + self.runnable_ns).saturating_sub(earlier.on_cpu_ns + earlier.runnable_ns);
        (wall, wall.saturating_sub(Duration::from_nanos(busy_or_queued)))
    }

    /// Page faults taken since `earlier`.
    fn faults_since(&self, earlier: &Clocks) -> u64 {
        self.faults.saturating_sub(earlier.faults)
    }

    /// The part of [`Clocks::since`]'s blocked time that can be a sleep: all of it when the
    /// thread gave up its CPU since `earlier`, none otherwise (then it never slept, and
    /// what reads as blocked is time the hypervisor took).
    fn slept_since(&self, earlier: &Clocks) -> Duration {
        if self.sleeps > earlier.sleeps {
            self.since(earlier).1
        } else {
            Duration::ZERO
        }
    }
}

/// Where an exit stamp goes.
type StampSlot = Arc<Mutex<Option<Clocks>>>;

/// Stamps the clocks when its thread-local destructor runs into `slot`.
struct Stamp(RefCell<Option<StampSlot>>);

impl Drop for Stamp {
    fn drop(&mut self) {
        if let Some(slot) = self.0.borrow_mut().take() {
            *slot.lock().unwrap() = Some(Clocks::now());
        }
    }
}

thread_local! {
    /// Touched after the first call: its destructor runs before the profiler's.
    static EXIT_BEGINS: Stamp = const { Stamp(RefCell::new(None)) };
    /// Touched before the first call: its destructor runs after the profiler's.
    static EXIT_ENDS: Stamp = const { Stamp(RefCell::new(None)) };
}

/// Keys whose destructors stamp the clocks before and after the profiler's key's (created
/// at the process's first recorded call, between the two: see [`ExitKeys::create`]).
#[derive(Clone, Copy)]
struct ExitKeys {
    begins: libc::pthread_key_t,
    ends: libc::pthread_key_t,
}

/// A key's destructor: stamps the clocks into the slot its value holds.
extern "C" fn stamp_key(value: *mut libc::c_void) {
    // SAFETY: every value set on these keys is a `StampSlot` from `Arc::into_raw`, and the
    // destructor runs once per value.
    let slot = unsafe { Arc::from_raw(value as *const Mutex<Option<Clocks>>) };
    *slot.lock().unwrap() = Some(Clocks::now());
}

impl ExitKeys {
    /// Creates the first key, has the profiler create its own (a recorded call on this
    /// thread), then the second key: keys' destructors run in key order, which is the
    /// order of creation in a process that deletes none.
    fn create() -> Self {
        let key = || {
            let mut k: libc::pthread_key_t = 0;
            // SAFETY: `k` is valid to write; `stamp_key` does not unwind.
            assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(stamp_key)) }, 0);
            k
        };
        let begins = key();
        black_box(first_call(0));
        let ends = key();
        ExitKeys { begins, ends }
    }

    /// Sets the calling thread's values of both keys.
    fn set(&self, begins: StampSlot, ends: StampSlot) {
        for (k, slot) in [(self.begins, begins), (self.ends, ends)] {
            // SAFETY: a key of this process; the value is reclaimed by `stamp_key`.
            unsafe { libc::pthread_setspecific(k, Arc::into_raw(slot) as *const libc::c_void) };
        }
    }
}

thread_local! {
    /// The thread's `/proc/thread-self/schedstat`, opened at its first reading: a reading
    /// inside a timed interval then reads the open file, with no path lookup, open or close
    /// (which the kernel may do sleeping) in the interval.
    static SCHEDSTAT: Option<std::fs::File> = std::fs::File::open("/proc/thread-self/schedstat").ok();
}

/// Time the calling thread has spent runnable, waiting for a CPU (the second field of
/// `/proc/thread-self/schedstat`), read without allocating. From the thread's open file;
/// opened on the spot once the thread's thread-locals are gone (the exit stamps of the
/// keys' destructors).
fn runnable_ns() -> u64 {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let n = SCHEDSTAT
        .try_with(|f| f.as_ref().and_then(|f| f.read_at(&mut buf, 0).ok()))
        .ok()
        .flatten()
        .or_else(|| {
            std::fs::File::open("/proc/thread-self/schedstat")
                .and_then(|mut f| f.read(&mut buf))
                .ok()
        })
        .unwrap_or(0);
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("");
    s.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0)
}

/// Page faults (minor and major) and voluntary context switches of the calling thread so
/// far (`getrusage(RUSAGE_THREAD)`).
fn rusage() -> (u64, u64) {
    // SAFETY: `rusage` is plain data, valid zeroed; `getrusage` writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to write; `RUSAGE_THREAD` is the calling thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ((ru.ru_minflt + ru.ru_majflt) as u64, ru.ru_nvcsw as u64)
}

/// Time the hypervisor ran something else on this machine's CPUs (all CPUs together, the
/// `steal` column of `/proc/stat`'s first line, in its 10 ms ticks), read without allocating.
/// The kernel subtracts it from a running thread's CPU time and counts it as neither running
/// nor runnable, so the bench's *blocked* includes it.
fn steal_ns() -> u64 {
    use std::io::Read;
    let mut buf = [0u8; 256];
    let n = std::fs::File::open("/proc/stat")
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let ticks: u64 = s
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    ticks * 10_000_000
}

/// Reads one figure of a [`Blocked`].
type Field = fn(&Blocked) -> Duration;

/// First-call and exit latency of one application thread.
#[derive(Clone, Copy, Debug, Default)]
struct Blocked {
    first_call: Duration,
    exit: Duration,
    first_call_blocked: Duration,
    exit_blocked: Duration,
    /// The blocked time of intervals in which the thread gave up its CPU (see
    /// [`Clocks::slept_since`]).
    first_call_slept: Duration,
    exit_slept: Duration,
    /// Page faults the first call took.
    first_call_faults: u64,
    /// Blocked time between the same readings around a call that records nothing, just
    /// before the first call: what the measurement itself can show.
    control_blocked: Duration,
    /// Time the hypervisor took the machine's CPUs away (steal, all CPUs, 10 ms ticks)
    /// around the first call.
    first_call_stolen: Duration,
}

/// The four exit stamps of a thread: thread-local destructors, then key destructors.
#[derive(Default)]
struct ExitStamps {
    tls_begins: StampSlot,
    tls_ends: StampSlot,
    key_begins: StampSlot,
    key_ends: StampSlot,
}

impl ExitStamps {
    /// Wall, blocked and slept time between the stamps of each pair, summed.
    fn exit(&self) -> (Duration, Duration, Duration) {
        let get = |s: &StampSlot| s.lock().unwrap().expect("the thread stamped its exit");
        let [tls, key] =
            [(&self.tls_begins, &self.tls_ends), (&self.key_begins, &self.key_ends)].map(|(begins, ends)| {
                let (begins, ends) = (get(begins), get(ends));
                let (wall, blocked) = ends.since(&begins);
                (wall, blocked, ends.slept_since(&begins))
            });
        (tls.0 + key.0, tls.1 + key.1, tls.2 + key.2)
    }
}

/// Starts `n` threads at once; each makes its first call, recurses, and exits.
fn wave(n: usize, keys: ExitKeys) -> Vec<Blocked> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let stamps = ExitStamps::default();
            let (tb, te) = (Arc::clone(&stamps.tls_begins), Arc::clone(&stamps.tls_ends));
            let (kb, ke) = (Arc::clone(&stamps.key_begins), Arc::clone(&stamps.key_ends));
            let h = std::thread::spawn(move || {
                EXIT_ENDS.with(|s| *s.0.borrow_mut() = Some(te));
                keys.set(kb, ke);
                // The control: the same two readings around a call that records nothing.
                let c = Clocks::now();
                black_box(unrecorded(i as u64));
                let control_blocked = Clocks::now().since(&c).1;
                let steal_before = steal_ns();
                let t = Clocks::now();
                black_box(first_call(i as u64));
                let done = Clocks::now();
                let stolen = steal_ns().saturating_sub(steal_before);
                let (first_call, first_call_blocked) = done.since(&t);
                let b = Blocked {
                    first_call,
                    first_call_blocked,
                    first_call_slept: done.slept_since(&t),
                    first_call_faults: done.faults_since(&t),
                    control_blocked,
                    first_call_stolen: Duration::from_nanos(stolen),
                    ..Blocked::default()
                };
                EXIT_BEGINS.with(|s| *s.0.borrow_mut() = Some(tb));
                black_box(recurse(DEPTH));
                b
            });
            (h, stamps)
        })
        .collect();
    handles
        .into_iter()
        .map(|(h, stamps)| {
            let first = h.join().unwrap();
            let (exit, exit_blocked, exit_slept) = stamps.exit();
            Blocked {
                exit,
                exit_blocked,
                exit_slept,
                ..first
            }
        })
        .collect()
}

/// Prints each first call of `threads` blocked over 200 µs, with what may explain it.
fn print_long_first_calls(waves: &str, threads: &[Blocked]) {
    for b in threads
        .iter()
        .filter(|b| b.first_call_blocked > Duration::from_micros(200))
    {
        eprintln!(
            "thread_stall: {waves}: a first call blocked {:?} (wall {:?}, {} page faults, {}); the machine's CPUs stolen meanwhile: {:?}",
            b.first_call_blocked,
            b.first_call,
            b.first_call_faults,
            if b.first_call_slept > Duration::ZERO {
                "gave up its CPU"
            } else {
                "never gave up its CPU"
            },
            b.first_call_stolen
        );
    }
}

fn report_worst_case(keys: ExitKeys) {
    let _storm = Storm::start();
    std::thread::sleep(Duration::from_millis(50));
    // The process's first threads pay one-off costs (the kernel switching its perf hooks on,
    // the allocator's arenas, the paths' first nodes): shown apart from the steady state.
    let on_the_spot = profiling_core::record::switches::kits_made_on_the_spot;
    let requests = profiling_core::record::switches::requests_not_ready;
    let before_first = on_the_spot();
    let requests_before = requests();
    let first = wave(THREADS, keys);
    let after_first = on_the_spot();
    let requests_after_first = requests();
    let worst = |get: Field| first.iter().map(get).max().unwrap_or_default();
    eprintln!(
        "thread_stall: first wave of the process, worst blocked: first call {:?}, exit {:?}; worst slept: first call {:?}, exit {:?}",
        worst(|b| b.first_call_blocked),
        worst(|b| b.exit_blocked),
        worst(|b| b.first_call_slept),
        worst(|b| b.exit_slept)
    );
    print_long_first_calls("first wave", &first);
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(wave(THREADS, keys));
    }
    let pct = |mut v: Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * q) as usize]
    };
    eprintln!(
        "thread_stall: threads that found no kit ready and made their own: {} of the first wave, {} of the later ones",
        after_first - before_first,
        on_the_spot() - after_first
    );
    eprintln!(
        "thread_stall: detector requests found not ready (those threads attribute CPU by windows until one is): {} of the first wave, {} of the later ones",
        requests_after_first - requests_before,
        requests() - requests_after_first
    );
    eprintln!(
        "thread_stall: {} threads ({} waves of {THREADS}) under {} snapshot readers, {} allocator",
        all.len(),
        all.len() / THREADS,
        readers(),
        if cfg!(feature = "jemalloc") {
            "jemalloc"
        } else {
            "system"
        }
    );
    let rows: [(&str, Field); 7] = [
        ("control, blocked", |b| b.control_blocked),
        ("first call, wall", |b| b.first_call),
        ("first call, blocked", |b| b.first_call_blocked),
        ("first call, slept", |b| b.first_call_slept),
        ("exit, wall", |b| b.exit),
        ("exit, blocked", |b| b.exit_blocked),
        ("exit, slept", |b| b.exit_slept),
    ];
    let faulted = all.iter().filter(|b| b.first_call_faults > 0).count();
    let worst = all
        .iter()
        .max_by_key(|b| b.first_call_blocked)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "thread_stall: first calls that took page faults: {faulted} of {} ({} faults in all); the most blocked one took {}",
        all.len(),
        all.iter().map(|b| b.first_call_faults).sum::<u64>(),
        worst.first_call_faults
    );
    print_long_first_calls("later waves", &all);
    for (name, get) in rows {
        let v: Vec<Duration> = all.iter().map(get).collect();
        eprintln!(
            "  {name:<20} p50 {:>12?}  p99 {:>12?}  max {:>12?}",
            pct(v.clone(), 0.5),
            pct(v.clone(), 0.99),
            pct(v, 1.0)
        );
    }
}

/// Seconds of the noise probe (`THREAD_STALL_PROBE_SECS`): when set, the bench runs only
/// [`report_noise_floor`].
fn probe_secs() -> Option<u64> {
    std::env::var("THREAD_STALL_PROBE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// What the measurement reads for a thread that takes no lock, makes no allocator call and
/// no system call but the clocks' reads: the same two readings as a first call's, around a
/// call that records nothing, back to back for `secs` seconds. On a virtual machine this
/// is not zero: while the hypervisor runs something else on the thread's CPU (*steal*), the
/// kernel counts the thread neither on a CPU nor waiting for one, so that time reads as
/// blocked. Each interval blocked over 1 ms is printed with the steal of the machine's CPUs
/// around it (`/proc/stat`, in 10 ms ticks, so shorter steals may not move it).
fn report_noise_floor(secs: u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut intervals, mut over_1ms, mut worst) = (0u64, 0u64, Duration::ZERO);
    while Instant::now() < end {
        let steal_before = steal_ns();
        let t = Clocks::now();
        black_box(unrecorded(intervals));
        let done = Clocks::now();
        let (_, blocked) = done.since(&t);
        intervals += 1;
        worst = worst.max(blocked);
        if blocked > Duration::from_millis(1) {
            over_1ms += 1;
            eprintln!(
                "thread_stall: noise probe: blocked {blocked:?} ({}); the machine's CPUs stolen meanwhile: {:?}",
                if done.slept_since(&t) > Duration::ZERO {
                    "gave up its CPU"
                } else {
                    "never gave up its CPU"
                },
                Duration::from_nanos(steal_ns().saturating_sub(steal_before))
            );
        }
    }
    eprintln!(
        "thread_stall: noise probe: {intervals} intervals in {secs} s, {over_1ms} blocked over 1 ms, worst {worst:?}"
    );
}

fn thread_stall(c: &mut Criterion) {
    if let Some(secs) = probe_secs() {
        report_noise_floor(secs);
        return;
    }
    let keys = ExitKeys::create();
    report_worst_case(keys);
    let mut g = c.benchmark_group("thread_stall");
    let storm = Storm::start();
    // Per thread: wall time of its first call plus its exit, 64 threads at a time. (Wall, not
    // blocked time: with nothing blocked, that sum is 0, which criterion cannot time; the
    // blocked figures are in the report above.)
    g.bench_function("first_call_and_exit_wall_under_snapshot_storm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(THREADS);
                total += wave(n, keys).iter().map(|b| b.first_call + b.exit).sum::<Duration>();
                left -= n;
            }
            total
        })
    });
    drop(storm);
    g.finish();
}

criterion_group!(benches, thread_stall);
criterion_main!(benches);
