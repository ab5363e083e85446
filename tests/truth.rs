//! Truth tests: workloads whose true cost is known, and the recorded figures checked
//! against them with stated tolerances.
//!
//! Tolerances: wall time of a sleep from 2% below to 50% above the request (a sleep cannot
//! be shorter; a loaded machine wakes it late, which is not the profiler's error); CPU of a
//! CPU-time spin (`spin_cpu`, which burns exactly the requested CPU time however loaded the
//! machine is) within 10%; CPU of a sleep under 2 ms; identities such as
//! self + children == total exact to the nanosecond; allocation bytes and counts exact.
//! Tests run one at a time (`serial()`): they measure time on a 2-core machine.

use std::time::Duration;

use profiling_core::record::snapshot::FunctionStats;
use profiling_core::{profiled, snapshot, Snapshot};
use profiling_integration::{assert_covers, serial, spin_cpu, within};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

const MS: u64 = 1_000_000;

fn func<'a>(snap: &'a Snapshot, short: &str) -> &'a FunctionStats {
    let name = format!("truth::{short}");
    snap.function(&name).unwrap_or_else(|| {
        panic!(
            "{name} not recorded; have {:?}",
            snap.functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        )
    })
}

fn assert_wall(got: u64, want: u64, what: &str) {
    assert!(
        got >= want * 98 / 100 && got <= want * 150 / 100,
        "{what}: {got} ns, want {want} ns (-2%/+50%)"
    );
}

/// Sleeps 20 ms and returns how long the sleep took by `std::time::Instant`: the reference
/// the recorded figure is checked against.
#[profiled]
fn sleep_20ms() -> Duration {
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    t.elapsed()
}

#[test]
fn sleep_is_wall_time_not_cpu() {
    let _serial = serial();
    let reference = sleep_20ms();
    let s = snapshot();
    let f = func(&s, "sleep_20ms");
    assert_eq!(f.calls, 1);
    assert!(reference >= Duration::from_millis(20));
    assert_covers(f.total_wall_ns, reference, MS, "wall");
    assert_eq!(f.total_wall_ns, f.self_wall_ns);
    assert!(f.cpu_total_ns < 2 * MS, "a sleep used {} ns of CPU", f.cpu_total_ns);
}

#[profiled]
fn spin_20ms() {
    spin_cpu(Duration::from_millis(20));
}

#[test]
fn spin_is_cpu_time() {
    let _serial = serial();
    spin_20ms();
    let s = snapshot();
    let f = func(&s, "spin_20ms");
    assert!(within(f.cpu_total_ns, 20 * MS, 0.10), "cpu {}", f.cpu_total_ns);
    assert!(
        f.total_wall_ns >= f.cpu_total_ns * 98 / 100,
        "wall {} < cpu {}",
        f.total_wall_ns,
        f.cpu_total_ns
    );
    assert_eq!(f.cpu_total_ns, f.cpu_self_ns);
}

const MIB: usize = 1 << 20;

#[profiled]
fn allocate_and_keep() -> Vec<u8> {
    let mut v = Vec::with_capacity(MIB);
    v.resize(MIB, 1u8);
    v
}

#[profiled]
fn allocate_and_free() -> usize {
    let v = vec![7u8; MIB];
    std::hint::black_box(&v);
    v.len()
}

#[test]
fn allocations_are_exact() {
    let _serial = serial();
    let kept = allocate_and_keep();
    assert_eq!(allocate_and_free(), MIB);
    let s = snapshot();
    assert!(s.allocations_counted);
    let keep = func(&s, "allocate_and_keep");
    assert_eq!(keep.alloc_total.alloc_bytes, MIB as u64);
    assert_eq!(keep.alloc_total.alloc_count, 1);
    assert_eq!(keep.alloc_total.freed_bytes, 0);
    assert_eq!(keep.alloc_total.freed_count, 0);
    let free = func(&s, "allocate_and_free");
    assert_eq!(free.alloc_total.alloc_bytes, MIB as u64);
    assert_eq!(free.alloc_total.alloc_count, 1);
    assert_eq!(free.alloc_total.freed_bytes, MIB as u64);
    assert_eq!(free.alloc_total.freed_count, 1);
    drop(kept);
}

