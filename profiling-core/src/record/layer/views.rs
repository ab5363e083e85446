//! The thread-local fast path of the `tracing` layer: each thread's views of the spans it
//! touched last.
//!
//! Looking a span up in the `Registry` (a sharded-slab read with two atomic reference count
//! updates) costs about as much as the registry's whole work for a span, and even a span's
//! slot (`slots.rs`) costs a hash and a lock, so the common life of a span, created, entered,
//! exited and closed on one thread, is served from a small per-thread table of the spans this
//! thread touched last, and the published state is written once per exit (to publish the
//! entry for other threads) instead of once per callback, at the slot the view remembers.
//!
//! Store forwarding: several figures here are passed or merged as scalars, or written field
//! by field, where a whole struct would be simpler: under `perf`, a struct just written in
//! narrow stores and read back at once in wider loads (a copy, or two adjacent `u64` added
//! as one vector) stalled for about as long as the rest of the callback.
//!
//! Coherence: a thread's view of a span ([`Hot`]) is *valid* while the span's generation
//! counter (one of `GEN`, by a hash of the span) has not moved since the view was taken. It
//! moves whenever a thread reads or writes the span's published state without holding a
//! valid view (the slow path), so at most one thread holds a valid view of
//! a span at a time, and that thread knows every figure of the span: the published ones plus
//! its own unpublished entry. A thread without a valid view (another thread took the slow path
//! on a span of the same stripe since) takes the slow path, which merges what it holds into the published state and reads the
//! result back. Figures are merged, never overwritten: busy time and child latency add up,
//! the start is the earliest, the last exit the latest; the first published start keeps the
//! call's place in the tree. Instants (starts, last exits, a call's `started_ns`) are raw
//! clock readings here and in the published state (`super::ticks`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::SpanTiming;
use crate::record::call::{InFlightCall, TreePlace};

/// Generation counters, one per stripe of spans, each on its own cache line: a slow path
/// moves the counter of its span's stripe only (see above).
pub(super) static GEN: [Stripe; STRIPES] = [const { Stripe(AtomicU64::new(1)) }; STRIPES];
pub(super) const STRIPES: usize = 64;

#[repr(align(64))]
pub(super) struct Stripe(AtomicU64);

/// The generation counter of span `id` of layer `layer`.
#[inline(always)]
pub(super) fn gen_of(layer: u64, id: u64) -> &'static AtomicU64 {
    &GEN[stripe_of(layer, id)].0
}

