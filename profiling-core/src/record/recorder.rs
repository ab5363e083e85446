//! The per-thread recording engine: the frame stack, the per-thread tables, the registry of
//! threads (live and exited), windows and reset.
//!
//! Each thread owns a [`ThreadData`] (shared by `Arc` with the registry) that only it
//! writes, with plain relaxed stores; snapshots read it concurrently. A thread's frame
//! stack and caches are private to it. When a thread exits, its figures are merged into the
//! registry's `retired` totals, so the data of exited threads survives while memory stays
//! bounded by distinct functions and paths.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::record::alloc::{self, AllocCounters};
use crate::record::callsite::MAX_FUNCTIONS;
use crate::record::clock::Timestamp;
use crate::record::config::{self, MAX_CALL_TREE_NODES_LIMIT};
use crate::record::cpu::CpuAttribution;
use crate::record::storage::{bump, Chunked, FnCell, NodeCell, Totals};
use crate::record::tree::{NodeCache, ROOT};

pub(crate) const NODE_CHUNK: usize = 256;
const FN_CHUNK: usize = 8;

/// The window counter: bumped by [`reset`].
static EPOCH: AtomicU64 = AtomicU64::new(1);
static WINDOW_START_NS: AtomicU64 = AtomicU64::new(0);

pub(crate) struct ThreadData {
    pub(crate) epoch: AtomicU64,
    /// Set by [`exclude_current_thread`]: never read into a snapshot, never retired.
    excluded: AtomicBool,
    pub(crate) nodes: Chunked<NodeCell, NODE_CHUNK>,
    pub(crate) fns: Chunked<FnCell, FN_CHUNK>,
}

impl ThreadData {
    fn new(epoch: u64) -> Self {
        Self {
            epoch: AtomicU64::new(epoch),
            excluded: AtomicBool::new(false),
            nodes: Chunked::new(MAX_CALL_TREE_NODES_LIMIT as usize),
            fns: Chunked::new(MAX_FUNCTIONS),
        }
    }

    pub(crate) fn add_to(&self, t: &mut Totals) {
        self.nodes.for_each(|i, c| t.add_node(i, c));
        self.fns.for_each(|i, c| t.add_fn(i, c));
    }
}

#[derive(Default)]
pub(crate) struct Threads {
    pub(crate) live: Vec<Arc<ThreadData>>,
    pub(crate) retired: Totals,
    pub(crate) exited: u64,
}

pub(crate) static THREADS: Mutex<Threads> = Mutex::new(Threads {
    live: Vec::new(),
    retired: Totals {
        nodes: Vec::new(),
        fns: Vec::new(),
    },
    exited: 0,
});

pub(crate) fn lock_threads() -> std::sync::MutexGuard<'static, Threads> {
    THREADS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The current window: `(epoch, start in ns since the Unix epoch)`.
pub(crate) fn window() -> (u64, u64) {
    let start = WINDOW_START_NS.load(Relaxed);
    (EPOCH.load(Relaxed), start)
}

/// Records the process start as the first window's start (first use).
pub(crate) fn touch_window() {
    if WINDOW_START_NS.load(Relaxed) == 0 {
        let _ = WINDOW_START_NS.compare_exchange(0, Timestamp::now().unix_ns(), Relaxed, Relaxed);
    }
}

/// Starts a new window: every figure recorded from now on counts, earlier ones do not.
///
/// Threads clear their own tables lazily at their next recorded boundary; readers ignore
/// tables of an older window in the meantime. Calls running across the reset are recorded
/// in the new window in full.
pub fn reset() {
    let mut t = lock_threads();
    EPOCH.fetch_add(1, Relaxed);
    WINDOW_START_NS.store(Timestamp::now().unix_ns(), Relaxed);
    t.retired = Totals::default();
    crate::record::tree::FOLDED.store(0, Relaxed);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Sync,
    Poll,
}

pub(crate) struct Frame {
    func: u32,
    node: u32,
    folded: bool,
    kind: FrameKind,
    owner: u64,
    start: Timestamp,
    alloc_start: AllocCounters,
    child_wall: u64,
    child_busy: u64,
    child_alloc: AllocCounters,
    prev_fn: u32,
}

struct Inner {
    data: Arc<ThreadData>,
    epoch: u64,
    stack: Vec<Frame>,
    cache: NodeCache,
    depth: Vec<u32>,
    cpu: CpuAttribution,
}

struct Local {
    inner: RefCell<Inner>,
}

