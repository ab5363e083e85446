//! Where the profiler's own cost is measured, for `*_profiling_overhead_percent`.
//!
//! Once per process (the first time it is needed while recording is on), a dedicated thread
//! times 20,000 calls of an annotated no-op probe and 20,000 calls of the same function
//! without the annotation, three times each, and keeps the smallest difference per call:
//! the recording cost of one call. To it is added the cost of one CPU-clock read, because a
//! call longer than the CPU attribution window (50 µs) pays one, which the tight loop
//! amortizes away. The overhead is then
//!
//! ```text
//! overhead % = calls recorded in the last sampling interval * cost per call
//!              / process CPU time in that interval * 100
//! ```
//!
//! It leaves out the counting allocator's cost (a few thread-local additions per
//! allocation) and a server's own work; it is an estimate of the recording cost only.
//! The calibration thread is excluded from recording reports
//! ([`crate::record::recorder::exclude_current_thread`]), so the probe's calls appear in no
//! snapshot.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

use crate::profiled;

const ITERATIONS: u64 = 20_000;
const ROUNDS: usize = 3;

/// The measured cost of recording one call.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Calibration {
    /// Recording cost of one call in a tight loop, ns.
    pub recording_ns: f64,
    /// Cost of one process CPU-clock read, ns.
    pub clock_read_ns: f64,
    /// Cost per call used for the overhead figure, ns.
    pub per_call_ns: f64,
}

#[profiled(crate = crate)]
fn calibration_probe(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

#[inline(never)]
fn calibration_baseline(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_add(1)
}

fn time_loop(f: fn(u64) -> u64) -> f64 {
    let t = Instant::now();
    let mut acc = 0u64;
    for i in 0..ITERATIONS {
        acc = acc.wrapping_add(f(i));
    }
    std::hint::black_box(acc);
    t.elapsed().as_nanos() as f64 / ITERATIONS as f64
}

fn measure() -> Calibration {
    crate::record::recorder::exclude_current_thread();
    let mut recording = f64::MAX;
    let mut clock = f64::MAX;
    for _ in 0..ROUNDS {
        let with = time_loop(calibration_probe);
        let without = time_loop(calibration_baseline);
        recording = recording.min((with - without).max(0.0));
        let t = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(crate::record::clock::process_cpu_ns());
        }
        clock = clock.min(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    Calibration {
        recording_ns: recording,
        clock_read_ns: clock,
        per_call_ns: recording + clock,
    }
}

static CALIBRATION: OnceLock<Calibration> = OnceLock::new();

/// The calibration, measured on first use while recording is on (`None` while it is off:
/// a disabled probe would measure nothing).
pub fn calibration() -> Option<Calibration> {
    if let Some(c) = CALIBRATION.get() {
        return Some(*c);
    }
    if !crate::record::config::is_enabled() {
        return None;
    }
    // On its own thread, so the probe's frames never nest under the caller's.
    let c = std::thread::Builder::new()
        .name("profiling-calibration".to_owned())
        .spawn(measure)
        .ok()?
        .join()
        .ok()?;
    Some(*CALIBRATION.get_or_init(|| c))
}

/// Overhead in percent of process CPU time, from calls and CPU time in one interval.
pub fn overhead_percent(calls: u64, cpu_ns: u64, per_call_ns: f64) -> f64 {
    if cpu_ns == 0 {
        return 0.0;
    }
    (calls as f64 * per_call_ns / cpu_ns as f64 * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_formula() {
        // 1M calls at 50 ns = 50 ms of 1 s CPU = 5 %.
        assert!((overhead_percent(1_000_000, 1_000_000_000, 50.0) - 5.0).abs() < 1e-9);
        assert_eq!(overhead_percent(10, 0, 50.0), 0.0);
        assert_eq!(overhead_percent(u64::MAX, 1, 50.0), 100.0);
    }

    #[test]
    fn calibration_is_plausible_and_hidden() {
        let c = calibration().expect("recording is on by default");
        // Recording a call costs something, and far less than 100 µs even unoptimized.
        assert!(c.per_call_ns > 0.0 && c.per_call_ns < 100_000.0, "{c:?}");
        // The probe ran 60,000 times on an excluded (and now exited) thread: no trace of it.
        let snap = crate::snapshot();
        assert!(
            !snap.functions.iter().any(|f| f.name.ends_with("calibration_probe")),
            "{:?}",
            snap.functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
    }
}