/// By the id's place in the registry's slab, as the slot's bucket (`slots::PLACE_BITS`): a
/// place reused span after span keeps its stripe's line in the cache (by the whole id, the
/// counter's load in `on_new_span` was a fifth of that callback's samples).
#[inline(always)]
pub(super) fn stripe_of(layer: u64, id: u64) -> usize {
    (((id & super::slots::PLACE_BITS) ^ layer.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize
        % STRIPES
}

/// [`Hot::slot`] of a view that knows no slot of its span.
pub(super) const NO_SLOT: u32 = u32::MAX;

/// Spans a thread keeps a view of. Nesting deeper than this still works, through the
/// published state.
pub(super) const HOT_SPANS: usize = 8;

/// One thread's view of a span it touched.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hot {
    /// The span's id (`0`: free slot; registry ids are non-zero)...
    pub(super) id: u64,
    /// ...and the layer that saw it ([`ProfilingLayer::instance`]).
    pub(super) layer: u64,
    pub(super) func: u32,
    /// The span's generation when the view was taken: valid while it still reads this.
    pub(super) gen: u64,
    /// The span's stripe of `GEN`.
    pub(super) stripe: u8,
    /// Index of the span's slot (`slots.rs`) as last found, or [`NO_SLOT`]: publication
    /// goes there without a search (and checks it is still the span's).
    pub(super) slot: u32,
    /// Open entries of the span on this thread.
    pub(super) entered: u32,
    /// The call as published when the view was taken (exact while the view is valid).
    pub(super) call: Option<InFlightCall>,
    pub(super) last_exit: u64,
    /// Not yet published: where and when (ticks) this thread's first entry started the call...
    pub(super) start: Option<(TreePlace, u64)>,
    /// ...and what this thread's exited entries measured since the last publication.
    pub(super) busy_ns: u64,
    pub(super) child_latency_ns: u64,
}

impl Hot {
    pub(super) const EMPTY: Hot = Hot {
        id: 0,
        layer: 0,
        stripe: 0,
        slot: NO_SLOT,
        func: 0,
        gen: 0,
        entered: 0,
        call: None,
        last_exit: 0,
        start: None,
        busy_ns: 0,
        child_latency_ns: 0,
    };

    pub(super) fn new(layer: u64, id: u64, func: u32, gen: u64) -> Hot {
        let mut h = Hot::EMPTY;
        h.reset(layer, id, func, gen, NO_SLOT);
        h
    }

    /// Makes this slot a fresh view, field by field (a whole `Hot` built on the stack and
    /// copied in costs a store-forwarding stall).
    #[inline(always)]
    pub(super) fn reset(&mut self, layer: u64, id: u64, func: u32, gen: u64, slot: u32) {
        self.id = id;
        self.layer = layer;
        self.stripe = stripe_of(layer, id) as u8;
        self.slot = slot;
        self.func = func;
        self.gen = gen;
        self.entered = 0;
        self.call = None;
        self.last_exit = 0;
        self.start = None;
        self.busy_ns = 0;
        self.child_latency_ns = 0;
    }

    #[inline(always)]
    pub(super) fn valid(&self) -> bool {
        self.gen == GEN[self.stripe as usize % STRIPES].0.load(Relaxed)
    }

    /// Adds an exited entry's figures to the view, unpublished.
    #[inline]
    pub(super) fn add(&mut self, exit: Exited) {
        self.busy_ns += exit.busy_ns;
        self.child_latency_ns += exit.child_latency_ns;
        self.last_exit = self.last_exit.max(exit.end);
    }

    /// Whether the view holds figures the published state lacks.
    pub(super) fn unpublished(&self) -> bool {
        self.start.is_some() || self.busy_ns != 0 || self.child_latency_ns != 0
    }

    /// The call as this thread knows it: published figures plus its own unpublished ones.
    #[inline(always)]
    pub(super) fn merged_call(&self) -> Option<InFlightCall> {
        merged(self.call, self.func, self)
    }

    /// Publishes this view's own figures into `t`, then takes `t` as the new view.
    #[inline]
    pub(super) fn sync(&mut self, t: &mut SpanTiming, gen: u64) {
        self.sync_exit(t, gen, Exited::NONE);
    }

    /// [`Hot::sync`] with an entry that just exited, `exit`, not yet added to the view: its
    /// figures were just read and are added here in registers (added to the view first, then
    /// read back at once, two 8-byte stores read by one 16-byte load stalled).
    #[inline(always)]
    pub(super) fn sync_exit(&mut self, t: &mut SpanTiming, gen: u64, exit: Exited) {
        let call = merge(
            t.call,
            t.func,
            self.start,
            self.busy_ns + exit.busy_ns,
            self.child_latency_ns + exit.child_latency_ns,
        );
        let last_exit = t.last_exit.max(self.last_exit).max(exit.end);
        t.call = call;
        t.last_exit = last_exit;
        self.func = t.func;
        self.call = call;
        self.last_exit = last_exit;
        self.start = None;
        self.busy_ns = 0;
        self.child_latency_ns = 0;
        self.gen = gen;
    }
}

/// What one exited entry measured, as the view adds it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Exited {
    pub(super) busy_ns: u64,
    pub(super) child_latency_ns: u64,
    pub(super) end: u64,
}

impl Exited {
    pub(super) const NONE: Exited = Exited {
        busy_ns: 0,
        child_latency_ns: 0,
        end: 0,
    };
}

/// `call` with the unpublished figures of `h` added. Built whole rather than updated field
/// by field: the result is copied at once, and a wide read of narrow writes stalls.
#[inline(always)]
pub(super) fn merged(call: Option<InFlightCall>, func: u32, h: &Hot) -> Option<InFlightCall> {
    merge(call, func, h.start, h.busy_ns, h.child_latency_ns)
}

/// `call` with unpublished figures added: a start (the earliest wins, the first published
/// keeps its place), busy time and child latency.
#[inline(always)]
fn merge(
    call: Option<InFlightCall>,
    func: u32,
    start: Option<(TreePlace, u64)>,
    busy_ns: u64,
    child_latency_ns: u64,
) -> Option<InFlightCall> {
    match (call, start) {
        (None, None) => None,
        (None, Some((place, started_ns))) => Some(InFlightCall {
            func,
            place,
            started_ns,
            busy_ns,
            child_latency_ns,
        }),
        (Some(c), start) => Some(InFlightCall {
            started_ns: start.map_or(c.started_ns, |(_, s)| c.started_ns.min(s)),
            busy_ns: c.busy_ns + busy_ns,
            child_latency_ns: c.child_latency_ns + child_latency_ns,
            ..c
        }),
    }
}

/// Span callsites a thread remembers the function of.
pub(super) const ID_CACHE: usize = 64;