impl Local {
    fn new() -> Self {
        config::ensure_env_applied();
        touch_window();
        let epoch = EPOCH.load(Relaxed);
        let data = Arc::new(ThreadData::new(epoch));
        lock_threads().live.push(Arc::clone(&data));
        Local {
            inner: RefCell::new(Inner {
                data,
                epoch,
                stack: Vec::with_capacity(64),
                cache: NodeCache::new(),
                depth: Vec::new(),
                cpu: CpuAttribution::new(),
            }),
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        if inner.epoch == EPOCH.load(Relaxed) {
            let top = inner.stack.last().map_or(ROOT, |f| f.node);
            inner.cpu.boundary(top, Timestamp::now());
            inner.cpu.flush(&inner.data.nodes);
        }
        alloc::publish_current_thread();
        let mut t = lock_threads();
        if inner.data.epoch.load(Relaxed) == EPOCH.load(Relaxed) && !inner.data.excluded.load(Relaxed) {
            let mut retired = std::mem::take(&mut t.retired);
            inner.data.add_to(&mut retired);
            t.retired = retired;
        }
        t.live.retain(|d| !Arc::ptr_eq(d, &inner.data));
        t.exited += 1;
    }
}

thread_local! {
    static LOCAL: Local = alloc::untracked(Local::new);
}

#[inline(always)]
fn with_inner<R>(f: impl FnOnce(&mut Inner) -> R) -> Option<R> {
    LOCAL
        .try_with(|l| l.inner.try_borrow_mut().ok().map(|mut i| f(&mut i)))
        .ok()
        .flatten()
}

impl Inner {
    #[inline(always)]
    fn check_epoch(&mut self) {
        let e = EPOCH.load(Relaxed);
        if e != self.epoch {
            self.adopt_epoch(e);
        }
    }

    #[cold]
    fn adopt_epoch(&mut self, e: u64) {
        self.data.nodes.for_each(|_, c| c.clear());
        self.data.fns.for_each(|_, c| c.clear());
        self.data.epoch.store(e, Relaxed);
        self.epoch = e;
        self.cpu.restart();
        // Frames still open keep their starts: their calls land in the new window in full.
    }

    #[inline(always)]
    fn depth_mut(&mut self, func: u32) -> &mut u32 {
        let i = func as usize;
        if i >= self.depth.len() {
            alloc::untracked(|| self.depth.resize(i + 1, 0));
        }
        &mut self.depth[i]
    }

    #[inline(always)]
    fn node(&self, node: u32) -> Option<&NodeCell> {
        self.data.nodes.get_or_alloc(node as usize)
    }

    #[inline(always)]
    fn func(&self, func: u32) -> Option<&FnCell> {
        self.data.fns.get_or_alloc(func as usize)
    }

    /// Closes the current self segment at `now`; returns when the next one starts.
    #[inline(always)]
    fn boundary(&mut self, now: Timestamp) -> Timestamp {
        let top = self.stack.last().map_or(ROOT, |f| f.node);
        if self.cpu.boundary(top, now) {
            self.cpu.flush(&self.data.nodes)
        } else {
            now
        }
    }

    #[inline(always)]
    fn push(&mut self, func: u32, node: Option<u32>, kind: FrameKind, owner: u64) -> (usize, u32, bool, u32) {
        self.check_epoch();
        let now = Timestamp::now();
        let parent = self.stack.last().map_or(ROOT, |f| f.node);
        let (node, folded) = match node {
            Some(n) => (n, false),
            None => {
                let c = self.cache.child(parent, func);
                (c.node, c.folded)
            }
        };
        let start = self.boundary(now);
        *self.depth_mut(func) += 1;
        let prev_fn = alloc::swap_current_function(func);
        crate::record::heap_sample::set_current_node(node);
        let idx = self.stack.len();
        if idx == self.stack.capacity() {
            alloc::untracked(|| self.stack.reserve(idx));
        }
        self.stack.push(Frame {
            func,
            node,
            folded,
            kind,
            owner,
            start,
            alloc_start: alloc::thread_counters(),
            child_wall: 0,
            child_busy: 0,
            child_alloc: AllocCounters::default(),
            prev_fn,
        });
        (idx, node, folded, parent)
    }

    /// Pops frames above `idx` that were never closed (a span entered and not exited).
    fn drop_orphans(&mut self, idx: usize) {
        while self.stack.len() > idx + 1 {
            if let Some(f) = self.stack.pop() {
                alloc::swap_current_function(f.prev_fn);
                let d = self.depth_mut(f.func);
                *d = d.saturating_sub(1);
            }
        }
    }

