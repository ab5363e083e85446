//! The registry of recording threads: every set of per-thread tables whose figures count,
//! and the merged totals of tables that were folded away.
//!
//! Each recording thread writes a [`ThreadTables`] (shared by `Arc` with the registry) that
//! only it writes, with plain relaxed stores; readers merge it concurrently. Tables outlive
//! their thread: an exiting thread hands them back, figures and all, with its kit
//! (`record/kits.rs`), and the next thread to take that kit records on top of them, so an
//! exit folds nothing and a first call zeroes nothing. Tables stay registered, and counted,
//! from the moment they are made until the kits' thread folds them into the retired totals
//! (a kit freed, or zeroed for a thread that may exclude itself).
//!
//! A thread's first call and its exit never take a lock: registering and retiring a thread
//! only moves counters, and tables are entered in the registry (when a kit is made) by a
//! compare-and-swap on a free entry. The registry's lock is taken only by readers, to clone
//! the `Arc`s of the registered tables and the retired totals at one instant, and by the
//! thread folding tables, to swap the totals and let go of the folded tables at that same
//! instant: so readers count every figure exactly once, and no application thread ever
//! waits behind a reader (a reader preempted while holding the lock can delay the kits'
//! thread, which only makes kits clean later: `record/kits.rs`).

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::callsite::MAX_FUNCTIONS;
use crate::record::config::MAX_CALL_TREE_NODES_LIMIT;
use crate::record::storage::{Chunked, FnCell, NodeCell, Totals, FN_CHUNK, NODE_CHUNK};
use crate::record::window;

/// The figures one thread has recorded in its current window.
pub(crate) struct ThreadTables {
    /// The window these figures belong to.
    pub(crate) epoch: AtomicU64,
    /// Set by [`crate::record::exclude_current_thread`]: never read into a snapshot, never retired.
    pub(crate) excluded: AtomicBool,
    pub(crate) nodes: Chunked<NodeCell, NODE_CHUNK>,
    pub(crate) fns: Chunked<FnCell, FN_CHUNK>,
    /// Calls whose path was folded into its parent (the node cap was reached).
    pub(crate) folded_calls: AtomicU64,
    /// Set when a thread took these tables with the figures of earlier threads in them
    /// (`record/kits.rs`): then they cannot be excluded as they are.
    pub(crate) inherited: AtomicBool,
    /// Its entry in the registry; null while not registered.
    entry: AtomicPtr<Entry>,
}

/// Chunks of node figures a pooled set keeps (1,024 nodes, 64 KiB); a set that grew past
/// this, or past [`KEEP_FN_CHUNKS`], is freed rather than reused.
pub(crate) const KEEP_NODE_CHUNKS: usize = 4;
/// Chunks of function figures a pooled set keeps (64 functions, 26 KiB and their histograms).
pub(crate) const KEEP_FN_CHUNKS: usize = 8;

impl ThreadTables {
    /// Empty tables, with the first chunk of nodes and of functions made (a thread's first
    /// calls mostly land there).
    pub(crate) fn new() -> Self {
        let t = Self {
            epoch: AtomicU64::new(0),
            excluded: AtomicBool::new(false),
            nodes: Chunked::new(MAX_CALL_TREE_NODES_LIMIT as usize),
            fns: Chunked::new(MAX_FUNCTIONS),
            folded_calls: AtomicU64::new(0),
            inherited: AtomicBool::new(false),
            entry: AtomicPtr::new(std::ptr::null_mut()),
        };
        t.nodes.get_or_alloc(0);
        t.fns.get_or_alloc(0);
        t
    }

    /// Makes tables that a thread has left (and that were folded into the retired totals)
    /// ready for another thread: every figure zeroed, the chunks kept. `false` when they
    /// hold more chunks than a pooled set may keep: then they are to be freed instead.
    pub(crate) fn reset_for_reuse(&mut self) -> bool {
        if !self.within_keep_limits() {
            return false;
        }
        self.nodes.for_each(|_, c| c.clear());
        self.fns.for_each(|_, c| c.clear());
        *self.folded_calls.get_mut() = 0;
        *self.excluded.get_mut() = false;
        *self.inherited.get_mut() = false;
        true
    }

    /// Whether they hold no more chunks than a kept kit's tables may (see [`KEEP_NODE_CHUNKS`]).
    pub(crate) fn within_keep_limits(&self) -> bool {
        self.nodes.chunks() <= KEEP_NODE_CHUNKS && self.fns.chunks() <= KEEP_FN_CHUNKS
    }

