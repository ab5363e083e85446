//! The workloads of the overhead benchmarks (`overhead.rs`, `paired.rs`): the same tiny body
//! (`black_box(x).wrapping_mul(3)`, never inlined) uninstrumented, under `#[profiled]`, async
//! and three deep, under `#[tracing::instrument]`, and the floor of any wall-clock
//! instrumentation.

use std::hint::black_box;

use profiling_core::profiled;

#[inline(never)]
pub fn baseline(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[profiled]
#[inline(never)]
pub fn profiled_fn(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[inline(never)]
pub async fn baseline_async(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[profiled]
#[inline(never)]
pub async fn profiled_async(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

/// Polls `fut` once, as an executor polls a call that completes on its first poll.
#[inline(never)]
pub fn poll_ready(fut: impl std::future::Future<Output = u64>) -> u64 {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => 0,
    }
}

#[profiled]
#[inline(never)]
pub fn depth3_a(x: u64) -> u64 {
    depth3_b(x)
}

#[profiled]
#[inline(never)]
pub fn depth3_b(x: u64) -> u64 {
    depth3_c(x)
}

#[profiled]
#[inline(never)]
pub fn depth3_c(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

#[inline(never)]
pub fn base3_a(x: u64) -> u64 {
    base3_b(black_box(x))
}

#[inline(never)]
pub fn base3_b(x: u64) -> u64 {
    base3_c(black_box(x))
}

#[inline(never)]
pub fn base3_c(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

thread_local! {
    static FLOOR_SUM: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The floor of any wall-clock instrumentation: two TSC reads around the call and one
/// thread-local add. What `#[profiled]` pays beyond this is its bookkeeping.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
pub fn floor_two_tsc_reads(x: u64) -> u64 {
    // SAFETY: `rdtsc` has no preconditions on x86_64.
    let start = unsafe { core::arch::x86_64::_rdtsc() };
    let r = baseline(x);
    // SAFETY: as above.
    let end = unsafe { core::arch::x86_64::_rdtsc() };
    FLOOR_SUM.with(|s| s.set(s.get().wrapping_add(end.wrapping_sub(start))));
    r
}

#[tracing::instrument(skip_all)]
#[inline(never)]
pub fn tracing_fn(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}
