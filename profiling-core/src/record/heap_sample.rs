//! Where live heap is sampled by call path: a Go-style allocation sampler and the table of
//! sampled blocks still live.
//!
//! **Sampling.** Each thread counts down the bytes to its next sample. The gaps between
//! samples are drawn from an exponential distribution with mean [`heap_sample_bytes`]
//! (default 512 KiB, like Go's `runtime.MemProfileRate`), so the sampled points form a
//! Poisson process over the bytes allocated: an allocation of `s` bytes is sampled with
//! probability `p = 1 - exp(-s / rate)`, and a sampled one stands for `1 / p` allocations and
//! `s / p` bytes. That scaling is unbiased for any mix of sizes (it is pprof's
//! `scaleHeapSample`); the figures derived from samples are *estimates*.
//!
//! **What a sample records.** The call-tree node current on the allocating thread (its
//! innermost open frame's, `recorder::innermost_frame`), the size, the scale
//! `1 / p` and the time. It lives in a fixed table of [`CAPACITY`] slots keyed by address,
//! 8 slots per 64-byte bucket; a sample whose bucket is full is counted in
//! [`HeapSamplerStats::dropped_samples`] and still counts in the allocated totals.
//!
//! **Cost.** A non-sampled allocation: one thread-local decrement and a branch. A free:
//! while any sample is live, one hash and one load from `OCCUPIED`, an 8 KiB array of
//! per-bucket counts that stays in the cache; only when the block's bucket holds a sample (a
//! few percent of frees with hundreds of samples live) one scan of its 64-byte bucket (8
//! relaxed loads), plus a compare-and-swap when it holds the block. Without the counts every
//! free read a random line of the 256 KiB key table: in the end-to-end benchmark that cache
//! miss was most of `dealloc`'s time. A sampled allocation takes no lock (a few atomic
//! read-modify-writes). The table is static: 32,768 slots, 256 KiB of keys and 1 MiB of
//! records, touched only as used.
//!
//! **Frees on any thread.** A block's record is removed by whichever thread frees it,
//! before the block is handed back to the allocator (so its address cannot be reused and
//! sampled again while the old record is still there). `realloc` removes the old block's
//! record first and may sample the new block; a failed `realloc` (out of memory) thus forgets
//! the sample of a block that is still live.

