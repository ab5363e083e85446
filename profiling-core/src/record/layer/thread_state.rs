//! What the `tracing` layer keeps per thread: the function ids of the span callsites it met
//! last, and the thread's token, which tells a span's owner (the thread that created it)
//! from the other threads (`slots.rs`).
//!
//! It lives in the thread's recorder (`recorder::ThreadRecorder`), so that a callback reaches
//! it and the frame stack through one thread-local access and one borrow: as a thread-local of
//! its own, each callback paid a second access and borrow, and `on_close` a third for the
//! recorder's booking of the call.
//!
//! A span's own state is not kept here: the creating thread writes it in the span's slot
//! directly (the slot's owner half takes plain stores), so nothing is copied from a view to
//! the slot at each exit, and nothing needs a view's coherence (an earlier version kept
//! per-thread views of spans, published each exit under the slot's lock, and checked a
//! generation counter per callback).

/// Span callsites a thread remembers the function of.
pub(super) const ID_CACHE: usize = 64;

/// What the layer keeps per thread.
pub(crate) struct LayerThreadState {
    /// `(metadata address, function id)` of span callsites seen last, direct-mapped by
    /// address; the id is [`super::SKIP`] for callsites the layer does not record.
    pub(super) ids: [(usize, u32); ID_CACHE],
}

impl LayerThreadState {
    /// A thread's state before its first span.
    pub(crate) const EMPTY: LayerThreadState = LayerThreadState {
        ids: [(0, 0); ID_CACHE],
    };

    /// The calling thread's token: the address of its state, in its thread-local recorder,
    /// unique among live threads and never 0. (A thread that reuses a dead thread's address
    /// takes over the slots it owned, which no other thread writes as owner: still exact.)
    #[inline(always)]
    pub(super) fn token(&self) -> u64 {
        self as *const LayerThreadState as u64
    }
}
