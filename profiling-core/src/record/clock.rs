//! Where wall time and thread CPU time are read.
//!
//! Wall time comes from the TSC through [`quanta`] when the CPU has an invariant TSC, and
//! from `CLOCK_MONOTONIC` otherwise. Frames keep raw counter values and convert only
//! differences to nanoseconds (an integer multiply and shift), so a call pays two counter
//! reads and one conversion.
//!
//! The TSC's factor (nanoseconds per 2^32 ticks, `TSC_NANOS_PER_2_32`) is first `quanta`'s
//! calibration against `CLOCK_MONOTONIC`, taken at the first reading. That calibration spans
//! about half a millisecond, and in an unoptimized build (how `cargo test` runs) its first
//! pair of reads is slow (cold code and data), which biases it: +28 to +727 ppm against
//! `Instant` in 14 test processes, different in each (a 300 ms sleep recorded 8 to 218 µs
//! long; one loaded run earlier recorded -250 ppm, shorter than the sleep). Optimized, it
//! was within 0.1-1.7 ppm. So the calibration also takes a reference pair of its own, the
//! best-bracketed of a few tries of (TSC, `CLOCK_MONOTONIC`, TSC), and once a second of
//! ticks has passed, the first CPU clock read on a recording thread (`record/cpu.rs`: one
//! per millisecond of recorded wall, or per switch) or snapshot to come along takes a
//! second pair and replaces the factor with the ratio of the two clocks' advances between
//! the pairs (`refine_if_due`: once per process; a compare of raw ticks until then). Each
//! pair is good to half its bracket (tens to a few hundred ns), so over a second the
//! refined factor is within a fraction of a ppm: in a debug build it agreed with one taken
//! over four seconds within 0.001 ppm (the factor's own step is 0.0006 ppm), and a 300 ms
//! sleep recorded after the refinement came out 1.7 to 2.8 µs above the `Instant` time
//! measured inside it (call overhead included; 1.2 to 1.5 µs optimized), where quanta's
//! factor gave 8 to 218 µs (`tests/clock_truth.rs`, load average 1.4-2.2). Durations
//! converted after the change use the new factor; Unix times (`Timestamp::unix_ns`) go
//! through a scale rebased at the change, so they never jump. The hot path reads only the
//! factor word, as before. On the monotonic path (no invariant TSC) nothing is refined.
//!
//! Thread CPU time is `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: a real system call (about
//! 500 ns in the VMs this project is tested on), so the recorder reads it only where it must (see `cpu`).

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
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
/// `quanta` and no check of the [`OnceLock`]. Written at calibration and once more when the
/// factor is refined ([`refine_if_due`]).
static TSC_NANOS_PER_2_32: AtomicU64 = AtomicU64::new(0);

/// The TSC path's conversion to Unix time and its refinement (see the module docs).
static WALL: WallScale = WallScale::new(&TSC_NANOS_PER_2_32);

/// How long after calibration the factor is refined: long enough that the two reference
/// pairs' error (tens of ns each) is below a tenth of a ppm of the interval.
const REFINE_AFTER_NS: u64 = 1_000_000_000;

/// The reference pairs' tries: the first is slow in an unoptimized build (cold code and
/// vDSO data), so the narrowest bracket of a few is kept.
const PAIR_TRIES: usize = 16;

/// A refined factor further than this from the first one (1%) is not believed (the TSC and
/// `CLOCK_MONOTONIC` parted ways, e.g. across a suspend): the first one stays.
const MAX_REFINEMENT_PPM: u64 = 10_000;

/// A TSC reading and the `CLOCK_MONOTONIC` time at that moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    raw: u64,
    mono_ns: u64,
}

/// The conversion from raw ticks to Unix time: `nanos_per_2_32` ns per 2^32 ticks from
/// `base_raw`, which was `base_unix_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scale {
    nanos_per_2_32: u64,
    base_raw: u64,
    base_unix_ns: u64,
}

impl Scale {
    fn unix_ns(&self, raw: u64) -> u64 {
        if raw >= self.base_raw {
            self.base_unix_ns + scale(raw - self.base_raw, self.nanos_per_2_32)
        } else {
            self.base_unix_ns
                .saturating_sub(scale(self.base_raw - raw, self.nanos_per_2_32))
        }
    }

