//! Rankings of workloads whose true cost is known.
//!
//! Every test runs alone (`serial()`) and starts a fresh window with `reset()`, so a ranking
//! holds exactly the functions the test ran. Tolerances: a recorded wall time covers the
//! reference interval measured with `Instant` inside the function, plus at most 2 ms; a
//! share matches the ratio of reference times within 0.02; a wrapper's self time is at most
//! 10% of its total; identities (self + callees = total) and allocation bytes and counts are
//! exact. Classification by CPU ratio is checked against the thread CPU clock's own ratio
//! (see `spinning_is_cpu_bound`).

use std::time::{Duration, Instant};

use profiling_core::analyze::ranking::{Bottleneck, Classification, Ranking, SortKey};
use profiling_core::{profiled, rank, reset, snapshot, RankOptions};
use profiling_integration::{assert_covers, serial, spin_cpu, spin_for, thread_cpu, timed_spin};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

const MS: u64 = 1_000_000;

fn entry<'a>(r: &'a Ranking, short: &str) -> &'a Bottleneck {
    let name = format!("ranking::{short}");
    r.bottlenecks.iter().find(|b| b.function() == name).unwrap_or_else(|| {
        panic!(
            "{name} not ranked; have {:?}",
            r.bottlenecks.iter().map(|b| b.function()).collect::<Vec<_>>()
        )
    })
}

fn order(r: &Ranking) -> Vec<&str> {
    r.bottlenecks
        .iter()
        .map(|b| b.function().trim_start_matches("ranking::"))
        .collect()
}

#[profiled]
fn spin_30ms() -> Duration {
    timed_spin(30)
}

#[profiled]
fn spin_10ms() -> Duration {
    timed_spin(10)
}

#[test]
fn longer_spin_outranks_shorter_by_self_time() {
    let _serial = serial();
    reset();
    let ref_b = spin_10ms();
    let ref_a = spin_30ms();
    let r = rank(&snapshot(), &RankOptions::new());
    assert_eq!(r.sort, SortKey::SelfWall);
    assert_eq!(order(&r), ["spin_30ms", "spin_10ms"]);
    let (a, b) = (entry(&r, "spin_30ms"), entry(&r, "spin_10ms"));
    assert_eq!((a.rank, b.rank), (1, 2));
    assert_covers(a.stats.self_wall_ns, ref_a, 2 * MS, "spin_30ms self");
    assert_covers(b.stats.self_wall_ns, ref_b, 2 * MS, "spin_10ms self");
    // Shares of the window's profiled time: in the ratio of the reference times (~3/4, 1/4).
    assert!((a.share + b.share - 1.0).abs() < 1e-3, "{} + {}", a.share, b.share);
    let want = ref_a.as_secs_f64() / (ref_a + ref_b).as_secs_f64();
    assert!((a.share - want).abs() < 0.02, "share {}, reference {want:.4}", a.share);
    assert!(a.impact_score > b.impact_score);
    assert_eq!(r.window.profiled_wall_ns, a.stats.self_wall_ns + b.stats.self_wall_ns);
    assert_eq!(r.window.since, profiling_core::analyze::ranking::WindowStart::LastReset);

    let limited = rank(&snapshot(), &RankOptions::new().limit(1));
    assert_eq!(order(&limited), ["spin_30ms"]);
    assert_eq!(limited.window.functions, 2);
}

#[profiled]
fn heavy_child() -> Duration {
    timed_spin(20)
}

/// Returns the reference durations of its whole call and of its call of `heavy_child`.
#[profiled]
fn thin_parent() -> (Duration, Duration) {
    let t = Instant::now();
    let c = Instant::now();
    heavy_child();
    let child = c.elapsed();
    (t.elapsed(), child)
}

#[test]
fn wrapper_has_high_total_and_low_self_time() {
    let _serial = serial();
    reset();
    let (reference, child_reference) = thin_parent();
    let s = snapshot();

    let by_total = rank(&s, &RankOptions::new().sort(SortKey::TotalWall));
    assert_eq!(order(&by_total), ["thin_parent", "heavy_child"]);
    let by_self = rank(&s, &RankOptions::new());
    assert_eq!(order(&by_self), ["heavy_child", "thin_parent"]);

    let parent = entry(&by_self, "thin_parent");
    let child = entry(&by_self, "heavy_child");
    assert_covers(parent.stats.total_wall_ns, reference, 2 * MS, "parent total");
    assert!(child.stats.total_wall_ns <= child_reference.as_nanos() as u64);
    assert!(reference >= Duration::from_millis(20));
    // Self time is what the parent spent outside the child: the reference difference plus
    // the parent's own guard overhead (within the 2 ms tolerance).
    let outside = (reference - child_reference).as_nanos() as u64;
    assert!(
        parent.stats.self_wall_ns >= outside && parent.stats.self_wall_ns <= outside + 2 * MS,
        "parent self {} ns, outside the child by reference {outside} ns",
        parent.stats.self_wall_ns
    );
    assert_eq!(
        parent.stats.self_wall_ns + child.stats.total_wall_ns,
        parent.stats.total_wall_ns
    );
    // Unless preempted, a wrapper's self time is µs: well under the 10% that triggers the
    // "look at its callees" recommendation, which must then be there.
    if parent.stats.self_wall_ns * 10 <= parent.stats.total_wall_ns {
        assert!(parent.impact_score < 0.1, "parent impact {}", parent.impact_score);
        assert!(
            parent
                .recommendations
                .iter()
                .any(|t| t.contains("total time is spent in profiled callees")),
            "{:?}",
            parent.recommendations
        );
    }
}

