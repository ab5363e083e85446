//! Where the layer keeps a span's state: a fixed table of slots keyed by span id, in place of
//! the span's extensions in the `Registry`.
//!
//! Reaching a span's extensions costs a registry lookup (a sharded-slab read with two atomic
//! reference count updates), the extensions' lock, a type-keyed map lookup and, the first
//! time, a boxed insert that the registry frees again at close. A slot costs one hash and one
//! cache line of keys to find.
//!
//! - **Claimed at creation.** `on_new_span` claims a slot on the creating thread (one
//!   compare-and-swap of a free key), before any other thread can know the span's id, so a
//!   span's home (a slot, or the extensions when its bucket is full) is decided once, with no
//!   race: every later access looks in the table first and falls back to the extensions only
//!   when the span has no slot.
//! - **Two halves.** The creating thread, the slot's *owner*, keeps what its own entries
//!   measure in the slot's owner half ([`Slot::start_own`], [`Slot::add_own`]) with plain
//!   stores: no lock, no read-modify-write. Every other thread books its entries in the
//!   shared half, under the slot's lock ([`Slot::with_shared`]). A span's figures are the
//!   merge of both halves ([`Partial::merge`]), taken when it closes.
//! - **Why the owner half needs no lock.** Only the owner writes it. The closing thread reads
//!   it once no callback of the span can run: the registry closes a span when its last
//!   handle is dropped, and every handle's drop (a release decrement of the span's reference
//!   count, acquired by the closing one) comes after the callbacks made with it, so the
//!   owner's stores happen before the close. The one figure read while the owner may be
//!   writing is the call's start, which another thread entering the span needs for the call's
//!   place in the tree: it is published once, with a release store of a flag after it.
//!   (A seqlock over the owner half would also let other threads read its running figures;
//!   nothing needs them before the close, so none is paid for.)
//! - **Freed at close.** `on_close` runs before the registry frees the id for reuse, and no
//!   other callback of the span can run then (its last handle is gone).
//! - **Bounded.** 8,192 spans open at once (per process, over every layer instance), 8 per
//!   bucket; beyond that, or in a full bucket, spans use their extensions. Keys are 64 KiB;
//!   slots 1 MiB of zeroed static memory, touched only as used.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use crate::record::call::{InFlightCall, TreePlace};

const WAYS: usize = 8;
const BUCKETS: usize = 1024;

#[repr(align(64))]
struct Keys([AtomicU64; WAYS]);

/// What the entries of a span measured, on one side of its slot (or in its extensions): the
/// first entry's place and start (raw clock ticks, `super::ticks`), the entries' busy time
/// and the latency of their children, and the last exit (ticks).
#[derive(Clone, Copy, Debug)]
pub(super) struct Partial {
    pub(super) start: Option<(TreePlace, u64)>,
    pub(super) busy: u64,
    pub(super) child: u64,
    pub(super) last_exit: u64,
}

impl Partial {
    pub(super) const EMPTY: Partial = Partial {
        start: None,
        busy: 0,
        child: 0,
        last_exit: 0,
    };

    /// Records a start: the earliest of two starts wins, with its place.
    #[inline]
    pub(super) fn start_at(&mut self, place: TreePlace, at: u64) {
        if self.start.is_none_or(|(_, s)| at < s) {
            self.start = Some((place, at));
        }
    }

    /// Adds an exited entry.
    #[inline]
    pub(super) fn add(&mut self, busy: u64, child: u64, end: u64) {
        self.busy += busy;
        self.child += child;
        self.last_exit = self.last_exit.max(end);
    }

    /// Both sides together: the earliest start (with its place), the sums, the latest exit.
    #[inline]
    pub(super) fn merge(self, other: Partial) -> Partial {
        let start = match (self.start, other.start) {
            (Some(a), Some(b)) => Some(if b.1 < a.1 { b } else { a }),
            (a, b) => a.or(b),
        };
        Partial {
            start,
            busy: self.busy + other.busy,
            child: self.child + other.child,
            last_exit: self.last_exit.max(other.last_exit),
        }
    }

    /// The call of function `func` these figures describe; `None` for a span never entered.
    #[inline]
    pub(super) fn call(&self, func: u32) -> Option<InFlightCall> {
        self.start.map(|(place, started_ns)| InFlightCall {
            func,
            place,
            started_ns,
            busy_ns: self.busy,
            child_latency_ns: self.child,
        })
    }

    /// The node of the call, once started.
    #[inline]
    pub(super) fn node(&self) -> Option<u32> {
        self.start.map(|(place, _)| place.node)
    }
}

