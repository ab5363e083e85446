//! The `tracing` layer: every span feeds the same per-function statistics as `#[profiled]`.
//!
//! A span is one call of the function `"{target}::{span name}"`, from its first enter to its
//! last exit; its busy time is the sum of its entries. Each entry is a poll frame on the
//! recorder's stack of the entering thread, so spans and `#[profiled]` frames nest under each
//! other in both directions, and CPU time and allocations are attributed to the innermost
//! of them. Per-span state lives in the span's extensions in the `Registry`; a thread serves
//! the spans it touches from a small table of views of that state, and publishes each entry
//! to the extensions as it exits (one lookup per entry, not one per callback: see the
//! thread-local fast path below).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_core::span::{Attributes, Id};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::record::alloc;
use crate::record::call::{InFlightCall, Locator, PollOutcome, TreePlace};
use crate::record::callsite::{register_function, CallsiteKind, FunctionKey, FunctionMeta};
use crate::record::{config, recorder};

/// Name of the field that `#[profiled(span)]` puts on its spans. Such spans are already
/// recorded by the function's own guard, so the layer skips them.
pub(crate) const PROFILED_FIELD: &str = "profiled";

/// A [`tracing_subscriber::Layer`] that records every span it sees as a call.
///
/// - **Identity**: a span is a call of `"{target}::{name}"` (the target is usually the module
///   path), with the file and line of its metadata and kind [`CallsiteKind::Span`].
/// - **Busy vs latency**: a call runs from the span's first enter to its last exit; its busy
///   time is the sum of its entries, so an `async` `#[tracing::instrument]` function that
///   sleeps 20 ms has ~20 ms latency and ~0 busy time.
/// - **Nesting**: a span entered inside a `#[profiled]` function is its child in the call tree,
///   and a `#[profiled]` function called inside a span is the span's child.
/// - **Filtering**: the layer records exactly the spans it is shown. Wrap it with
///   [`Layer::with_filter`] to record, say, only spans at `INFO` and above, or only some
///   targets; other layers (`fmt`, ...) are not affected.
/// - **No double counting**: spans opened by `#[profiled(span)]` carry the field
///   `profiled = true` and are skipped: the function's guard records those calls.
/// - **Off means off**: spans created while profiling is disabled ([`crate::set_enabled`]) are
///   not recorded.
///
/// A span entered on several threads at once records one entry per thread on each thread's
/// stack; its busy time is the sum of all of them (and may exceed its latency); if its first
/// entries race on two threads, the call takes the tree place of the first one published.
/// Entries exited out of order are closed by owner, and frames left open above them are
/// dropped.
///
/// # Example
///
/// ```
/// use profiling_core::ProfilingLayer;
/// use tracing_subscriber::prelude::*;
///
/// #[tracing::instrument]
/// fn load(key: u32) -> u32 {
///     key * 2
/// }
///
/// # fn main() {
/// let subscriber = tracing_subscriber::registry()
///     .with(ProfilingLayer::new().with_filter(tracing_subscriber::filter::LevelFilter::INFO));
/// tracing::subscriber::with_default(subscriber, || {
///     for k in 0..3 {
///         load(k);
///     }
/// });
///
/// let snap = profiling_core::snapshot();
/// // Span identity is "{target}::{span name}"; the target of `#[instrument]` is the module.
/// let f = snap.function(concat!(module_path!(), "::load")).unwrap();
/// assert_eq!(f.calls, 3);
/// # }
/// ```
#[derive(Debug)]
pub struct ProfilingLayer {
    /// Tells this layer's spans from another's in the per-thread views: span ids are unique
    /// per subscriber only.
    instance: u64,
}

impl ProfilingLayer {
    /// A layer that records every span it is shown.
    #[must_use]
    pub fn new() -> Self {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        Self {
            instance: INSTANCES.fetch_add(1, Relaxed),
        }
    }
}

impl Default for ProfilingLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// The function id of the spans of `meta`, registering the function on first sight.
///
/// A small per-thread direct-mapped cache answers repeat lookups; a miss asks the function
/// registry, which is idempotent per callsite, so ids are shared by every layer instance.
#[inline]
fn function_id(meta: &'static Metadata<'static>) -> u32 {
    let key = meta as *const Metadata<'static> as usize;
    let slot = (key >> 4) % ID_CACHE;
    if let Ok(Some(id)) = ID_CACHE_TLS.try_with(|c| {
        let (k, id) = c[slot].get();
        (k == key).then_some(id)
    }) {
        return id;
    }
    let id = alloc::untracked(|| register_function(FunctionKey::Span(key), span_meta(meta)));
    let _ = ID_CACHE_TLS.try_with(|c| c[slot].set((key, id)));
    id
}

