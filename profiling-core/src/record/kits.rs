//! Kits: what a recording thread needs, made ahead of its first call, and recycled at its
//! exit without the allocator, a lock, or the help of another thread (see [`Kit`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::record::alloc;
use crate::record::cpu::CpuAttribution;
use crate::record::recorder::Frame;
use crate::record::storage::{touch_pages, Slots};
use crate::record::switches;
use crate::record::threads::{self, ThreadTables};
use crate::record::tree::NodeCache;

/// What a thread needs to record, made ahead of its first call: its tables (48 KiB of chunk
/// pointers, the first chunk of nodes, 16 KiB, and of functions, 3.3 KiB), its node cache
/// (32 KiB: each cached path's node and where its figures are), its frame stack (room for
/// 64 frames) and depth counters: about 107 KiB by these layouts.
///
/// A thread's first call and its exit must not call the allocator, take a lock, or wait
/// for another thread: a new thread's allocations go to the allocator's shared arena (its
/// own cache is empty) and wait for the arena's lock and, when the arena grows, for the
/// kernel's memory-map lock, for which a thread can wait milliseconds while others start,
/// exit or map memory; and a background thread may not be scheduled for tens of
/// milliseconds on a loaded machine (`docs/reliability.md`, thread stall). So kits wait in
/// [`KITS`], a lock-free pool, and a thread's first call takes one:
/// - a *clean* one ([`CLEAN`]: zeroed tables), if one is ready;
/// - else a *used* one ([`USED`]), as an exiting thread left it: its tables still hold the
///   figures of the threads that recorded into them, registered and counted, and the new
///   thread records on top of them (figures are sums, minima and maxima, so one table
///   recorded into by two threads in turn reads as the two threads merged). Its exit
///   puts the kit back as used at once: no fold, no zeroing, nothing freed;
/// - else it makes its own, calling the allocator (only when more threads start at once
///   than kits exist: a burst past [`KEEP`] plus the live threads).
///
/// The kits' background thread (`profiling-kits`, see `record/switches.rs`), whenever it
/// runs, makes new clean kits while the pool has room, up to [`CLEAN_TARGET`] clean (and
/// [`READY_TARGET`] in all); once the pool holds [`KEEP`], it turns used kits into clean
/// ones instead (folding their tables into the retired totals, then zeroing them); it
/// frees what is past [`KEEP`], and folds and frees or zeroes kits handed back as
/// [`RETURNED`] (too big to keep, or excluded). Nothing waits for it: when it falls behind,
/// threads take used kits. Clean kits are there for a thread that excludes itself
/// (`exclude_current_thread`): on inherited tables it moves to new ones, and what it recorded
/// before on the inherited ones stays counted.
pub(crate) struct Kit {
    pub(crate) tables: Arc<ThreadTables>,
    pub(crate) cache: NodeCache,
    pub(crate) stack: Vec<Frame>,
    pub(crate) depth: Vec<u32>,
}

/// Kits kept in the pool, clean and used, once the background thread has tended them:
/// about 107 KiB each new, up to about 217 KiB used (the figures' chunks of a kept kit
/// bounded by `threads::KEEP_NODE_CHUNKS` and `threads::KEEP_FN_CHUNKS`, its frame stack by
/// [`KEEP_FRAMES_USED`]), so at most about 20 MiB; what a burst of threads as large leaves
/// behind. The background thread folds and frees what is past it. Past 64, so that a
/// burst of 64 threads finds a kit each while the background thread holds a few to clean.
const KEEP: usize = 96;
/// Slots of [`KITS`]. Past [`KEEP`] so that threads exiting while the background thread is
/// not running find room (a thread that finds none leaves its tables to be folded and
/// frees the rest of its kit itself).
const SLOTS: usize = 2 * KEEP;
/// Kits, clean or used, the background thread keeps ready at least: it makes new ones when
/// there are fewer.
const READY_TARGET: usize = 32;
/// Clean kits the background thread keeps ready (cleaning used ones).
const CLEAN_TARGET: usize = 16;
/// Used kits the background thread cleans at a time: it holds them out of the pool
/// meanwhile, and may be preempted.
const CLEAN_BATCH: usize = 8;
/// Frames of stack a clean kit keeps room for.
const KEEP_FRAMES: usize = 64;
/// Frames of stack (72 bytes each) a used kit may keep room for: a thread that recursed
/// deeper hands its kit to the background thread to shrink (its exit frees nothing).
const KEEP_FRAMES_USED: usize = 512;
/// Open-frame counters (one per function) a kept kit keeps room for.
const KEEP_DEPTHS: usize = 1024;
/// Kind of a kit in [`KITS`]: zeroed tables, registered.
const CLEAN: u8 = 1;
/// Kind of a kit in [`KITS`]: tables with the figures of exited threads, registered and
/// counted; ready for a thread all the same.
const USED: u8 = 2;
/// Kind of a kit in [`KITS`]: given back for the background thread to fold and free (too
/// big to keep) or to zero (excluded figures); tables registered.
const RETURNED: u8 = 3;
/// Kind of a kit in [`KITS`]: folded and unregistered, to be zeroed once no reader's merge
/// holds its tables any more.
const HELD: u8 = 4;

