//! The per-thread recording engine: the frame stack of each thread and the bookkeeping of
//! every call, sync or async, as its frames open and close.
//!
//! A thread's frame stack, node cache and CPU attribution are private to it; its figures go
//! to its [`ThreadTables`], registered with [`crate::record::threads`], which readers merge.
//! Windows ([`crate::record::window`]) are adopted lazily at the next recorded boundary.

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use crate::record::alloc::{self, AllocCounters};
use crate::record::call::{InFlightCall, OpenedFrame, PollOutcome, TreePlace};
use crate::record::clock::Timestamp;
use crate::record::config;
use crate::record::cpu::CpuAttribution;
use crate::record::kits::{self, take_kit, Kit};
use crate::record::layer::LayerThreadState;
use crate::record::storage::{bump, Cells, FnCell, NodeCell};
use crate::record::threads::{self, Merged, ThreadTables};
use crate::record::tree::{NodeCache, ROOT};
use crate::record::window;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Sync,
    Poll,
}

#[derive(Clone, Copy)]
pub(crate) struct Frame {
    func: u32,
    node: u32,
    folded: bool,
    kind: FrameKind,
    owner: u64,
    start: Timestamp,
    child_wall: u64,
    child_busy: u64,
    /// Where its node's and function's figures are, when its path was cached.
    cells: Cells,
    /// Nanoseconds of the frame's self time that are not its CPU, when CPU is attributed by
    /// frames (`record/cpu.rs`): time it spent switched out, and time that windows credited
    /// before the thread changed to frames.
    self_not_cpu: u64,
}

/// The recording state of one thread: its frame stack and what it needs to book calls.
pub(crate) struct ThreadRecorder {
    tables: Arc<ThreadTables>,
    /// The window `tables` hold figures of.
    epoch: u64,
    stack: Vec<Frame>,
    cache: NodeCache,
    /// Open frames per function (recursion is counted once in total time).
    depth: Vec<u32>,
    cpu: CpuAttribution,
    /// The thread's allocation counters at the last boundary: what was allocated and freed
    /// since then belongs to the innermost frame's node (its self figures).
    alloc_mark: AllocCounters,
    /// Its allocations plus frees ([`alloc::thread_events`]): what a boundary compares.
    events_mark: u64,
    /// The `tracing` layer's state of this thread (`layer/thread_state.rs`), here rather than in a
    /// thread-local of its own: a layer callback reaches it and the frame stack at once.
    spans: LayerThreadState,
}

impl ThreadRecorder {
    /// The calling thread's recorder, on a pooled kit when one is ready (see [`Kit`]).
    fn new() -> Self {
        config::ensure_env_applied();
        window::touch();
        let kit = take_kit();
        let epoch = threads::register(&kit.tables);
        let alloc_mark = alloc::thread_counters();
        ThreadRecorder {
            epoch,
            tables: kit.tables,
            stack: kit.stack,
            cache: kit.cache,
            depth: kit.depth,
            cpu: CpuAttribution::new(),
            alloc_mark,
            events_mark: alloc_mark.events(),
            spans: LayerThreadState::EMPTY,
        }
    }

    /// Credits the CPU used since the last read (current window only): to the current frame
    /// by windows; by frames, to the root (a frame books its own as it closes).
    fn flush_cpu(&mut self) {
        if self.epoch == window::epoch() {
            let top = self.top_node();
            let now = Timestamp::now();
            self.cpu.boundary(top, now);
            self.read_cpu(top, now, false);
            self.book_allocations();
        }
    }

