//! Per-thread statistics storage: lazily allocated chunks that never move, so the owning
//! thread writes with plain relaxed stores while snapshotting threads read concurrently.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::record::alloc::AllocCounters;
use crate::record::histogram::{AtomicHistogram, BUCKETS};

/// Call-tree nodes per chunk of a thread's node table.
pub(crate) const NODE_CHUNK: usize = 256;
/// Functions per chunk of a thread's function table.
pub(crate) const FN_CHUNK: usize = 8;

/// Per-thread figures of one call-tree node (a path of annotated functions).
#[derive(Default)]
pub(crate) struct NodeCell {
    pub(crate) calls: AtomicU64,
    pub(crate) wall_self: AtomicU64,
    pub(crate) busy_self: AtomicU64,
    pub(crate) cpu_self: AtomicU64,
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) alloc_count: AtomicU64,
    pub(crate) freed_bytes: AtomicU64,
    pub(crate) freed_count: AtomicU64,
}

/// Per-thread figures of one function: 48 bytes of counters and the histogram's 360-byte
/// directory.
pub(crate) struct FnCell {
    pub(crate) calls: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) wall_total: AtomicU64,
    pub(crate) busy_total: AtomicU64,
    pub(crate) min: AtomicU64,
    pub(crate) max: AtomicU64,
    pub(crate) hist: AtomicHistogram,
}

// The layout `docs/performance.md` (memory) counts per function and thread.
const _: () = assert!(std::mem::size_of::<FnCell>() == 408);

impl Default for FnCell {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            wall_total: AtomicU64::new(0),
            busy_total: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            hist: AtomicHistogram::default(),
        }
    }
}

/// Single-writer add: a load and a store, no locked instruction.
#[inline(always)]
pub(crate) fn bump(a: &AtomicU64, v: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

impl NodeCell {
    #[inline(always)]
    pub(crate) fn add_alloc(&self, a: &AllocCounters) {
        bump(&self.alloc_bytes, a.alloc_bytes);
        bump(&self.alloc_count, a.alloc_count);
        bump(&self.freed_bytes, a.freed_bytes);
        bump(&self.freed_count, a.freed_count);
    }

    pub(crate) fn clear(&self) {
        for a in [
            &self.calls,
            &self.wall_self,
            &self.busy_self,
            &self.cpu_self,
            &self.alloc_bytes,
            &self.alloc_count,
            &self.freed_bytes,
            &self.freed_count,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

impl FnCell {
    #[inline(always)]
    pub(crate) fn record_latency(&self, ns: u64) {
        self.hist.record(ns);
        if ns < self.min.load(Ordering::Relaxed) {
            self.min.store(ns, Ordering::Relaxed);
        }
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.store(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn clear(&self) {
        self.calls.store(0, Ordering::Relaxed);
        self.cancelled.store(0, Ordering::Relaxed);
        self.wall_total.store(0, Ordering::Relaxed);
        self.busy_total.store(0, Ordering::Relaxed);
        self.min.store(u64::MAX, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
        self.hist.clear();
    }
}

/// An append-only array of `T` in fixed chunks; chunk pointers are published with Release.
/// `CHUNK` is a constant so that indexing compiles to shifts and masks, not divisions.
pub(crate) struct Chunked<T, const CHUNK: usize> {
    ptrs: Box<[AtomicPtr<T>]>,
}

impl<T: Default, const CHUNK: usize> Chunked<T, CHUNK> {
    pub(crate) fn new(capacity: usize) -> Self {
        let n = capacity.div_ceil(CHUNK);
        Self {
            ptrs: (0..n).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
        }
    }

    /// The element, if its chunk exists.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let p = self.ptrs.get(i / CHUNK)?.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer came from `Box<[T]>::into_raw` of `CHUNK`
        // elements, is never freed before `self` drops, and `i % chunk < chunk`.
        Some(unsafe { &*p.add(i % CHUNK) })
    }

    /// The element, allocating its chunk on first use (owning thread only).
    #[inline(always)]
    pub(crate) fn get_or_alloc(&self, i: usize) -> Option<&T> {
        match self.get(i) {
            Some(t) => Some(t),
            None => self.alloc_chunk(i),
        }
    }

    #[cold]
    fn alloc_chunk(&self, i: usize) -> Option<&T> {
        let slot = self.ptrs.get(i / CHUNK)?;
        let chunk: Box<[T]> = crate::record::alloc::untracked(|| (0..CHUNK).map(|_| T::default()).collect());
        let p = Box::into_raw(chunk) as *mut T;
        if slot
            .compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `p` was just made by `Box::into_raw` and was not published.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, CHUNK)) });
        }
        self.get(i)
    }

    /// Every existing element with its index.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, &T)) {
        for c in 0..self.ptrs.len() {
            let p = self.ptrs[c].load(Ordering::Acquire);
            if p.is_null() {
                continue;
            }
            for k in 0..CHUNK {
                // SAFETY: as in `get`.
                f(c * CHUNK + k, unsafe { &*p.add(k) });
            }
        }
    }
}