    /// Whether they are entered in the registry (counted by readers).
    pub(crate) fn registered(&self) -> bool {
        !self.entry.load(Relaxed).is_null()
    }

    fn add_to(&self, t: &mut Totals) {
        self.nodes.for_each(|i, c| t.add_node(i, c));
        self.fns.for_each(|i, c| t.add_fn(i, c));
        t.folded_calls += self.folded_calls.load(Relaxed);
    }

    /// Whether a reader of window `epoch` counts these figures.
    pub(crate) fn counts_in(&self, epoch: u64) -> bool {
        self.epoch.load(Relaxed) == epoch && !self.excluded.load(Relaxed)
    }
}

/// An entry of the registry: [`FREE`], or holding one reference to registered tables.
struct Entry {
    state: AtomicU8,
    /// From `Arc::into_raw`; written while the entry is [`CLAIMED`], taken back (under the
    /// registry's lock) before it is made [`FREE`].
    tables: AtomicPtr<ThreadTables>,
}

/// Holds nothing.
const FREE: u8 = 0;
/// Being filled by [`enroll`]: not counted yet (the tables hold no figures yet).
const CLAIMED: u8 = 1;
/// Registered: readers count the tables.
const COUNTED: u8 = 2;
/// Registered, counted, and no longer in any kit: for the kits' thread to fold ([`orphan`]).
const ORPHANED: u8 = 3;
/// Orphaned tables the kits' thread is folding: still counted until the fold's swap.
const FOLDING: u8 = 4;

/// Whether readers count the tables of an entry in `state`.
fn counted(state: u8) -> bool {
    matches!(state, COUNTED | ORPHANED | FOLDING)
}

/// Entries per segment of the registry.
const SEGMENT: usize = 64;

/// A fixed run of entries; segments are linked, appended (by compare-and-swap) when every
/// entry is taken, and never freed: the registry is as large as the most tables that were
/// registered at once.
struct Segment {
    entries: [Entry; SEGMENT],
    next: AtomicPtr<Segment>,
}

impl Segment {
    const fn new() -> Self {
        Segment {
            entries: [const {
                Entry {
                    state: AtomicU8::new(FREE),
                    tables: AtomicPtr::new(std::ptr::null_mut()),
                }
            }; SEGMENT],
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    fn next(&self) -> Option<&'static Segment> {
        let p = self.next.load(Acquire);
        // SAFETY: a non-null `next` came from `Box::into_raw`, published with Release, and
        // is never freed.
        (!p.is_null()).then(|| unsafe { &*p })
    }
}

static FIRST: Segment = Segment::new();

/// Every entry of the registry.
fn entries() -> impl Iterator<Item = &'static Entry> {
    std::iter::successors(Some(&FIRST), |s| s.next()).flat_map(|s| s.entries.iter())
}

/// What the registry's lock guards: the retired totals, swapped as tables are folded.
struct Readers {
    /// Merged figures of folded tables of the current window (`None`: nothing yet).
    retired: Option<Arc<Totals>>,
}

/// Taken by readers, to clone the registered tables and the retired totals at one
/// instant, and by the thread folding tables, to swap the totals and free the folded
/// tables' entries at one instant: never by a recording thread's first call or exit.
/// Nothing is allocated or freed under it.
static REGISTRY: Mutex<Readers> = Mutex::new(Readers { retired: None });

/// Held by the thread folding tables into the retired totals, with the buffers it reuses
/// from one fold to the next, so that a fold calls the allocator only when the totals grow
/// (`spare`: the totals a fold replaced, once no reader holds them).
static FOLDING_BUFFERS: Mutex<FoldBuffers> = Mutex::new(FoldBuffers {
    spare: None,
    released: Vec::new(),
});

struct FoldBuffers {
    spare: Option<Arc<Totals>>,
    /// The registry's references to the tables a fold let go of, dropped outside the lock.
    released: Vec<Arc<ThreadTables>>,
}

fn lock() -> MutexGuard<'static, Readers> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry's lock, held as a reader preempted while copying the registered tables would
/// hold it, until dropped. For tests: a thread's first call and its exit must not wait for it.
#[doc(hidden)]
pub struct RegistryHold(#[allow(dead_code)] MutexGuard<'static, Readers>);

impl std::fmt::Debug for RegistryHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryHold")
    }
}