#[profiled]
fn child_10ms() {
    spin_cpu(Duration::from_millis(10));
}

/// Sleeps 5 ms itself, calls a child that burns 10 ms of CPU; returns its own sleep's length.
#[profiled]
fn parent_with_child() -> Duration {
    let t = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    let slept = t.elapsed();
    child_10ms();
    let v = vec![0u8; 4096];
    std::hint::black_box(&v);
    slept
}

#[test]
fn parent_self_time_excludes_children() {
    let _serial = serial();
    let slept = parent_with_child();
    let s = snapshot();
    let p = func(&s, "parent_with_child");
    let c = func(&s, "child_10ms");
    assert!(c.total_wall_ns >= 10 * MS * 98 / 100, "child wall {}", c.total_wall_ns);
    assert_covers(p.self_wall_ns, slept, MS, "parent self");
    assert_eq!(
        p.self_wall_ns + c.total_wall_ns,
        p.total_wall_ns,
        "self + child == total, to the ns"
    );
    assert!(within(c.cpu_total_ns, 10 * MS, 0.10), "child cpu {}", c.cpu_total_ns);
    assert!(
        p.cpu_self_ns < 2 * MS,
        "parent slept but used {} ns CPU itself",
        p.cpu_self_ns
    );
    assert!(
        within(p.cpu_total_ns, 10 * MS, 0.15),
        "parent total cpu {}",
        p.cpu_total_ns
    );
    assert_eq!(p.alloc_self.alloc_bytes, 4096);
    assert_eq!(p.alloc_total.alloc_bytes, 4096);
    // The tree holds the path parent -> child.
    let node = s
        .call_tree
        .iter()
        .find(|n| n.function == Some(c.id) && s.path(n.id).first() == Some(&"truth::parent_with_child"))
        .expect("child node under parent");
    assert_eq!(node.calls, 1);
}

#[profiled]
fn recurse(n: u32) -> u64 {
    spin_cpu(Duration::from_millis(1));
    if n == 0 {
        0
    } else {
        1 + recurse(n - 1)
    }
}

#[test]
fn recursion_counts_each_call_and_total_once() {
    let _serial = serial();
    assert_eq!(recurse(4), 4);
    let s = snapshot();
    let f = func(&s, "recurse");
    assert_eq!(f.calls, 5);
    // Total counts the outermost call once: it equals the longest call, exactly.
    assert_eq!(f.total_wall_ns, f.max_ns);
    // Self time summed over the levels telescopes to the outermost call, exactly.
    assert_eq!(f.self_wall_ns, f.total_wall_ns);
    assert!(f.total_wall_ns >= 5 * MS);
    assert!(within(f.cpu_total_ns, 5 * MS, 0.10), "cpu total {}", f.cpu_total_ns);
    assert!(within(f.cpu_self_ns, 5 * MS, 0.10), "cpu self {}", f.cpu_self_ns);
}

#[profiled]
fn counted() -> u64 {
    std::hint::black_box(1)
}

#[test]
fn exact_counts_across_threads_while_snapshotting() {
    let _serial = serial();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            let mut last = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let s = snapshot();
                let calls = s.function("truth::counted").map_or(0, |f| f.calls);
                assert!(calls >= last, "counts went backwards: {calls} < {last}");
                last = calls;
                n += 1;
            }
            n
        })
    };
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..100_000 {
                    counted();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let snapshots = reader.join().unwrap();
    assert!(snapshots > 0);
    // All 8 threads have exited: their data survives.
    let s = snapshot();
    assert_eq!(func(&s, "counted").calls, 800_000);
    assert!(s.threads.exited >= 8);
}

#[profiled]
fn on_short_thread() {
    spin_cpu(Duration::from_millis(2));
}