    /// Reads the CPU clock at the end of a segment of `node` at `now` (see
    /// [`CpuAttribution::flush`]). Returns when the next segment starts, and, for the
    /// segment of a frame just taken off the stack (`popped`), how long that frame was off
    /// the CPU in it; else that time goes to the innermost open frame here.
    #[cold]
    #[inline(never)]
    fn read_cpu(&mut self, node: u32, now: Timestamp, popped: bool) -> (Timestamp, u64) {
        let by_frames = self.cpu.by_frames();
        let (after, off_cpu) = self.cpu.flush(&self.tables.nodes, node, now);
        let popped_off_cpu = if popped {
            off_cpu
        } else {
            // Before any handover below, which books what the open frames ran so far.
            self.with_top(|f| f.self_not_cpu += off_cpu);
            0
        };
        if self.cpu.by_frames() != by_frames {
            self.cpu_attribution_changed(after);
        }
        (after, popped_off_cpu)
    }

    /// Hands the open frames' CPU over at `at`, when the thread changed between attribution
    /// by windows and by frames: by frames, what windows credited of a frame's self time so
    /// far is not its to book again; by windows, a frame books what it ran so far now.
    #[cold]
    fn cpu_attribution_changed(&mut self, at: Timestamp) {
        let by_frames = self.cpu.by_frames();
        let mut end = at;
        for i in (0..self.stack.len()).rev() {
            let f = &mut self.stack[i];
            // Its self time so far: up to its open child's start (or `at`), less its
            // closed children's.
            let so_far = end.nanos_since(f.start).saturating_sub(f.child_busy);
            end = f.start;
            if by_frames {
                f.self_not_cpu = so_far;
            } else {
                let cpu = so_far.saturating_sub(std::mem::take(&mut f.self_not_cpu));
                let node = f.node;
                if let Some(n) = self.node(node) {
                    bump(&n.cpu_self, cpu);
                }
            }
        }
    }
}

/// The thread-local home of a [`ThreadRecorder`]. It has no destructor: [`on_thread_exit`]
/// retires the thread's figures, and then leaves the cell borrowed for good, so that any
/// later call on the thread is ignored rather than reaching the recorder it moved out.
struct ThreadSlot(RefCell<ManuallyDrop<ThreadRecorder>>);

thread_local! {
    static RECORDER: ThreadSlot = alloc::untracked(|| {
        let slot = ThreadSlot(RefCell::new(ManuallyDrop::new(ThreadRecorder::new())));
        hook_thread_exit();
        RECORDER_MADE.set(true);
        slot
    });
    /// Set once this thread's [`RECORDER`] is made: [`innermost_frame`], which the allocator
    /// calls, reads the recorder only then (making it allocates).
    static RECORDER_MADE: Cell<bool> = const { Cell::new(false) };
}

/// The function and call-tree node of this thread's innermost open frame; `u32::MAX` and the
/// root outside every frame, and while the recorder is not made yet or is busy (the
/// profiler's own allocations). For the allocator's rare events, large allocations and heap
/// samples, which ask when they happen: frame pushes and pops keep no copy of it.
pub(crate) fn innermost_frame() -> (u32, u32) {
    const NONE: (u32, u32) = (u32::MAX, ROOT);
    if !RECORDER_MADE.try_with(Cell::get).unwrap_or(false) {
        return NONE;
    }
    RECORDER
        .try_with(|slot| {
            slot.0
                .try_borrow()
                .ok()
                .and_then(|r| r.stack.last().map(|f| (f.func, f.node)))
        })
        .ok()
        .flatten()
        .unwrap_or(NONE)
}

/// Asks for [`on_thread_exit`] to run when the calling thread exits, through a POSIX
/// thread-specific key rather than a thread-local destructor: registering a destructor
/// allocates (glibc's `__cxa_thread_atexit_impl` `calloc`s a list entry), and a new
/// thread's first allocations wait for the allocator's shared arena, for milliseconds when
/// other threads hold it (`docs/reliability.md`, thread stall). Setting a key's value
/// allocates nothing (for the first 32 keys of a process, in glibc). Key destructors run
/// after every thread-local destructor of the thread, so calls those make are recorded.
/// Where the key cannot be had, a thread-local destructor does the same.
fn hook_thread_exit() {
    static KEY: OnceLock<Option<libc::pthread_key_t>> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid to write; the destructor is an `extern "C" fn` that never
        // unwinds.
        (unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0).then_some(key)
    });
    // A non-null value, so that the destructor runs.
    let set = key.is_some_and(|k| {
        // SAFETY: `k` is a key this process created and never deletes.
        unsafe { libc::pthread_setspecific(k, std::ptr::NonNull::<u8>::dangling().as_ptr().cast()) == 0 }
    });
    if !set {
        EXIT_FALLBACK.with(|_| {});
    }
}