/// See [`RegistryHold`].
pub(crate) fn hold_registry() -> RegistryHold {
    RegistryHold(lock())
}

/// Live recording threads.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Threads that have exited since the process started.
static EXITED: AtomicU64 = AtomicU64::new(0);

/// Enters `tables` (not registered, and holding no figures) in the registry: from now on
/// readers count them. Lock-free; calls the allocator only when every entry is taken (to
/// add a segment).
pub(crate) fn enroll(tables: &Arc<ThreadTables>) {
    debug_assert!(tables.entry.load(Relaxed).is_null());
    let raw = Arc::into_raw(Arc::clone(tables)).cast_mut();
    let mut segment = &FIRST;
    loop {
        for e in &segment.entries {
            if e.state.load(Relaxed) == FREE && e.state.compare_exchange(FREE, CLAIMED, Acquire, Relaxed).is_ok() {
                e.tables.store(raw, Relaxed);
                tables.entry.store(std::ptr::from_ref(e).cast_mut(), Relaxed);
                e.state.store(COUNTED, Release);
                return;
            }
        }
        segment = match segment.next() {
            Some(next) => next,
            None => {
                let new = Box::into_raw(Box::new(Segment::new()));
                match segment
                    .next
                    .compare_exchange(std::ptr::null_mut(), new, Release, Acquire)
                {
                    // SAFETY: just published; segments are never freed.
                    Ok(_) => unsafe { &*new },
                    Err(other) => {
                        // SAFETY: `new` was not published; `other` was, by another thread.
                        drop(unsafe { Box::from_raw(new) });
                        unsafe { &*other }
                    }
                }
            }
        };
    }
}

/// Leaves registered `tables`, which no thread will record into again and no kit holds,
/// counted until the kits' thread folds them ([`claim_orphans`]).
pub(crate) fn orphan(tables: &ThreadTables) {
    let e = tables.entry.load(Relaxed);
    if !e.is_null() {
        // SAFETY: entries are never freed.
        let _ = unsafe { &*e }
            .state
            .compare_exchange(COUNTED, ORPHANED, Release, Relaxed);
    }
}

/// Claims orphaned tables for a fold, into `out` (they stay counted until it swaps).
pub(crate) fn claim_orphans(out: &mut Vec<Arc<ThreadTables>>) {
    for e in entries() {
        if e.state.load(Relaxed) == ORPHANED && e.state.compare_exchange(ORPHANED, FOLDING, Acquire, Relaxed).is_ok() {
            let p = e.tables.load(Relaxed);
            // SAFETY: the entry holds a reference made by `Arc::into_raw`, given up only by
            // a fold, which only the thread that claimed it (this one) makes.
            out.push(unsafe {
                Arc::increment_strong_count(p);
                Arc::from_raw(p)
            });
        }
    }
}

/// Gives up the registry's reference to `tables` (under the registry's lock).
fn unregister(tables: &ThreadTables, _: &MutexGuard<'static, Readers>) -> Option<Arc<ThreadTables>> {
    let e = tables.entry.swap(std::ptr::null_mut(), Relaxed);
    if e.is_null() {
        return None;
    }
    // SAFETY: entries are never freed.
    let e = unsafe { &*e };
    let p = e.tables.swap(std::ptr::null_mut(), Relaxed);
    e.state.store(FREE, Release);
    // SAFETY: the reference `enroll` made, given up once, here.
    (!p.is_null()).then(|| unsafe { Arc::from_raw(p) })
}

/// Registers the calling thread on `tables` (from a kit: zeroed, or with the figures of
/// earlier threads, see [`ThreadTables::inherited`]) and returns the window its tables hold
/// figures of. No lock, no allocation.
pub(crate) fn register(tables: &ThreadTables) -> u64 {
    LIVE.fetch_add(1, Relaxed);
    if !tables.inherited.load(Relaxed) {
        // Zeroed: they hold figures of the current window from now on. (Inherited tables
        // keep theirs: if of an older window, the thread clears them at its first call.)
        tables.epoch.store(window::epoch(), Relaxed);
    }
    tables.epoch.load(Relaxed)
}

/// Counts an exiting thread out. Its figures stay in its tables, registered, and counted,
/// until its kit is folded (`record/kits.rs`). No lock, no allocation.
pub(crate) fn retire(_: &ThreadTables) {
    LIVE.fetch_sub(1, Relaxed);
    EXITED.fetch_add(1, Relaxed);
}

