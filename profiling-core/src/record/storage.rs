//! Per-thread statistics storage: lazily allocated chunks that never move, so the owning
//! thread writes with plain relaxed stores while snapshotting threads read concurrently.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

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

/// Where a call-tree node's figures and its function's are in a thread's tables, found
/// once per path (the thread's node cache keeps them) so that booking a call needs no
/// lookup. Null where not known (then looked up by id). Valid while the tables they point
/// into are the thread's: chunks never move nor are freed before the tables drop, and a
/// thread that changes tables forgets them (`exclude_current_thread`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cells {
    pub(crate) node: *const NodeCell,
    pub(crate) func: *const FnCell,
}

// SAFETY: `Cells` travel with the tables they point into (a thread's kit, its recorder),
// and only the thread recording into those tables dereferences them.
unsafe impl Send for Cells {}

impl Cells {
    pub(crate) const NONE: Cells = Cells {
        node: std::ptr::null(),
        func: std::ptr::null(),
    };
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
    /// Chunks allocated (read at a thread's exit, which must not scan `ptrs`: 48 KiB,
    /// mostly pages never touched, whose first read faults).
    allocated: AtomicUsize,
}

/// Writes a byte in each page of `room` (not yet initialized), so that its pages are mapped
/// where a chunk (or a kit's spare room, `record/kits.rs`) is made (for a thread's first
/// ones, on the kits' thread) and not at the first write of the thread recording into it:
/// that write's page fault can sleep on the kernel's memory-map lock while threads start
/// and exit (`docs/reliability.md`: first calls held 9 and 232 ms on their page faults).
/// Without these writes, the compiler makes the allocation and the chunk's default (zero)
/// values one zeroed allocation, which the allocator serves with fresh pages it does not
/// write. Volatile, so that they stay.
pub(crate) fn touch_pages<T>(room: &mut [MaybeUninit<T>]) {
    let len = std::mem::size_of_val(room);
    let p = room.as_mut_ptr().cast::<u8>();
    for off in (0..len).step_by(4096).chain(len.checked_sub(1)) {
        // SAFETY: `off < len`, inside `room`, which is ours to write; any byte is a valid
        // `MaybeUninit`.
        unsafe { p.add(off).write_volatile(0) };
    }
}

