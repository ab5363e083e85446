//! Where the layer publishes a span's state for other threads: a fixed table of slots keyed
//! by span id, in place of the span's extensions in the `Registry`.
//!
//! Reaching a span's extensions costs a registry lookup (a sharded-slab read with two atomic
//! reference count updates), the extensions' lock, a type-keyed map lookup and, the first
//! time, a boxed insert that the registry frees again at close: measured under `perf` in the
//! overhead benchmark, about a quarter of the layer's row. A slot costs one hash, one cache
//! line of keys, and a lock of its own (one compare-and-swap and one store, uncontended unless
//! two threads touch the same span at once).
//!
//! - **Claimed at creation.** `on_new_span` claims a slot on the creating thread, before any
//!   other thread can know the span's id, so a span's home (a slot, or the extensions when its
//!   bucket is full) is decided once, with no race: every later access looks in the table
//!   first and falls back to the extensions only when the span has no slot.
//! - **Freed at close.** `on_close` runs before the registry frees the id for reuse, and no
//!   other callback of the span can run then (its last handle is gone).
//! - **Bounded.** [`CAPACITY`] spans open at once, 8 per bucket; beyond that, or in a full
//!   bucket, spans use their extensions as before. Keys are 64 KiB; slots about 0.7 MiB of
//!   zeroed static memory, touched only as used.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use super::SpanTiming;

const WAYS: usize = 8;
const BUCKETS: usize = 1024;
/// Spans that can have a slot at once (per process, over every layer instance).
pub(super) const CAPACITY: usize = WAYS * BUCKETS;

#[repr(align(64))]
struct Keys([AtomicU64; WAYS]);

/// A span's published state. `timing` is read and written only under `lock`; the key of the
/// slot and `layer` are written only under it too (`layer` while the key is 0), so a reader
/// that found the span's id in the keys checks both again once it holds the lock.
struct Slot {
    lock: AtomicU32,
    layer: AtomicU64,
    timing: UnsafeCell<SpanTiming>,
}

// SAFETY: the cell is accessed only by the thread holding `lock` (see `Locked`).
unsafe impl Sync for Slot {}

static KEYS: [Keys; BUCKETS] = [const { Keys([const { AtomicU64::new(0) }; WAYS]) }; BUCKETS];
static SLOTS: [Slot; CAPACITY] = [const {
    Slot {
        lock: AtomicU32::new(0),
        layer: AtomicU64::new(0),
        timing: UnsafeCell::new(SpanTiming {
            func: 0,
            call: None,
            last_exit: 0,
        }),
    }
}; CAPACITY];

/// The bits of a `Registry` span id that name its place in the registry's slab: 38 for the
/// slot and 13 for the thread shard in sharded-slab's default configuration, which the
/// registry uses; the bits above count the place's reuses (the slab's generation).
/// Leaving those out of the hash keeps a place that the registry reuses for span after
/// span in the same bucket, whose lines stay in the cache. Only where spans land depends
/// on this: keys are compared whole.
pub(super) const PLACE_BITS: u64 = (1 << 51) - 1;

#[inline(always)]
fn bucket(layer: u64, id: u64) -> usize {
    (((id & PLACE_BITS) ^ layer.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros()))
        as usize
}

/// A slot held locked; unlocked when dropped.
struct Locked(&'static Slot);

impl Locked {
    #[inline(always)]
    fn try_new(slot: &'static Slot) -> Option<Self> {
        // `then`, not `then_some`: a `Locked` built for a lock not taken would unlock the
        // holder's lock when dropped.
        slot.lock
            .compare_exchange(0, 1, Acquire, Relaxed)
            .is_ok()
            .then(|| Locked(slot))
    }

    /// Waits for the slot: held by another thread only for the copy of a span's state.
    #[inline(always)]
    fn new(slot: &'static Slot) -> Self {
        match Self::try_new(slot) {
            Some(l) => l,
            None => Self::wait(slot),
        }
    }

    #[cold]
    #[inline(never)]
    fn wait(slot: &'static Slot) -> Self {
        let mut spins = 0u32;
        loop {
            if let Some(l) = Self::try_new(slot) {
                return l;
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                // Its holder was descheduled: let it run.
                std::thread::yield_now();
            }
        }
    }

    #[inline(always)]
    fn layer(&self) -> u64 {
        self.0.layer.load(Relaxed)
    }

    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn timing(&mut self) -> &mut SpanTiming {
        // SAFETY: this thread holds the slot's lock, and `&mut self` keeps the borrow unique.
        unsafe { &mut *self.0.timing.get() }
    }
}

impl Drop for Locked {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.lock.store(0, Release);
    }
}