    /// The scale with factor `nanos_per_2_32` that agrees with this one at `at_raw`, so that
    /// Unix times do not jump where one takes over from the other.
    fn rebased(&self, nanos_per_2_32: u64, at_raw: u64) -> Scale {
        Scale {
            nanos_per_2_32,
            base_raw: at_raw,
            base_unix_ns: self.unix_ns(at_raw),
        }
    }
}

/// One published [`Scale`]: written once, before the pointer to it is published (Release),
/// and never again, so a reader that loaded the pointer (Acquire) reads one whole scale.
/// Static slots rather than a leaked box: the refinement runs inside the recorder (a CPU
/// clock read), where an allocation would be recorded by the profiling allocator.
struct ScaleSlot([AtomicU64; 3]);

impl ScaleSlot {
    const fn new() -> Self {
        ScaleSlot([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)])
    }

    fn write(&self, s: Scale) {
        self.0[0].store(s.nanos_per_2_32, Relaxed);
        self.0[1].store(s.base_raw, Relaxed);
        self.0[2].store(s.base_unix_ns, Relaxed);
    }

    fn read(&self) -> Scale {
        Scale {
            nanos_per_2_32: self.0[0].load(Relaxed),
            base_raw: self.0[1].load(Relaxed),
            base_unix_ns: self.0[2].load(Relaxed),
        }
    }
}

/// The calibration's scale and, once due, its refinement, each published with the hot
/// path's factor word. One static instance ([`WALL`]); tests make their own.
struct WallScale {
    /// The calibration's scale and the refined one.
    slots: [ScaleSlot; 2],
    /// The scale in use: null until calibrated (and on the monotonic path), then a slot.
    current: AtomicPtr<ScaleSlot>,
    /// The reference pair taken at calibration.
    reference_raw: AtomicU64,
    reference_mono_ns: AtomicU64,
    /// Raw ticks from which the refinement is due; `u64::MAX` before calibration, on the
    /// monotonic path and once the refinement has been taken up.
    refine_at: AtomicU64,
    /// Set by the one caller that refines.
    refined: AtomicBool,
    /// The hot path's word, set to the factor in use.
    factor: &'static AtomicU64,
}

impl WallScale {
    const fn new(factor: &'static AtomicU64) -> Self {
        WallScale {
            slots: [ScaleSlot::new(), ScaleSlot::new()],
            current: AtomicPtr::new(std::ptr::null_mut()),
            reference_raw: AtomicU64::new(0),
            reference_mono_ns: AtomicU64::new(0),
            refine_at: AtomicU64::new(u64::MAX),
            refined: AtomicBool::new(false),
            factor,
        }
    }

    /// Publishes the calibration's scale and reference pair; refinement becomes due once
    /// `refine_after_ticks` have passed since the pair.
    fn start(&'static self, first: Scale, reference: Pair, refine_after_ticks: u64) {
        self.reference_raw.store(reference.raw, Relaxed);
        self.reference_mono_ns.store(reference.mono_ns, Relaxed);
        self.slots[0].write(first);
        self.current
            .store(&self.slots[0] as *const ScaleSlot as *mut ScaleSlot, Release);
        self.factor.store(first.nanos_per_2_32, Release);
        // Last, so that a refinement never starts before the rest is published.
        self.refine_at
            .store(reference.raw.saturating_add(refine_after_ticks), Release);
    }

    /// The scale in use, if any.
    #[inline]
    fn scale(&self) -> Option<Scale> {
        let p = self.current.load(Acquire);
        // SAFETY: `current` is null or points to one of `self.slots`, which live as long as
        // `self`.
        (!p.is_null()).then(|| unsafe { &*p }.read())
    }

    /// One compare while not due; refines once when due.
    #[inline]
    fn refine_if_due(&'static self, now_raw: u64) {
        if now_raw >= self.refine_at.load(Relaxed) {
            self.refine();
        }
    }