#[test]
fn data_of_exited_threads_survives() {
    let _serial = serial();
    std::thread::spawn(on_short_thread).join().unwrap();
    let s = snapshot();
    let f = func(&s, "on_short_thread");
    assert_eq!(f.calls, 1);
    assert!(f.total_wall_ns >= 2 * MS);
    assert!(within(f.cpu_total_ns, 2 * MS, 0.10), "cpu {}", f.cpu_total_ns);
}

#[profiled]
async fn async_sleep_20ms() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

#[profiled]
async fn async_spin_then_sleep() {
    spin_cpu(Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(20)).await;
    spin_cpu(Duration::from_millis(5));
}

#[test]
fn async_latency_is_apart_from_busy_time() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::spawn(async_sleep_20ms()).await.unwrap();
        tokio::spawn(async_spin_then_sleep()).await.unwrap();
    });
    let s = snapshot();
    let f = func(&s, "async_sleep_20ms");
    assert_eq!(f.calls, 1);
    assert_wall(f.total_wall_ns, 20 * MS, "latency");
    assert!(f.busy_ns < 2 * MS, "busy {}", f.busy_ns);
    assert!(f.cpu_total_ns < 2 * MS, "cpu {}", f.cpu_total_ns);
    let g = func(&s, "async_spin_then_sleep");
    assert!(g.total_wall_ns >= 30 * MS * 98 / 100, "latency {}", g.total_wall_ns);
    assert!(
        g.busy_ns >= 10 * MS && g.busy_ns < g.total_wall_ns - 19 * MS,
        "busy {}",
        g.busy_ns
    );
    assert!(within(g.cpu_total_ns, 10 * MS, 0.10), "cpu {}", g.cpu_total_ns);
}

#[profiled]
async fn awaited_child() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[profiled]
async fn awaiting_parent() {
    tokio::time::sleep(Duration::from_millis(10)).await;
    awaited_child().await;
}

#[test]
fn async_self_time_excludes_awaited_children() {
    let _serial = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::spawn(awaiting_parent()).await.unwrap() });
    let s = snapshot();
    let p = func(&s, "awaiting_parent");
    let c = func(&s, "awaited_child");
    assert_wall(p.total_wall_ns, 20 * MS, "parent latency");
    assert_wall(c.total_wall_ns, 10 * MS, "child latency");
    assert_wall(p.self_wall_ns, 10 * MS, "parent self");
    assert_eq!(
        p.self_wall_ns + c.total_wall_ns,
        p.total_wall_ns,
        "self + awaited child == latency"
    );
    let path_ok = s
        .call_tree
        .iter()
        .any(|n| n.function == Some(c.id) && s.path(n.id) == ["truth::awaiting_parent", "truth::awaited_child"]);
    assert!(path_ok, "awaited child must nest under its parent");
}

#[profiled]
fn panics_inside(fail: bool) -> u32 {
    if fail {
        panic!("boom");
    }
    1
}

#[profiled]
fn outer_of_panic(fail: bool) -> u32 {
    panics_inside(fail)
}

#[test]
fn panic_through_annotated_frames_leaves_state_consistent() {
    let _serial = serial();
    let depth = profiling_core::record::current_depth();
    let r = std::panic::catch_unwind(|| outer_of_panic(true));
    assert!(r.is_err());
    assert_eq!(
        profiling_core::record::current_depth(),
        depth,
        "frames popped during unwinding"
    );
    spin_20ms_after_panic();
    let s = snapshot();
    assert_eq!(func(&s, "panics_inside").calls, 1);
    assert_eq!(func(&s, "outer_of_panic").calls, 1);
    let after = func(&s, "spin_20ms_after_panic");
    assert!(
        within(after.cpu_total_ns, 20 * MS, 0.10),
        "call after the panic: cpu {}",
        after.cpu_total_ns
    );
    let node = s.call_tree.iter().find(|n| n.function == Some(after.id)).unwrap();
    assert_eq!(
        s.path(node.id),
        ["truth::spin_20ms_after_panic"],
        "not nested under the panicked frames"
    );
}

#[profiled]
fn spin_20ms_after_panic() {
    spin_cpu(Duration::from_millis(20));
}
