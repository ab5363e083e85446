//! The latency histogram: log-linear buckets, lock-free to record, merged by readers.
//!
//! Values below 16 ns have a bucket each; above, every power of two is split into 16 equal
//! sub-buckets, so a bucket is at most 1/16 of its lower bound wide. A quantile is reported
//! as the midpoint of the bucket it falls in, clamped to the observed min and max: the
//! error is at most 3.2% of the true value. Values from 2^48 ns (about 78 hours) up share
//! the last bucket.
//!
//! Why not `hdrhistogram`: recording must be a single-writer relaxed store into memory a
//! snapshotting thread may read at the same moment, with no lock and no phase swap on the
//! hot path; `hdrhistogram::Histogram` needs `&mut` to record. The bucket layout is the
//! same idea (HDR with 4 bits of sub-bucket precision).
//!
//! Memory: a thread's histogram of one function is a directory of 45 pointers (360 bytes,
//! inline in its cell) to, for each power of two its values reached, a group of 16 counters
//! (128 bytes, no allocator header) in one process-wide arena. Groups are taken on a power
//! of two's first value and given back when the thread's tables are dropped; see
//! `docs/performance.md`, memory.

use std::alloc::Layout;
use std::sync::atomic::{
    AtomicPtr, AtomicU32, AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::Mutex;

use crate::record::storage::bump;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 47;
/// Number of buckets.
pub(crate) const BUCKETS: usize = SUB + (MAX_EXP as usize - SUB_BITS as usize + 1) * SUB;

/// The group of the bucket holding `v`, and the bucket's index in the group (the bucket is
/// `group * GROUP + index`, as [`bucket_bounds`] numbers them). Both come straight from
/// `v`'s top bit, so that the group's address, the load on the way to the counter, waits
/// on one subtraction after the bit scan. Computing the bucket first and dividing it put
/// five more operations on that path: 1.4 ns more per call (`docs/performance.md`, ninth
/// session).
#[inline(always)]
fn group_of(v: u64) -> (usize, usize) {
    if v < SUB as u64 {
        return (0, v as usize);
    }
    let exp = 63 - v.leading_zeros();
    if exp > MAX_EXP {
        return (GROUPS - 1, GROUP - 1);
    }
    (
        (exp - SUB_BITS + 1) as usize,
        ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1),
    )
}

/// Index of the bucket holding `v`.
#[cfg(test)]
pub(crate) fn bucket_of(v: u64) -> usize {
    let (g, i) = group_of(v);
    g * GROUP + i
}

/// Inclusive lower and exclusive upper bound of bucket `i`, in ns.
pub(crate) fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let k = i - SUB;
    let exp = (k / SUB) as u32 + SUB_BITS;
    let sub = (k % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    let lo = (1u64 << exp) + sub * width;
    if i == BUCKETS - 1 {
        return (lo, u64::MAX);
    }
    (lo, lo + width)
}

/// Buckets per group: the buckets of one power of two (the first group: values 0 to 15).
const GROUP: usize = SUB;
/// Groups per histogram.
const GROUPS: usize = BUCKETS / GROUP;

/// The counters of one group.
type Group = [AtomicU64; GROUP];

/// Per-thread atomic buckets, written by one thread, read by any. Sparse: the buckets of one
/// power of two (a group of 16 counters, 128 bytes) are taken from [`ARENA`] on its first
/// value, so a function whose calls span a few powers of two keeps a few hundred bytes per
/// thread instead of the 5.6 KiB of the full table (see `docs/performance.md`, memory).
pub(crate) struct AtomicHistogram {
    /// Per group, its counters in [`ARENA`] (null: no value yet). Written only by the
    /// owning thread, with Release once the group is zeroed; readers load with Acquire.
    /// Inline rather than boxed: recording reaches a counter in one load of its address.
    dir: [AtomicPtr<Group>; GROUPS],
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            dir: [const { AtomicPtr::new(std::ptr::null_mut()) }; GROUPS],
        }
    }
}

impl AtomicHistogram {
    /// Records one value. Single writer: a load and a store, no locked instruction (plus
    /// taking a group from the arena the first time a power of two is seen).
    #[inline(always)]
    pub(crate) fn record(&self, v: u64) {
        let (g, i) = group_of(v);
        let Some(slot) = self.dir.get(g) else {
            return;
        };
        let mut p = slot.load(Relaxed);
        if p.is_null() {
            match take_group(slot) {
                Some(t) => p = t,
                None => return,
            }
        }
        // SAFETY: `p` was taken from `ARENA` by this thread and is held until `self` drops.
        let group = unsafe { &*p };
        bump(&group[i % GROUP], 1);
    }

