//! Memory of the profiling state: 1,000 `#[profiling_core::profiled]` functions called on 64 threads.
//!
//! ```text
//! cargo bench --bench memory_footprint
//! ```
//!
//! Runs the workload twice, each in a child process of its own: once with profiling switched
//! off at run time (the threads, their stacks and the workload alone) and once on. Each child
//! starts 64 threads that call each of the 1,000 functions four times with work of four sizes
//! (so each function's latency histogram holds values in several powers of two, as a real
//! function's does), waits until every thread has finished its calls while all are still
//! alive, and reads its resident set size. The difference of the two is what the profiling
//! state costs; state is per (function, thread), so this is its worst case: every thread calls
//! every function.

use std::process::Command;
use std::sync::{Arc, Barrier};

const THREADS: usize = 64;

/// Work of `n` steps, opaque to the optimizer.
fn work(n: u64) -> u64 {
    (0..n).fold(0u64, |a, i| std::hint::black_box(a.wrapping_mul(31).wrapping_add(i)))
}

macro_rules! ten_functions {
    () => {
        #[profiling_core::profiled]
        pub fn f0(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f1(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f2(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f3(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f4(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f5(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f6(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f7(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f8(n: u64) -> u64 {
            crate::work(n)
        }
        #[profiling_core::profiled]
        pub fn f9(n: u64) -> u64 {
            crate::work(n)
        }
        pub const ALL: [fn(u64) -> u64; 10] = [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9];
    };
}

macro_rules! hundred_functions {
    () => {
        pub mod a0 {
            ten_functions!();
        }
        pub mod a1 {
            ten_functions!();
        }
        pub mod a2 {
            ten_functions!();
        }
        pub mod a3 {
            ten_functions!();
        }
        pub mod a4 {
            ten_functions!();
        }
        pub mod a5 {
            ten_functions!();
        }
        pub mod a6 {
            ten_functions!();
        }
        pub mod a7 {
            ten_functions!();
        }
        pub mod a8 {
            ten_functions!();
        }
        pub mod a9 {
            ten_functions!();
        }
        pub fn all() -> Vec<fn(u64) -> u64> {
            [
                a0::ALL,
                a1::ALL,
                a2::ALL,
                a3::ALL,
                a4::ALL,
                a5::ALL,
                a6::ALL,
                a7::ALL,
                a8::ALL,
                a9::ALL,
            ]
            .concat()
        }
    };
}

#[rustfmt::skip]
mod functions {
    pub mod b0 { hundred_functions!(); }
    pub mod b1 { hundred_functions!(); }
    pub mod b2 { hundred_functions!(); }
    pub mod b3 { hundred_functions!(); }
    pub mod b4 { hundred_functions!(); }
    pub mod b5 { hundred_functions!(); }
    pub mod b6 { hundred_functions!(); }
    pub mod b7 { hundred_functions!(); }
    pub mod b8 { hundred_functions!(); }
    pub mod b9 { hundred_functions!(); }
    pub fn all() -> Vec<fn(u64) -> u64> {
        [b0::all(), b1::all(), b2::all(), b3::all(), b4::all(), b5::all(), b6::all(), b7::all(), b8::all(), b9::all()]
            .concat()
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// The child: runs the workload and prints its RSS growth in bytes.
fn child(enabled: bool) {
    profiling_core::set_enabled(enabled);
    let fns = Arc::new(functions::all());
    assert_eq!(fns.len(), 1000);
    // Register every function on this thread first, so the registry is not counted per thread.
    for f in fns.iter() {
        f(0);
    }
    let before = rss_bytes();
    let done = Arc::new(Barrier::new(THREADS + 1));
    let measured = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (fns, done, measured) = (Arc::clone(&fns), Arc::clone(&done), Arc::clone(&measured));
            std::thread::spawn(move || {
                for f in fns.iter() {
                    for n in [0, 100, 1_000, 10_000] {
                        std::hint::black_box(f(n));
                    }
                }
                done.wait();
                measured.wait();
            })
        })
        .collect();
    done.wait();
    let after = rss_bytes();
    measured.wait();
    for t in threads {
        t.join().expect("a workload thread does not panic");
    }
    if enabled {
        let snap = profiling_core::snapshot();
        let calls: u64 = snap.functions.iter().map(|f| f.calls).sum();
        assert_eq!(calls, 1000 + (THREADS as u64) * 4000, "every call recorded");
    }
    println!("{}", after.saturating_sub(before));
}

fn run_child(mode: &str) -> u64 {
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let out = Command::new(exe)
        .arg("--child")
        .arg(mode)
        .output()
        .expect("the child runs");
    assert!(
        out.status.success(),
        "child {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the child prints a byte count")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(args.get(i + 1).map(String::as_str) == Some("on"));
        return;
    }
    let off = run_child("off");
    let on = run_child("on");
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!("1,000 functions x {THREADS} threads, 4 calls each per thread:");
    println!("| profiling | RSS growth (MiB) |");
    println!("|---|---|");
    println!("| off | {:.1} |", mib(off));
    println!("| on | {:.1} |", mib(on));
    println!("| state (on - off) | {:.1} |", mib(on.saturating_sub(off)));
}