static KITS: Slots<Kit, SLOTS> = Slots::new();

impl Kit {
    /// A new kit, its tables registered.
    fn new() -> Self {
        let tables = Arc::new(ThreadTables::new());
        threads::enroll(&tables);
        let mut kit = Kit {
            tables,
            cache: NodeCache::new(),
            stack: Vec::with_capacity(KEEP_FRAMES),
            depth: Vec::with_capacity(256),
        };
        kit.touch_spare_room();
        kit
    }

    /// Writes the spare room of the frame stack and of the depth counters, so that their
    /// pages are mapped here, where the kit is made, and not at the first call of the thread
    /// that takes it. The allocator hands out fresh pages untouched, and the first write to
    /// one faults; a page fault can sleep on the kernel's memory-map lock, which threads
    /// starting and exiting take (`docs/reliability.md`: first calls held 9 and 232 ms,
    /// each on its page faults). The tables and the node cache are written when made.
    fn touch_spare_room(&mut self) {
        touch_pages(self.stack.spare_capacity_mut());
        touch_pages(self.depth.spare_capacity_mut());
    }

    /// Whether the kit can go back to the pool as it is: figures counted (not excluded), and
    /// within what a kept kit may hold.
    fn reusable_as_is(&self) -> bool {
        !self.tables.excluded.load(Relaxed)
            && self.tables.within_keep_limits()
            && self.stack.capacity() <= KEEP_FRAMES_USED
            && self.depth.capacity() <= KEEP_DEPTHS
    }

    /// The kit, folded and unregistered, made clean (not registered), or still held by
    /// a reader (try again later), or to be freed (too big to keep).
    fn reset(mut self) -> Reset {
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
        self.touch_spare_room();
        Reset::Clean(self)
    }
}

/// What [`Kit::reset`] made of a folded kit.
enum Reset {
    Clean(Kit),
    /// A reader's merge still holds its tables.
    Held(Kit),
    /// Too big to keep.
    Free,
}

/// Puts a clean kit in the pool, its tables registered (if not yet); `false` (the kit
/// freed, its tables left to be folded) when the pool is full.
fn put_clean(kit: Kit) -> bool {
    if !kit.tables.registered() {
        threads::enroll(&kit.tables);
    }
    match KITS.put(kit, CLEAN) {
        Ok(()) => true,
        Err(kit) => {
            threads::orphan(&kit.tables);
            false
        }
    }
}

/// Whether a kit, clean or used, waits in the pool.
pub(crate) fn kits_ready() -> bool {
    KITS.count(CLEAN) + KITS.count(USED) > 0
}

/// Kits made by the thread that needed them, none being ready, since the process started.
static KITS_MADE_ON_THE_SPOT: AtomicU64 = AtomicU64::new(0);

/// See [`KITS_MADE_ON_THE_SPOT`].
pub(crate) fn kits_made_on_the_spot() -> u64 {
    KITS_MADE_ON_THE_SPOT.load(Relaxed)
}

/// A clean kit, or a used one (its tables marked inherited), or a new one if none is ready
/// (the background thread is then asked for more).
pub(crate) fn take_kit() -> Kit {
    let kit = match KITS.take(CLEAN) {
        Some(kit) => Some(kit),
        None => KITS.take(USED).inspect(|kit| kit.tables.inherited.store(true, Relaxed)),
    };
    if KITS.count(CLEAN) < CLEAN_TARGET / 2 {
        switches::wake_background();
    }
    kit.unwrap_or_else(|| {
        KITS_MADE_ON_THE_SPOT.fetch_add(1, Relaxed);
        Kit::new()
    })
}

/// Takes an exiting thread's kit back: as used, ready for the next thread at once, when it
/// can be kept as it is; else for the background thread. Where the pool is full, or that
/// thread is not running, its tables stay registered and counted, orphaned, and the rest
/// is freed here. `cpu` is dropped here: that hands its detector to be closed, without
/// allocating (`record/switches.rs`).
pub(crate) fn give_back_kit(mut kit: Kit, cpu: CpuAttribution) {
    drop(cpu);
    let kind = if kit.reusable_as_is() {
        // Frames left open at exit are dropped; no memory is freed.
        kit.stack.clear();
        kit.depth.clear();
        USED
    } else {
        RETURNED
    };
    if switches::background_running() {
        match KITS.put(kit, kind) {
            Ok(()) => {
                if kind == RETURNED || KITS.count(CLEAN) < CLEAN_TARGET / 2 {
                    switches::wake_background();
                }
                return;
            }
            Err(back) => kit = back,
        }
    }
    threads::orphan(&kit.tables);
    drop(kit);
    if !switches::wake_background() {
        fold_orphans();
    }
}