use std::cell::Cell;
use std::sync::atomic::{
    fence, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::config::MAX_CALL_TREE_NODES_LIMIT;

/// Default mean sampling interval: 512 KiB, as Go's heap profiler.
pub const DEFAULT_HEAP_SAMPLE_BYTES: u64 = 512 * 1024;
/// Smallest accepted non-zero interval.
pub const MIN_HEAP_SAMPLE_BYTES: u64 = 64;
/// Largest accepted interval (1 GiB).
pub const MAX_HEAP_SAMPLE_BYTES: u64 = 1 << 30;

const WAYS: usize = 8;
const BUCKETS: usize = 4096;
/// Slots in the live-sample table: at most this many sampled blocks are tracked at once.
pub const CAPACITY: usize = BUCKETS * WAYS;
/// While sampling is off, a thread looks at the switch again after this many bytes.
const RECHECK_WHEN_OFF: i64 = 64 << 10;
const NODES: usize = MAX_CALL_TREE_NODES_LIMIT as usize;

static RATE: AtomicU64 = AtomicU64::new(DEFAULT_HEAP_SAMPLE_BYTES);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static TAKEN: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Samples that have started, and finished, adding to [`ALLOC_OBJECTS`] and
/// [`ALLOC_BYTES`]: a reader that saw them equal before and `ADDS_STARTED` unchanged after
/// its read saw no add half done (nothing in this table takes a lock: a thread taking a
/// sample never waits for a reader or for another sampled thread).
static ADDS_STARTED: AtomicU64 = AtomicU64::new(0);
static ADDS_DONE: AtomicU64 = AtomicU64::new(0);
/// The key of a slot claimed by a sampled thread that is still writing its figures.
const CLAIMED: usize = 1;

#[repr(align(64))]
struct Bucket([AtomicUsize; WAYS]);

/// A sampled block's figures, written by the thread that claimed the slot (key 0 ->
/// [`CLAIMED`]) before it publishes the block's address as the key, and read without a
/// lock: `seq` is odd while they are written (a sequence lock), so a reader never takes
/// figures of two different samples.
struct Slot {
    seq: AtomicU32,
    node: AtomicU32,
    size: AtomicU64,
    scale: AtomicU64,
    at_ms: AtomicU64,
}

static KEYS: [Bucket; BUCKETS] = [const { Bucket([const { AtomicUsize::new(0) }; WAYS]) }; BUCKETS];
/// Per bucket, at least the number of its keys that are not 0: a free whose bucket reads 0
/// here holds no sample and skips the bucket. A sampled thread adds 1 *before* it claims a
/// slot (and takes it back if the bucket is full); a free takes 1 off *after* it cleared a
/// key, with `Acquire` on the key that the sampled thread published with `Release`. So every
/// decrement follows its own increment in the count's order, and a free of a sampled block,
/// which happens after the block's allocation, reads at least 1. At most 8 keys plus the
/// threads sampling into the bucket at that moment: `u16` cannot wrap.
static OCCUPIED: [AtomicU16; BUCKETS] = [const { AtomicU16::new(0) }; BUCKETS];
static SLOTS: [Slot; CAPACITY] = [const {
    Slot {
        seq: AtomicU32::new(0),
        node: AtomicU32::new(0),
        size: AtomicU64::new(0),
        scale: AtomicU64::new(0),
        at_ms: AtomicU64::new(0),
    }
}; CAPACITY];
/// Estimated allocations and bytes (f64 bits) per node since the process started; added to
/// between [`ADDS_STARTED`] and [`ADDS_DONE`].
static ALLOC_OBJECTS: [AtomicU64; NODES] = [const { AtomicU64::new(0) }; NODES];
static ALLOC_BYTES: [AtomicU64; NODES] = [const { AtomicU64::new(0) }; NODES];

struct Sampler {
    /// Bytes left before the next sample (may go negative: then the slow path runs).
    left: Cell<i64>,
    /// Whether `left` holds a drawn gap (false at thread start and while sampling is off).
    armed: Cell<bool>,
    rng: Cell<u64>,
    /// Set while this thread is in the sampler or reads the table: its own allocations
    /// are not sampled.
    busy: Cell<bool>,
}

thread_local! {
    static SAMPLER: Sampler = const {
        Sampler { left: Cell::new(0), armed: Cell::new(false), rng: Cell::new(0), busy: Cell::new(false) }
    };
}

/// Sets the mean sampling interval in bytes: 0 turns sampling off, otherwise
/// [`MIN_HEAP_SAMPLE_BYTES`]`..=`[`MAX_HEAP_SAMPLE_BYTES`]. Threads pick a new interval up at
/// their next sample (or within 64 KiB of allocation when sampling was off).
pub fn set_heap_sample_bytes(bytes: u64) -> Result<()> {
    if bytes != 0 && !(MIN_HEAP_SAMPLE_BYTES..=MAX_HEAP_SAMPLE_BYTES).contains(&bytes) {
        return Err(Error::InvalidConfig(format!(
            "heap sample interval must be 0 (off) or {MIN_HEAP_SAMPLE_BYTES}..={MAX_HEAP_SAMPLE_BYTES} bytes, got {bytes}"
        )));
    }
    RATE.store(bytes, Relaxed);
    Ok(())
}

/// The mean sampling interval in bytes (0: off).
pub fn heap_sample_bytes() -> u64 {
    RATE.load(Relaxed)
}

/// The allocation hook: a decrement and a branch unless this allocation is sampled.
#[inline(always)]
pub(crate) fn on_alloc(ptr: *mut u8, size: usize) {
    let _ = SAMPLER.try_with(|s| {
        let left = s.left.get().wrapping_sub(size as i64);
        s.left.set(left);
        if left < 0 {
            sample_slow(s, ptr as usize, size as u64);
        }
    });
}

/// The free hook: called before the block goes back to the allocator.
#[inline(always)]
pub(crate) fn on_free(ptr: *mut u8) {
    if LIVE.load(Relaxed) == 0 {
        return;
    }
    let key = ptr as usize;
    let b = bucket(key);
    if OCCUPIED[b].load(Relaxed) == 0 {
        return;
    }
    for k in &KEYS[b].0 {
        if k.load(Relaxed) == key {
            if k.compare_exchange(key, 0, Acquire, Relaxed).is_ok() {
                OCCUPIED[b].fetch_sub(1, Relaxed);
                LIVE.fetch_sub(1, Relaxed);
            }
            return;
        }
    }
}

#[inline(always)]
fn bucket(addr: usize) -> usize {
    // Fibonacci hashing of the address without its alignment bits.
    ((addr as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros())) as usize
}

fn next_random(s: &Sampler) -> u64 {
    // splitmix64: no allocation, no lock, good enough for sampling gaps.
    let mut x = s.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
    s.rng.set(x);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// An exponentially distributed gap with mean `rate` bytes.
fn draw_gap(s: &Sampler, rate: u64) -> i64 {
    // u in (0, 1]: never 0, so ln(u) is finite.
    let u = ((next_random(s) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    (-u.ln() * rate as f64).min(i64::MAX as f64 / 2.0) as i64
}

/// `1 / p`, `p = 1 - exp(-size / rate)`: how many allocations of `size` one sample stands for.
pub(crate) fn scale(size: u64, rate: u64) -> f64 {
    if rate == 0 {
        return 1.0;
    }
    let p = -(-(size as f64) / rate as f64).exp_m1();
    if p > 0.0 {
        1.0 / p
    } else {
        1.0
    }
}

/// Called when `left` went negative: whether this allocation is sampled. Arms a thread's
/// first gap (the allocation that arms it is sampled only if it also crosses that gap) and
/// draws the next gap after a sample: by the exponential's lack of memory, every byte is
/// the start of a sample with the same probability.
fn countdown_crossed(s: &Sampler, size: u64, rate: u64) -> bool {
    if !s.armed.get() {
        if s.rng.get() == 0 {
            let seed = (s as *const Sampler as u64) ^ crate::record::clock::unix_now_ns() ^ 0x2545_F491_4F6C_DD1D;
            s.rng.set(seed | 1);
        }
        s.armed.set(true);
        let left = draw_gap(s, rate).wrapping_sub(size as i64);
        s.left.set(left);
        if left >= 0 {
            return false;
        }
    }
    s.left.set(draw_gap(s, rate));
    true
}

#[cold]
#[inline(never)]
fn sample_slow(s: &Sampler, addr: usize, size: u64) {
    if s.busy.get() {
        // The profiler's own allocation: it neither counts towards nor takes a sample.
        s.left.set(s.left.get().wrapping_add(size as i64));
        return;
    }
    let rate = RATE.load(Relaxed);
    if rate == 0 {
        s.armed.set(false);
        s.left.set(RECHECK_WHEN_OFF);
        return;
    }
    if !countdown_crossed(s, size, rate) {
        return;
    }
    s.busy.set(true);
    record(
        crate::record::recorder::innermost_frame().1,
        addr,
        size,
        scale(size, rate),
    );
    s.busy.set(false);
}

fn add_f64(a: &AtomicU64, v: f64) {
    let _ = a.fetch_update(Relaxed, Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
}

fn record(node: u32, addr: usize, size: u64, scale: f64) {
    TAKEN.fetch_add(1, Relaxed);
    if let (Some(o), Some(b)) = (ALLOC_OBJECTS.get(node as usize), ALLOC_BYTES.get(node as usize)) {
        ADDS_STARTED.fetch_add(1, Relaxed);
        fence(Release);
        add_f64(o, scale);
        add_f64(b, scale * size as f64);
        ADDS_DONE.fetch_add(1, Release);
    }
    let b = bucket(addr);
    OCCUPIED[b].fetch_add(1, Relaxed);
    for (way, k) in KEYS[b].0.iter().enumerate() {
        // Loaded first: a failed compare-and-swap would take the line (which frees scan)
        // for writing.
        if k.load(Relaxed) == 0 && k.compare_exchange(0, CLAIMED, Acquire, Relaxed).is_ok() {
            let slot = &SLOTS[b * WAYS + way];
            let seq = slot.seq.load(Relaxed);
            slot.seq.store(seq.wrapping_add(1), Relaxed);
            fence(Release);
            slot.node.store(node, Relaxed);
            slot.size.store(size, Relaxed);
            slot.scale.store(scale.to_bits(), Relaxed);
            slot.at_ms
                .store(crate::record::clock::unix_now_ns() / 1_000_000, Relaxed);
            slot.seq.store(seq.wrapping_add(2), Release);
            LIVE.fetch_add(1, Relaxed);
            k.store(addr, Release);
            return;
        }
    }
    OCCUPIED[b].fetch_sub(1, Relaxed);
    DROPPED.fetch_add(1, Relaxed);
}

/// One sampled block that is still live.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LiveSample {
    /// Call-tree node current when it was allocated.
    pub(crate) node: u32,
    /// Requested size, bytes.
    pub(crate) size: u64,
    /// How many allocations of this size the sample stands for (`1 / p`).
    pub(crate) scale: f64,
    /// When it was allocated, ms since the Unix epoch.
    pub(crate) at_ms: u64,
}

/// Estimated allocations since the process started at one node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct NodeAllocated {
    pub(crate) node: u32,
    pub(crate) objects: f64,
    pub(crate) bytes: f64,
}

/// Runs `f` as the profiler: its allocations are neither sampled nor counted per thread.
fn as_profiler<R>(f: impl FnOnce() -> R) -> R {
    let prev = SAMPLER.try_with(|s| s.busy.replace(true)).unwrap_or(true);
    let r = crate::record::alloc::untracked(f);
    let _ = SAMPLER.try_with(|s| s.busy.set(prev));
    r
}

/// Every live sample and the per-node allocated estimates, read without a lock: each slot
/// under its sequence lock (a block freed or replaced meanwhile is left out), and the
/// per-node estimates again while a sample was added during the read (a sample adds to two
/// figures of a node: a reader takes both or neither).
pub(crate) fn read() -> (Vec<LiveSample>, Vec<NodeAllocated>) {
    as_profiler(|| (read_live(), read_allocated()))
}

fn read_live() -> Vec<LiveSample> {
    let mut live = Vec::with_capacity(LIVE.load(Relaxed));
    for (b, bucket) in KEYS.iter().enumerate() {
        for (way, k) in bucket.0.iter().enumerate() {
            if matches!(k.load(Relaxed), 0 | CLAIMED) {
                continue;
            }
            let slot = &SLOTS[b * WAYS + way];
            let seq = slot.seq.load(Acquire);
            let key = k.load(Acquire);
            let sample = LiveSample {
                node: slot.node.load(Relaxed),
                size: slot.size.load(Relaxed),
                scale: f64::from_bits(slot.scale.load(Relaxed)),
                at_ms: slot.at_ms.load(Relaxed),
            };
            fence(Acquire);
            // Written meanwhile, freed meanwhile, or empty: leave it out.
            if seq.is_multiple_of(2)
                && !matches!(key, 0 | CLAIMED)
                && slot.seq.load(Relaxed) == seq
                && k.load(Relaxed) == key
            {
                live.push(sample);
            }
        }
    }
    live
}

/// The per-node totals, read while no sample is being added; after many tries that all met
/// an add in flight, the totals as they are (at most the samples in flight counted in part).
fn read_allocated() -> Vec<NodeAllocated> {
    read_allocated_clean(1_000).unwrap_or_else(read_allocated_once)
}

fn read_allocated_once() -> Vec<NodeAllocated> {
    let n = crate::record::tree::len().min(NODES);
    (0..n)
        .filter_map(|i| {
            let objects = f64::from_bits(ALLOC_OBJECTS[i].load(Relaxed));
            (objects > 0.0).then(|| NodeAllocated {
                node: i as u32,
                objects,
                bytes: f64::from_bits(ALLOC_BYTES[i].load(Relaxed)),
            })
        })
        .collect()
}

/// The per-node totals read while no sample was being added, or `None` if every one of
/// `tries` met an add in flight. Samples are rare (one per `rate` bytes per thread): a read
/// is almost always clean the first time.
fn read_allocated_clean(tries: usize) -> Option<Vec<NodeAllocated>> {
    for _ in 0..tries {
        let done = ADDS_DONE.load(Acquire);
        let started = ADDS_STARTED.load(Relaxed);
        if started != done {
            std::thread::yield_now();
            continue;
        }
        let allocated = read_allocated_once();
        fence(Acquire);
        if ADDS_STARTED.load(Relaxed) == started {
            return Some(allocated);
        }
    }
    None
}

/// Counters of the heap sampler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeapSamplerStats {
    /// Mean sampling interval, bytes (0: off).
    pub sample_bytes: u64,
    /// Samples taken since the process started.
    pub samples_taken: u64,
    /// Sampled blocks still live and tracked.
    pub live_samples: u64,
    /// Samples not tracked because their bucket of the table was full.
    pub dropped_samples: u64,
    /// Slots in the table.
    pub capacity: u64,
}

/// Reads the sampler's counters.
pub fn heap_sampler_stats() -> HeapSamplerStats {
    HeapSamplerStats {
        sample_bytes: heap_sample_bytes(),
        samples_taken: TAKEN.load(Relaxed),
        live_samples: LIVE.load(Relaxed) as u64,
        dropped_samples: DROPPED.load(Relaxed),
        capacity: CAPACITY as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by the tests that fill and empty the table's buckets, which run on threads of
    /// one binary at once: the crowded-bucket test counts a bucket's keys, and the other
    /// one's 10,000 samples, freed as it ends, could take and then leave ways of that
    /// bucket between its inserts and its count (it failed so in 2 of 60 runs).
    static TABLE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn hold_table() -> std::sync::MutexGuard<'static, ()> {
        TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Threads take samples at once, with no lock, while a reader reads: every sample
    /// counts (none lost to a racing add, none written over by another in a slot), and no
    /// read takes one of a sample's two figures without the other (all samples here are
    /// 1,000 bytes: bytes = 1,000 x objects; that window is narrow, so this part of the
    /// check catches a broken protocol only sometimes).
    #[test]
    fn concurrent_samples_are_all_counted_and_never_read_half_added() {
        let _table = hold_table();
        let node = crate::record::tree::intern(crate::record::tree::ROOT, 3_900_000).node;
        let of_node = |v: Vec<NodeAllocated>| v.into_iter().find(|a| a.node == node);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let dropped_before = DROPPED.load(Relaxed);
        let (reads, torn) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut reads, mut torn) = (0u64, 0u64);
                while !stop.load(Relaxed) {
                    // Only reads the protocol calls clean: a reader that meets adds in
                    // flight 1,000 times in a row (four writers in a loop here) falls back
                    // to a read that may count a sample in part, and says so.
                    if let Some(a) = read_allocated_clean(1_000).and_then(of_node) {
                        reads += 1;
                        torn += u64::from(a.bytes != a.objects * 1_000.0);
                    }
                }
                (reads, torn)
            });
            let writers: Vec<_> = (0..4usize)
                .map(|t| {
                    s.spawn(move || {
                        for i in 0..2_500usize {
                            // Fake addresses, never freed by anyone else (16 to 160,000).
                            record(node, 16 * (t * 2_500 + i + 1), 1_000, 1.0);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Relaxed);
            reader.join().unwrap()
        });
        let a = of_node(read_allocated()).expect("the node's samples");
        assert_eq!(a.objects, 10_000.0, "every sample counted");
        assert_eq!(a.bytes, 10_000_000.0);
        assert_eq!(torn, 0, "{torn} of {reads} reads took half a sample");
        // Other tests of this binary may drop samples meanwhile (the table is shared), so the
        // drops counted are at least this test's.
        let live = read_live().iter().filter(|l| l.node == node && l.size == 1_000).count() as u64;
        let dropped = DROPPED.load(Relaxed) - dropped_before;
        assert!(
            live <= 10_000 && live + dropped >= 10_000,
            "{live} samples live and {dropped} dropped of 10,000: each in a slot of its own or dropped"
        );
        // Leave the table as other tests expect it: these blocks are never freed.
        for t in 0..4usize {
            for i in 0..2_500usize {
                on_free((16 * (t * 2_500 + i + 1)) as *mut u8);
            }
        }
    }

    /// Addresses that hash into bucket `b` and that no allocator hands out, nor the other
    /// tests use: 8 modulo 16 (blocks here are 16-byte aligned).
    fn addresses_in_bucket(b: usize, n: usize) -> Vec<usize> {
        (1..1 << 24)
            .map(|i| i * 16 + 8)
            .filter(|&a| bucket(a) == b)
            .take(n)
            .collect()
    }

    /// A free skips a bucket only when it holds no sample: with one bucket overfilled from
    /// four threads at once (12 samples for 8 slots) and its blocks freed from four other
    /// threads, every record is removed by its block's free. The bucket's count is never
    /// below the keys it holds. (The table is shared with the rest of this test binary:
    /// the tests that fill it hold [`TABLE`].)
    #[test]
    fn frees_find_every_sample_of_a_crowded_bucket() {
        let _table = hold_table();
        let node = crate::record::tree::intern(crate::record::tree::ROOT, 3_900_001).node;
        // One sample, freed on another thread.
        let [lone] = addresses_in_bucket(4_001, 1)[..] else {
            panic!("no address")
        };
        record(node, lone, 7_777, 1.0);
        std::thread::scope(|s| {
            s.spawn(|| on_free(lone as *mut u8));
        });
        assert!(
            KEYS[4_001].0.iter().all(|k| k.load(Relaxed) != lone),
            "the lone sample's free removed it"
        );
        let b = 4_000;
        let addrs = addresses_in_bucket(b, 12);
        assert_eq!(addrs.len(), 12);
        let addrs_of = |t: usize| addrs.iter().copied().skip(t).step_by(4).collect::<Vec<_>>();
        let keys = || {
            KEYS[b]
                .0
                .iter()
                .map(|k| k.load(Relaxed))
                .filter(|&k| k != 0)
                .collect::<Vec<_>>()
        };
        let ours = |keys: &[usize]| keys.iter().filter(|a| addrs.contains(a)).count();
        std::thread::scope(|s| {
            for t in 0..4 {
                let mine = addrs_of(t);
                s.spawn(move || mine.iter().for_each(|&a| record(node, a, 7_777, 1.0)));
            }
        });
        let held = keys();
        assert_eq!(held.len(), 8, "the bucket is full: {held:?}");
        assert!(ours(&held) >= 4, "at least 4 of ours kept: {held:?}");
        assert!(usize::from(OCCUPIED[b].load(Relaxed)) >= held.len());
        std::thread::scope(|s| {
            for t in 0..4 {
                let mine = addrs_of(t);
                s.spawn(move || mine.iter().for_each(|&a| on_free(a as *mut u8)));
            }
        });
        let held = keys();
        assert_eq!(
            ours(&held),
            0,
            "every sampled block's free removed its record: {held:?}"
        );
        assert!(usize::from(OCCUPIED[b].load(Relaxed)) >= held.len());
        assert!(read_live().iter().all(|l| l.node != node));
    }

    /// Sampled bytes scaled by `1 / p` estimate the bytes allocated: over 64 MiB in 1,000-byte
    /// allocations at a 64 KiB mean interval (~1,000 samples, relative standard error
    /// sqrt((1 - p) / (n p)) = 3.1%), the estimate is within 15% (4.8 standard errors).
    /// Mixed sizes (64 B to 256 KiB) check that the scale is right for each size.
    #[test]
    fn sampler_rate_is_unbiased() {
        let rate = 64 * 1024;
        let s = Sampler {
            left: Cell::new(0),
            armed: Cell::new(false),
            rng: Cell::new(0x1234_5678),
            busy: Cell::new(false),
        };
        for &size in &[1000u64, 64, 256 * 1024] {
            let total: u64 = 64 << 20;
            let (mut estimate, mut samples) = (0.0f64, 0u64);
            for _ in 0..total / size {
                let left = s.left.get() - size as i64;
                s.left.set(left);
                if left < 0 && countdown_crossed(&s, size, rate) {
                    estimate += scale(size, rate) * size as f64;
                    samples += 1;
                }
            }
            let allocated = (total / size * size) as f64;
            let err = (estimate - allocated).abs() / allocated;
            assert!(
                err < 0.15,
                "size {size}: estimate {estimate} vs {allocated} ({samples} samples)"
            );
            assert!(samples > 0);
        }
    }

    #[test]
    fn exponential_gaps_have_the_configured_mean() {
        let s = Sampler {
            left: Cell::new(0),
            armed: Cell::new(true),
            rng: Cell::new(42),
            busy: Cell::new(false),
        };
        let n = 100_000;
        let mean = (0..n).map(|_| draw_gap(&s, 512 * 1024) as f64).sum::<f64>() / n as f64;
        // Standard error of the mean of an exponential: rate / sqrt(n) = 0.32%.
        assert!((mean / (512.0 * 1024.0) - 1.0).abs() < 0.02, "mean gap {mean}");
    }

    #[test]
    fn scale_is_one_over_probability() {
        assert!((scale(512 * 1024, 512 * 1024) - 1.0 / (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        assert!(scale(1 << 30, 512 * 1024) - 1.0 < 1e-9);
        assert!((scale(1, 512 * 1024) - 512.0 * 1024.0).abs() < 1.0);
    }

    #[test]
    fn rejects_out_of_range_intervals() {
        assert!(set_heap_sample_bytes(1).is_err());
        assert!(set_heap_sample_bytes(MAX_HEAP_SAMPLE_BYTES + 1).is_err());
    }
}