impl<T: Default, const CHUNK: usize> Chunked<T, CHUNK> {
    /// The pointer table comes zeroed from the allocator rather than written: where the
    /// allocator hands out fresh zeroed pages (glibc's `calloc` from untouched heap, for
    /// example), the pages beyond the chunks in use are never touched and take no resident
    /// memory (a thread's tables are 48 KiB, of which it typically uses the first few
    /// pointers); elsewhere the allocator writes the zeros, as the old code did.
    pub(crate) fn new(capacity: usize) -> Self {
        let n = capacity.div_ceil(CHUNK);
        let ptrs = match std::alloc::Layout::array::<AtomicPtr<T>>(n) {
            Ok(layout) if layout.size() > 0 => {
                // SAFETY: a non-zero size.
                let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicPtr<T>>();
                if p.is_null() {
                    std::alloc::handle_alloc_error(layout);
                }
                // SAFETY: `n` zeroed `AtomicPtr`s (a null one is all zero bits), allocated by
                // the global allocator with the layout `Box` frees them with.
                unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, n)) }
            }
            _ => (0..n).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect(),
        };
        Self {
            ptrs,
            allocated: AtomicUsize::new(0),
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
        let chunk: Box<[T]> = crate::record::alloc::untracked(|| {
            let mut room = Box::<[T]>::new_uninit_slice(CHUNK);
            touch_pages(&mut room);
            for e in room.iter_mut() {
                e.write(T::default());
            }
            // SAFETY: every element was written just above.
            unsafe { room.assume_init() }
        });
        let p = Box::into_raw(chunk) as *mut T;
        if slot
            .compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.allocated.fetch_add(1, Ordering::Relaxed);
        } else {
            // SAFETY: `p` was just made by `Box::into_raw` and was not published.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, CHUNK)) });
        }
        self.get(i)
    }

    /// Number of chunks allocated.
    pub(crate) fn chunks(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
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

/// A slot of [`Slots`]: its state ([`EMPTY`], [`BUSY`] or the kind of value it holds) and
/// the value.
struct Slot<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The slot holds nothing.
const EMPTY: u8 = 0;
/// A thread is moving a value in or out.
const BUSY: u8 = u8::MAX;

/// At most `N` values of `T`, each tagged with a kind (1 to 254), that any thread puts or
/// takes without a lock and without allocating: a slot is claimed by a compare-and-swap of
/// its state, the value moved, and the state published. Nothing ever waits on another
/// thread: a slot another thread is moving through is skipped.
pub(crate) struct Slots<T, const N: usize> {
    slots: [Slot<T>; N],
    /// Where the next scan starts, so that threads arriving together try different slots.
    next: AtomicUsize,
}

// SAFETY: a value is reached only by the thread that claimed its slot (state BUSY), which
// moves it in or out; values are sent between threads, never shared.
unsafe impl<T: Send, const N: usize> Sync for Slots<T, N> {}

impl<T, const N: usize> Slots<T, N> {
    pub(crate) const fn new() -> Self {
        Self {
            slots: [const {
                Slot {
                    state: AtomicU8::new(EMPTY),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                }
            }; N],
            next: AtomicUsize::new(0),
        }
    }

    /// Puts `value` as a value of `kind` in an empty slot; gives it back if none is.
    pub(crate) fn put(&self, value: T, kind: u8) -> Result<(), T> {
        debug_assert!(kind != EMPTY && kind != BUSY);
        match self.claim(EMPTY) {
            Some(slot) => {
                // SAFETY: the slot was empty and is ours (BUSY) until the store below.
                unsafe { (*slot.value.get()).write(value) };
                slot.state.store(kind, Ordering::Release);
                Ok(())
            }
            None => Err(value),
        }
    }

    /// Takes a value of `kind`, if a slot holds one.
    pub(crate) fn take(&self, kind: u8) -> Option<T> {
        debug_assert!(kind != EMPTY && kind != BUSY);
        let slot = self.claim(kind)?;
        // SAFETY: the slot held a value (its state was `kind`, published with Release after
        // the write) and is ours (BUSY) until the store below, which marks it moved out.
        let value = unsafe { (*slot.value.get()).assume_init_read() };
        slot.state.store(EMPTY, Ordering::Release);
        Some(value)
    }

    /// Number of slots holding a value of `kind` (a moment's count: others may be moving).
    pub(crate) fn count(&self, kind: u8) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == kind)
            .count()
    }

    /// A slot in state `from`, now BUSY and ours.
    fn claim(&self, from: u8) -> Option<&Slot<T>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..N).map(|k| &self.slots[(start + k) % N]).find(|s| {
            s.state.load(Ordering::Relaxed) == from
                && s.state
                    .compare_exchange(from, BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        })
    }
}

impl<T, const N: usize> Drop for Slots<T, N> {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if !matches!(*s.state.get_mut(), EMPTY | BUSY) {
                // SAFETY: `&mut self`: no thread is moving through it, and it holds a value.
                unsafe { s.value.get_mut().assume_init_drop() };
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
#[derive(Debug)]
pub(crate) struct FnSums {
    pub(crate) calls: u64,
    pub(crate) cancelled: u64,
    pub(crate) wall_total: u64,
    pub(crate) busy_total: u64,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) hist: Vec<u64>,
}

impl Clone for FnSums {
    fn clone(&self) -> Self {
        let mut c = FnSums::default();
        c.clone_from(self);
        c
    }