/// Gives span `id` of `layer` a slot holding function `func` and nothing measured yet, and
/// returns its index. `None` when its bucket is full: the span then lives in its extensions.
#[inline]
pub(super) fn claim(layer: u64, id: u64, func: u32) -> Option<u32> {
    let b = bucket(layer, id);
    for (way, key) in KEYS[b].0.iter().enumerate() {
        if key.load(Relaxed) != 0 {
            continue;
        }
        let Some(mut slot) = Locked::try_new(&SLOTS[b * WAYS + way]) else {
            continue;
        };
        if key.load(Relaxed) != 0 {
            continue;
        }
        slot.0.layer.store(layer, Relaxed);
        // Field by field: a whole `SpanTiming` built by the caller and copied in was read
        // back wider than it was written (a store-forwarding stall, half of `claim` under
        // `perf`).
        let t = slot.timing();
        t.func = func;
        t.call = None;
        t.last_exit = 0;
        key.store(id, Release);
        return Some((b * WAYS + way) as u32);
    }
    None
}

/// The slot of span `id` of `layer`, locked, and its index; `None` when the span has none.
#[inline]
fn find(layer: u64, id: u64) -> Option<(Locked, &'static AtomicU64, u32)> {
    let b = bucket(layer, id);
    for (way, key) in KEYS[b].0.iter().enumerate() {
        if key.load(Acquire) != id {
            continue;
        }
        let slot = Locked::new(&SLOTS[b * WAYS + way]);
        if key.load(Relaxed) == id && slot.layer() == layer {
            return Some((slot, key, (b * WAYS + way) as u32));
        }
    }
    None
}

/// Runs `f` on the published state of span `id` of `layer` and the index of its slot; `None`
/// when the span has no slot.
#[inline]
pub(super) fn with<R>(layer: u64, id: u64, f: impl FnOnce(&mut SpanTiming, u32) -> R) -> Option<R> {
    find(layer, id).map(|(mut slot, _, index)| f(slot.timing(), index))
}

/// The key of slot `index`.
#[inline(always)]
fn key_of(index: usize) -> &'static AtomicU64 {
    &KEYS[index / WAYS].0[index % WAYS]
}

/// [`with`] for a span whose slot was found at `index` before: no search. `None` when that
/// slot is (no longer) the span's.
#[inline]
pub(super) fn with_at<R>(index: u32, layer: u64, id: u64, f: impl FnOnce(&mut SpanTiming) -> R) -> Option<R> {
    let index = index as usize;
    let slot = SLOTS.get(index)?;
    let key = key_of(index);
    if key.load(Acquire) != id {
        return None;
    }
    let mut slot = Locked::new(slot);
    (key.load(Relaxed) == id && slot.layer() == layer).then(|| f(slot.timing()))
}

/// Frees the slot of span `id` of `layer` and returns its state; `None` when it has none.
pub(super) fn release(layer: u64, id: u64) -> Option<SpanTiming> {
    let (mut slot, key, _) = find(layer, id)?;
    let t = std::mem::replace(
        slot.timing(),
        SpanTiming {
            func: 0,
            call: None,
            last_exit: 0,
        },
    );
    key.store(0, Release);
    Some(t)
}

/// Frees the slot of span `id` of `layer`, when its state is no longer needed (the closing
/// thread holds all of it in a valid view). Takes no lock: no other callback of a span can run
/// while it closes, a slot's `layer` is written only while its key is 0, and the next claim
/// of the slot takes the lock.
#[cold]
#[inline(never)]
pub(super) fn free(layer: u64, id: u64) {
    let b = bucket(layer, id);
    for (way, key) in KEYS[b].0.iter().enumerate() {
        // The key read here (`Acquire`) was published after the slot's `layer` was written.
        if key.load(Acquire) == id && SLOTS[b * WAYS + way].layer.load(Relaxed) == layer {
            key.store(0, Release);
            return;
        }
    }
}