    /// Each taken group: its index in the directory and its counters.
    fn for_each_group(&self, mut f: impl FnMut(usize, &Group)) {
        for (g, slot) in self.dir.iter().enumerate() {
            let p = slot.load(Acquire);
            if !p.is_null() {
                // SAFETY: a non-null pointer was published by the owner with Release after
                // taking and zeroing the group, and is held until `self` drops.
                f(g, unsafe { &*p });
            }
        }
    }

    pub(crate) fn add_into(&self, out: &mut [u64]) {
        self.for_each_group(|g, group| {
            for (o, c) in out[g * GROUP..(g + 1) * GROUP].iter_mut().zip(group) {
                *o += c.load(Relaxed);
            }
        });
    }

    pub(crate) fn clear(&self) {
        self.for_each_group(|_, group| group.iter().for_each(|c| c.store(0, Relaxed)));
    }
}

impl Drop for AtomicHistogram {
    fn drop(&mut self) {
        let mut taken = [0; GROUPS];
        let mut n = 0;
        for p in self.dir.iter_mut().map(|s| *s.get_mut()).filter(|p| !p.is_null()) {
            taken[n] = p as usize;
            n += 1;
        }
        ARENA.give_back(taken[..n].iter().copied());
    }
}

/// Takes a zeroed group for `slot` (owning thread only) and publishes it there.
#[cold]
#[inline(never)]
fn take_group(slot: &AtomicPtr<Group>) -> Option<*mut Group> {
    let p = ARENA.take()?;
    slot.store(p, Release);
    Some(p)
}

/// The groups of every thread's histograms.
static ARENA: GroupArena = GroupArena::new();

/// Zeroed memory for `layout`, whose pages are not touched until used: mapped directly on
/// Unix. Not through the allocator: glibc's `calloc` writes a block's zeros itself once its
/// dynamic mmap threshold has risen (a large block freed raises it, up to 32 MiB), and a
/// segment of several MiB then became resident whole. In the memory benchmark (1,000
/// functions x 64 threads) that made the state 60-128 MiB from run to run (59.7-61.9 MiB in
/// eight runs with the threshold pinned by `MALLOC_MMAP_THRESHOLD_`; 60.1-61.8 MiB in eight
/// runs with the segments mapped here).
fn zeroed_pages(layout: Layout) -> *mut u8 {
    #[cfg(unix)]
    {
        // SAFETY: an anonymous private mapping of a non-zero size: no file, no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p.cast()
        }
    }
    #[cfg(not(unix))]
    // SAFETY: the layout has a non-zero size.
    unsafe {
        std::alloc::alloc_zeroed(layout)
    }
}

/// Frees what [`zeroed_pages`] returned for `layout`.
///
/// # Safety
/// `p` came from `zeroed_pages(layout)` and is not used after.
unsafe fn free_pages(p: *mut u8, layout: Layout) {
    #[cfg(unix)]
    // SAFETY: `p` is a mapping of `layout.size()` bytes (the caller's contract).
    unsafe {
        libc::munmap(p.cast(), layout.size());
    }
    #[cfg(not(unix))]
    // SAFETY: the caller's contract.
    unsafe {
        std::alloc::dealloc(p, layout)
    }
}

/// `log2` of the groups in the arena's first segment; segment `s` holds `2^(FIRST_BITS + s)`.
const FIRST_BITS: u32 = 9;
/// Segments: enough for every `u32` index.
const SEGMENTS: usize = 24;
/// Groups start on their own pair of cache lines: no two threads' groups share one.
const GROUP_ALIGN: usize = 128;

/// An arena of groups, in segments that never move, each twice the size of the one before
/// (64 KiB, 128 KiB, ...): a group costs its 128 bytes, with no allocator header. Taking a
/// group (a power of two's first value on a thread) takes no lock a thread can wait on:
/// fresh groups are counted off an atomic index, a missing segment is allocated and
/// installed with a compare-and-swap, and the free list is only tried. Giving groups back
/// (a thread's tables dropped) locks the free list for a push, never for an allocation. Given-back groups are reused;
/// segments are kept for the process's life.
struct GroupArena {
    /// The index of the next group never taken, counted from 1 (0 once every `u32` index
    /// has been).
    next: AtomicU32,
    /// Each segment's first group, aligned (null: not allocated yet).
    segments: [AtomicPtr<Group>; SEGMENTS],
    /// Each segment's allocation as the allocator returned it, for `Drop`.
    raw: [AtomicPtr<u8>; SEGMENTS],
    /// Addresses of groups given back, to take again.
    free: Mutex<Vec<usize>>,
}

impl GroupArena {
    const fn new() -> Self {
        Self {
            next: AtomicU32::new(1),
            segments: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
            raw: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
            free: Mutex::new(Vec::new()),
        }
    }