    /// Pops the frame at `idx`, credits its elapsed time and allocations to the frame below,
    /// and closes its CPU segment. Its own node is left to the caller, which books every
    /// figure of that node at once.
    #[inline(always)]
    fn pop(&mut self, idx: usize, end: Timestamp, alloc_end: AllocCounters) -> Option<Popped> {
        self.check_epoch();
        if self.stack.len() <= idx {
            return None;
        }
        if self.stack.len() > idx + 1 {
            self.drop_orphans(idx);
        }
        let frame = self.stack.pop()?;
        let elapsed = end.nanos_since(frame.start);
        let alloc = alloc_end.since(&frame.alloc_start);
        let outermost = {
            let d = self.depth_mut(frame.func);
            *d = d.saturating_sub(1);
            *d == 0
        };
        alloc::swap_current_function(frame.prev_fn);
        crate::record::heap_sample::set_current_node(self.stack.last().map_or(ROOT, |f| f.node));
        if let Some(p) = self.stack.last_mut() {
            p.child_busy += elapsed;
            p.child_alloc.add(&alloc);
        }
        // The segment that just ended was this frame's own.
        if self.cpu.boundary(frame.node, end) {
            self.cpu.flush(&self.data.nodes);
        }
        Some(Popped {
            frame,
            elapsed,
            alloc,
            outermost,
        })
    }

    /// Books one finished call. Its wall time counts as a child's in the innermost open
    /// frame when that frame is the one the call was made under.
    #[inline(always)]
    fn book_call(&mut self, c: &Call) {
        if let Some(f) = self.func(c.func) {
            bump(&f.calls, 1);
            if c.cancelled {
                bump(&f.cancelled, 1);
            }
            if c.outermost {
                bump(&f.wall_total, c.wall);
                bump(&f.busy_total, c.busy);
            }
            f.record_latency(c.wall);
        }
        if let Some(n) = self.node(c.node) {
            if !c.folded {
                bump(&n.calls, 1);
            }
            bump(&n.wall_self, c.wall.saturating_sub(c.child_wall));
            if let Some((busy_self, alloc_self)) = &c.frame_self {
                bump(&n.busy_self, *busy_self);
                n.add_alloc(alloc_self);
            }
        }
        if let Some(p) = self.stack.last_mut() {
            if c.parent.is_none_or(|parent| p.node == parent) {
                p.child_wall += c.wall;
            }
        }
    }
}

/// A frame just popped, with what it measured.
struct Popped {
    frame: Frame,
    elapsed: u64,
    /// Allocations during the frame, its children's included.
    alloc: AllocCounters,
    /// No other frame of the same function is open on this thread (recursion is counted once).
    outermost: bool,
}

impl Popped {
    /// Busy time and allocations of the frame itself, children's excluded.
    #[inline(always)]
    fn frame_self(&self) -> (u64, AllocCounters) {
        (
            self.elapsed.saturating_sub(self.frame.child_busy),
            self.alloc.saturating_sub(&self.frame.child_alloc),
        )
    }
}

/// One finished call, as [`Inner::book_call`] records it.
struct Call {
    func: u32,
    node: u32,
    folded: bool,
    /// The node the call was made under; `None`: the innermost open frame, by construction.
    parent: Option<u32>,
    wall: u64,
    busy: u64,
    child_wall: u64,
    cancelled: bool,
    outermost: bool,
    /// The self busy time and allocations of the call's last frame, when it closes with it
    /// (sync calls); poll frames book theirs as they close.
    frame_self: Option<(u64, AllocCounters)>,
}

/// Opens a frame for a synchronous call of `func`. Returns its stack index.
#[inline(never)]
pub(crate) fn push_sync(func: u32) -> Option<usize> {
    with_inner(|i| i.push(func, None, FrameKind::Sync, 0).0)
}

/// Closes the synchronous frame at `idx` and records the call. Kept out of line so that
/// the guard's drop glue stays small enough to inline (a disabled call then costs a load
/// and a branch).
#[inline(never)]
pub(crate) fn pop_sync(idx: usize) {
    let end = Timestamp::now();
    let alloc_end = alloc::thread_counters();
    with_inner(|i| {
        if let Some(p) = i.pop(idx, end, alloc_end) {
            i.book_call(&Call {
                func: p.frame.func,
                node: p.frame.node,
                folded: p.frame.folded,
                parent: None,
                wall: p.elapsed,
                busy: p.elapsed,
                child_wall: p.frame.child_wall,
                cancelled: false,
                outermost: p.outermost,
                frame_self: Some(p.frame_self()),
            });
        }
    });
}

/// Where a poll frame sits: its stack index, or the span that owns it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Locator {
    Index(usize),
    Owner(u64),
}