    /// Reuses the histogram's buffer (the retired totals are copied at every fold).
    fn clone_from(&mut self, s: &Self) {
        self.calls = s.calls;
        self.cancelled = s.cancelled;
        self.wall_total = s.wall_total;
        self.busy_total = s.busy_total;
        self.min = s.min;
        self.max = s.max;
        self.hist.clone_from(&s.hist);
    }
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
    /// Makes `self` a copy of `src`, reusing its buffers.
    pub(crate) fn copy_from(&mut self, src: &Totals) {
        self.nodes.clone_from(&src.nodes);
        self.fns.clone_from(&src.fns);
        self.folded_calls = src.folded_calls;
    }

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
        if d.hist.len() < BUCKETS {
            d.hist.resize(BUCKETS, 0);
        }
        c.hist.add_into(&mut d.hist);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `[p, p + len)` resident in memory, and pages in all (`mincore`).
    #[cfg(target_os = "linux")]
    fn resident_pages(p: *const u8, len: usize) -> (usize, usize) {
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let start = p as usize & !(page - 1);
        let pages = (p as usize + len - start).div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: `start` is page-aligned and the range is mapped (it holds the chunk);
        // `vec` has a byte per page.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, pages * page, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
    }

    /// A chunk's pages are mapped when it is made: the thread that records into it next (a
    /// thread at its first call, for chunks made on the kits' thread) takes no page fault,
    /// which could sleep on the kernel's memory-map lock. On fresh pages (an anonymous
    /// mapping: none resident), as the allocator hands out for a chunk.
    #[cfg(target_os = "linux")]
    #[test]
    fn touching_a_chunks_room_maps_every_page() {
        let len = 5 * 4096 + 100;
        // SAFETY: an anonymous private mapping: no file, no address hint.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + 4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // Not page-aligned, as an allocation need not be.
        let start = map.cast::<u8>().wrapping_add(96).cast::<MaybeUninit<u64>>();
        let n = len / 8;
        // SAFETY: `n` elements of 8 bytes from byte 96 of the mapping (aligned for them) fit
        // in it, and the mapping is ours alone.
        let room = unsafe { std::slice::from_raw_parts_mut(start, n) };
        assert_eq!(resident_pages(start.cast(), n * 8).0, 0, "fresh pages are not resident");
        touch_pages(room);
        let (resident, pages) = resident_pages(start.cast(), n * 8);
        assert_eq!((resident, pages), (6, 6), "the room spans bytes 96 to 20,672: 6 pages");
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(map, len + 4096) };
    }

    #[test]
    fn slots_hold_at_most_n_and_give_back_by_kind() {
        let slots: Slots<Box<u32>, 4> = Slots::new();
        assert!(slots.put(Box::new(1), 1).is_ok());
        assert!(slots.put(Box::new(2), 2).is_ok());
        assert!(slots.put(Box::new(3), 1).is_ok());
        assert!(slots.put(Box::new(4), 2).is_ok());
        assert_eq!(*slots.put(Box::new(5), 1).unwrap_err(), 5, "full: the value comes back");
        assert_eq!((slots.count(1), slots.count(2)), (2, 2));
        let mut ones = [*slots.take(1).unwrap(), *slots.take(1).unwrap()];
        ones.sort();
        assert_eq!(ones, [1, 3]);
        assert!(slots.take(1).is_none());
        assert_eq!(slots.count(2), 2);
        // Dropping the set drops what it still holds (Miri / leak checkers see it).
    }

    /// Threads putting and taking at once never lose or duplicate a value.
    #[test]
    fn slots_move_each_value_once_across_threads() {
        let slots: Slots<u64, 8> = Slots::new();
        let taken: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4u64)
                .map(|t| {
                    let slots = &slots;
                    s.spawn(move || {
                        let mut got = Vec::new();
                        for k in 0..10_000u64 {
                            let mut v = t * 1_000_000 + k;
                            loop {
                                match slots.put(v, 1) {
                                    Ok(()) => break,
                                    Err(back) => {
                                        v = back;
                                        got.extend(slots.take(1));
                                    }
                                }
                            }
                            got.extend(slots.take(1));
                        }
                        got
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u64> = taken.into_iter().flatten().collect();
        while let Some(v) = slots.take(1) {
            all.push(v);
        }
        all.sort();
        let expected: Vec<u64> = (0..4u64)
            .flat_map(|t| (0..10_000).map(move |k| t * 1_000_000 + k))
            .collect();
        assert_eq!(all, expected);
    }
}