    /// The segment of index `i` (not 0) and the group's offset in it.
    #[inline(always)]
    fn locate(i: u32) -> (usize, usize) {
        let p = u64::from(i) + (1 << FIRST_BITS) - 1;
        let msb = 63 - p.leading_zeros();
        ((msb - FIRST_BITS) as usize, (p - (1 << msb)) as usize)
    }

    /// A zeroed group, held until given back, or `None` if memory for a new segment could
    /// not be had (or, after 2^32 - 1 groups, indices ran out). The group's memory lives as
    /// long as the arena.
    fn take(&self) -> Option<*mut Group> {
        crate::record::alloc::untracked(|| {
            if let Some(p) = self.try_reuse() {
                // SAFETY: given back, so no longer used by its histogram; ours now.
                unsafe { &*p }.iter().for_each(|c| c.store(0, Relaxed));
                return Some(p);
            }
            let i = self
                .next
                .fetch_update(
                    Relaxed,
                    Relaxed,
                    |n| if n == 0 { None } else { Some(n.wrapping_add(1)) },
                )
                .ok()?;
            let (s, off) = Self::locate(i);
            let seg = self.segment(s)?;
            // SAFETY: `off` is within segment `s`; index `i` is handed out once, and fresh
            // segment memory is zeroed.
            Some(unsafe { seg.add(off) })
        })
    }

    /// A given-back group, if the free list has one and is not busy.
    fn try_reuse(&self) -> Option<*mut Group> {
        let mut free = match self.free.try_lock() {
            Ok(f) => f,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        free.pop().map(|p| p as *mut Group)
    }

    /// Segment `s`, allocated by whichever thread needs it first.
    fn segment(&self, s: usize) -> Option<*mut Group> {
        let seg = self.segments[s].load(Acquire);
        if !seg.is_null() {
            return Some(seg);
        }
        let layout = Self::layout(s)?;
        let raw = zeroed_pages(layout);
        if raw.is_null() {
            return None;
        }
        let skip = (GROUP_ALIGN - raw as usize % GROUP_ALIGN) % GROUP_ALIGN;
        // SAFETY: `skip < GROUP_ALIGN`, the slack the layout adds.
        let mine = unsafe { raw.add(skip) }.cast::<Group>();
        match self.segments[s].compare_exchange(std::ptr::null_mut(), mine, AcqRel, Acquire) {
            Ok(_) => {
                self.raw[s].store(raw, Release);
                Some(mine)
            }
            Err(theirs) => {
                // SAFETY: allocated just above with `layout`, never published.
                unsafe { free_pages(raw, layout) };
                Some(theirs)
            }
        }
    }

    /// Segment `s`'s allocation: its groups plus room to align them to [`GROUP_ALIGN`] by
    /// hand (where the memory does not come page-aligned).
    fn layout(s: usize) -> Option<Layout> {
        let bytes = (std::mem::size_of::<Group>() << (FIRST_BITS as usize + s)) + GROUP_ALIGN;
        Layout::from_size_align(bytes, std::mem::align_of::<Group>()).ok()
    }

    /// Gives groups back for reuse; the free list grows outside its lock.
    fn give_back(&self, taken: impl ExactSizeIterator<Item = usize>) {
        if taken.len() == 0 {
            return;
        }
        crate::record::alloc::untracked(|| {
            let lock = || self.free.lock().unwrap_or_else(|p| p.into_inner());
            let room = taken.len();
            crate::record::lock::lock_with_room(lock, |v| v, room).extend(taken);
        });
    }
}

impl Drop for GroupArena {
    fn drop(&mut self) {
        for (s, raw) in self.raw.iter_mut().enumerate() {
            let raw = *raw.get_mut();
            if let (false, Some(layout)) = (raw.is_null(), Self::layout(s)) {
                // SAFETY: allocated in `segment` with this layout, freed once, here.
                unsafe { free_pages(raw, layout) };
            }
        }
    }
}

/// The value at quantile `q` (0..=1) of merged bucket counts, clamped to `[min, max]`.
pub(crate) fn quantile(counts: &[u64], q: f64, min: u64, max: u64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    // Rank of the wanted value, 1-based: the smallest value with at least q*total below or at it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let (lo, hi) = bucket_bounds(i);
            let mid = if hi == u64::MAX { lo } else { lo + (hi - 1 - lo) / 2 };
            return mid.clamp(min, max.max(min));
        }
    }
    max
}

