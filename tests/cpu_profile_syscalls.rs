//! Sampled CPU profiles account for every sample: a thread that spends a known share of its
//! CPU in `read` system calls and the rest in user code gets both shares in the profile.
//!
//! One thread alternates a spin loop (`spin_user`, user CPU only) with 1 MiB `read`s from
//! `/dev/zero` (`read_zero`, system CPU almost only), 1 to 3 ms of CPU each (drawn per round), for ~4 s at the
//! default frequency (~400 samples of the thread). The true shares are the thread CPU clock
//! read around each part, and the kernel's user / system split (`getrusage(RUSAGE_THREAD)`).
//!
//! Tolerance: each share from the profile within 10 points of the measured one. At ~400
//! samples the binomial standard error of a ~50% share is 2.5 points, so 10 points is 4
//! standard errors; the kernel's own user/system split is itself tick-sampled.
//!
//! Before samples in libc were kept, every sample taken at the `read` system call was
//! dropped and `spin_user` held ~100% of the thread's samples: this test failed.

use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

use profiling_core::render::cpu_profile::{self, CpuSampler, SYSTEM_CALL_FRAME};
use profiling_integration::{serial, thread_cpu};

const THREAD: &str = "syscall-mix";

/// User CPU only: arithmetic on registers, `iterations` rounds.
#[inline(never)]
fn spin_user(iterations: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// System CPU almost only: `reads` reads of 1 MiB from `/dev/zero`.
#[inline(never)]
fn read_zero(f: &mut File, buf: &mut [u8], reads: u32) -> usize {
    let mut total = 0;
    for _ in 0..reads {
        total += f.read(buf).unwrap_or(0);
    }
    total
}

fn rusage_thread() -> (Duration, Duration) {
    // SAFETY: a zeroed rusage is valid; valid out-pointer.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(r.ru_utime), tv(r.ru_stime))
}

struct Measured {
    spin: Duration,
    read: Duration,
    total: Duration,
    user: Duration,
    system: Duration,
}

/// Runs the mix for `wall` on the calling thread.
fn workload(wall: Duration) -> Measured {
    let mut f = File::open("/dev/zero").unwrap();
    let mut buf = vec![1u8; 1 << 20];
    // Calibrate each part to ~2 ms of thread CPU.
    let t = thread_cpu();
    std::hint::black_box(spin_user(1_000_000));
    let per_million = (thread_cpu() - t).max(Duration::from_micros(1));
    let iterations = (2_000_000.0 / per_million.as_nanos() as f64 * 1e6) as u64;
    // Warmed up first, then timed over 16: the first reads are the slowest, and timing
    // only those once made the reads a quarter of the mix or less (23.9% in one run).
    std::hint::black_box(read_zero(&mut f, &mut buf, 4));
    let t = thread_cpu();
    std::hint::black_box(read_zero(&mut f, &mut buf, 16));
    let per_read = ((thread_cpu() - t) / 16).max(Duration::from_micros(1));
    let reads = (Duration::from_millis(2).as_nanos() / per_read.as_nanos()).max(1) as u32;

    let (u0, s0) = rusage_thread();
    let start = thread_cpu();
    let (mut spin, mut read) = (Duration::ZERO, Duration::ZERO);
    let until = Instant::now() + wall;
    // Each part lasts 1 to 3 ms, drawn anew every round: parts of one fixed length can fall
    // in step with the kernel's tick, which drives both SIGPROF and the user/system split
    // of `getrusage`, and then both sample one phase of the cycle (seen once: 72% of the
    // samples in the spin, which took 51% of the thread's CPU).
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut scale = || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        0.5 + (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    while Instant::now() < until {
        let (n, r) = (
            (iterations as f64 * scale()) as u64,
            ((reads as f64 * scale()) as u32).max(1),
        );
        let a = thread_cpu();
        std::hint::black_box(spin_user(n));
        let b = thread_cpu();
        std::hint::black_box(read_zero(&mut f, &mut buf, r));
        let c = thread_cpu();
        spin += b - a;
        read += c - b;
    }
    let total = thread_cpu() - start;
    let (u1, s1) = rusage_thread();
    Measured {
        spin,
        read,
        total,
        user: u1 - u0,
        system: s1 - s0,
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

#[test]
fn samples_in_system_calls_are_kept() {
    let _s = serial();
    let sampler = CpuSampler::start(cpu_profile::DEFAULT_FREQUENCY_HZ).unwrap();
    let m = std::thread::Builder::new()
        .name(THREAD.to_owned())
        .spawn(|| workload(Duration::from_secs(4)))
        .unwrap()
        .join()
        .unwrap();
    let profile = sampler.finish().unwrap();
    let counts = profile.sample_counts();
    let text = profile.folded_text();

    let prefix = format!("{THREAD};");
    let of_thread = |pred: &dyn Fn(&str) -> bool| -> u64 {
        profile
            .folded_samples()
            .iter()
            .filter(|l| l.stack.starts_with(&prefix) && pred(&l.stack))
            .map(|l| l.value)
            .sum()
    };
    let thread_samples = of_thread(&|_| true);
    let spin_samples = of_thread(&|s| s.contains("spin_user"));
    let syscall_leaf = of_thread(&|s| s == format!("{THREAD};{SYSTEM_CALL_FRAME}"));
    // The read part: the system calls and libc under the thread, and whatever was unwound
    // inside read_zero (std's read wrapper).
    let read_samples = of_thread(&|s| s.contains("read_zero") || s.starts_with(&format!("{THREAD};[")));

    let spin_true = pct(m.spin.as_nanos() as u64, m.total.as_nanos() as u64);
    let read_true = pct(m.read.as_nanos() as u64, m.total.as_nanos() as u64);
    let sys_true = pct(m.system.as_nanos() as u64, (m.user + m.system).as_nanos() as u64);
    let (spin_got, read_got, sys_got) = (
        pct(spin_samples, thread_samples),
        pct(read_samples, thread_samples),
        pct(syscall_leaf, thread_samples),
    );
    let report = format!(
        "{counts:?}; thread samples {thread_samples}: spin {spin_got:.1}% (measured {spin_true:.1}%), \
         read {read_got:.1}% (measured {read_true:.1}%), {SYSTEM_CALL_FRAME} {sys_got:.1}% \
         (system time {sys_true:.1}%); thread CPU {:?}, user {:?}, system {:?}\n{text}",
        m.total, m.user, m.system
    );
    eprintln!("{}", report.lines().next().unwrap_or(""));

    // The counts come from the handler's per-thread counters, the stacks from its stack
    // table and those counters' leaves: every sample taken is in the profile once.
    let in_profile: u64 = profile.folded_samples().iter().map(|l| l.value).sum();
    assert_eq!(in_profile, counts.taken, "samples in the profile vs taken: {report}");
    let leaves = |leaf: &str| -> u64 {
        let end = format!(";{leaf}");
        profile
            .folded_samples()
            .iter()
            .filter(|l| l.stack.ends_with(&end))
            .map(|l| l.value)
            .sum()
    };
    assert_eq!(leaves(SYSTEM_CALL_FRAME), counts.system_call, "{report}");
    assert!(syscall_leaf > 0, "no {SYSTEM_CALL_FRAME} leaf: {report}");
    // ~4 s of one busy thread at 99 Hz: ~400 samples; a loaded machine may deliver fewer.
    assert!(thread_samples >= 150, "too few samples: {report}");
    // The workload is a real mix (else the test proves nothing): about half each.
    assert!((20.0..=80.0).contains(&read_true), "{report}");
    assert!((spin_got - spin_true).abs() <= 10.0, "spin share: {report}");
    assert!((read_got - read_true).abs() <= 10.0, "read share: {report}");
    assert!((sys_got - sys_true).abs() <= 10.0, "system call share: {report}");
    // The pprof protobuf holds every sample and says how many were taken and unwound.
    let p = profile.pprof();
    let in_pprof: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(in_pprof as u64, counts.taken, "{report}");
    let comments: Vec<&str> = p.comment.iter().map(|&i| p.string_table[i as usize].as_str()).collect();
    assert!(
        comments.contains(&format!("samples_taken={}", counts.taken).as_str()),
        "{comments:?}"
    );
    assert!(
        comments.contains(&format!("samples_unwound={}", counts.unwound).as_str()),
        "{comments:?}"
    );
    // The samples stand for the measured CPU: folded values add up to it.
    let folded: u64 = profile.folded().iter().map(|l| l.value).sum();
    let cpu = profile.cpu_ns();
    assert!(
        folded.abs_diff(cpu) * 100 <= cpu * 2,
        "folded {folded} ns vs cpu {cpu} ns: {report}"
    );
}