/// Runs [`on_thread_exit`] from a thread-local destructor, where no key could be set.
struct ExitFallback;

impl Drop for ExitFallback {
    fn drop(&mut self) {
        on_thread_exit(std::ptr::null_mut());
    }
}

thread_local! {
    static EXIT_FALLBACK: ExitFallback = const { ExitFallback };
}

/// Retires the exiting thread's figures and gives its kit back (see [`Kit`]).
extern "C" fn on_thread_exit(_: *mut libc::c_void) {
    // Nothing below is expected to panic; should it, the figures are lost, not the process
    // (an unwind out of an `extern "C"` function aborts).
    let _ = std::panic::catch_unwind(retire_current_thread);
}

fn retire_current_thread() {
    let _ = RECORDER.try_with(|slot| {
        let Ok(mut guard) = slot.0.try_borrow_mut() else {
            return;
        };
        // SAFETY: taken once: the borrow is leaked just below, so the cell is never
        // borrowed again and nothing reaches the moved-out recorder.
        let mut rec = unsafe { ManuallyDrop::take(&mut *guard) };
        std::mem::forget(guard);
        rec.flush_cpu();
        alloc::untracked(|| {
            threads::retire(&rec.tables);
            give_back_kit(rec);
        });
    });
}

/// Gives the exiting thread's kit back (see [`kits::give_back_kit`]).
fn give_back_kit(rec: ThreadRecorder) {
    kits::give_back_kit(
        Kit {
            tables: rec.tables,
            cache: rec.cache,
            stack: rec.stack,
            depth: rec.depth,
        },
        rec.cpu,
    );
}

/// Runs `f` on the calling thread's recorder (`None` during thread teardown or re-entry).
/// The `tracing` layer's callbacks use it too: one thread-local access and one borrow give
/// them both the layer's state of the thread ([`ThreadRecorder::spans`]) and the frame stack.
#[inline(always)]
pub(crate) fn with_recorder<R>(f: impl FnOnce(&mut ThreadRecorder) -> R) -> Option<R> {
    RECORDER
        .try_with(|slot| slot.0.try_borrow_mut().ok().map(|mut r| f(&mut r)))
        .ok()
        .flatten()
}

impl ThreadRecorder {
    /// The innermost open frame's node (the root's outside every frame).
    #[inline(always)]
    fn top_node(&self) -> u32 {
        let len = self.stack.len();
        if len == 0 {
            return ROOT;
        }
        // SAFETY: `len - 1` is in bounds. (`Vec::last` here compiles to a test of the
        // element's address for null besides the length's, on every call.)
        unsafe { self.stack.get_unchecked(len - 1) }.node
    }

    /// Runs `f` on the innermost open frame, if any.
    #[inline(always)]
    fn with_top(&mut self, f: impl FnOnce(&mut Frame)) {
        let len = self.stack.len();
        if len > 0 {
            // SAFETY: as in `top_node`.
            f(unsafe { self.stack.get_unchecked_mut(len - 1) })
        }
    }

    #[inline(always)]
    fn check_epoch(&mut self) {
        let e = window::epoch();
        if e != self.epoch {
            self.adopt_epoch(e);
        }
    }

    #[cold]
    fn adopt_epoch(&mut self, e: u64) {
        self.tables.nodes.for_each(|_, c| c.clear());
        self.tables.fns.for_each(|_, c| c.clear());
        self.tables.folded_calls.store(0, Relaxed);
        self.tables.epoch.store(e, Relaxed);
        self.epoch = e;
        self.cpu.restart();
        // Frames still open keep their starts: their calls land in the new window in full.
    }