/// Sparse form of merged counts: `(upper bound exclusive, count)` for non-empty buckets.
pub(crate) fn sparse(counts: &[u64]) -> Vec<(u64, u64)> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| (bucket_bounds(i).1, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_contiguously() {
        let mut prev_hi = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, prev_hi, "bucket {i} does not start where {} ended", i.max(1) - 1);
            assert!(hi > lo);
            assert_eq!(bucket_of(lo), i);
            if hi != u64::MAX {
                assert_eq!(bucket_of(hi - 1), i);
            }
            prev_hi = hi;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_at_most_a_sixteenth() {
        for i in SUB..BUCKETS - 1 {
            let (lo, hi) = bucket_bounds(i);
            assert!((hi - lo) * 16 <= lo, "bucket {i}: {lo}..{hi}");
        }
    }

    #[test]
    fn only_the_powers_of_two_seen_are_allocated() {
        let h = AtomicHistogram::default();
        h.record(3);
        h.record(1000);
        h.record(1001);
        let mut groups = Vec::new();
        h.for_each_group(|g, _| groups.push(g));
        assert_eq!(
            groups,
            [0, bucket_of(1000) / GROUP],
            "one group for 3, one for 1000 and 1001"
        );
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(counts[3], 1);
        assert_eq!(counts[bucket_of(1000)], 2);
    }

    #[test]
    fn every_bucket_counts_apart() {
        let h = AtomicHistogram::default();
        for i in 0..BUCKETS {
            for _ in 0..=i % 3 {
                h.record(bucket_bounds(i).0);
            }
        }
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        for (i, &c) in counts.iter().enumerate() {
            assert_eq!(c, (i % 3) as u64 + 1, "bucket {i}");
        }
        h.clear();
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        assert!(counts.iter().all(|&c| c == 0));
    }

    /// Groups of dropped histograms are reused, and a reused group starts from zero, while
    /// live histograms keep theirs.
    #[test]
    fn arena_reuses_given_back_groups_zeroed() {
        let arena = GroupArena::new();
        let a = arena.take().expect("a group");
        let b = arena.take().expect("a group");
        assert_eq!(b as usize - a as usize, std::mem::size_of::<Group>());
        // SAFETY: `a` and `b` are taken from `arena` and live as long as it.
        let (ga, gb) = unsafe { (&*a, &*b) };
        ga[5].store(7, Relaxed);
        gb[5].store(9, Relaxed);
        arena.give_back([a as usize].into_iter());
        let c = arena.take().expect("a group");
        assert_eq!(c, a, "the given-back group is taken again");
        assert!(ga.iter().all(|x| x.load(Relaxed) == 0), "and comes back zeroed");
        assert_eq!(gb[5].load(Relaxed), 9);
    }

    /// Threads taking groups at once, fresh and given back, across new segments raced for,
    /// never get the same group twice.
    #[test]
    fn concurrent_takes_get_distinct_groups() {
        let arena = GroupArena::new();
        let per_thread = 3_000;
        let mut all: Vec<usize> = std::thread::scope(|sc| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    sc.spawn(|| {
                        let mut mine = Vec::new();
                        for k in 0..per_thread {
                            let p = arena.take().expect("a group") as usize;
                            if k % 10 == 0 {
                                arena.give_back([p].into_iter());
                            } else {
                                mine.push(p);
                            }
                        }
                        mine
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("no panic")).collect()
        });
        let held = all.len();
        assert_eq!(held, 4 * (per_thread - per_thread / 10));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), held, "a group held by two takers");
    }

    /// Indices cross segment boundaries without two groups sharing memory, each aligned.
    #[test]
    fn arena_groups_are_distinct_across_segments() {
        let arena = GroupArena::new();
        let n = (1u32 << FIRST_BITS) * 3 + 5; // into the third segment
        let mut addrs = Vec::new();
        for k in 0..n {
            let p = arena.take().expect("a group");
            // SAFETY: taken from `arena`, lives as long as it.
            let g = unsafe { &*p };
            g[0].store(u64::from(k), Relaxed);
            addrs.push(p as usize);
        }
        for (k, &a) in addrs.iter().enumerate() {
            assert_eq!(a % GROUP_ALIGN, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { &*(a as *const Group) }[0].load(Relaxed), k as u64);
        }
        addrs.sort_unstable();
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= std::mem::size_of::<Group>()));
        assert_eq!(GroupArena::locate(1), (0, 0));
        assert_eq!(GroupArena::locate(1 << FIRST_BITS), (0, (1 << FIRST_BITS) - 1));
        assert_eq!(GroupArena::locate((1 << FIRST_BITS) + 1), (1, 0));
        assert_eq!(GroupArena::locate(u32::MAX).0, 23);
    }

    #[test]
    fn quantiles_of_uniform_values_are_within_bucket_error() {
        let h = AtomicHistogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let mut counts = vec![0; BUCKETS];
        h.add_into(&mut counts);
        for (q, truth) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = quantile(&counts, q, 1000, 10_000_000) as f64;
            assert!((got - truth).abs() / truth < 0.035, "q{q}: {got} vs {truth}");
        }
        assert_eq!(quantile(&counts, 1.0, 1000, 10_000_000), 10_000_000);
        assert_eq!(quantile(&[0; BUCKETS], 0.5, 0, 0), 0);
    }
}