/// A span's state. The key (in `KEYS`), `layer`, `owner` and `func` are written by the
/// claiming thread before it publishes `layer` (release), and read after `layer` matched
/// (acquire). The owner half is written by the owner only; the shared half under `lock`.
pub(super) struct Slot {
    layer: AtomicU64,
    /// The owner's token (`super::thread_state::LayerThreadState::token`); 0: no thread owns the slot.
    owner: AtomicU64,
    func: AtomicU32,
    /// 1 once the owner's start (`own_node`, `own_parent`, `own_folded`, `own_start`) is
    /// written (release).
    own_started: AtomicU32,
    own_node: AtomicU32,
    own_parent: AtomicU32,
    own_folded: AtomicBool,
    own_start: AtomicU64,
    own_busy: AtomicU64,
    own_child: AtomicU64,
    own_last_exit: AtomicU64,
    /// 1 once another thread booked something in `shared` (written under `lock`); until then
    /// `shared` holds a former span's figures, and is reset by the first such booking.
    others: AtomicU32,
    lock: AtomicU32,
    shared: UnsafeCell<Partial>,
}

// SAFETY: `shared` is accessed only by the thread holding `lock` (see `Locked`).
unsafe impl Sync for Slot {}

// The slots' 1 MiB in the module docs: 8,192 slots of 128 bytes.
const _: () = assert!(std::mem::size_of::<Slot>() == 128 && WAYS * BUCKETS == 8_192);

static KEYS: [Keys; BUCKETS] = [const { Keys([const { AtomicU64::new(0) }; WAYS]) }; BUCKETS];
static SLOTS: [[Slot; WAYS]; BUCKETS] = [const {
    [const {
        Slot {
            layer: AtomicU64::new(0),
            owner: AtomicU64::new(0),
            func: AtomicU32::new(0),
            own_started: AtomicU32::new(0),
            own_node: AtomicU32::new(0),
            own_parent: AtomicU32::new(0),
            own_folded: AtomicBool::new(false),
            own_start: AtomicU64::new(0),
            own_busy: AtomicU64::new(0),
            own_child: AtomicU64::new(0),
            own_last_exit: AtomicU64::new(0),
            others: AtomicU32::new(0),
            lock: AtomicU32::new(0),
            shared: UnsafeCell::new(Partial::EMPTY),
        }
    }; WAYS]
}; BUCKETS];

/// The bucket of span `id` of `layer`, from the bits of a `Registry` span id that name its
/// place in the registry's slab: the low 51 (38 for the slot and 13 for the thread shard in
/// sharded-slab's default configuration, which the registry uses); the 13 above count the
/// place's reuses (the slab's generation), and the shift drops them. Leaving those out keeps
/// a place that the registry reuses for span after span in the same bucket, whose lines stay
/// in the cache. Only where spans land depends on this: keys are compared whole. The layer's
/// instance (a small counter) goes in the low bits the shift cleared.
#[inline(always)]
fn bucket(layer: u64, id: u64) -> usize {
    (((id << 13) ^ layer).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros())) as usize
}

/// The lock of a slot's shared half, held; unlocked when dropped.
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

    /// Waits for the lock: held by another thread only for a few stores.
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
}

impl Drop for Locked {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.lock.store(0, Release);
    }
}

/// A span's slot, found by [`find`] or [`claim`].
#[derive(Clone, Copy)]
pub(super) struct Found {
    pub(super) slot: &'static Slot,
    key: &'static AtomicU64,
}

/// Gives span `id` of `layer` a slot owned by `owner` (0: none) for function `func`, with
/// nothing measured yet. `None` when its bucket is full: the span then lives in its
/// extensions.
#[inline]
pub(super) fn claim(layer: u64, id: u64, func: u32, owner: u64) -> Option<Found> {
    let b = bucket(layer, id);
    let keys = &KEYS[b].0;
    for way in 0..WAYS {
        let key = &keys[way];
        if key.load(Relaxed) != 0 || key.compare_exchange(0, id, Acquire, Relaxed).is_err() {
            continue;
        }
        let slot = &SLOTS[b][way];
        slot.owner.store(owner, Relaxed);
        slot.func.store(func, Relaxed);
        slot.own_started.store(0, Relaxed);
        slot.own_busy.store(0, Relaxed);
        slot.own_child.store(0, Relaxed);
        slot.own_last_exit.store(0, Relaxed);
        slot.others.store(0, Relaxed);
        // Published last: a reader that finds the key checks the layer (acquire) and then
        // sees the stores above.
        slot.layer.store(layer, Release);
        return Some(Found { slot, key });
    }
    None
}

