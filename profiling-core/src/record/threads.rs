//! The registry of recording threads: the tables of live threads, and the merged totals of
//! threads that have exited.
//!
//! Each recording thread owns a [`ThreadTables`] (shared by `Arc` with the registry) that
//! only it writes, with plain relaxed stores; readers merge it concurrently. When a thread
//! exits, its tables move to a list of exited tables, which the kits' background thread
//! then folds into the registry's retired totals (and zeroes them for another thread, see
//! `Kit` in `record/kits.rs`), so the data of exited threads survives while memory
//! stays bounded by distinct functions and paths.
//!
//! The registry's lock is held only to push, move or copy `Arc`s: readers merge outside it,
//! and so does the thread folding exited tables. Nothing is allocated or freed under it
//! either (lists grow, and old buffers and totals are dropped, outside), since an allocator
//! can itself wait (for an arena, for the kernel's memory-map lock) and every thread queued
//! on the registry would wait with it. A thread's first call and its exit wait for at most
//! a list copy, never for a merge or an allocation; the fold reuses its buffers, and calls
//! the allocator only when the totals grow.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

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
        };
        t.nodes.get_or_alloc(0);
        t.fns.get_or_alloc(0);
        t
    }

    /// Makes tables that a thread has left (and that were folded into the retired totals)
    /// ready for another thread: every figure zeroed, the chunks kept. `false` when they
    /// hold more chunks than a pooled set may keep: then they are to be freed instead.
    pub(crate) fn reset_for_reuse(&mut self) -> bool {
        if self.nodes.chunks() > KEEP_NODE_CHUNKS || self.fns.chunks() > KEEP_FN_CHUNKS {
            return false;
        }
        self.nodes.for_each(|_, c| c.clear());
        self.fns.for_each(|_, c| c.clear());
        *self.folded_calls.get_mut() = 0;
        *self.excluded.get_mut() = false;
        true
    }

    fn add_to(&self, t: &mut Totals) {
        self.nodes.for_each(|i, c| t.add_node(i, c));
        self.fns.for_each(|i, c| t.add_fn(i, c));
        t.folded_calls += self.folded_calls.load(Relaxed);
    }

    /// Whether a reader of window `epoch` counts these figures.
    fn counts_in(&self, epoch: u64) -> bool {
        self.epoch.load(Relaxed) == epoch && !self.excluded.load(Relaxed)
    }
}

struct ThreadRegistry {
    live: Vec<Arc<ThreadTables>>,
    /// Tables of exited threads not yet folded into `retired`.
    exited_tables: Vec<Arc<ThreadTables>>,
    /// Merged figures of exited threads of the current window (`None`: nothing yet).
    retired: Option<Arc<Totals>>,
    /// Threads that have exited since the process started.
    exited: u64,
}

/// Held for as short as a list operation: readers copy the lists under it and merge
/// outside, and an exiting thread only moves its tables to `exited_tables`. A thread making
/// its first call or exiting therefore never waits for a merge.
static REGISTRY: Mutex<ThreadRegistry> = Mutex::new(ThreadRegistry {
    live: Vec::new(),
    exited_tables: Vec::new(),
    retired: None,
    exited: 0,
});

/// Held by the one thread folding exited tables into the retired totals, with the buffers
/// it reuses from one fold to the next, so that a fold calls the allocator only when the
/// totals grow (`spare`: the totals a fold replaced, once no reader holds them).
static FOLDING: Mutex<FoldBuffers> = Mutex::new(FoldBuffers {
    spare: None,
    list: Vec::new(),
});

struct FoldBuffers {
    spare: Option<Arc<Totals>>,
    list: Vec<Arc<ThreadTables>>,
}

fn lock() -> MutexGuard<'static, ThreadRegistry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Locks the registry with room for one more entry in the list `list` picks.
fn lock_with_room(list: fn(&mut ThreadRegistry) -> &mut Vec<Arc<ThreadTables>>) -> MutexGuard<'static, ThreadRegistry> {
    crate::record::lock::lock_with_room(lock, list, 1)
}