    /// Takes a second reference pair, computes the factor from the two and publishes it,
    /// rebased so that Unix times agree at the change. Once: later and concurrent callers
    /// return at the flag.
    #[cold]
    #[inline(never)]
    fn refine(&'static self) {
        if self.refined.compare_exchange(false, true, AcqRel, Relaxed).is_err() {
            return;
        }
        self.refine_at.store(u64::MAX, Relaxed);
        // The reference pair was written before the first scale was published: loading the
        // scale (Acquire) makes it visible.
        let Some(old) = self.scale() else {
            return;
        };
        let first = Pair {
            raw: self.reference_raw.load(Relaxed),
            mono_ns: self.reference_mono_ns.load(Relaxed),
        };
        let Some(second) = reference_pair() else {
            return;
        };
        let Some(factor) = refined_factor(first, second) else {
            return;
        };
        if factor.abs_diff(old.nanos_per_2_32) as u128 * 1_000_000
            > old.nanos_per_2_32 as u128 * MAX_REFINEMENT_PPM as u128
        {
            return;
        }
        self.slots[1].write(old.rebased(factor, second.raw));
        self.current
            .store(&self.slots[1] as *const ScaleSlot as *mut ScaleSlot, Release);
        self.factor.store(factor, Release);
    }
}

/// ns per 2^32 ticks between two reference pairs; `None` unless both clocks advanced.
fn refined_factor(first: Pair, second: Pair) -> Option<u64> {
    let ticks = second.raw.checked_sub(first.raw).filter(|&t| t > 0)?;
    let ns = second.mono_ns.checked_sub(first.mono_ns).filter(|&n| n > 0)?;
    let f = ((ns as u128) << 32) / ticks as u128;
    u64::try_from(f).ok().filter(|&f| f > 0)
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock `std::time::Instant` reads).
fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// The TSC, not read ahead of earlier instructions (`lfence`), so that two reads bracket
/// what lies between them.
#[cfg(target_arch = "x86_64")]
fn rdtsc_ordered() -> u64 {
    // SAFETY: `lfence` and `rdtsc` have no preconditions on x86_64 (SSE2 is baseline).
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// A reference pair: of [`PAIR_TRIES`] tries of (TSC, `CLOCK_MONOTONIC`, TSC), the one whose
/// TSC reads are closest, with their midpoint.
#[cfg(target_arch = "x86_64")]
fn reference_pair() -> Option<Pair> {
    let mut best: Option<(u64, Pair)> = None;
    for _ in 0..PAIR_TRIES {
        let a = rdtsc_ordered();
        let mono_ns = monotonic_ns()?;
        let b = rdtsc_ordered();
        let Some(width) = b.checked_sub(a) else {
            continue;
        };
        if best.is_none_or(|(w, _)| width < w) {
            let raw = a + width / 2;
            best = Some((width, Pair { raw, mono_ns }));
        }
    }
    best.map(|(_, pair)| pair)
}

#[cfg(not(target_arch = "x86_64"))]
fn reference_pair() -> Option<Pair> {
    None
}

fn source() -> &'static CalibratedClock {
    static SOURCE: OnceLock<CalibratedClock> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let clock = quanta::Clock::new();
        let reference = reference_pair();
        let base_raw = clock.raw();
        // The TSC path scales raw values; the monotonic path returns nanoseconds as they are.
        let tsc = clock.delta_as_nanos(0, 1_000_000_000) != 1_000_000_000;
        let base_unix_ns = unix_now_ns();
        if tsc && cfg!(target_arch = "x86_64") {
            let nanos_per_2_32 = clock.delta_as_nanos(0, 1 << 32).max(1);
            // Without a reference pair (no `CLOCK_MONOTONIC`), quanta's factor stays.
            let (reference, refine_after_ticks) = match reference {
                Some(r) => {
                    let ticks = ((REFINE_AFTER_NS as u128) << 32) / nanos_per_2_32 as u128;
                    (r, ticks.try_into().unwrap_or(u64::MAX))
                }
                None => (
                    Pair {
                        raw: base_raw,
                        mono_ns: 0,
                    },
                    u64::MAX,
                ),
            };
            let first = Scale {
                nanos_per_2_32,
                base_raw,
                base_unix_ns,
            };
            WALL.start(first, reference, refine_after_ticks);
        }
        CalibratedClock {
            base_raw,
            base_unix_ns,
            clock,
            tsc,
        }
    })
}