#[profiled]
fn sleeper() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Burns 4 ms of CPU (short, so that on a busy machine it often fits in one time slice);
/// returns the thread's (CPU time, wall time) over the call, measured
/// with the thread CPU clock and `Instant`: the reference the classification is checked against.
#[profiled]
fn cpu_burner() -> (Duration, Duration) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    spin_cpu(Duration::from_millis(4));
    (thread_cpu() - cpu, wall.elapsed())
}

#[test]
fn sleeping_is_wait_bound() {
    let _serial = serial();
    reset();
    sleeper();
    let r = rank(&snapshot(), &RankOptions::new());
    let sleep = entry(&r, "sleeper");
    assert_eq!(sleep.classification, Classification::WaitBound, "{sleep:#?}");
    assert!(
        sleep.recommendations[0].starts_with("waits: only "),
        "{:?}",
        sleep.recommendations
    );
}

/// A spin is `cpu_bound` when it gets a core. On a loaded machine it may not (a thread
/// waiting in the run queue is not on CPU): each attempt checks the classification against
/// the reference CPU/wall ratio where it is clear of the thresholds (0.3, 0.7) by 0.08, and
/// at least one of 20 attempts must have had most of a core (reference ratio >= 0.78) and be
/// classified `cpu_bound`.
#[test]
fn spinning_is_cpu_bound() {
    let _serial = serial();
    let mut on_core = false;
    let mut seen = Vec::new();
    for _ in 0..20 {
        // Let a busy machine's run queue drain between attempts.
        std::thread::sleep(Duration::from_millis(20));
        reset();
        let (cpu, wall) = cpu_burner();
        sleeper();
        let reference = cpu.as_secs_f64() / wall.as_secs_f64();
        let r = rank(&snapshot(), &RankOptions::new().sort(SortKey::Cpu));
        assert_eq!(order(&r), ["cpu_burner", "sleeper"]);
        let spin = entry(&r, "cpu_burner");
        let want = if reference >= 0.78 {
            Some(Classification::CpuBound)
        } else if (0.38..=0.62).contains(&reference) {
            Some(Classification::Balanced)
        } else if reference <= 0.22 {
            Some(Classification::WaitBound)
        } else {
            None // too close to a threshold to call
        };
        if let Some(want) = want {
            assert_eq!(
                spin.classification, want,
                "reference CPU/wall {reference:.2}: {spin:#?}"
            );
        }
        seen.push(format!("{reference:.2}"));
        if reference >= 0.78 {
            assert!(
                spin.recommendations[0].starts_with("computes: "),
                "{:?}",
                spin.recommendations
            );
            on_core = true;
            break;
        }
    }
    assert!(
        on_core,
        "the spin never had a core to itself; reference CPU/wall ratios {seen:?}"
    );
}

const BLOCKS: usize = 1_000;
const BLOCK: usize = 4_096;

#[profiled]
fn allocates_4mib() -> usize {
    let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|_| vec![1u8; BLOCK]).collect();
    std::hint::black_box(&blocks);
    blocks.len()
}

#[profiled]
fn allocates_little() -> usize {
    let v = vec![0u8; 64];
    std::hint::black_box(&v);
    spin_for(Duration::from_millis(5));
    v.len()
}

#[test]
fn allocation_heavy_function_leads_the_allocation_rankings() {
    let _serial = serial();
    reset();
    allocates_little();
    allocates_4mib();
    let s = snapshot();
    assert!(s.allocations_counted);
    for key in [SortKey::AllocBytes, SortKey::AllocCount] {
        let r = rank(&s, &RankOptions::new().sort(key));
        assert_eq!(order(&r), ["allocates_4mib", "allocates_little"], "by {key}");
    }
    let r = rank(&s, &RankOptions::new().sort(SortKey::AllocBytes));
    let heavy = entry(&r, "allocates_4mib");
    // 1000 blocks plus the outer vector: one allocation for it (its capacity is known).
    let want = (BLOCKS * BLOCK + BLOCKS * std::mem::size_of::<Vec<u8>>()) as u64;
    assert_eq!(heavy.stats.alloc_self.alloc_bytes, want);
    assert_eq!(heavy.stats.alloc_self.alloc_count, BLOCKS as u64 + 1);
    assert_eq!(heavy.stats.alloc_self.freed_bytes, want);
    assert_eq!(heavy.classification, Classification::AllocHeavy, "{heavy:#?}");
    assert!(
        heavy.recommendations[0].starts_with("allocates 3.9 MiB per call in 1k allocations"),
        "{:?}",
        heavy.recommendations
    );
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let little = entry(&r, "allocates_little");
    assert_eq!(
        (little.stats.alloc_self.alloc_bytes, little.stats.alloc_self.alloc_count),
        (64, 1)
    );
    assert!(!little.classifications.contains(&Classification::AllocHeavy));
}

/// Prints a real ranking as JSON and as a table (the example in `docs/rankings.md` comes
/// from `cargo test --test ranking -- --nocapture print_example`).
#[test]
fn print_example() {
    let _serial = serial();
    reset();
    thin_parent();
    sleeper();
    allocates_4mib();
    for _ in 0..3 {
        spin_10ms();
    }
    let r = rank(&snapshot(), &RankOptions::new().limit(5));
    let json = serde_json::to_string_pretty(&r).unwrap();
    // The JSON shape the HTTP API serves.
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["sort"], "self_wall");
    assert_eq!(v["bottlenecks"].as_array().map(Vec::len), Some(5));
    println!("{json}\n{r}");
}