/// The slot of span `id` of `layer`; `None` when the span has none.
#[inline(always)]
pub(super) fn find(layer: u64, id: u64) -> Option<Found> {
    let b = bucket(layer, id);
    let keys = &KEYS[b].0;
    for way in 0..WAYS {
        let key = &keys[way];
        if key.load(Acquire) == id {
            let slot = &SLOTS[b][way];
            if slot.layer.load(Acquire) == layer {
                return Some(Found { slot, key });
            }
        }
    }
    None
}

impl Found {
    /// Frees the slot and returns the span's figures, both halves merged, with its function.
    /// Called at close, when no other callback of the span can run (see the module docs).
    #[inline]
    pub(super) fn release(self) -> (u32, Partial) {
        let s = self.slot;
        let mut own = Partial {
            start: None,
            busy: s.own_busy.load(Relaxed),
            child: s.own_child.load(Relaxed),
            last_exit: s.own_last_exit.load(Relaxed),
        };
        if s.own_started.load(Acquire) != 0 {
            own.start = Some(s.own_start_unchecked());
        }
        if s.others.load(Acquire) != 0 {
            own = own.merge(s.shared());
        }
        let func = s.func.load(Relaxed);
        s.layer.store(0, Relaxed);
        self.key.store(0, Release);
        (func, own)
    }
}

impl Slot {
    #[inline(always)]
    pub(super) fn func(&self) -> u32 {
        self.func.load(Relaxed)
    }

    #[inline(always)]
    pub(super) fn owned_by(&self, owner: u64) -> bool {
        self.owner.load(Relaxed) == owner
    }

    /// The node of the call as the owner started it, if it did.
    #[inline(always)]
    pub(super) fn own_node(&self) -> Option<u32> {
        (self.own_started.load(Acquire) != 0).then(|| self.own_node.load(Relaxed))
    }

    #[inline(always)]
    fn own_start_unchecked(&self) -> (TreePlace, u64) {
        (
            TreePlace {
                node: self.own_node.load(Relaxed),
                parent: self.own_parent.load(Relaxed),
                folded: self.own_folded.load(Relaxed),
            },
            self.own_start.load(Relaxed),
        )
    }

    /// Whether another thread booked figures in the shared half.
    #[inline(always)]
    pub(super) fn others(&self) -> bool {
        self.others.load(Acquire) != 0
    }

    /// The owner's first entry started the call at `place`, at `at` (ticks). Owner only.
    #[inline(always)]
    pub(super) fn start_own(&self, place: TreePlace, at: u64) {
        self.own_node.store(place.node, Relaxed);
        self.own_parent.store(place.parent, Relaxed);
        self.own_folded.store(place.folded, Relaxed);
        self.own_start.store(at, Relaxed);
        self.own_started.store(1, Release);
    }

    /// An entry of the owner exited. Owner only: plain loads and stores.
    #[inline(always)]
    pub(super) fn add_own(&self, busy: u64, child: u64, end: u64) {
        self.own_busy.store(self.own_busy.load(Relaxed) + busy, Relaxed);
        self.own_child.store(self.own_child.load(Relaxed) + child, Relaxed);
        self.own_last_exit
            .store(self.own_last_exit.load(Relaxed).max(end), Relaxed);
    }

    /// Runs `f` on the shared half, under the lock, with the owner's start (`None` until
    /// published). `book`: `f` books figures of a thread other than the owner (the first such
    /// booking resets the half).
    #[inline]
    pub(super) fn with_shared<R>(
        &'static self,
        book: bool,
        f: impl FnOnce(&mut Partial, Option<(TreePlace, u64)>) -> R,
    ) -> R {
        let _lock = Locked::new(self);
        // SAFETY: this thread holds the lock.
        let shared = unsafe { &mut *self.shared.get() };
        if self.others.load(Relaxed) == 0 {
            if !book {
                let mut none = Partial::EMPTY;
                return f(&mut none, self.own_start());
            }
            *shared = Partial::EMPTY;
            self.others.store(1, Release);
        }
        f(shared, self.own_start())
    }

    #[inline(always)]
    fn own_start(&self) -> Option<(TreePlace, u64)> {
        (self.own_started.load(Acquire) != 0).then(|| self.own_start_unchecked())
    }

