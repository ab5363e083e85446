//! The call tree's shape: a global, append-only table of paths of annotated functions.
//!
//! Node 0 is the root (no function). Every other node is `(parent node, function)` and gets
//! a process-wide id, so every thread's per-node figures line up and an async call that
//! moves between threads keeps its place. Threads cache `(parent, function) -> node` in a
//! small direct-mapped table and come here only on a miss. Nothing here takes a lock but
//! adding a node: paths are found in a lock-free index, and readers of the shape read chunks
//! that never move up to an atomic length, like a thread's figures.
//!
//! The table is capped ([`crate::record::config::set_max_call_tree_nodes`]); a new path past the cap is
//! folded into its parent (the parent's id is returned), so memory is bounded by the cap.
//! Threads cache folded answers too (checked against the cap they were given under), so
//! once the table is full a folded path costs no lock per call either.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::record::callsite::MAX_FUNCTIONS;
use crate::record::config::MAX_CALL_TREE_NODES_LIMIT;
use crate::record::storage::{Cells, Chunked};

/// The root node's id.
pub(crate) const ROOT: u32 = 0;
/// The "function" of the root node.
pub(crate) const NO_FUNCTION: u32 = u32::MAX;

/// Nodes per chunk of [`NODES`].
const SHAPE_CHUNK: usize = 4096;

/// `parent << 32 | function` of every node but the root, indexed by node id. Written once
/// per node, under [`WRITER`], before [`LEN`] publishes it; read without any lock.
static NODES: OnceLock<Chunked<AtomicU64, SHAPE_CHUNK>> = OnceLock::new();

/// Number of published nodes, root included.
static LEN: AtomicU32 = AtomicU32::new(1);

/// The current [`PathIndex`] (null until the first node).
static INDEX: AtomicPtr<PathIndex> = AtomicPtr::new(std::ptr::null_mut());

/// Held to add a node. The index holds every node but the root: `LEN - 1` entries.
static WRITER: Mutex<()> = Mutex::new(());

/// Bits of a node id, and of a function id plus one, in a [`PathIndex`] slot.
const NODE_BITS: u32 = 21;
const FUNC_BITS: u32 = 22;
const NODE_MASK: u64 = (1 << NODE_BITS) - 1;
const _: () = assert!(
    (MAX_CALL_TREE_NODES_LIMIT as u64) < 1 << NODE_BITS && (MAX_FUNCTIONS as u64) + 2 < 1 << FUNC_BITS,
    "a node id or function id would not fit a path-index slot"
);

/// `(parent, function) -> node`, read without a lock: open addressing over atomic slots,
/// each `parent << 43 | (function + 1) << 21 | node` (0: empty), at most half full. Only
/// [`WRITER`]'s holder stores into it; when it would pass half full, the holder copies it
/// into one twice the size and publishes that. Old indexes are never freed, since a reader
/// may still be probing one: together they take less memory than the current one.
struct PathIndex {
    slots: Box<[AtomicU64]>,
}

/// The key part of a slot for `(parent, func)`; node ids are below 2^21 and function ids
/// below 2^22 - 1 (asserted above), so it never collides with the empty slot.
#[inline(always)]
fn key(parent: u32, func: u32) -> u64 {
    u64::from(parent) << (NODE_BITS + FUNC_BITS) | (u64::from(func) + 1) << NODE_BITS
}