impl<T, const CHUNK: usize> Drop for Chunked<T, CHUNK> {
    fn drop(&mut self) {
        for slot in self.ptrs.iter() {
            let p = slot.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: made by `Box::into_raw` of `chunk` elements; dropped once, here.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, CHUNK)) });
            }
        }
    }
}

/// Plain sums of node figures (readers' side).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodeSums {
    pub(crate) calls: u64,
    pub(crate) wall_self: u64,
    pub(crate) busy_self: u64,
    pub(crate) cpu_self: u64,
    pub(crate) alloc: AllocCounters,
}

/// Plain sums of function figures (readers' side).
#[derive(Clone, Debug)]
pub(crate) struct FnSums {
    pub(crate) calls: u64,
    pub(crate) cancelled: u64,
    pub(crate) wall_total: u64,
    pub(crate) busy_total: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) hist: Vec<u64>,
}

impl Default for FnSums {
    fn default() -> Self {
        Self {
            calls: 0,
            cancelled: 0,
            wall_total: 0,
            busy_total: 0,
            min: u64::MAX,
            max: 0,
            hist: Vec::new(),
        }
    }
}

/// Merged figures of any number of threads.
#[derive(Clone, Debug, Default)]
pub(crate) struct Totals {
    pub(crate) nodes: Vec<NodeSums>,
    pub(crate) fns: Vec<FnSums>,
    /// Calls whose path was folded into its parent.
    pub(crate) folded_calls: u64,
}

impl Totals {
    pub(crate) fn add_node(&mut self, i: usize, c: &NodeCell) {
        let r = Ordering::Relaxed;
        let calls = c.calls.load(r);
        let s = NodeSums {
            calls,
            wall_self: c.wall_self.load(r),
            busy_self: c.busy_self.load(r),
            cpu_self: c.cpu_self.load(r),
            alloc: AllocCounters {
                alloc_bytes: c.alloc_bytes.load(r),
                alloc_count: c.alloc_count.load(r),
                freed_bytes: c.freed_bytes.load(r),
                freed_count: c.freed_count.load(r),
            },
        };
        if s.calls == 0
            && s.wall_self == 0
            && s.cpu_self == 0
            && s.busy_self == 0
            && s.alloc == AllocCounters::default()
        {
            return;
        }
        if self.nodes.len() <= i {
            self.nodes.resize(i + 1, NodeSums::default());
        }
        let d = &mut self.nodes[i];
        d.calls += s.calls;
        d.wall_self += s.wall_self;
        d.busy_self += s.busy_self;
        d.cpu_self += s.cpu_self;
        d.alloc.add(&s.alloc);
    }

    pub(crate) fn add_fn(&mut self, i: usize, c: &FnCell) {
        let r = Ordering::Relaxed;
        let calls = c.calls.load(r);
        if calls == 0 {
            return;
        }
        if self.fns.len() <= i {
            self.fns.resize(i + 1, FnSums::default());
        }
        let d = &mut self.fns[i];
        d.calls += calls;
        d.cancelled += c.cancelled.load(r);
        d.wall_total += c.wall_total.load(r);
        d.busy_total += c.busy_total.load(r);
        d.min = d.min.min(c.min.load(r));
        d.max = d.max.max(c.max.load(r));
        if d.hist.is_empty() {
            d.hist = vec![0; BUCKETS];
        }
        c.hist.add_into(&mut d.hist);
    }
}
