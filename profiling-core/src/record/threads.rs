//! The registry of recording threads: the tables of live threads, and the merged totals of
//! threads that have exited.
//!
//! Each recording thread owns a [`ThreadTables`] (shared by `Arc` with the registry) that
//! only it writes, with plain relaxed stores; readers merge it concurrently. When a thread
//! exits, its figures are merged into the registry's retired totals, so the data of exited
//! threads survives while memory stays bounded by distinct functions and paths.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::callsite::MAX_FUNCTIONS;
use crate::record::config::MAX_CALL_TREE_NODES_LIMIT;
use crate::record::storage::{Chunked, FnCell, NodeCell, Totals, FN_CHUNK, NODE_CHUNK};
use crate::record::window;

/// The figures one thread has recorded in its current window.
pub(crate) struct ThreadTables {
    /// The window these figures belong to.
    pub(crate) epoch: AtomicU64,
    /// Set by [`crate::exclude_current_thread`]: never read into a snapshot, never retired.
    pub(crate) excluded: AtomicBool,
    pub(crate) nodes: Chunked<NodeCell, NODE_CHUNK>,
    pub(crate) fns: Chunked<FnCell, FN_CHUNK>,
    /// Calls whose path was folded into its parent (the node cap was reached).
    pub(crate) folded_calls: AtomicU64,
}

impl ThreadTables {
    fn new(epoch: u64) -> Self {
        Self {
            epoch: AtomicU64::new(epoch),
            excluded: AtomicBool::new(false),
            nodes: Chunked::new(MAX_CALL_TREE_NODES_LIMIT as usize),
            fns: Chunked::new(MAX_FUNCTIONS),
            folded_calls: AtomicU64::new(0),
        }
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
    /// Merged figures of threads that exited in the current window.
    retired: Totals,
    /// Threads that have exited since the process started.
    exited: u64,
}

static REGISTRY: Mutex<ThreadRegistry> = Mutex::new(ThreadRegistry {
    live: Vec::new(),
    retired: Totals {
        nodes: Vec::new(),
        fns: Vec::new(),
        folded_calls: 0,
    },
    exited: 0,
});

fn lock() -> MutexGuard<'static, ThreadRegistry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the calling thread: returns its (empty) tables for the current window.
pub(crate) fn register() -> Arc<ThreadTables> {
    let tables = Arc::new(ThreadTables::new(window::epoch()));
    lock().live.push(Arc::clone(&tables));
    tables
}

/// Merges an exiting thread's figures into the retired totals and forgets the thread.
pub(crate) fn retire(tables: &Arc<ThreadTables>) {
    let mut r = lock();
    if tables.counts_in(window::epoch()) {
        let mut retired = std::mem::take(&mut r.retired);
        tables.add_to(&mut retired);
        r.retired = retired;
    }
    r.live.retain(|d| !Arc::ptr_eq(d, tables));
    r.exited += 1;
}

/// Figures of the current window merged over every thread, live and exited.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub(crate) totals: Totals,
    pub(crate) epoch: u64,
    pub(crate) live_threads: usize,
    pub(crate) exited_threads: u64,
}

/// Merges the current window's figures of every thread.
pub(crate) fn merge() -> Merged {
    let r = lock();
    let epoch = window::epoch();
    let mut totals = r.retired.clone();
    for d in &r.live {
        if d.counts_in(epoch) {
            d.add_to(&mut totals);
        }
    }
    Merged {
        totals,
        epoch,
        live_threads: r.live.len(),
        exited_threads: r.exited,
    }
}

/// Starts a new window: every figure recorded from now on counts, earlier ones do not.
///
/// Threads clear their own tables lazily at their next recorded boundary; readers ignore
/// tables of an older window in the meantime. Calls running across the reset are recorded
/// in the new window in full.
pub fn reset() {
    let mut r = lock();
    window::begin_new();
    r.retired = Totals::default();
}
