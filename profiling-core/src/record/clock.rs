//! Where wall time and thread CPU time are read.
//!
//! Wall time comes from the TSC through [`quanta`] when the CPU has an invariant TSC, and
//! from `CLOCK_MONOTONIC` otherwise; `quanta` calibrates the TSC against the monotonic clock
//! once. Frames keep raw counter values and convert only differences to nanoseconds (an
//! integer multiply and shift), so a call pays two counter reads and one conversion.
//!
//! Thread CPU time is `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: a real system call (about
//! 500 ns in the VMs this project is tested on), so the recorder reads it only where it must (see `cpu`).

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// A raw reading of the wall clock: only differences between readings mean anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Timestamp(u64);

struct CalibratedClock {
    clock: quanta::Clock,
    base_raw: u64,
    base_unix_ns: u64,
    tsc: bool,
}

/// Nanoseconds in 2^32 raw ticks, once the clock is calibrated; 0 before, and also when wall
/// time does not come from the TSC. The hot path reads only this word: with it set, a
/// reading is one `rdtsc` and a conversion one multiply and shift, with no call into
/// `quanta` and no check of the [`OnceLock`].
static TSC_NANOS_PER_2_32: AtomicU64 = AtomicU64::new(0);
/// The calibration's raw reading and the Unix time it was taken at, for the fast path of
/// [`Timestamp::unix_ns`] (written before the factor, which publishes them).
static BASE_RAW: AtomicU64 = AtomicU64::new(0);
static BASE_UNIX_NS: AtomicU64 = AtomicU64::new(0);

fn source() -> &'static CalibratedClock {
    static SOURCE: OnceLock<CalibratedClock> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let base_raw = clock.raw();
        // The TSC path scales raw values; the monotonic path returns nanoseconds as they are.
        let tsc = clock.delta_as_nanos(0, 1_000_000_000) != 1_000_000_000;
        let base_unix_ns = unix_now_ns();
        if tsc && cfg!(target_arch = "x86_64") {
            BASE_RAW.store(base_raw, Relaxed);
            BASE_UNIX_NS.store(base_unix_ns, Relaxed);
            TSC_NANOS_PER_2_32.store(clock.delta_as_nanos(0, 1 << 32).max(1), Release);
        }
        CalibratedClock {
            base_raw,
            base_unix_ns,
            clock,
            tsc,
        }
    })
}

/// Raw ticks to nanoseconds with the fast path's factor.
#[inline(always)]
fn scale(ticks: u64, nanos_per_2_32: u64) -> u64 {
    ((ticks as u128 * nanos_per_2_32 as u128) >> 32) as u64
}

/// How many raw counter ticks make `ns` nanoseconds (rounded up).
pub(crate) fn ticks_for_nanos(ns: u64) -> u64 {
    const PROBE: u64 = 1 << 32;
    let probe_ns = source().clock.delta_as_nanos(0, PROBE).max(1);
    ((ns as u128 * PROBE as u128).div_ceil(probe_ns as u128)) as u64
}

/// How many nanoseconds `ticks` raw counter ticks make.
#[inline]
pub(crate) fn nanos_for_ticks(ticks: u64) -> u64 {
    Timestamp(ticks).nanos_since(Timestamp(0))
}

/// Wall-clock nanoseconds since the Unix epoch from the system clock (slow path).
pub(crate) fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Whether wall time is read from the TSC (true) or from `CLOCK_MONOTONIC` (false).
pub fn uses_tsc() -> bool {
    source().tsc
}

impl Timestamp {
    /// Now.
    #[inline(always)]
    pub(crate) fn now() -> Self {
        #[cfg(target_arch = "x86_64")]
        if TSC_NANOS_PER_2_32.load(Relaxed) != 0 {
            // SAFETY: `rdtsc` has no preconditions on x86_64; the factor is set only when
            // `quanta` found the TSC invariant and reads it the same way.
            return Timestamp(unsafe { core::arch::x86_64::_rdtsc() });
        }
        Self::now_slow()
    }

    #[cold]
    #[inline(never)]
    fn now_slow() -> Self {
        Timestamp(source().clock.raw())
    }

    /// Nanoseconds from `earlier` to `self`, saturating at 0.
    #[inline(always)]
    pub(crate) fn nanos_since(self, earlier: Timestamp) -> u64 {
        let f = TSC_NANOS_PER_2_32.load(Relaxed);
        if f != 0 {
            return scale(self.0.saturating_sub(earlier.0), f);
        }
        source().clock.delta_as_nanos(earlier.0, self.0)
    }

    /// The raw counter value.
    #[inline(always)]
    pub(crate) fn ticks(self) -> u64 {
        self.0
    }

    /// The reading whose raw counter value is `ticks`.
    #[inline(always)]
    pub(crate) fn from_ticks(ticks: u64) -> Self {
        Timestamp(ticks)
    }

    /// Raw counter ticks from `earlier` to `self`, saturating at 0 (no conversion).
    #[inline(always)]
    pub(crate) fn ticks_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub(crate) fn unix_ns(self) -> u64 {
        let f = TSC_NANOS_PER_2_32.load(Acquire);
        if f != 0 {
            let (base_raw, base_unix_ns) = (BASE_RAW.load(Relaxed), BASE_UNIX_NS.load(Relaxed));
            return if self.0 >= base_raw {
                base_unix_ns + scale(self.0 - base_raw, f)
            } else {
                base_unix_ns.saturating_sub(scale(base_raw - self.0, f))
            };
        }
        let s = source();
        if self.0 >= s.base_raw {
            s.base_unix_ns + s.clock.delta_as_nanos(s.base_raw, self.0)
        } else {
            s.base_unix_ns
                .saturating_sub(s.clock.delta_as_nanos(self.0, s.base_raw))
        }
    }
}

/// CPU time consumed by the calling thread, in nanoseconds.
#[inline]
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time consumed by the whole process (user + system), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_tracks_sleep() {
        let a = Timestamp::now();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let b = Timestamp::now();
        let ns = b.nanos_since(a);
        assert!((10_000_000..60_000_000).contains(&ns), "{ns}");
        assert_eq!(a.nanos_since(b), 0);
    }

    #[test]
    fn thread_cpu_clock_advances_when_spinning_not_when_sleeping() {
        let c0 = thread_cpu_ns();
        std::thread::sleep(std::time::Duration::from_millis(10));
        let c1 = thread_cpu_ns();
        assert!(c1 - c0 < 3_000_000, "sleeping burned {} ns CPU", c1 - c0);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(10) {}
        let wall = t.elapsed().as_nanos() as u64;
        let c2 = thread_cpu_ns();
        // On a loaded machine the spin may be descheduled: CPU is then less than wall, but
        // a spin always burns some, and never more than the wall time it took.
        assert!(c2 - c1 >= 1_000_000, "spinning 10 ms gave {} ns CPU", c2 - c1);
        assert!(c2 - c1 <= wall + 1_000_000, "CPU {} > wall {wall}", c2 - c1);
    }
}