/// Clones the `Arc`s `lists` picks into `out` (emptied), sized before taking the lock
/// (retrying if the lists grew meanwhile), and returns it with `also` of the locked registry.
fn copy_lists<R>(
    mut out: Vec<Arc<ThreadTables>>,
    lists: impl Fn(&ThreadRegistry) -> [&[Arc<ThreadTables>]; 2],
    also: impl Fn(&ThreadRegistry) -> R,
) -> (Vec<Arc<ThreadTables>>, R) {
    out.clear();
    loop {
        let r = lock();
        let [a, b] = lists(&r);
        let wanted = a.len() + b.len();
        if out.capacity() >= wanted {
            out.extend(a.iter().chain(b).cloned());
            return (out, also(&r));
        }
        drop(r);
        out = Vec::with_capacity(wanted + 8);
    }
}

/// Registers the calling thread with `tables` (empty: new, or reset for reuse), for the
/// current window, which it returns.
pub(crate) fn register(tables: &Arc<ThreadTables>) -> u64 {
    let epoch = window::epoch();
    tables.epoch.store(epoch, Relaxed);
    lock_with_room(|r| &mut r.live).live.push(Arc::clone(tables));
    epoch
}

/// Forgets an exiting thread; its figures stay counted (readers see its tables among the
/// exited ones) until [`fold_exited`] folds them into the retired totals.
pub(crate) fn retire(tables: &Arc<ThreadTables>) {
    let mut r = lock_with_room(|r| &mut r.exited_tables);
    if let Some(i) = r.live.iter().position(|d| Arc::ptr_eq(d, tables)) {
        let t = r.live.swap_remove(i);
        r.exited_tables.push(t);
    }
    r.exited += 1;
}

/// Folds the tables of exited threads into the retired totals, merging outside the lock
/// (unless another thread is folding already). Readers meanwhile still see those tables in
/// `exited_tables`: each figure counts once. On return, the registry holds no clone of the
/// tables it folded (a reader that copied the list may still, until its merge ends).
pub(crate) fn fold_exited() {
    let mut buffers = match FOLDING.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    loop {
        let list = std::mem::take(&mut buffers.list);
        let (mut pending, (base, epoch)) = copy_lists(
            list,
            |r| [&r.exited_tables, &[]],
            |r| (r.retired.clone(), window::epoch()),
        );
        if pending.is_empty() {
            buffers.list = pending;
            return;
        }
        let mut next = buffers.spare.take().unwrap_or_default();
        // The spare is held by no one else (kept only so): no copy is made here.
        let totals = Arc::make_mut(&mut next);
        match base.as_deref() {
            Some(b) => totals.copy_from(b),
            None => *totals = Totals::default(),
        }
        for d in &pending {
            if d.counts_in(epoch) {
                d.add_to(totals);
            }
        }
        let mut folded = Some(next);
        {
            let mut r = lock();
            // Only the folder removes from the list and `retire` only appends: the first
            // `pending.len()` entries are the ones just folded (`pending` still holds them,
            // so none is freed here).
            r.exited_tables.drain(..pending.len());
            // After a reset, what was folded belongs to the old window: drop it.
            if window::epoch() == epoch {
                std::mem::swap(&mut r.retired, &mut folded);
            }
        }
        // Outside the lock: the folded tables are let go, and the totals replaced (or not
        // kept) are kept for the next fold if no reader holds them, freed otherwise.
        pending.clear();
        buffers.list = pending;
        drop(base);
        if let Some(mut old) = folded {
            if Arc::get_mut(&mut old).is_some() {
                buffers.spare = Some(old);
            }
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

/// Merges the current window's figures of every thread. The lists are copied under the
/// lock; the merge itself runs outside it.
pub(crate) fn merge() -> Merged {
    let (tables, (retired, epoch, live_threads, exited_threads)) = copy_lists(
        Vec::new(),
        |r| [&r.live, &r.exited_tables],
        |r| (r.retired.clone(), window::epoch(), r.live.len(), r.exited),
    );
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