/// Refines the TSC factor once, when due: about a second after calibration, from a second
/// reference pair (see the module docs). Costs one load and a compare when not due (always,
/// after the refinement and on the monotonic path). Called from cold paths that run regularly
/// on recording threads (the CPU clock's reads) and from snapshots.
#[inline]
pub(crate) fn refine_if_due(now: Timestamp) {
    WALL.refine_if_due(now.0);
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
        if let Some(scale) = WALL.scale().or_else(|| {
            source();
            WALL.scale()
        }) {
            return scale.unix_ns(self.0);
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

    /// A private [`WallScale`] calibrated with a factor 500 ppm off the truth and due for
    /// refinement after 20 ms: Unix times read just before and just after the refinement
    /// differ by the ticks between them only, and the refined factor is the truth's.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn unix_time_is_continuous_across_the_refinement() {
        let Some(p0) = reference_pair() else {
            return; // no CLOCK_MONOTONIC: nothing to refine against
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let p1 = reference_pair().expect("CLOCK_MONOTONIC read once already");
        let truth = refined_factor(p0, p1).expect("both clocks advanced over 20 ms");
        let off = truth + truth / 2_000; // +500 ppm, as a cold calibration gives
        let factor: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let wall: &'static WallScale = Box::leak(Box::new(WallScale::new(factor)));
        let first = Scale {
            nanos_per_2_32: off,
            base_raw: p1.raw,
            base_unix_ns: unix_now_ns(),
        };
        let due_after = (20_000_000u128 << 32) / truth as u128;
        wall.start(first, p1, due_after as u64);
        assert_eq!(factor.load(Relaxed), off);

        // Not due yet: nothing changes.
        wall.refine_if_due(rdtsc_ordered());
        assert_eq!(wall.scale(), Some(first));
        std::thread::sleep(std::time::Duration::from_millis(25));

        let t0 = rdtsc_ordered();
        let u0 = wall.scale().expect("published").unix_ns(t0);
        wall.refine_if_due(rdtsc_ordered());
        let t1 = rdtsc_ordered();
        let refined = wall.scale().expect("published");
        let u1 = refined.unix_ns(t1);

        assert_ne!(refined, first, "the refinement was due");
        assert_eq!(factor.load(Relaxed), refined.nanos_per_2_32);
        // 20 ms between the pairs, each good to its bracket (tens to hundreds of ns).
        let ppm = refined.nanos_per_2_32.abs_diff(truth) as f64 / truth as f64 * 1e6;
        assert!(ppm < 100.0, "refined factor {ppm:.1} ppm from the truth");
        // Unix time moved by the ticks between the reads, give or take the two factors'
        // difference over those ticks (500 ppm of a few µs) and rounding: without rebasing,
        // it would jump by 500 ppm of the time since calibration (22 µs or more).
        let moved = u1 as i64 - u0 as i64;
        let ticks = scale(t1 - t0, refined.nanos_per_2_32) as i64;
        let room = scale(t1 - t0, off.abs_diff(refined.nanos_per_2_32)) as i64 + 2;
        assert!(
            (moved - ticks).abs() <= room,
            "moved {moved} ns over {ticks} ns of ticks (±{room} ns)"
        );

        // Once only.
        wall.refine_if_due(rdtsc_ordered());
        assert_eq!(wall.scale(), Some(refined));
    }

    #[test]
    fn rebasing_keeps_unix_time_at_the_change() {
        let old = Scale {
            nanos_per_2_32: 1 << 30, // 0.25 ns per tick
            base_raw: 1_000,
            base_unix_ns: 1_700_000_000_000_000_000,
        };
        let at = 1_000 + 4_000_000_000; // one second of ticks later
        let new = old.rebased((1 << 30) + (1 << 20), at);
        assert_eq!(new.unix_ns(at), old.unix_ns(at));
        assert_eq!(new.unix_ns(at + 4), old.unix_ns(at) + 1);
        // Before the change, the new scale extrapolates backwards with its own factor.
        assert!(new.unix_ns(at - 4_000) <= old.unix_ns(at) - 1_000);
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
