//! The wall clock's factor against `CLOCK_MONOTONIC` (what `std::time::Instant` reads).
//!
//! The recorder converts TSC ticks with a factor that `quanta` calibrates over about half a
//! millisecond at the first recorded call; in an unoptimized build (how `cargo test` runs)
//! that first factor was off by +28 to +727 ppm, different in every process (14 measured).
//! About a second later the recorder refines it from two reference pairs a second apart
//! (`profiling-core/src/record/clock.rs`). This test waits for that, then checks a 300 ms
//! sleep against `Instant` read inside and around the call.
//!
//! Tolerance: 20 µs either side of the bracket, about 67 ppm of 300 ms. The refined factor's
//! error is the two reference pairs' (each the midpoint of a TSC bracket of tens to a few
//! hundred ns) over a second or more: under 1 ppm, a fraction of a µs here; the rest of the
//! room is for the two clocks being read at different instants. The unrefined factor's error
//! mostly does not fit in it: the old code failed this test in 8 runs of 8 (66 to 218 µs over
//! 300 ms), though one process of the 14 measured was off by only 8 µs.

use std::time::{Duration, Instant};

use profiling_core::{profiled, snapshot};
use profiling_integration::{assert_bracketed, bracket, serial, Bracket};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

/// The factor is refined this long after calibration.
const REFINED_AFTER: Duration = Duration::from_secs(1);
const SLACK_NS: u64 = 20_000;

#[profiled]
fn first_call() {}

#[profiled]
fn later_call() {}

/// Sleeps `ms` and returns how long that took by `Instant`, measured inside the call.
#[profiled]
fn sleep_before_refinement(ms: u64) -> Duration {
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    t.elapsed()
}

/// The same, after the refinement.
#[profiled]
fn sleep_after_refinement(ms: u64) -> Duration {
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    t.elapsed()
}

fn recorded_wall(short: &str) -> u64 {
    let name = format!("clock_truth::{short}");
    let snap = snapshot();
    let f = snap.function(&name).unwrap_or_else(|| panic!("{name} not recorded"));
    assert_eq!(f.calls, 1, "{name}");
    f.total_wall_ns
}

/// Recorded minus inner time, in ppm of the inner time.
fn ppm(got_ns: u64, b: Bracket) -> f64 {
    let inner = b.inner.as_nanos() as f64;
    (got_ns as f64 - inner) / inner * 1e6
}

/// Prints a recorded time against its bracket.
fn show(when: &str, got: u64, b: Bracket) {
    eprintln!(
        "{when}: recorded {got} ns, inner {} ns, outer {} ns ({:+.1} ppm)",
        b.inner.as_nanos(),
        b.outer.as_nanos(),
        ppm(got, b)
    );
}

#[test]
fn recorded_wall_time_agrees_with_instant_once_the_factor_is_refined() {
    let _serial = serial();
    first_call();
    let calibrated_by = Instant::now();

    // Before: shown, not asserted (the first factor is sometimes close enough).
    let before = bracket(|| sleep_before_refinement(300));
    show("before refinement", recorded_wall("sleep_before_refinement"), before);

    // Refinement is due a second after calibration, done by the end of the first call.
    // The sleep switches this thread out, so the next boundary reads its CPU clock, and that
    // read refines the factor.
    std::thread::sleep((REFINED_AFTER + Duration::from_millis(100)).saturating_sub(calibrated_by.elapsed()));
    later_call();

    let after = bracket(|| sleep_after_refinement(300));
    let got = recorded_wall("sleep_after_refinement");
    show("after refinement", got, after);
    assert_bracketed(got, after, SLACK_NS, "a 300 ms sleep after the refinement");
}