    #[inline(always)]
    fn depth_mut(&mut self, func: u32) -> &mut u32 {
        let i = func as usize;
        if i >= self.depth.len() {
            self.grow_depth(i);
        }
        // SAFETY: `i < len`: it was, or `grow_depth` resized to `i + 1` (a failed
        // allocation aborts). Indexing checked the bound a second time on every call.
        unsafe { self.depth.get_unchecked_mut(i) }
    }

    #[cold]
    #[inline(never)]
    fn grow_depth(&mut self, i: usize) {
        alloc::untracked(|| self.depth.resize(i + 1, 0));
    }

    #[inline(always)]
    fn node(&self, node: u32) -> Option<&NodeCell> {
        self.tables.nodes.get_or_alloc(node as usize)
    }

    #[inline(always)]
    fn func(&self, func: u32) -> Option<&FnCell> {
        self.tables.fns.get_or_alloc(func as usize)
    }

    /// The figures of `node`, at `cached` when known.
    #[inline(always)]
    fn node_at(&self, node: u32, cached: *const NodeCell) -> Option<&NodeCell> {
        // SAFETY: a cached cell is in this thread's tables (`Cells`), alive as `self` is.
        unsafe { cached.as_ref() }.or_else(|| self.node(node))
    }

    /// The figures of `func`, at `cached` when known.
    #[inline(always)]
    fn func_at(&self, func: u32, cached: *const FnCell) -> Option<&FnCell> {
        // SAFETY: as in `node_at`.
        unsafe { cached.as_ref() }.or_else(|| self.func(func))
    }

    /// Books the allocations and frees made since the last boundary to the innermost open
    /// frame's node: they are its own (a child's were booked at the child's boundaries).
    /// Most calls allocate nothing: then this is a compare of two counts.
    #[inline(always)]
    fn book_allocations(&mut self) {
        if alloc::thread_events() == self.events_mark {
            return;
        }
        self.book_allocations_since_mark();
    }

    #[cold]
    #[inline(never)]
    fn book_allocations_since_mark(&mut self) {
        let now = alloc::thread_counters();
        let made = now.since(&self.alloc_mark);
        self.alloc_mark = now;
        self.events_mark = now.events();
        // Outside every frame, allocations belong to no function.
        if !self.stack.is_empty() {
            if let Some(n) = self.tables.nodes.get_or_alloc(self.top_node() as usize) {
                n.add_alloc(&made);
            }
        }
    }

    /// Closes the current self segment, of node `top`, at `now`; returns when the next one
    /// starts.
    #[inline(always)]
    fn boundary(&mut self, top: u32, now: Timestamp) -> Timestamp {
        self.book_allocations();
        if self.cpu.boundary(top, now) {
            self.read_cpu(top, now, false).0
        } else {
            now
        }
    }

    #[inline(always)]
    fn push(&mut self, func: u32, node: Option<u32>, kind: FrameKind, owner: u64) -> OpenedFrame {
        self.check_epoch();
        let now = Timestamp::now();
        let parent = self.top_node();
        let (node, folded, cells) = match node {
            Some(n) => (n, false, Cells::NONE),
            None => {
                let tables = &self.tables;
                let (c, cells) = self.cache.child(parent, func, &tables.folded_calls, |c, func| Cells {
                    node: tables
                        .nodes
                        .get_or_alloc(c.node as usize)
                        .map_or(std::ptr::null(), |n| n),
                    func: tables.fns.get_or_alloc(func as usize).map_or(std::ptr::null(), |f| f),
                });
                (c.node, c.folded, cells)
            }
        };
        let start = self.boundary(parent, now);
        *self.depth_mut(func) += 1;
        let index = self.stack.len();
        if index == self.stack.capacity() {
            alloc::untracked(|| self.stack.reserve(index));
        }
        self.stack.push(Frame {
            func,
            node,
            folded,
            kind,
            owner,
            start,
            child_wall: 0,
            child_busy: 0,
            cells,
            self_not_cpu: 0,
        });
        OpenedFrame {
            index,
            place: TreePlace { node, folded, parent },
            at: now,
        }
    }