/// What one poll (or span entry) measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PollOutcome {
    pub(crate) busy: u64,
    pub(crate) child_wall: u64,
    pub(crate) end: Timestamp,
}

/// Opens a poll frame for `func` (an async call or a span entry). `node` is the call's node
/// once known (from its first poll); `None` resolves it under the current frame.
/// Returns `(stack index, node, folded, parent node)`.
#[inline]
pub(crate) fn push_poll(func: u32, node: Option<u32>, owner: u64) -> Option<(usize, u32, bool, u32)> {
    with_inner(|i| i.push(func, node, FrameKind::Poll, owner))
}

/// Closes a poll frame and books its self busy time and allocations.
#[inline]
pub(crate) fn pop_poll(at: Locator) -> Option<PollOutcome> {
    let end = Timestamp::now();
    let alloc_end = alloc::thread_counters();
    with_inner(|i| {
        let idx = match at {
            Locator::Index(idx) => idx,
            Locator::Owner(o) => i
                .stack
                .iter()
                .rposition(|f| f.kind == FrameKind::Poll && f.owner == o)?,
        };
        if i.stack.get(idx).map(|f| f.kind) != Some(FrameKind::Poll) {
            return None;
        }
        let p = i.pop(idx, end, alloc_end)?;
        if let Some(n) = i.node(p.frame.node) {
            let (busy_self, alloc_self) = p.frame_self();
            bump(&n.busy_self, busy_self);
            n.add_alloc(&alloc_self);
        }
        Some(PollOutcome {
            busy: p.elapsed,
            child_wall: p.frame.child_wall,
            end,
        })
    })
    .flatten()
}

/// Records one finished (or cancelled) async call or span; `parent` is the node its first
/// poll or entry was made under.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn complete(
    func: u32,
    node: u32,
    folded: bool,
    parent: u32,
    latency: u64,
    busy: u64,
    child_latency: u64,
    cancelled: bool,
) {
    with_inner(|i| {
        i.check_epoch();
        // Its own poll frames are closed: any open frame of `func` is an enclosing call.
        let outermost = i.depth.get(func as usize).copied().unwrap_or(0) == 0;
        i.book_call(&Call {
            func,
            node,
            folded,
            parent: Some(parent),
            wall: latency,
            busy,
            child_wall: child_latency,
            cancelled,
            outermost,
            frame_self: None,
        })
    });
}

/// Now, in the recorder's clock (ns since the Unix epoch).
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    Timestamp::now().unix_ns()
}

/// Keeps everything the calling thread records, from before the call and after it, out of
/// every snapshot, even once the thread has exited.
///
/// For threads that run annotated code only to measure the profiler itself (such as the
/// HTTP server's overhead calibration): their calls are real, but not the application's.
pub fn exclude_current_thread() {
    with_inner(|i| i.data.excluded.store(true, Relaxed));
}

/// Depth of this thread's frame stack (for tests and diagnostics).
pub fn current_depth() -> usize {
    with_inner(|i| i.stack.len()).unwrap_or(0)
}

/// Merged totals of the current window: exited threads plus live ones.
pub(crate) fn collect() -> (Totals, u64, usize, u64) {
    alloc::untracked(collect_untracked)
}

fn collect_untracked() -> (Totals, u64, usize, u64) {
    // Flush this thread's pending CPU so a caller that measures then snapshots sees it.
    with_inner(|i| {
        if i.epoch == EPOCH.load(Relaxed) {
            let top = i.stack.last().map_or(ROOT, |f| f.node);
            i.cpu.boundary(top, Timestamp::now());
            i.cpu.flush(&i.data.nodes);
        }
    });
    let t = lock_threads();
    let epoch = EPOCH.load(Relaxed);
    let mut totals = t.retired.clone();
    let mut live = 0;
    for d in &t.live {
        if d.epoch.load(Relaxed) == epoch && !d.excluded.load(Relaxed) {
            d.add_to(&mut totals);
        }
        live += 1;
    }
    (totals, epoch, live, t.exited)
}