    /// A copy of the shared half.
    fn shared(&'static self) -> Partial {
        self.with_shared(false, |p, _| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids (not the registry's: these are far above any slab index it hands out) that hash
    /// into one bucket for `layer`.
    fn ids_in_one_bucket(layer: u64, n: usize) -> Vec<u64> {
        let b = bucket(layer, 1 << 60);
        ((1u64 << 60)..).filter(|&id| bucket(layer, id) == b).take(n).collect()
    }

    fn place(node: u32) -> TreePlace {
        TreePlace {
            node,
            folded: false,
            parent: 0,
        }
    }

    /// A full bucket refuses a ninth span (it then lives in its extensions); slots are found
    /// by id and layer, and freed at release for the next span.
    #[test]
    fn claims_are_bounded_per_bucket_and_freed_at_release() {
        let layer = 0xA11CE;
        let ids = ids_in_one_bucket(layer, WAYS + 1);
        for (i, &id) in ids[..WAYS].iter().enumerate() {
            assert!(claim(layer, id, i as u32, 1).is_some(), "slot {i}");
        }
        assert!(claim(layer, ids[WAYS], 99, 1).is_none(), "the bucket is full");
        assert!(find(layer, ids[WAYS]).is_none());
        assert_eq!(find(layer, ids[3]).map(|f| f.slot.func()), Some(3));
        assert!(find(layer + 1, ids[3]).is_none(), "another layer's span of the same id");
        let (func, p) = find(layer, ids[3]).expect("claimed").release();
        assert_eq!(func, 3);
        assert!(p.call(func).is_none(), "never entered: no call");
        assert!(find(layer, ids[3]).is_none());
        assert!(claim(layer, ids[WAYS], 99, 1).is_some(), "a freed slot is reused");
        assert_eq!(find(layer, ids[WAYS]).map(|f| f.slot.func()), Some(99));
        for &id in ids.iter().filter(|&&id| id != ids[3]) {
            find(layer, id).expect("claimed").release();
        }
    }

    /// A reused slot starts empty: the figures of its former span, owner's and others', are
    /// gone.
    #[test]
    fn a_reused_slot_holds_nothing_of_its_former_span() {
        let layer = 0xF00D;
        let id = ids_in_one_bucket(layer, 1)[0];
        let f = claim(layer, id, 5, 1).expect("a slot");
        f.slot.start_own(place(3), 100);
        f.slot.add_own(10, 1, 200);
        f.slot.with_shared(true, |p, _| p.add(20, 2, 300));
        let (_, p) = f.release();
        assert_eq!((p.busy, p.child, p.last_exit), (30, 3, 300));
        let f = claim(layer, id, 6, 2).expect("a slot");
        let (func, p) = f.release();
        assert_eq!(func, 6);
        assert!(p.start.is_none());
        assert_eq!((p.busy, p.child, p.last_exit), (0, 0, 0));
    }

    /// The owner's half and the shared half merge at release: the earliest start with its
    /// place, busy time and child latency summed, the latest exit.
    #[test]
    fn both_halves_merge_at_release() {
        let layer = 0xBEEF;
        let id = ids_in_one_bucket(layer, 1)[0];
        let f = claim(layer, id, 7, 1).expect("a slot");
        assert!(f.slot.owned_by(1) && !f.slot.owned_by(2));
        assert_eq!(f.slot.own_node(), None);
        f.slot.start_own(place(4), 150);
        assert_eq!(f.slot.own_node(), Some(4));
        f.slot.add_own(10, 1, 400);
        assert!(!f.slot.others());
        let seen = f.slot.with_shared(true, |p, own| {
            p.start_at(place(9), 100);
            p.add(20, 2, 300);
            own
        });
        assert_eq!(seen.map(|(pl, at)| (pl.node, at)), Some((4, 150)));
        assert!(f.slot.others());
        let (func, p) = f.release();
        let call = p.call(func).expect("a call");
        assert_eq!((call.func, call.place.node, call.started_ns), (7, 9, 100));
        assert_eq!((call.busy_ns, call.child_latency_ns, p.last_exit), (30, 3, 400));
    }

    /// Threads booking in one span's shared half at once lose no update: the lock serializes
    /// them. (It caught a lock whose failed attempts released the holder's lock.)
    #[test]
    fn concurrent_updates_of_one_span_all_land() {
        let layer = 0xB0B;
        let ids = ids_in_one_bucket(layer, 2);
        let slots: Vec<Found> = ids.iter().map(|&id| claim(layer, id, 1, 0).expect("a slot")).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let slots = &slots;
                s.spawn(move || {
                    for i in 0..20_000usize {
                        slots[(i + t) % 2].slot.with_shared(true, |p, _| p.busy += 1);
                    }
                });
            }
        });
        let total: u64 = slots.into_iter().map(|f| f.release().1.busy).sum();
        assert_eq!(total, 80_000);
    }
}