    /// Counts a frame of `func` closed; returns whether no other is open (its push made
    /// room for the count).
    #[inline(always)]
    fn frame_closed(&mut self, func: u32) -> bool {
        match self.depth.get_mut(func as usize) {
            Some(d) => {
                *d = d.saturating_sub(1);
                *d == 0
            }
            None => true,
        }
    }

    /// Pops frames above `idx` that were never closed (a span entered and not exited).
    #[cold]
    #[inline(never)]
    fn drop_orphans(&mut self, idx: usize) {
        while self.stack.len() > idx + 1 {
            if let Some(f) = self.stack.pop() {
                self.frame_closed(f.func);
            }
        }
    }

    /// Pops the frame at `idx`, credits its elapsed time to the frame below (as a child's
    /// wall time too when the frame is a `whole_call`: a sync call, or an async call done at
    /// its first poll), and closes its CPU segment and allocation segment. Its own node is
    /// left to the caller, which books its other figures at once.
    #[inline(always)]
    fn pop(&mut self, idx: usize, end: Timestamp, whole_call: bool) -> Option<Popped> {
        self.check_epoch();
        if self.stack.len() <= idx {
            return None;
        }
        // What was allocated since the last boundary is the innermost frame's: an orphan's,
        // or this frame's.
        self.book_allocations();
        if self.stack.len() > idx + 1 {
            self.drop_orphans(idx);
        }
        // The frame stays where it is, past the stack's end, until the next push: its
        // figures are read from there as they are booked, not copied out first.
        // SAFETY: `idx` is the last frame (`idx < len`, and the frames above it are gone).
        unsafe { self.stack.set_len(idx) };
        let frame = self.popped(idx);
        let (func, node, start) = (frame.func, frame.node, frame.start);
        let elapsed = end.nanos_since(start);
        let outermost = self.frame_closed(func);
        // One visit to the frame below for both: with a frame below, the only instructions a
        // nested call runs beyond a flat one's.
        self.with_top(|p| {
            p.child_busy += elapsed;
            if whole_call {
                p.child_wall += elapsed;
            }
        });
        // The segment that just ended was this frame's own; how CPU was attributed while
        // the frame ran decides who books it (a read may change that for what follows).
        let by_frames = self.cpu.by_frames();
        if self.cpu.frame_boundary(node, end) {
            let off_cpu = self.read_cpu(node, end, true).1;
            // SAFETY: as for `popped`; no reference to the frame is alive.
            unsafe { (*self.stack.as_mut_ptr().add(idx)).self_not_cpu += off_cpu };
        }
        Some(Popped {
            at: idx,
            elapsed,
            outermost,
            by_frames,
        })
    }

    /// The frame [`pop`](Self::pop) just took off at `at`, which stays in the stack's spare
    /// room until the next push.
    #[inline(always)]
    fn popped(&self, at: usize) -> &Frame {
        debug_assert!(at >= self.stack.len() && at < self.stack.capacity());
        // SAFETY: a push wrote the frame at `at` and no push has run since its pop (every
        // caller books a popped frame before returning, and booking pushes nothing);
        // `Frame` is `Copy`, so the slot holds a valid value whatever the stack's length.
        unsafe { &*self.stack.as_ptr().add(at) }
    }