/// What the layer keeps per thread. It lives in the thread's recorder
/// (`recorder::ThreadRecorder`), so that a callback reaches both through one thread-local
/// access and one borrow: as a thread-local of its own, each callback paid a second access
/// and borrow, and `on_close` a third for the recorder's booking of the call.
pub(crate) struct Local {
    /// Views of the spans this thread touched last.
    pub(super) hot: [Hot; HOT_SPANS],
    /// `(metadata address, function id)` of span callsites seen last, direct-mapped by
    /// address; the id is [`super::SKIP`] for callsites the layer does not record.
    pub(super) ids: [(usize, u32); ID_CACHE],
}

impl Local {
    /// A thread's state before its first span.
    pub(crate) const EMPTY: Local = Local {
        hot: [Hot::EMPTY; HOT_SPANS],
        ids: [(0, 0); ID_CACHE],
    };
}

#[inline(always)]
pub(super) fn find(hot: &mut [Hot; HOT_SPANS], layer: u64, id: u64) -> Option<usize> {
    hot.iter().position(|h| h.id == id && h.layer == layer)
}

/// A slot for a new view: a free one, else one that holds nothing unpublished and is not
/// entered (dropping it loses nothing), else `None`.
#[inline]
pub(super) fn free_slot(hot: &[Hot; HOT_SPANS]) -> Option<usize> {
    hot.iter().position(|h| h.id == 0).or_else(|| evictable_slot(hot))
}

/// The slot for the view of a span just created: the first free one, unless a view of an
/// earlier span with the same id (closed on another thread, so stale: a registry reuses ids)
/// sits below it, where [`find`] would meet it first: that one is then reused. A stale view
/// above it is never met before the new one. Unlike `find` then [`free_slot`], the common
/// case (the first slot free) compares no id.
#[inline]
pub(super) fn slot_for_new(hot: &[Hot; HOT_SPANS], layer: u64, id: u64) -> Option<usize> {
    match hot.iter().position(|h| h.id == 0) {
        Some(free) => Some(
            hot[..free]
                .iter()
                .position(|h| h.id == id && h.layer == layer)
                .unwrap_or(free),
        ),
        None => hot
            .iter()
            .position(|h| h.id == id && h.layer == layer)
            .or_else(|| evictable_slot(hot)),
    }
}

/// [`free_slot`] when no slot is free.
#[cold]
#[inline(never)]
fn evictable_slot(hot: &[Hot; HOT_SPANS]) -> Option<usize> {
    hot.iter().rposition(|h| h.entered == 0 && !h.unpublished())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, layer: u64, entered: u32) -> Hot {
        let mut h = Hot::EMPTY;
        h.id = id;
        h.layer = layer;
        h.entered = entered;
        h
    }

    /// A new span's view goes to the first free slot, unless a stale view of its id (an
    /// earlier span's, closed elsewhere) sits below it, which `find` would meet first.
    #[test]
    fn a_new_view_takes_the_first_free_slot_unless_a_stale_view_of_its_id_is_below() {
        let mut hot = [Hot::EMPTY; HOT_SPANS];
        assert_eq!(slot_for_new(&hot, 1, 7), Some(0));
        hot[0] = view(5, 1, 1);
        hot[1] = view(7, 1, 0);
        assert_eq!(slot_for_new(&hot, 1, 7), Some(1), "the stale view below is reused");
        assert_eq!(slot_for_new(&hot, 2, 7), Some(2), "another layer's span of that id");
        assert_eq!(slot_for_new(&hot, 1, 9), Some(2));
        // A stale view above the first free slot: the new view, below it, is met first.
        hot[1] = Hot::EMPTY;
        hot[3] = view(7, 1, 0);
        let i = slot_for_new(&hot, 1, 7).expect("a free slot");
        assert_eq!(i, 1);
        hot[i] = view(7, 1, 1);
        assert_eq!(find(&mut hot, 1, 7), Some(1));
    }

    /// With no free slot, a view of the span's id anywhere is reused, else one that can be
    /// dropped (not entered, nothing unpublished), else none.
    #[test]
    fn a_full_table_reuses_a_view_of_the_id_then_an_evictable_one() {
        let mut hot = [Hot::EMPTY; HOT_SPANS];
        for (k, h) in hot.iter_mut().enumerate() {
            *h = view(100 + k as u64, 1, 1);
        }
        hot[5] = view(7, 1, 1);
        assert_eq!(slot_for_new(&hot, 1, 7), Some(5));
        assert_eq!(slot_for_new(&hot, 1, 8), None, "every view entered: no room");
        hot[2].entered = 0;
        assert_eq!(slot_for_new(&hot, 1, 8), Some(2));
        hot[2].busy_ns = 1;
        assert_eq!(slot_for_new(&hot, 1, 8), None, "unpublished figures are kept");
    }
}
