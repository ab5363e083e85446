//! Sampled CPU profiles (our `SIGPROF` sampler): a CPU-spinning function dominates the profile, the
//! gzip protobuf decodes and names it, time comes from measured CPU, one profile runs at a
//! time, and sampling is safe while several threads allocate and free.
//!
//! Tolerances: the spinning function holds at least 70% of samples (the rest is the test
//! harness, the allocator threads of other tests are serialized away); the sum of folded
//! CPU time is the measured process CPU within 2% (rounding of the per-sample division).
//! Each test samples for at most ~1.5 s.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profiling_core::render::cpu_profile::{self, protos, protos::Message, CpuSampler};
use profiling_core::Error;
use profiling_integration::{serial, spin_cpu};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

/// The hot function: distinct name, never inlined, so it is one frame in every sample.
#[inline(never)]
fn hot_spin_for_profile(d: Duration) {
    spin_cpu(d);
    std::hint::black_box(());
}

#[test]
fn spinning_function_dominates_sampled_profile() {
    let _s = serial();
    let ((), profile) = cpu_profile::profile_cpu_while(cpu_profile::DEFAULT_FREQUENCY_HZ, || {
        hot_spin_for_profile(Duration::from_millis(1200))
    })
    .unwrap();
    // 1.2 s of CPU at 99 Hz nominal: ~119 samples expected; allow a loaded machine to lose some.
    assert!(profile.samples() >= 60, "too few samples: {profile:?}");
    let hot = profile.samples_in("hot_spin_for_profile");
    assert!(
        hot * 100 >= profile.samples() * 70,
        "hot function has {hot} of {} samples:\n{}",
        profile.samples(),
        profile.folded_text()
    );
    // Innermost frames are kept: some sample ends in spin_cpu's callees (churn / thread_cpu),
    // below hot_spin_for_profile.
    assert!(
        profile
            .folded_samples()
            .iter()
            .any(|l| l.stack.contains("hot_spin_for_profile;") && l.stack.contains("spin_cpu")),
        "{}",
        profile.folded_text()
    );
    // No profiler frames leak into stacks: the handler, the unwinder (the `backtrace` crate's;
    // std's `std::sys::backtrace::__rust_begin_short_backtrace` is a real frame), the signal
    // trampoline.
    let text = profile.folded_text();
    for frame in [
        "sample_guard",
        "on_sigprof",
        "backtrace::backtrace::",
        "trace_unsynchronized",
        "_Unwind_Backtrace",
        "__restore_rt",
    ] {
        assert!(!text.contains(frame), "{frame} in\n{text}");
    }

    // Time comes from measured process CPU: the folded values add up to it.
    let total: u64 = profile.folded().iter().map(|l| l.value).sum();
    assert!(
        profile.cpu_ns() >= 1_150_000_000,
        "measured CPU {} ns",
        profile.cpu_ns()
    );
    let diff = profile.cpu_ns().abs_diff(total);
    assert!(
        diff * 50 <= profile.cpu_ns(),
        "folded {total} vs measured {}",
        profile.cpu_ns()
    );

    // SVG names the hot function.
    let svg = String::from_utf8(profile.flamegraph_svg().unwrap()).unwrap();
    assert!(svg.contains("hot_spin_for_profile"));
    assert!(svg.contains("CPU (sampled)"));
}

#[test]
fn pprof_protobuf_decodes_and_names_hot_function() {
    let _s = serial();
    let ((), profile) = cpu_profile::profile_cpu_while(cpu_profile::DEFAULT_FREQUENCY_HZ, || {
        hot_spin_for_profile(Duration::from_millis(800))
    })
    .unwrap();
    let gz = profile.pprof_gzip().unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    let p = protos::Profile::decode(raw.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    assert_eq!(p.sample_type.len(), 2);
    assert_eq!(
        (s(p.sample_type[1].ty), s(p.sample_type[1].unit)),
        ("cpu", "nanoseconds")
    );

    let hot_fn: Vec<u64> = p
        .function
        .iter()
        .filter(|f| s(f.name).contains("hot_spin_for_profile"))
        .map(|f| f.id)
        .collect();
    assert!(!hot_fn.is_empty(), "no function named hot_spin_for_profile");
    // A location is an address; its lines name the functions there (inlined ones included).
    let hot_loc: Vec<u64> = p
        .location
        .iter()
        .filter(|l| l.line.iter().any(|line| hot_fn.contains(&line.function_id)))
        .map(|l| l.id)
        .collect();
    assert!(p.location.iter().all(|l| l.address != 0), "real addresses");
    let total: i64 = p.sample.iter().map(|x| x.value[0]).sum();
    let hot: i64 = p
        .sample
        .iter()
        .filter(|x| x.location_id.iter().any(|l| hot_loc.contains(l)))
        .map(|x| x.value[0])
        .sum();
    assert!(hot * 100 >= total * 70, "hot {hot} of {total}");
    // CPU values are measured time, not count * 1e9 / 99.
    let cpu: i64 = p.sample.iter().map(|x| x.value[1]).sum();
    assert!(
        (cpu - profile.cpu_ns() as i64).abs() * 50 <= profile.cpu_ns() as i64,
        "pprof cpu {cpu} vs measured {}",
        profile.cpu_ns()
    );
    assert_eq!(p.period as u64, profile.ns_per_sample());
}

#[test]
fn one_profile_at_a_time() {
    let _s = serial();
    let first = CpuSampler::start(99).unwrap();
    assert!(cpu_profile::is_running());
    assert!(matches!(CpuSampler::start(99), Err(Error::ProfilerBusy)));
    assert!(matches!(
        cpu_profile::profile_cpu(Duration::from_secs(1)),
        Err(Error::ProfilerBusy)
    ));
    drop(first);
    assert!(!cpu_profile::is_running());
    // Out-of-range lengths are refused before sampling starts.
    assert!(matches!(
        cpu_profile::profile_cpu(Duration::from_secs(61)),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        cpu_profile::profile_cpu(Duration::ZERO),
        Err(Error::InvalidConfig(_))
    ));
    let p = CpuSampler::start(99).unwrap().finish().unwrap();
    assert!(p.wall() < Duration::from_secs(1));
}

/// Sampling while four threads allocate and free as fast as they can: no deadlock, no crash,
/// and the profile sees the allocating threads.
#[test]
fn sampling_is_safe_while_threads_allocate() {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("alloc-stress-{i}"))
                .spawn(move || {
                    let mut rounds = 0u64;
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        for size in [8usize, 64, 512, 4096, 65536] {
                            let v = vec![rounds as u8; size];
                            keep.push(v);
                        }
                        if keep.len() > 64 {
                            keep.drain(..32);
                        }
                        let s: String = (0..32).map(|c| char::from(b'a' + (c % 26) as u8)).collect();
                        std::hint::black_box(s);
                        rounds += 1;
                    }
                    rounds
                })
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    let ((), profile) =
        cpu_profile::profile_cpu_while(250, || std::thread::sleep(Duration::from_millis(1500))).unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(started.elapsed() < Duration::from_secs(10), "sampling stalled");
    assert!(rounds > 1000, "workers made little progress: {rounds}");
    assert!(profile.samples() > 50, "{profile:?}");
    assert!(profile.samples_in("alloc-stress-") > 0, "{}", profile.folded_text());
    // The protobuf still encodes.
    assert!(!profile.pprof_gzip().unwrap().is_empty());
}