    /// Books one finished call. Its wall time counts as a child's in the innermost open
    /// frame when that frame is the one the call was made under (see [`Call::parent`]).
    #[inline(always)]
    fn book_call(&mut self, c: &Call) {
        if let Some(f) = self.func_at(c.func, c.cells.func) {
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
        if let Some(n) = self.node_at(c.node, c.cells.node) {
            if !c.folded {
                bump(&n.calls, 1);
            }
            bump(&n.wall_self, c.wall.saturating_sub(c.child_wall));
            if let Some(own) = &c.frame_self {
                own.book(n);
            }
        }
        if let Some(parent) = c.parent {
            self.with_top(|p| {
                if p.node == parent {
                    p.child_wall += c.wall;
                }
            });
        }
    }
}

/// A frame just popped, with what it measured.
struct Popped {
    /// Where the frame is ([`ThreadRecorder::popped`]).
    at: usize,
    elapsed: u64,
    /// No other frame of the same function is open on this thread (recursion is counted once).
    outermost: bool,
    /// CPU was attributed by frames while it ran: it books its own.
    by_frames: bool,
}

impl ThreadRecorder {
    /// Busy time of the popped frame itself, children's excluded, and its CPU when it
    /// books its own (its allocations are booked at its boundaries,
    /// [`ThreadRecorder::book_allocations`]).
    #[inline(always)]
    fn frame_self(&self, p: &Popped) -> FrameSelf {
        let frame = self.popped(p.at);
        let busy = p.elapsed.saturating_sub(frame.child_busy);
        FrameSelf {
            busy,
            cpu: p.by_frames.then(|| busy.saturating_sub(frame.self_not_cpu)),
        }
    }
}

/// What a frame measured itself, its children's figures excluded.
struct FrameSelf {
    busy: u64,
    /// Its CPU, when CPU is attributed by frames (else windows book it).
    cpu: Option<u64>,
}

impl FrameSelf {
    /// Books the frame's own figures to its node.
    #[inline(always)]
    fn book(&self, n: &NodeCell) {
        bump(&n.busy_self, self.busy);
        if let Some(cpu) = self.cpu {
            bump(&n.cpu_self, cpu);
        }
    }
}

/// One finished call, as [`ThreadRecorder::book_call`] records it.
struct Call {
    func: u32,
    node: u32,
    folded: bool,
    /// The node the call was made under, whose frame its wall time counts as a child's in
    /// when that frame is the innermost open one; `None`: a call whose frame's pop credited
    /// it already ([`ThreadRecorder::pop`] of a whole call).
    parent: Option<u32>,
    wall: u64,
    busy: u64,
    child_wall: u64,
    cancelled: bool,
    outermost: bool,
    /// The self busy time of the call's last frame, when it closes with it
    /// (sync calls); poll frames book theirs as they close.
    frame_self: Option<FrameSelf>,
    /// Where its figures are, when known (the frame's, for sync calls).
    cells: Cells,
}

impl Call {
    /// An async call or span `call`, under `node`, as it ends at `end_ns` with the figures it
    /// has gathered (its closed polls).
    #[inline(always)]
    fn ended(call: &InFlightCall, node: u32, wall: u64, cancelled: bool, outermost: bool) -> Call {
        Call {
            func: call.func,
            node,
            folded: call.place.folded,
            parent: Some(call.place.parent),
            wall,
            busy: call.busy_ns,
            child_wall: call.child_latency_ns,
            cancelled,
            outermost,
            frame_self: None,
            cells: Cells::NONE,
        }
    }
}

/// Opens a frame for a synchronous call of `func`. Returns its stack index.
#[inline(never)]
pub(crate) fn push_sync(func: u32) -> Option<usize> {
    with_recorder(|r| r.push(func, None, FrameKind::Sync, 0).index)
}

/// Closes the synchronous frame at `idx` and records the call. Kept out of line so that
/// the guard's drop glue stays small enough to inline (a disabled call then costs a load
/// and a branch).
#[inline(never)]
pub(crate) fn pop_sync(idx: usize) {
    let end = Timestamp::now();
    with_recorder(|r| {
        if let Some(p) = r.pop(idx, end, true) {
            let frame = r.popped(p.at);
            r.book_call(&Call {
                func: frame.func,
                node: frame.node,
                folded: frame.folded,
                parent: None,
                wall: p.elapsed,
                busy: p.elapsed,
                child_wall: frame.child_wall,
                cancelled: false,
                outermost: p.outermost,
                frame_self: Some(r.frame_self(&p)),
                cells: frame.cells,
            });
        }
    });
}

/// Opens a poll frame for `func` (an async call or a span entry). `node` is the call's node
/// once known (from its first poll); `None` resolves it under the current frame.
#[inline]
pub(crate) fn push_poll(func: u32, node: Option<u32>, owner: u64) -> Option<OpenedFrame> {
    with_recorder(|r| r.push(func, node, FrameKind::Poll, owner))
}

/// Opens the poll frame of an async call's first poll. Returns its stack index: most calls
/// complete at their first poll and are then booked as sync calls ([`pop_sync`]); one that
/// does not learns its place in the tree from [`pop_first_poll`].
#[inline]
pub(crate) fn push_first_poll(func: u32) -> Option<usize> {
    with_recorder(|r| r.push(func, None, FrameKind::Poll, 0).index)
}

/// [`pop_poll`] of a call's first poll frame, which did not complete the call; also where
/// the call sits in the tree and when the frame opened, for its in-flight record.
#[inline(never)]
pub(crate) fn pop_first_poll(idx: usize) -> Option<(PollOutcome, TreePlace, Timestamp)> {
    let end = Timestamp::now();
    with_recorder(|r| {
        let f = r.stack.get(idx)?;
        let place = TreePlace {
            node: f.node,
            folded: f.folded,
            // The frames below it are the ones it was opened on.
            parent: idx.checked_sub(1).map_or(ROOT, |below| r.stack[below].node),
        };
        let start = f.start;
        Some((r.pop_poll_at(idx, end)?, place, start))
    })
    .flatten()
}

/// Closes the poll frame at stack index `idx` and books its self busy time (its allocations
/// are booked at its boundaries). The `tracing` layer finds a span's entries by owner
/// instead ([`ThreadRecorder::pop_span_entry`]).
#[inline]
pub(crate) fn pop_poll(idx: usize) -> Option<PollOutcome> {
    let end = Timestamp::now();
    with_recorder(|r| r.pop_poll_at(idx, end)).flatten()
}

impl ThreadRecorder {
    /// The index of the innermost open poll frame of `owner`.
    #[inline(always)]
    fn find_poll(&self, owner: u64) -> Option<usize> {
        self.stack
            .iter()
            .rposition(|f| f.kind == FrameKind::Poll && f.owner == owner)
    }