/// Moves a thread recording on inherited tables (`exclude_current_thread`) to new tables of
/// its own: the inherited ones, with the figures of the threads before it and of this one
/// so far, stay counted (orphaned, to be folded). `None` where the tables are its own.
pub(crate) fn own_tables_for_exclusion(tables: &ThreadTables) -> Option<Arc<ThreadTables>> {
    if !tables.inherited.load(Relaxed) {
        return None;
    }
    let own = alloc::untracked(|| Arc::new(ThreadTables::new()));
    own.epoch.store(tables.epoch.load(Relaxed), Relaxed);
    threads::enroll(&own);
    threads::orphan(tables);
    if !switches::wake_background() {
        fold_orphans();
    }
    Some(own)
}

/// Folds and frees orphaned tables on the calling thread (where the background thread
/// cannot run).
fn fold_orphans() {
    alloc::untracked(|| {
        let mut orphans = Vec::new();
        threads::claim_orphans(&mut orphans);
        threads::fold(&orphans);
    });
}

/// The background thread's share of the kits: makes new kits (see [`top_up`]), cleans used
/// kits up to [`CLEAN_TARGET`] clean ones once the pool is full, folds and frees (or
/// zeroes) returned ones and what is past [`KEEP`], and folds orphaned tables. Returns whether a
/// kit is still held by a reader, to try again shortly.
pub(crate) fn tend_kits() -> bool {
    alloc::untracked(|| {
        top_up();
        let mut orphans = Vec::new();
        threads::claim_orphans(&mut orphans);
        let mut batch: Vec<Kit> = Vec::new();
        while let Some(kit) = KITS.take(RETURNED) {
            batch.push(kit);
        }
        let mut waiting = false;
        loop {
            // Used kits past what the pool keeps, or, once it is full, to be made clean; a
            // few at a time: threads may be starting, and take kits meanwhile.
            let (clean, used) = (KITS.count(CLEAN), KITS.count(USED));
            let mut wanted = (clean + used).saturating_sub(KEEP);
            if clean + used >= KEEP {
                wanted = wanted.max(CLEAN_TARGET.saturating_sub(clean));
            }
            for _ in 0..wanted.min(CLEAN_BATCH) {
                match KITS.take(USED) {
                    Some(kit) => batch.push(kit),
                    None => break,
                }
            }
            let tables: Vec<Arc<ThreadTables>> = batch
                .iter()
                .map(|k| Arc::clone(&k.tables))
                .chain(orphans.drain(..))
                .collect();
            threads::fold(&tables);
            drop(tables);
            let mut unkept = Vec::new();
            while let Some(kit) = KITS.take(HELD) {
                batch.push(kit);
            }
            let progressed = !batch.is_empty();
            for kit in batch.drain(..) {
                match kit.reset() {
                    Reset::Clean(kit) if KITS.count(CLEAN) + KITS.count(USED) < KEEP => {
                        put_clean(kit);
                    }
                    Reset::Clean(kit) => unkept.push(kit),
                    Reset::Free => {}
                    Reset::Held(kit) => {
                        waiting = true;
                        if let Err(kit) = KITS.put(kit, HELD) {
                            unkept.push(kit);
                        }
                    }
                }
            }
            // Kits freed here were folded and unregistered.
            drop(unkept);
            if !progressed || waiting {
                break;
            }
            let (clean, used) = (KITS.count(CLEAN), KITS.count(USED));
            if (clean >= CLEAN_TARGET || clean + used < KEEP) && clean + used <= KEEP {
                break;
            }
        }
        top_up();
        waiting
    })
}

/// Makes new kits while fewer than [`READY_TARGET`] are ready, or fewer than
/// [`CLEAN_TARGET`] clean ones with room in the pool: used kits are cleaned (taken out of
/// the pool for a while) only when it is full.
fn top_up() {
    loop {
        let (clean, used) = (KITS.count(CLEAN), KITS.count(USED));
        let short = clean + used < READY_TARGET || (clean < CLEAN_TARGET && clean + used < KEEP);
        if !short || !put_clean(Kit::new()) {
            return;
        }
    }
}

// The frame-stack figures above are for 72-byte frames.
const _: () = assert!(std::mem::size_of::<Frame>() == 72);