/// [`free`] for a span whose slot was found at `index` before; falls back to [`free`] when
/// that slot is not the span's.
#[inline]
pub(super) fn free_at(index: u32, layer: u64, id: u64) {
    let i = index as usize;
    if i < CAPACITY {
        let key = key_of(i);
        // As in `free`.
        if key.load(Acquire) == id && SLOTS[i].layer.load(Relaxed) == layer {
            key.store(0, Release);
            return;
        }
    }
    free(layer, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_ok(layer: u64, id: u64, t: SpanTiming) -> bool {
        claim(layer, id, t.func).is_some()
    }

    fn timing(func: u32) -> SpanTiming {
        SpanTiming {
            func,
            call: None,
            last_exit: 0,
        }
    }

    /// Ids (not the registry's: these are far above any slab index it hands out) that hash
    /// into one bucket for `layer`.
    fn ids_in_one_bucket(layer: u64, n: usize) -> Vec<u64> {
        let b = bucket(layer, 1 << 60);
        ((1u64 << 60)..).filter(|&id| bucket(layer, id) == b).take(n).collect()
    }

    /// A full bucket refuses a ninth span (it then lives in its extensions); slots are found
    /// by id and layer, and freed at release for the next span.
    #[test]
    fn claims_are_bounded_per_bucket_and_freed_at_release() {
        let layer = 0xA11CE;
        let ids = ids_in_one_bucket(layer, WAYS + 1);
        for (i, &id) in ids[..WAYS].iter().enumerate() {
            assert!(claim_ok(layer, id, timing(i as u32)), "slot {i}");
        }
        assert!(!claim_ok(layer, ids[WAYS], timing(99)), "the bucket is full");
        assert_eq!(with(layer, ids[WAYS], |t, _| t.func), None);
        assert_eq!(with(layer, ids[3], |t, _| t.func), Some(3));
        assert_eq!(
            with(layer + 1, ids[3], |t, _| t.func),
            None,
            "another layer's span of the same id"
        );
        assert_eq!(release(layer, ids[3]).map(|t| t.func), Some(3));
        assert_eq!(with(layer, ids[3], |t, _| t.func), None);
        free(layer + 1, ids[4]);
        assert_eq!(with(layer, ids[4], |t, _| t.func), Some(4), "another layer's free");
        free(layer, ids[4]);
        assert_eq!(with(layer, ids[4], |t, _| t.func), None);
        assert!(claim_ok(layer, ids[4], timing(4)));
        assert!(claim_ok(layer, ids[WAYS], timing(99)), "a freed slot is reused");
        assert_eq!(with(layer, ids[WAYS], |t, _| t.func), Some(99));
        for &id in ids.iter().filter(|&&id| id != ids[3]) {
            assert!(release(layer, id).is_some());
        }
    }

    /// A slot found once is reached again by its index, only while it is still the span's:
    /// after the span's release, or for another layer's span of the same id, it is not.
    #[test]
    fn slots_are_reached_by_index_while_they_are_the_spans() {
        let layer = 0xC0DE;
        let ids = ids_in_one_bucket(layer, 2);
        let a = claim(layer, ids[0], 7).expect("a slot");
        assert_eq!(with(layer, ids[0], |_, i| i), Some(a));
        assert_eq!(with_at(a, layer, ids[0], |t| t.func), Some(7));
        assert_eq!(with_at(a, layer + 1, ids[0], |t| t.func), None, "another layer");
        assert_eq!(with_at(a, layer, ids[1], |t| t.func), None, "another span");
        assert_eq!(with_at(u32::MAX, layer, ids[0], |t| t.func), None, "no slot");
        free_at(a, layer + 1, ids[0]);
        assert_eq!(with_at(a, layer, ids[0], |t| t.func), Some(7), "another layer's free");
        free_at(a, layer, ids[0]);
        assert_eq!(with_at(a, layer, ids[0], |t| t.func), None);
        assert_eq!(with(layer, ids[0], |t, _| t.func), None);
        // The same slot, now another span's: the old index does not reach it for the old id.
        let b = claim(layer, ids[1], 8).expect("a slot");
        assert_eq!(b, a, "the freed way is the first free one");
        assert_eq!(with_at(a, layer, ids[0], |t| t.func), None);
        // A stale index falls back to a search when freeing.
        let c = claim(layer, ids[0], 9).expect("a slot");
        assert_ne!(c, a);
        free_at(a, layer, ids[0]);
        assert_eq!(with(layer, ids[0], |t, _| t.func), None);
        assert_eq!(release(layer, ids[1]).map(|t| t.func), Some(8));
    }

    /// Threads updating the same spans at once lose no update: the slot's lock serializes
    /// them. (It caught a lock whose failed attempts released the holder's lock.)
    #[test]
    fn concurrent_updates_of_one_span_all_land() {
        let layer = 0xB0B;
        let ids = ids_in_one_bucket(layer, 2);
        for &id in &ids {
            assert!(claim_ok(layer, id, timing(1)));
        }
        std::thread::scope(|s| {
            for t in 0..4 {
                let ids = &ids;
                s.spawn(move || {
                    for i in 0..20_000u64 {
                        with(layer, ids[(i as usize + t) % 2], |x, _| x.last_exit += 1);
                    }
                });
            }
        });
        let total: u64 = ids
            .iter()
            .map(|&id| release(layer, id).expect("claimed").last_exit)
            .sum();
        assert_eq!(total, 80_000);
    }
}