const ID_CACHE: usize = 64;

thread_local! {
    /// `(metadata address, function id)` of recently seen span callsites.
    static ID_CACHE_TLS: [std::cell::Cell<(usize, u32)>; ID_CACHE] =
        const { [const { std::cell::Cell::new((0, 0)) }; ID_CACHE] };
}

/// Function identity of a span callsite.
fn span_meta(meta: &'static Metadata<'static>) -> FunctionMeta {
    FunctionMeta {
        name: format!("{}::{}", meta.target(), meta.name()),
        module: meta.target().to_owned(),
        file: meta.file().unwrap_or("<unknown>").to_owned(),
        line: meta.line().unwrap_or(0),
        kind: CallsiteKind::Span,
    }
}

/// Whether spans of this callsite come from `#[profiled(span)]`.
fn opened_by_profiled(meta: &Metadata<'_>) -> bool {
    meta.fields().field(PROFILED_FIELD).is_some()
}

/// What one span has measured so far, as published for every thread. Stored in the span's
/// extensions; a thread's own entries reach it when they exit (see [`Hot`]).
#[derive(Debug)]
struct SpanTiming {
    func: u32,
    /// The call, from the first enter on (its place resolved under the innermost frame then).
    call: Option<InFlightCall>,
    last_exit_ns: u64,
}

/// Marks a span created while profiling was off: it is not recorded.
#[derive(Debug)]
struct NotRecorded;

// --- The thread-local fast path ------------------------------------------------------------
//
// Looking a span up in the `Registry` (a sharded-slab read with two atomic reference count
// updates) costs about as much as the registry's whole work for a span, so the common life
// of a span, created, entered, exited and closed on one thread, is served from a small
// per-thread table of the spans this thread touched last, and the extensions are read and
// written once per exit (to publish the entry for other threads) instead of once per
// callback.
//
// Coherence: a thread's view of a span ([`Hot`]) is *valid* while the span's generation
// counter (one of `GEN`, by a hash of the span) has not moved since the view was taken. It
// moves whenever a thread reads or writes the span's extension state without holding a
// valid view (the slow path), so at most one thread holds a valid view of
// a span at a time, and that thread knows every figure of the span: the published ones plus
// its own unpublished entry. A thread without a valid view (another thread took the slow path
// on a span of the same stripe since) takes the slow path, which merges what it holds into the extension and reads the
// result back. Figures are merged, never overwritten: busy time and child latency add up,
// the start is the earliest, the last exit the latest; the first published start keeps the
// call's place in the tree.

/// Generation counters, one per stripe of spans, each on its own cache line: a slow path
/// moves the counter of its span's stripe only (see above).
static GEN: [Stripe; STRIPES] = [const { Stripe(AtomicU64::new(1)) }; STRIPES];
const STRIPES: usize = 64;

#[repr(align(64))]
struct Stripe(AtomicU64);

/// The generation counter of span `id` of layer `layer`.
#[inline(always)]
fn gen_of(layer: u64, id: u64) -> &'static AtomicU64 {
    &GEN[stripe_of(layer, id)].0
}

