//! The call tree's shape: a global, append-only table of paths of annotated functions.
//!
//! Node 0 is the root (no function). Every other node is `(parent node, function)` and gets
//! a process-wide id, so every thread's per-node figures line up and an async call that
//! moves between threads keeps its place. Threads cache `(parent, function) -> node` in a
//! small direct-mapped table and come here, under a mutex, only on a miss.
//!
//! The table is capped ([`crate::set_max_call_tree_nodes`]); a new path past the cap is
//! folded into its parent (the parent's id is returned), so memory is bounded by the cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
/// Lookups that hit the cap and were folded into the parent.
pub(crate) static FOLDED: AtomicU64 = AtomicU64::new(0);

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
            FOLDED.fetch_add(1, Relaxed);
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

/// A thread's direct-mapped cache of `(parent, function) -> child`.
pub(crate) struct NodeCache {
    entries: Box<[(u32, u32, u32)]>,
}

impl NodeCache {
    pub(crate) fn new() -> Self {
        Self {
            entries: vec![(u32::MAX, u32::MAX, 0); CACHE].into_boxed_slice(),
        }
    }

    #[inline(always)]
    pub(crate) fn child(&mut self, parent: u32, func: u32) -> Child {
        let slot = (parent.wrapping_mul(0x9E37_79B9) ^ func.wrapping_mul(0x85EB_CA6B)) as usize % CACHE;
        let e = &mut self.entries[slot];
        if e.0 == parent && e.1 == func {
            return Child {
                node: e.2,
                folded: false,
            };
        }
        let c = intern(parent, func);
        if !c.folded {
            *e = (parent, func, c.node);
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
        let a = cache.child(ROOT, 1_000_001);
        let b = cache.child(a.node, 1_000_002);
        assert_ne!(a.node, b.node);
        assert_eq!(cache.child(ROOT, 1_000_001), a);
        assert_eq!(intern(a.node, 1_000_002), b);
        let shape = shape();
        assert_eq!(shape[b.node as usize], (a.node, 1_000_002));
    }
}