impl PathIndex {
    fn with_slots(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The node of `key`, or the empty slot where it would go.
    #[inline]
    fn find(&self, key: u64) -> Result<u32, usize> {
        let mask = self.slots.len() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask;
        loop {
            let v = self.slots[i].load(Ordering::Acquire);
            if v == 0 {
                return Err(i);
            }
            if v & !NODE_MASK == key {
                return Ok((v & NODE_MASK) as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key -> node` (writer only; `key` absent, the index less than half full).
    fn insert(&self, key: u64, node: u32) {
        if let Err(i) = self.find(key) {
            self.slots[i].store(key | u64::from(node), Ordering::Release);
        }
    }

    /// A copy with `slots` slots.
    fn grown(&self, slots: usize) -> Self {
        let bigger = Self::with_slots(slots);
        for s in self.slots.iter() {
            let v = s.load(Ordering::Relaxed);
            if v != 0 {
                bigger.insert(v & !NODE_MASK, (v & NODE_MASK) as u32);
            }
        }
        bigger
    }
}

fn index() -> Option<&'static PathIndex> {
    // SAFETY: a non-null pointer came from `Box::leak` in `add` and is never freed; its slots were initialised before it was published with Release.
    unsafe { INDEX.load(Ordering::Acquire).as_ref() }
}

fn nodes() -> &'static Chunked<AtomicU64, SHAPE_CHUNK> {
    NODES.get_or_init(|| Chunked::new(MAX_CALL_TREE_NODES_LIMIT as usize))
}

/// Result of resolving a child path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) node: u32,
    /// True when the cap was reached and `node` is the parent itself.
    pub(crate) folded: bool,
}

/// The node for `func` called under `parent`, creating it if the cap allows. A path that
/// exists is found without a lock (a thread's first calls resolve every path it takes, and
/// must not queue behind each other); only a new path takes [`WRITER`].
#[cold]
pub(crate) fn intern(parent: u32, func: u32) -> Child {
    if let Some(Ok(node)) = index().map(|i| i.find(key(parent, func))) {
        return Child { node, folded: false };
    }
    crate::record::alloc::untracked(|| add(parent, func))
}

fn add(parent: u32, func: u32) -> Child {
    let _writer = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    let key = key(parent, func);
    let mut current = index();
    if let Some(Ok(node)) = current.map(|i| i.find(key)) {
        return Child { node, folded: false };
    }
    let n = LEN.load(Ordering::Relaxed);
    let folded = Child {
        node: parent,
        folded: true,
    };
    if n >= crate::record::config::max_call_tree_nodes() {
        return folded;
    }
    let Some(cell) = nodes().get_or_alloc(n as usize) else {
        return folded;
    };
    let slots = current.map_or(0, |i| i.slots.len());
    // With this node, the index holds `n` entries: keep it at most half full.
    if n as usize * 2 > slots {
        let bigger = match current {
            Some(i) => i.grown(slots * 2),
            None => PathIndex::with_slots(1024),
        };
        let bigger: &'static PathIndex = Box::leak(Box::new(bigger));
        INDEX.store(bigger as *const PathIndex as *mut PathIndex, Ordering::Release);
        current = Some(bigger);
    }
    cell.store(u64::from(parent) << 32 | u64::from(func), Ordering::Relaxed);
    LEN.store(n + 1, Ordering::Release);
    // After the node is published: whoever finds it in the index finds it in the shape.
    if let Some(i) = current {
        i.insert(key, n);
    }
    Child { node: n, folded: false }
}

/// `(parent, function)` of every node, indexed by node id.
pub(crate) fn shape() -> Vec<(u32, u32)> {
    let len = LEN.load(Ordering::Acquire) as usize;
    let Some(nodes) = NODES.get() else {
        return vec![(ROOT, NO_FUNCTION)];
    };
    let mut shape = Vec::with_capacity(len);
    shape.push((ROOT, NO_FUNCTION));
    shape.extend((1..len).map(|i| {
        // Every node below `len` was written before `len` was published.
        nodes.get(i).map_or((ROOT, NO_FUNCTION), |c| {
            let v = c.load(Ordering::Relaxed);
            ((v >> 32) as u32, v as u32)
        })
    }));
    shape
}

/// Number of nodes, root included.
pub(crate) fn len() -> usize {
    LEN.load(Ordering::Acquire) as usize
}

const CACHE: usize = 1024;
const FOLDED_CACHE: usize = 256;

/// A thread's direct-mapped cache of `(parent, function) -> child`, with where the child's
/// figures and its function's are in the thread's tables ([`Cells`]).
pub(crate) struct NodeCache {
    /// An array, not a slice: the slot of a path indexes it with no bounds check.
    entries: Box<[Entry; CACHE]>,
    /// Paths found folded, direct-mapped; made at the first fold (most threads never fold).
    folded: Option<Box<[FoldedPath]>>,
}

/// A path that was folded into `node` (its parent) while the cap was `cap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FoldedPath {
    parent: u32,
    func: u32,
    node: u32,
    cap: u32,
}

/// A cached path: `(parent, function) -> node`, and its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    parent: u32,
    func: u32,
    node: u32,
    cells: Cells,
}

const EMPTY: Entry = Entry {
    parent: u32::MAX,
    func: u32::MAX,
    node: 0,
    cells: Cells::NONE,
};

#[inline(always)]
fn slot(parent: u32, func: u32, len: usize) -> usize {
    (parent.wrapping_mul(0x9E37_79B9) ^ func.wrapping_mul(0x85EB_CA6B)) as usize % len
}

impl NodeCache {
    pub(crate) fn new() -> Self {
        Self {
            // Built on the heap: 32 KiB on a small thread's stack could overflow it.
            entries: vec![EMPTY; CACHE]
                .into_boxed_slice()
                .try_into()
                .expect("a vector of CACHE entries"),
            folded: None,
        }
    }

    /// Forgets every cached path, for a thread whose tables changed (the cells moved).
    pub(crate) fn forget(&mut self) {
        self.entries.fill(EMPTY);
    }

    /// The child of `parent` for `func`, and its cells (`cells_of` finds them for a path
    /// not cached); a folded answer adds one to `folded_calls`.
    #[inline(always)]
    pub(crate) fn child(
        &mut self,
        parent: u32,
        func: u32,
        folded_calls: &AtomicU64,
        cells_of: impl FnOnce(Child, u32) -> Cells,
    ) -> (Child, Cells) {
        let e = &self.entries[slot(parent, func, CACHE)];
        if e.parent == parent && e.func == func {
            let c = Child {
                node: e.node,
                folded: false,
            };
            return (c, e.cells);
        }
        self.child_not_cached(parent, func, folded_calls, cells_of)
    }

    /// [`NodeCache::child`] of a path not in the cache.
    #[cold]
    #[inline(never)]
    fn child_not_cached(
        &mut self,
        parent: u32,
        func: u32,
        folded_calls: &AtomicU64,
        cells_of: impl FnOnce(Child, u32) -> Cells,
    ) -> (Child, Cells) {
        let c = self.miss(parent, func, crate::record::config::max_call_tree_nodes(), intern);
        if c.folded {
            crate::record::storage::bump(folded_calls, 1);
        }
        let cells = cells_of(c, func);
        if !c.folded {
            self.entries[slot(parent, func, CACHE)].cells = cells;
        }
        (c, cells)
    }

    /// Not in the cache of nodes: a folded path this thread has seen under the same cap, or
    /// else the table (`resolve`, which locks).
    #[cold]
    #[inline(never)]
    fn miss(&mut self, parent: u32, func: u32, cap: u32, resolve: impl FnOnce(u32, u32) -> Child) -> Child {
        let fslot = slot(parent, func, FOLDED_CACHE);
        if let Some(f) = &self.folded {
            let f = f[fslot];
            // The table only grows: under an unchanged cap, a full table stays full.
            if f.parent == parent && f.func == func && f.cap == cap {
                return Child {
                    node: f.node,
                    folded: true,
                };
            }
        }
        let c = resolve(parent, func);
        if c.folded {
            let folded = self.folded.get_or_insert_with(|| {
                let empty = FoldedPath {
                    parent: u32::MAX,
                    func: u32::MAX,
                    node: 0,
                    cap: 0,
                };
                crate::record::alloc::untracked(|| vec![empty; FOLDED_CACHE].into_boxed_slice())
            });
            folded[fslot] = FoldedPath {
                parent,
                func,
                node: c.node,
                cap,
            };
        } else {
            self.entries[slot(parent, func, CACHE)] = Entry {
                parent,
                func,
                node: c.node,
                cells: Cells::NONE,
            };
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_cached() {
        let mut cache = NodeCache::new();
        let folded = AtomicU64::new(0);
        let none = |_: Child, _: u32| Cells::NONE;
        let a = cache.child(ROOT, 1_000_001, &folded, none).0;
        let b = cache.child(a.node, 1_000_002, &folded, none).0;
        assert_ne!(a.node, b.node);
        assert_eq!(cache.child(ROOT, 1_000_001, &folded, none).0, a);
        assert_eq!(intern(a.node, 1_000_002), b);
        let shape = shape();
        assert_eq!(shape[b.node as usize], (a.node, 1_000_002));
    }

    /// Threads racing to add and find the same paths, across several growths of the
    /// index, all get one node per path, and the shape agrees with every answer.
    #[test]
    fn concurrent_interning_across_index_growth() {
        let answers: Vec<Vec<(u32, u32, u32)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    s.spawn(move || {
                        (0..3_000u32)
                            .map(|k| {
                                let func = 3_000_000 + (k + t * 700) % 3_000;
                                let c = intern(ROOT, func);
                                assert!(!c.folded);
                                (ROOT, func, c.node)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let shape = shape();
        let mut seen = std::collections::HashMap::new();
        for (parent, func, node) in answers.into_iter().flatten() {
            assert_eq!(*seen.entry(func).or_insert(node), node, "one node per path");
            assert_eq!(shape[node as usize], (parent, func));
        }
        assert_eq!(seen.len(), 3_000);
    }

    /// Past the cap, the table answers once per path and cap: later calls on a folded path
    /// are answered by the thread's cache, without the table's lock.
    #[test]
    fn folded_paths_are_cached_until_the_cap_changes() {
        let mut cache = NodeCache::new();
        let lookups = std::cell::Cell::new(0);
        let table = |parent: u32, _func: u32| {
            lookups.set(lookups.get() + 1);
            Child {
                node: parent,
                folded: true,
            }
        };
        for _ in 0..1_000 {
            for func in [7, 8, 9] {
                assert_eq!(cache.miss(5, func, 100, table), Child { node: 5, folded: true });
            }
        }
        assert_eq!(lookups.get(), 3, "one table lookup per folded path");
        // A new cap may have room for the path: ask the table again.
        cache.miss(5, 7, 200, table);
        assert_eq!(lookups.get(), 4);
        // Paths that got a node are cached as before and never reach the table again.
        let resolved = std::cell::Cell::new(0);
        let grow = |_parent: u32, _func: u32| {
            resolved.set(resolved.get() + 1);
            Child {
                node: 42,
                folded: false,
            }
        };
        assert_eq!(cache.miss(6, 1, 200, grow).node, 42);
        assert_eq!(resolved.get(), 1);
        let e = cache.entries[slot(6, 1, CACHE)];
        assert_eq!((e.parent, e.func, e.node), (6, 1, 42));
    }
}