#[inline(always)]
fn stripe_of(layer: u64, id: u64) -> usize {
    ((id ^ layer.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES
}

/// Spans a thread keeps a view of. Nesting deeper than this still works, through the
/// extensions.
const HOT_SPANS: usize = 8;

/// One thread's view of a span it touched.
#[derive(Clone, Copy, Debug)]
struct Hot {
    /// The span's id (`0`: free slot; registry ids are non-zero)...
    id: u64,
    /// ...and the layer that saw it ([`ProfilingLayer::instance`]).
    layer: u64,
    func: u32,
    /// The span's generation when the view was taken: valid while it still reads this.
    gen: u64,
    /// The span's stripe of `GEN`.
    stripe: u8,
    /// Open entries of the span on this thread.
    entered: u32,
    /// The call as published when the view was taken (exact while the view is valid).
    call: Option<InFlightCall>,
    last_exit_ns: u64,
    /// Not yet published: where and when this thread's first entry started the call...
    start: Option<(TreePlace, u64)>,
    /// ...and what this thread's exited entries measured since the last publication.
    busy_ns: u64,
    child_latency_ns: u64,
}

impl Hot {
    const EMPTY: Hot = Hot {
        id: 0,
        layer: 0,
        stripe: 0,
        func: 0,
        gen: 0,
        entered: 0,
        call: None,
        last_exit_ns: 0,
        start: None,
        busy_ns: 0,
        child_latency_ns: 0,
    };

    fn new(layer: u64, id: u64, func: u32, gen: u64) -> Hot {
        Hot {
            id,
            layer,
            stripe: stripe_of(layer, id) as u8,
            func,
            gen,
            ..Hot::EMPTY
        }
    }

    /// Makes this slot a fresh view, field by field (a whole `Hot` built on the stack and
    /// copied in costs a store-forwarding stall).
    #[inline(always)]
    fn reset(&mut self, layer: u64, id: u64, func: u32, gen: u64) {
        self.id = id;
        self.layer = layer;
        self.stripe = stripe_of(layer, id) as u8;
        self.func = func;
        self.gen = gen;
        self.entered = 0;
        self.call = None;
        self.last_exit_ns = 0;
        self.start = None;
        self.busy_ns = 0;
        self.child_latency_ns = 0;
    }

    #[inline(always)]
    fn valid(&self) -> bool {
        self.gen == GEN[self.stripe as usize % STRIPES].0.load(Relaxed)
    }

    /// Whether the view holds figures the extension lacks.
    fn unpublished(&self) -> bool {
        self.start.is_some() || self.busy_ns != 0 || self.child_latency_ns != 0
    }

    /// The call as this thread knows it: published figures plus its own unpublished ones.
    fn merged_call(&self) -> Option<InFlightCall> {
        merged(self.call, self.func, self)
    }

    /// Publishes this view's own figures into `t`, then takes `t` as the new view.
    fn sync(&mut self, t: &mut SpanTiming, gen: u64) {
        let call = merged(t.call, t.func, self);
        let last_exit_ns = t.last_exit_ns.max(self.last_exit_ns);
        t.call = call;
        t.last_exit_ns = last_exit_ns;
        self.func = t.func;
        self.call = call;
        self.last_exit_ns = last_exit_ns;
        self.start = None;
        self.busy_ns = 0;
        self.child_latency_ns = 0;
        self.gen = gen;
    }
}

/// `call` with the unpublished figures of `h` added. Built whole rather than updated field
/// by field: the result is copied at once, and a wide read of narrow writes stalls.
#[inline(always)]
fn merged(call: Option<InFlightCall>, func: u32, h: &Hot) -> Option<InFlightCall> {
    match (call, h.start) {
        (None, None) => None,
        (None, Some((place, started_ns))) => Some(InFlightCall {
            func,
            place,
            started_ns,
            busy_ns: h.busy_ns,
            child_latency_ns: h.child_latency_ns,
        }),
        (Some(c), start) => Some(InFlightCall {
            started_ns: start.map_or(c.started_ns, |(_, s)| c.started_ns.min(s)),
            busy_ns: c.busy_ns + h.busy_ns,
            child_latency_ns: c.child_latency_ns + h.child_latency_ns,
            ..c
        }),
    }
}

/// Adds the unpublished figures of `h` to `call`.
fn merge_into(call: &mut Option<InFlightCall>, func: u32, h: &Hot) {
    *call = merged(*call, func, h);
}

thread_local! {
    static HOT: RefCell<[Hot; HOT_SPANS]> = const { RefCell::new([Hot::EMPTY; HOT_SPANS]) };
}

/// Runs `f` on this thread's table of views (`None` during thread teardown or re-entry).
#[inline(always)]
fn with_hot<R>(f: impl FnOnce(&mut [Hot; HOT_SPANS]) -> R) -> Option<R> {
    HOT.try_with(|h| h.try_borrow_mut().ok().map(|mut h| f(&mut h)))
        .ok()
        .flatten()
}

#[inline(always)]
fn find(hot: &mut [Hot; HOT_SPANS], layer: u64, id: u64) -> Option<usize> {
    hot.iter().position(|h| h.id == id && h.layer == layer)
}

/// A slot for a new view: a free one, else one that holds nothing unpublished and is not
/// entered (dropping it loses nothing), else `None`.
fn free_slot(hot: &[Hot; HOT_SPANS]) -> Option<usize> {
    hot.iter()
        .position(|h| h.id == 0)
        .or_else(|| hot.iter().rposition(|h| h.entered == 0 && !h.unpublished()))
}

/// The slow path: takes a view of span `id` into `view` through its extensions, first
/// publishing what `view` held unpublished if it is a view of that span (`held`). Returns
/// `false` (and frees `view`) when the span is not recorded, or gone.
#[cold]
#[inline(never)]
fn view_from_extensions<S>(layer: u64, id: &Id, view: &mut Hot, held: bool, ctx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let ok = (|| {
        let span = ctx.span(id)?;
        let mut ext = span.extensions_mut();
        if ext.get_mut::<NotRecorded>().is_some() {
            return None;
        }
        // The view about to be taken is invalidated by the next slow path anywhere, and so
        // is every other thread's current view by this one.
        let gen = gen_of(layer, id.into_u64()).fetch_add(1, Relaxed) + 1;
        if !held {
            *view = Hot::new(layer, id.into_u64(), 0, gen);
        }
        match ext.get_mut::<SpanTiming>() {
            Some(t) => view.sync(t, gen),
            None => {
                let meta = span.metadata();
                if opened_by_profiled(meta) {
                    return None;
                }
                // Never entered, or created on a thread that kept its view (which holds
                // nothing but the function): this thread publishes the span.
                let func = if held { view.func } else { function_id(meta) };
                let mut t = SpanTiming {
                    func,
                    call: None,
                    last_exit_ns: 0,
                };
                view.sync(&mut t, gen);
                ext.insert(t);
            }
        }
        Some(())
    })()
    .is_some();
    if !ok {
        view.id = 0;
    }
    ok
}

/// Publishes the own figures of `view`, valid when it was checked: no other thread holds a
/// valid view of the span, so the view stays valid (unless a slow path ran since the check:
/// then it is invalid, and exact).
#[inline(never)]
fn publish<S>(id: &Id, view: &mut Hot, ctx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return false };
    let mut ext = span.extensions_mut();
    let gen = view.gen;
    match ext.get_mut::<SpanTiming>() {
        Some(t) => view.sync(t, gen),
        None => {
            let mut t = SpanTiming {
                func: view.func,
                call: None,
                last_exit_ns: 0,
            };
            view.sync(&mut t, gen);
            ext.insert(t);
        }
    }
    true
}

impl<S> Layer<S> for ProfilingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if opened_by_profiled(meta) {
            return;
        }
        if !config::is_enabled() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(NotRecorded);
            }
            return;
        }
        let func = function_id(meta);
        // The creating thread holds the span's only view: nothing is published until it is
        // entered and exited (another thread entering it first publishes it then).
        let gen = gen_of(self.instance, id.into_u64()).load(Relaxed);
        let key = id.into_u64();
        let _ = with_hot(|hot| {
            if let Some(i) = find(hot, self.instance, key).or_else(|| free_slot(hot)) {
                hot[i].reset(self.instance, key, func, gen);
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let _ = with_hot(|hot| {
            let i = match find(hot, self.instance, key) {
                Some(i) if hot[i].valid() => i,
                Some(i) => {
                    if !view_from_extensions(self.instance, id, &mut hot[i], true, &ctx) {
                        return;
                    }
                    i
                }
                None => match free_slot(hot) {
                    Some(i) => {
                        if !view_from_extensions(self.instance, id, &mut hot[i], false, &ctx) {
                            return;
                        }
                        i
                    }
                    None => {
                        // No room for a view: the entry goes through the extensions.
                        enter_unviewed(self.instance, id, &ctx);
                        return;
                    }
                },
            };
            let h = &mut hot[i];
            let node = match (&h.call, &h.start) {
                (Some(c), _) => Some(c.place.node),
                (None, Some((place, _))) => Some(place.node),
                (None, None) => None,
            };
            let Some(opened) = recorder::push_poll(h.func, node, key) else {
                return;
            };
            if node.is_none() {
                // Read before the frame's start, so a span entered once has latency >= busy.
                h.start = Some((opened.place, opened.at.unix_ns()));
            }
            h.entered += 1;
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        // `None` when this thread has no open entry of the span (exited elsewhere, or the
        // entry was dropped as an orphan): nothing to book.
        let Some(out) = recorder::pop_poll(Locator::Owner(id.into_u64())) else {
            return;
        };
        let key = id.into_u64();
        let viewed = with_hot(|hot| {
            let Some(i) = find(hot, self.instance, key) else {
                return false;
            };
            let h = &mut hot[i];
            h.entered = h.entered.saturating_sub(1);
            h.busy_ns += out.busy;
            h.child_latency_ns += out.child_wall;
            h.last_exit_ns = h.last_exit_ns.max(out.end.unix_ns());
            // Published at once: the span may be entered or closed on another thread next.
            if h.valid() {
                if !publish(id, h, &ctx) {
                    h.id = 0;
                }
            } else {
                view_from_extensions(self.instance, id, h, true, &ctx);
            }
            true
        });
        if viewed != Some(true) {
            exit_unviewed(self.instance, id, &out, &ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let viewed = with_hot(|hot| {
            let i = find(hot, self.instance, key)?;
            let h = &mut hot[i];
            let valid = h.valid();
            h.id = 0;
            if valid {
                // Every figure of the span is in the view: no lookup. A span never entered
                // is not a call.
                if let Some(call) = &h.merged_call() {
                    recorder::complete(call, h.last_exit_ns, false);
                }
            } else {
                close_unviewed(self.instance, &id, Some(h), &ctx);
            }
            Some(())
        })
        .flatten();
        if viewed.is_none() {
            close_unviewed(self.instance, &id, None, &ctx);
        }
    }
}

/// Closes a span this thread holds no valid view of, through its extensions, with the
/// figures of the thread's stale view (`held`), if any.
#[cold]
#[inline(never)]
fn close_unviewed<S>(layer: u64, id: &Id, held: Option<&Hot>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Views of the span elsewhere (its creator's, if it never entered it) are stale from
    // here on: the span's id may come back with a later span.
    gen_of(layer, id.into_u64()).fetch_add(1, Relaxed);
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    let Some(mut t) = ext.remove::<SpanTiming>() else {
        return;
    };
    if let Some(h) = held {
        merge_into(&mut t.call, t.func, h);
        t.last_exit_ns = t.last_exit_ns.max(h.last_exit_ns);
    }
    // A span never entered is not a call.
    if let Some(call) = &t.call {
        recorder::complete(call, t.last_exit_ns, false);
    }
}

/// Enters a span this thread has no room to keep a view of: the entry's start is published
/// at once.
#[cold]
#[inline(never)]
fn enter_unviewed<S>(layer: u64, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut view = Hot::EMPTY;
    if !view_from_extensions(layer, id, &mut view, false, ctx) {
        return;
    }
    let node = view.call.map(|c| c.place.node);
    let Some(opened) = recorder::push_poll(view.func, node, id.into_u64()) else {
        return;
    };
    if node.is_none() {
        view.start = Some((opened.place, opened.at.unix_ns()));
        view_from_extensions(layer, id, &mut view, true, ctx);
    }
}

/// Books the exit of an entry this thread holds no view of, through the extensions.
#[cold]
#[inline(never)]
fn exit_unviewed<S>(layer: u64, id: &Id, out: &PollOutcome, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    let Some(t) = ext.get_mut::<SpanTiming>() else {
        return;
    };
    // Other threads' views of the span are stale from here on.
    gen_of(layer, id.into_u64()).fetch_add(1, Relaxed);
    if let Some(call) = &mut t.call {
        call.add_poll(out);
    }
    t.last_exit_ns = t.last_exit_ns.max(out.end.unix_ns());
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn span_identity_is_target_and_name() {
        let subscriber = tracing_subscriber::registry().with(ProfilingLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            let s = tracing::info_span!(target: "layer_unit::db", "span_identity_query");
            s.in_scope(|| {});
        });
        let snap = crate::snapshot();
        let f = snap
            .function("layer_unit::db::span_identity_query")
            .expect("span recorded");
        assert_eq!(f.calls, 1);
        assert_eq!(f.module, "layer_unit::db");
        assert_eq!(f.kind, CallsiteKind::Span);
        assert!(f.file.ends_with("layer.rs"), "file {}", f.file);
        assert!(f.line > 0);
    }

    #[test]
    fn span_never_entered_is_not_a_call() {
        let subscriber = tracing_subscriber::registry().with(ProfilingLayer::new());
        tracing::subscriber::with_default(subscriber, || {
            let entered = tracing::info_span!(target: "layer_unit", "never_entered_control");
            entered.in_scope(|| {});
            drop(tracing::info_span!(target: "layer_unit", "never_entered"));
        });
        let snap = crate::snapshot();
        assert!(snap.function("layer_unit::never_entered_control").is_some());
        assert!(snap.function("layer_unit::never_entered").is_none());
    }

    #[test]
    fn out_of_order_exit_leaves_the_stack_clean() {
        let subscriber = tracing_subscriber::registry().with(ProfilingLayer::new());
        let depth = crate::record::current_depth();
        tracing::subscriber::with_default(subscriber, || {
            let a = tracing::info_span!(target: "layer_unit", "out_of_order_a");
            let b = tracing::info_span!(target: "layer_unit", "out_of_order_b");
            // Entered a then b, exited a then b: b's frame above a is dropped as an orphan.
            let ga = a.enter();
            let gb = b.enter();
            drop(ga);
            drop(gb);
        });
        assert_eq!(crate::record::current_depth(), depth);
        let snap = crate::snapshot();
        assert_eq!(snap.function("layer_unit::out_of_order_a").map(|f| f.calls), Some(1));
    }
}
