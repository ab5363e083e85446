//! Kits: what a recording thread needs, made ahead of its first call (see [`Kit`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::record::alloc;
use crate::record::cpu::CpuAttribution;
use crate::record::recorder::Frame;
use crate::record::storage::Slots;
use crate::record::threads::{self, ThreadTables};
use crate::record::tree::NodeCache;

/// What a thread needs to record, made ahead of its first call: its tables (48 KiB of chunk
/// pointers, the first chunk of nodes, 16 KiB, and of functions, 3.3 KiB), its node cache
/// (12 KiB), its frame stack (room for 64 frames) and depth counters: about 90 KiB by
/// these layouts.
///
/// A thread's first call and its exit must not call the allocator: a new thread's
/// allocations go to the allocator's shared arena (its own cache is empty) and wait for the
/// arena's lock and, when the arena grows, for the kernel's memory-map lock, for which a
/// thread can wait milliseconds while others start, exit or map memory (`docs/reliability.md`,
/// thread stall). So kits wait, ready, in [`KITS`]: a thread's first call takes one, and its
/// exit puts it back, as returned, with its CPU attribution (whose switch detector must be
/// closed) and nothing freed. The background thread (`record/switches.rs`) folds returned
/// kits' tables into the retired totals, zeroes them and puts them back as ready, and tops
/// up the ready kits to [`READY_TARGET`] with new ones; every allocation and free of kits
/// happens there. A thread that finds no ready kit makes its own, as before; a thread that
/// finds the pool full frees its own kit.
pub(crate) struct Kit {
    pub(crate) tables: Arc<ThreadTables>,
    pub(crate) cache: NodeCache,
    pub(crate) stack: Vec<Frame>,
    pub(crate) depth: Vec<u32>,
    /// A returned kit's CPU attribution, dropped (its detector closed) by the background thread.
    pub(crate) cpu: Option<CpuAttribution>,
}

/// Ready kits kept, at most, once the background thread has tended them: about 90 KiB
/// each new, up to about 160 KiB reused (the figures' chunks of a reused kit bounded by
/// `threads::KEEP_NODE_CHUNKS` and `threads::KEEP_FN_CHUNKS`, its frame stack by
/// [`KEEP_FRAMES`]), and
/// what a burst of threads as large leaves behind. Kits returned beyond it are freed by the
/// background thread.
const KEEP_READY: usize = 64;
/// Slots of [`KITS`]: ready kits and returned ones waiting for the background thread. Past
/// [`KEEP_READY`] so that threads exiting while it is busy find room (a thread that finds
/// none frees its kit itself).
const SLOTS: usize = 2 * KEEP_READY;
/// New kits the background thread keeps ready (reused ones may be more, up to [`KEEP_READY`]).
const READY_TARGET: usize = 32;
/// Frames of stack a reused kit keeps room for.
const KEEP_FRAMES: usize = 64;
/// Open-frame counters (one per function) a reused kit keeps room for.
const KEEP_DEPTHS: usize = 1024;
/// Kind of a kit in [`KITS`] ready for a thread.
const READY: u8 = 1;
/// Kind of a kit in [`KITS`] given back by an exiting thread, for the background thread.
const RETURNED: u8 = 2;

static KITS: Slots<Kit, SLOTS> = Slots::new();

// SAFETY: a kit is owned by one thread at a time (moved through `KITS`). Its only member
// that is not `Send` is `CpuAttribution` (a raw pointer to a read-only mapping, readable
// from any thread, see `record/switches.rs`), which the background thread only drops.
unsafe impl Send for Kit {}

impl Kit {
    fn new() -> Self {
        Kit {
            tables: Arc::new(ThreadTables::new()),
            cache: NodeCache::new(),
            stack: Vec::with_capacity(KEEP_FRAMES),
            depth: Vec::with_capacity(256),
            cpu: None,
        }
    }

