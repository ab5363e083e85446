//! Where wall time and thread CPU time are read.
//!
//! Wall time comes from the TSC through [`minstant`] (a few ns a read) when the TSC is
//! invariant and synchronized across cores, which `minstant` checks at start-up; otherwise
//! from `CLOCK_MONOTONIC` through [`std::time::Instant`]. Never a coarse clock: `minstant`'s
//! own fallback has a resolution of milliseconds, which would make short calls read as 0.
//! Timestamps are nanoseconds since the Unix epoch, so they also date snapshots.
//!
//! Thread CPU time is `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: a real system call (about
//! 200 ns here), so the recorder reads it at most once per attribution window (see `cpu`).

use std::sync::OnceLock;
use std::time::{Instant as StdInstant, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time: nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Timestamp(pub(crate) u64);

enum Source {
    Tsc(minstant::Anchor),
    Monotonic { base: StdInstant, base_unix_ns: u64 },
}

#[inline(always)]
fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        if minstant::is_tsc_available() {
            Source::Tsc(minstant::Anchor::new())
        } else {
            Source::Monotonic {
                base: StdInstant::now(),
                base_unix_ns: unix_now_ns(),
            }
        }
    })
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
    matches!(source(), Source::Tsc(_))
}

impl Timestamp {
    /// Now.
    #[inline(always)]
    pub(crate) fn now() -> Self {
        match source() {
            Source::Tsc(anchor) => Timestamp(minstant::Instant::now().as_unix_nanos(anchor)),
            Source::Monotonic { base, base_unix_ns } => {
                Timestamp(base_unix_ns + base.elapsed().as_nanos() as u64)
            }
        }
    }

    /// Nanoseconds from `earlier` to `self`, saturating at 0.
    #[inline(always)]
    pub(crate) fn nanos_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// CPU time consumed by the calling thread, in nanoseconds.
#[inline]
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time consumed by the whole process (user + system), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
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
        let c2 = thread_cpu_ns();
        assert!(c2 - c1 >= 8_000_000, "spinning 10 ms gave {} ns CPU", c2 - c1);
    }
}
