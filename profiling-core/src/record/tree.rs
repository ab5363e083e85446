//! The call tree's shape: a global, append-only table of paths of annotated functions.
//!
//! Node 0 is the root (no function). Every other node is `(parent node, function)` and gets
//! a process-wide id, so every thread's per-node figures line up and an async call that
//! moves between threads keeps its place. Threads cache `(parent, function) -> node` in a
//! small direct-mapped table and come here, under a mutex, only on a miss.
//!
//! The table is capped ([`crate::record::config::set_max_call_tree_nodes`]); a new path past the cap is
//! folded into its parent (the parent's id is returned), so memory is bounded by the cap.
//! Threads cache folded answers too (checked against the cap they were given under), so
//! once the table is full a folded path costs no lock per call either.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// The root node's id.
pub(crate) const ROOT: u32 = 0;
/// The "function" of the root node.
pub(crate) const NO_FUNCTION: u32 = u32::MAX;

struct PathTable {
    map: HashMap<(u32, u32), u32>,
    parent: Vec<u32>,
    func: Vec<u32>,
}

static TABLE: Mutex<Option<PathTable>> = Mutex::new(None);

fn with_table<R>(f: impl FnOnce(&mut PathTable) -> R) -> R {
    let mut g = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let t = g.get_or_insert_with(|| PathTable {
        map: HashMap::new(),
        parent: vec![ROOT],
        func: vec![NO_FUNCTION],
    });
    f(t)
}

/// Result of resolving a child path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Child {
    pub(crate) node: u32,
    /// True when the cap was reached and `node` is the parent itself.
    pub(crate) folded: bool,
}

/// The node for `func` called under `parent`, creating it if the cap allows.
#[cold]
pub(crate) fn intern(parent: u32, func: u32) -> Child {
    crate::record::alloc::untracked(|| intern_untracked(parent, func))
}

fn intern_untracked(parent: u32, func: u32) -> Child {
    with_table(|t| {
        if let Some(&n) = t.map.get(&(parent, func)) {
            return Child { node: n, folded: false };
        }
        if t.parent.len() as u64 >= crate::record::config::max_call_tree_nodes() as u64 {
            return Child {
                node: parent,
                folded: true,
            };
        }
        let n = t.parent.len() as u32;
        t.parent.push(parent);
        t.func.push(func);
        t.map.insert((parent, func), n);
        Child { node: n, folded: false }
    })
}

/// `(parent, function)` of every node, indexed by node id.
pub(crate) fn shape() -> Vec<(u32, u32)> {
    with_table(|t| t.parent.iter().copied().zip(t.func.iter().copied()).collect())
}

/// Number of nodes, root included.
pub(crate) fn len() -> usize {
    with_table(|t| t.parent.len())
}

const CACHE: usize = 1024;
const FOLDED_CACHE: usize = 256;

/// A thread's direct-mapped cache of `(parent, function) -> child`.
pub(crate) struct NodeCache {
    entries: Box<[(u32, u32, u32)]>,
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

#[inline(always)]
fn slot(parent: u32, func: u32, len: usize) -> usize {
    (parent.wrapping_mul(0x9E37_79B9) ^ func.wrapping_mul(0x85EB_CA6B)) as usize % len
}

impl NodeCache {
    pub(crate) fn new() -> Self {
        Self {
            entries: vec![(u32::MAX, u32::MAX, 0); CACHE].into_boxed_slice(),
            folded: None,
        }
    }

    /// The child of `parent` for `func`; a folded answer adds one to `folded_calls`.
    #[inline(always)]
    pub(crate) fn child(&mut self, parent: u32, func: u32, folded_calls: &AtomicU64) -> Child {
        let e = &self.entries[slot(parent, func, CACHE)];
        if e.0 == parent && e.1 == func {
            return Child {
                node: e.2,
                folded: false,
            };
        }
        let c = self.miss(parent, func, crate::record::config::max_call_tree_nodes(), intern);
        if c.folded {
            crate::record::storage::bump(folded_calls, 1);
        }
        c
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
            self.entries[slot(parent, func, CACHE)] = (parent, func, c.node);
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
        let a = cache.child(ROOT, 1_000_001, &folded);
        let b = cache.child(a.node, 1_000_002, &folded);
        assert_ne!(a.node, b.node);
        assert_eq!(cache.child(ROOT, 1_000_001, &folded), a);
        assert_eq!(intern(a.node, 1_000_002), b);
        let shape = shape();
        assert_eq!(shape[b.node as usize], (a.node, 1_000_002));
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
        assert_eq!(e, (6, 1, 42));
    }
}