/// Folds `tables`, registered and recorded into by no thread (kits the caller holds, or
/// orphans it claimed), into the retired totals, and unregisters them. The merge runs
/// outside the registry's lock; under it, the totals are swapped and the tables unregistered
/// at one instant, so readers count their figures exactly once. Calls the allocator only
/// when the totals grow.
pub(crate) fn fold(tables: &[Arc<ThreadTables>]) {
    if tables.is_empty() {
        return;
    }
    let mut buffers = FOLDING_BUFFERS.lock().unwrap_or_else(|p| p.into_inner());
    let mut released = std::mem::take(&mut buffers.released);
    released.reserve(tables.len());
    loop {
        let (base, epoch) = {
            let r = lock();
            (r.retired.clone(), window::epoch())
        };
        let mut next = buffers.spare.take().unwrap_or_default();
        // The spare is held by no one else (kept only so): no copy is made here.
        let totals = Arc::make_mut(&mut next);
        match base.as_deref() {
            Some(b) => totals.copy_from(b),
            None => *totals = Totals::default(),
        }
        for t in tables {
            if t.counts_in(epoch) {
                t.add_to(totals);
            }
        }
        let mut folded = Some(next);
        let done = {
            let mut r = lock();
            // After a reset, what was merged belongs to the old window: merge again.
            let done = window::epoch() == epoch;
            if done {
                std::mem::swap(&mut r.retired, &mut folded);
                released.extend(tables.iter().filter_map(|t| unregister(t, &r)));
            }
            done
        };
        // Outside the lock: the registry's references are let go, and the totals replaced
        // (or not kept) are kept for the next fold if no reader holds them.
        released.clear();
        drop(base);
        if let Some(mut old) = folded {
            if Arc::get_mut(&mut old).is_some() {
                buffers.spare = Some(old);
            }
        }
        if done {
            buffers.released = released;
            return;
        }
    }
}

/// Clones the registered tables into `out` (emptied) and returns them with the retired
/// totals and the window, all read at one instant. `out` is sized before the lock is taken
/// (again, if tables were registered meanwhile): nothing is allocated under it.
fn copy_registered(mut out: Vec<Arc<ThreadTables>>) -> (Vec<Arc<ThreadTables>>, Option<Arc<Totals>>, u64) {
    loop {
        out.clear();
        let wanted = entries().filter(|e| counted(e.state.load(Relaxed))).count() + 8;
        if out.capacity() < wanted {
            out = Vec::with_capacity(wanted * 2);
        }
        let r = lock();
        let mut fits = true;
        for e in entries() {
            if counted(e.state.load(Acquire)) {
                if out.len() == out.capacity() {
                    fits = false;
                    break;
                }
                let p = e.tables.load(Relaxed);
                // SAFETY: a counted entry holds a reference made by `Arc::into_raw`, given
                // up only under the lock, which this thread holds.
                out.push(unsafe {
                    Arc::increment_strong_count(p);
                    Arc::from_raw(p)
                });
            }
        }
        if fits {
            return (out, r.retired.clone(), window::epoch());
        }
    }
}

/// Figures of the current window merged over every thread, live and exited.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub(crate) totals: Totals,
    pub(crate) epoch: u64,
    pub(crate) live_threads: usize,
    pub(crate) exited_threads: u64,
}

/// Merges the current window's figures of every thread. The registered tables are cloned
/// under the lock; the merge itself runs outside it.
pub(crate) fn merge() -> Merged {
    let (tables, retired, epoch) = copy_registered(Vec::new());
    let (live_threads, exited_threads) = (LIVE.load(Relaxed), EXITED.load(Relaxed));
    let mut totals = retired.as_deref().cloned().unwrap_or_default();
    for d in &tables {
        if d.counts_in(epoch) {
            d.add_to(&mut totals);
        }
    }
    Merged {
        totals,
        epoch,
        live_threads,
        exited_threads,
    }
}

/// Starts a new window: every figure recorded from now on counts, earlier ones do not.
///
/// Threads clear their own tables lazily at their next recorded boundary; readers ignore
/// tables of an older window in the meantime. Calls running across the reset are recorded
/// in the new window in full.
pub fn reset() {
    let old = {
        let mut r = lock();
        window::begin_new();
        r.retired.take()
    };
    drop(old);
}