    /// [`pop_poll`] of the frame at `idx`, on this thread's recorder.
    #[inline(always)]
    fn pop_poll_at(&mut self, idx: usize, end: Timestamp) -> Option<PollOutcome> {
        if self.stack.get(idx).map(|f| f.kind) != Some(FrameKind::Poll) {
            return None;
        }
        let p = self.pop(idx, end, false)?;
        let frame = self.popped(p.at);
        if let Some(n) = self.node_at(frame.node, frame.cells.node) {
            self.frame_self(&p).book(n);
        }
        Some(PollOutcome {
            busy: p.elapsed,
            child_wall: frame.child_wall,
            end,
        })
    }
}

/// Closes the poll frame at `idx`, the last of `call`, and records the call as it ends with
/// this poll: one pass over the recorder for what [`pop_poll`] then [`complete`] book, ended
/// at the poll's end.
#[inline]
pub(crate) fn pop_last_poll(idx: usize, call: &InFlightCall) {
    let end = Timestamp::now();
    with_recorder(|r| {
        if r.stack.get(idx).map(|f| f.kind) != Some(FrameKind::Poll) {
            return;
        }
        let Some(p) = r.pop(idx, end, false) else {
            return;
        };
        // The frame's node is the call's: every poll after the first reopens it. Its own
        // frames are closed: any open frame of `func` is an enclosing call.
        let wall = end.unix_ns().saturating_sub(call.started_ns);
        let frame = r.popped(p.at);
        let ended = Call::ended(call, frame.node, wall, false, p.outermost);
        r.book_call(&Call {
            busy: ended.busy + p.elapsed,
            child_wall: ended.child_wall + frame.child_wall,
            frame_self: Some(r.frame_self(&p)),
            ..ended
        });
    });
}

/// Records one finished (or cancelled) async call, ended at `end_ns` (ns since the
/// Unix epoch).
#[inline]
pub(crate) fn complete(call: &InFlightCall, end_ns: u64, cancelled: bool) {
    with_recorder(|r| r.complete(call, end_ns.saturating_sub(call.started_ns), cancelled));
}

impl ThreadRecorder {
    /// [`complete`], on this thread's recorder, for a call of wall time `wall_ns` (the
    /// `tracing` layer, which keeps raw clock readings, converts only that).
    #[inline(always)]
    pub(crate) fn complete(&mut self, call: &InFlightCall, wall_ns: u64, cancelled: bool) {
        self.check_epoch();
        // Its own poll frames are closed: any open frame of `func` is an enclosing call.
        let outermost = self.depth.get(call.func as usize).copied().unwrap_or(0) == 0;
        self.book_call(&Call::ended(call, call.place.node, wall_ns, cancelled, outermost))
    }
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
///
/// On a thread that took a used kit (`record/kits.rs`: none clean was ready), whose tables
/// hold the figures of earlier threads, the thread moves to tables of its own; what it
/// recorded before the call stays counted, with those earlier threads' figures.
pub fn exclude_current_thread() {
    with_recorder(|r| {
        if let Some(own) = kits::own_tables_for_exclusion(&r.tables) {
            r.tables = own;
            // What was cached of the old tables' cells is no longer this thread's.
            r.cache.forget();
            for f in r.stack.iter_mut() {
                f.cells = Cells::NONE;
            }
        }
        r.tables.excluded.store(true, Relaxed)
    });
}

/// Whether this thread asked for its CPU switch detector and has not picked up the answer
/// yet (it reads its CPU clock at every boundary meanwhile: `record/cpu.rs`). For tests and
/// diagnostics.
#[doc(hidden)]
pub fn awaiting_switch_detector() -> bool {
    with_recorder(|r| r.cpu.awaiting_detector()).unwrap_or(false)
}

/// Whether this thread attributes CPU by frames (its switch detector is on or awaited)
/// rather than by windows (`record/cpu.rs`). For tests and diagnostics.
#[doc(hidden)]
pub fn cpu_attributed_by_frames() -> bool {
    with_recorder(|r| r.cpu.by_frames()).unwrap_or(false)
}

/// Depth of this thread's frame stack (for tests and diagnostics).
pub fn current_depth() -> usize {
    with_recorder(|r| r.stack.len()).unwrap_or(0)
}

/// Merged figures of the current window: exited threads plus live ones.
pub(crate) fn collect() -> Merged {
    alloc::untracked(|| {
        crate::record::clock::refine_if_due(Timestamp::now());
        // Flush this thread's pending CPU so a caller that measures then snapshots sees it.
        with_recorder(ThreadRecorder::flush_cpu);
        threads::merge()
    })
}

/// What the `tracing` layer calls on the recorder it holds ([`with_recorder`]).
impl ThreadRecorder {
    /// The `tracing` layer's state of this thread.
    #[inline(always)]
    pub(crate) fn spans(&mut self) -> &mut LayerThreadState {
        &mut self.spans
    }

    /// Opens a poll frame for an entry of span `owner` of `func`, as [`push_poll`] does.
    #[inline(always)]
    pub(crate) fn push_span_entry(&mut self, func: u32, node: Option<u32>, owner: u64) -> OpenedFrame {
        self.push(func, node, FrameKind::Poll, owner)
    }

    /// Closes the innermost open entry of span `owner` at `end`, as [`pop_poll`] does; `None`
    /// when this thread has no open entry of it.
    #[inline(always)]
    pub(crate) fn pop_span_entry(&mut self, owner: u64, end: Timestamp) -> Option<PollOutcome> {
        let idx = self.find_poll(owner)?;
        self.pop_poll_at(idx, end)
    }
}