    /// The kit made ready for another thread, or still held by a reader (try again later),
    /// or to be freed (too big to keep). The CPU attribution of the thread that used it goes
    /// to `spent`, to be dropped once every returned kit is ready (dropping it hands its
    /// detector to be closed).
    fn reset(mut self, spent: &mut Vec<CpuAttribution>) -> Reset {
        let Some(tables) = Arc::get_mut(&mut self.tables) else {
            return Reset::Held(self);
        };
        if !tables.reset_for_reuse() {
            return Reset::Free;
        }
        // The cache's answers stay true: a path's node never changes.
        self.stack.clear();
        self.stack.shrink_to(KEEP_FRAMES);
        self.depth.clear();
        self.depth.shrink_to(KEEP_DEPTHS);
        spent.extend(self.cpu.take());
        Reset::Ready(self)
    }
}

/// What [`Kit::reset`] made of a returned kit.
enum Reset {
    Ready(Kit),
    /// A reader's merge still holds its tables.
    Held(Kit),
    /// Too big to keep.
    Free,
}

/// Whether a ready kit waits in the pool.
pub(crate) fn kits_ready() -> bool {
    KITS.count(READY) > 0
}

/// Kits made by the thread that needed them, none being ready, since the process started.
static KITS_MADE_ON_THE_SPOT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// See [`KITS_MADE_ON_THE_SPOT`].
pub(crate) fn kits_made_on_the_spot() -> u64 {
    KITS_MADE_ON_THE_SPOT.load(Relaxed)
}

/// A ready kit, or a new one if none is (the background thread is then asked for more).
pub(crate) fn take_kit() -> Kit {
    let kit = KITS.take(READY);
    if KITS.count(READY) < READY_TARGET / 2 {
        crate::record::switches::wake_background();
    }
    kit.unwrap_or_else(|| {
        KITS_MADE_ON_THE_SPOT.fetch_add(1, Relaxed);
        Kit::new()
    })
}

/// Hands an exiting thread's kit to the background thread, or frees it here (its tables
/// folded first) when the pool is full or that thread is not running.
pub(crate) fn give_back_kit(kit: Kit) {
    if crate::record::switches::background_running() {
        match KITS.put(kit, RETURNED) {
            Ok(()) => {
                crate::record::switches::wake_background();
                return;
            }
            Err(kit) => drop(kit),
        }
    } else {
        drop(kit);
    }
    threads::fold_exited();
}

/// The background thread's share of the kits: folds exited threads' figures, makes
/// returned kits ready again (or frees them), and tops up the ready ones. Returns whether
/// a kit is still held by a reader, to try again shortly.
pub(crate) fn tend_kits() -> bool {
    alloc::untracked(|| {
        let mut returned = Vec::new();
        while let Some(kit) = KITS.take(RETURNED) {
            returned.push(kit);
        }
        // Their tables were moved to the exited list before they were put: fold them, so
        // that the registry holds them no more.
        threads::fold_exited();
        // Threads may be starting now: make kits ready first, drop what is left after.
        let mut waiting = false;
        let mut spent = Vec::with_capacity(returned.len());
        let mut unkept = Vec::new();
        for kit in returned {
            match kit.reset(&mut spent) {
                Reset::Ready(kit) if KITS.count(READY) < KEEP_READY => {
                    if let Err(kit) = KITS.put(kit, READY) {
                        unkept.push(kit);
                    }
                }
                Reset::Ready(kit) => unkept.push(kit),
                Reset::Free => {}
                Reset::Held(kit) => {
                    // A reader's merge still holds the tables: back in the pool, as returned.
                    waiting = true;
                    if let Err(kit) = KITS.put(kit, RETURNED) {
                        unkept.push(kit);
                    }
                }
            }
        }
        drop((spent, unkept));
        while KITS.count(READY) < READY_TARGET {
            if KITS.put(Kit::new(), READY).is_err() {
                break;
            }
        }
        waiting
    })
}
