//! The `tracing` layer: every span feeds the same per-function statistics as `#[profiled]`.
//!
//! A span is one call of the function `"{target}::{span name}"`, from its first enter to its
//! last exit; its busy time is the sum of its entries. Each entry is a poll frame on the
//! recorder's stack of the entering thread, so spans and `#[profiled]` frames nest under each
//! other in both directions, and CPU time and allocations are attributed to the innermost
//! of them. What a span has measured is *published* for every thread in a slot of a fixed
//! table keyed by span id (`layer/slots.rs`), or, for spans beyond the table's room, in the
//! span's extensions in the `Registry`; a thread serves the spans it touches from a small
//! table of views of that state, and publishes each entry as it exits (one lock of the slot
//! the view remembers per entry, not one registry lookup per callback: see the thread-local
//! fast path in `layer/views.rs`). A callback reaches the thread's layer state (views and
//! callsite ids) and its frame stack through one thread-local: the layer's state lives in the
//! thread's recorder.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_core::span::{Attributes, Id};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::record::alloc;
use crate::record::call::{InFlightCall, PollOutcome};
use crate::record::callsite::{register_function, CallsiteKind, FunctionKey, FunctionMeta};
use crate::record::clock::{nanos_for_ticks, Timestamp};
use crate::record::config;
use crate::record::recorder::{with_recorder, ThreadRecorder};

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

/// The function id of the spans of `meta`, registering the function on first sight; [`SKIP`]
/// for spans opened by `#[profiled(span)]`.
///
/// The thread's direct-mapped cache `ids` answers repeat lookups; a miss asks the function
/// registry, which is idempotent per callsite, so ids are shared by every layer instance.
#[inline]
fn function_id(ids: &mut [(usize, u32); ID_CACHE], meta: &'static Metadata<'static>) -> u32 {
    let key = meta as *const Metadata<'static> as usize;
    let slot = (key >> 4) % ID_CACHE;
    let (k, id) = ids[slot];
    if k == key {
        return id;
    }
    let id = function_id_uncached(meta);
    ids[slot] = (key, id);
    id
}

/// [`function_id`] without the thread's cache.
#[cold]
#[inline(never)]
fn function_id_uncached(meta: &'static Metadata<'static>) -> u32 {
    if opened_by_profiled(meta) {
        return SKIP;
    }
    let key = meta as *const Metadata<'static> as usize;
    alloc::untracked(|| register_function(FunctionKey::Span(key), span_meta(meta)))
}

/// The function id of a span callsite the layer does not record (`#[profiled(span)]`).
const SKIP: u32 = u32::MAX;

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
/// slot, else in its extensions; a thread's own entries reach it when they exit (see
/// [`Hot`]).
#[derive(Debug)]
struct SpanTiming {
    func: u32,
    /// The call, from the first enter on (its place resolved under the innermost frame then;
    /// its `started_ns` in ticks, see [`ticks`]).
    call: Option<InFlightCall>,
    /// When its last entry exited, in raw ticks ([`ticks`]).
    last_exit: u64,
}

/// An instant as the layer keeps it: the clock's raw reading (ticks), which orders instants
/// across threads as Unix time does. Spans convert only their wall time, once, at close
/// ([`complete`]); converting each entry's start and end to Unix time cost two multiplies
/// per entry.
#[inline(always)]
fn ticks(t: Timestamp) -> u64 {
    t.ticks_since(Timestamp::default())
}

/// Books the call of a span that closed, last exited at `last_exit` (ticks; so is the call's
/// `started_ns` in the layer's state, see [`ticks`]).
#[inline(always)]
fn complete(r: &mut ThreadRecorder, call: &InFlightCall, last_exit: u64) {
    r.complete(call, nanos_for_ticks(last_exit.saturating_sub(call.started_ns)), false);
}

/// Marks a span created while profiling was off: it is not recorded.
#[derive(Debug)]
struct NotRecorded;

mod slots;
mod views;

pub(crate) use views::Local as SpanViews;
use views::{find, free_slot, gen_of, merged, slot_for_new, Exited, Hot, ID_CACHE, NO_SLOT};

/// The slow path: takes a view of span `id` into `view` from its published state, first
/// publishing what `view` held unpublished if it is a view of that span (`held`). Returns
/// `false` (and frees `view`) when the span is not recorded, or gone.
#[cold]
#[inline(never)]
fn view_from_published<S>(layer: u64, id: &Id, view: &mut Hot, held: bool, ctx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let key = id.into_u64();
    let in_slot = slots::with(layer, key, |t, index| {
        // As below, under the slot's lock.
        let gen = gen_of(layer, key).fetch_add(1, Relaxed) + 1;
        if !held {
            *view = Hot::new(layer, key, 0, gen);
        }
        view.slot = index;
        view.sync(t, gen);
    });
    if in_slot.is_some() {
        return true;
    }
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
        view.slot = NO_SLOT;
        match ext.get_mut::<SpanTiming>() {
            Some(t) => view.sync(t, gen),
            None => {
                // Never entered, or created on a thread that kept its view (which holds
                // nothing but the function): this thread publishes the span.
                let func = if held {
                    view.func
                } else {
                    function_id_uncached(span.metadata())
                };
                if func == SKIP {
                    return None;
                }
                let mut t = SpanTiming {
                    func,
                    call: None,
                    last_exit: 0,
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

/// Publishes the own figures of `view`, valid when it was checked, with those of the entry
/// that just exited (`busy_ns`, `child_latency_ns`, `end`): no other thread holds a valid
/// view of the span, so the view stays valid (unless a slow path ran since the check: then
/// it is invalid, and exact). `false` when the view knows no slot of the span (or not the
/// right one): the exit is then added to the view, for [`publish_elsewhere`].
///
/// The exit's figures come as scalars, in registers: passed in memory, they were read back
/// by one wide load just after the caller's narrower stores (a store-forwarding stall).
/// Inlined into `on_exit` (as a call, saving and restoring registers and moving arguments
/// cost 19 instructions per span).
#[inline(always)]
fn publish(layer: u64, key: u64, view: &mut Hot, busy_ns: u64, child_latency_ns: u64, end: u64) -> bool {
    let gen = view.gen;
    let exit = Exited {
        busy_ns,
        child_latency_ns,
        end,
    };
    if slots::with_at(view.slot, layer, key, |t| view.sync_exit(t, gen, exit)).is_some() {
        return true;
    }
    view.add(exit);
    false
}

/// [`publish`] for a span whose view knows no slot (or not the right one).
#[cold]
#[inline(never)]
fn publish_elsewhere<S>(layer: u64, id: &Id, view: &mut Hot, ctx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let gen = view.gen;
    if let Some(index) = slots::with(layer, id.into_u64(), |t, index| {
        view.sync(t, gen);
        index
    }) {
        view.slot = index;
        return true;
    }
    view.slot = NO_SLOT;
    publish_to_extensions(id, view, ctx)
}

/// [`publish`] for a span without a slot.
#[cold]
#[inline(never)]
fn publish_to_extensions<S>(id: &Id, view: &mut Hot, ctx: &Context<'_, S>) -> bool
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
                last_exit: 0,
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
        let key = id.into_u64();
        let layer = self.instance;
        if !config::is_enabled() {
            if !opened_by_profiled(meta) {
                if let Some(span) = ctx.span(id) {
                    span.extensions_mut().insert(NotRecorded);
                }
            }
            return;
        }
        let done = with_recorder(|r| {
            let l = r.spans();
            let func = function_id(&mut l.ids, meta);
            if func == SKIP {
                return;
            }
            // The creating thread holds the span's only view; its published state (the slot
            // claimed below) holds the function only until an entry is published at exit.
            let gen = gen_of(layer, key).load(Relaxed);
            // Before any other thread can know the id: the span's home is decided here, once.
            let slot = slots::claim(layer, key, func);
            let hot = &mut l.hot;
            if let Some(i) = slot_for_new(hot, layer, key) {
                hot[i].reset(layer, key, func, gen, slot.unwrap_or(NO_SLOT));
            }
        });
        if done.is_none() {
            new_span_unviewed(layer, meta, key);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let layer = self.instance;
        let _ = with_recorder(|r| {
            let hot = &mut r.spans().hot;
            let i = match find(hot, layer, key) {
                Some(i) if hot[i].valid() => i,
                Some(i) => {
                    if !view_from_published(layer, id, &mut hot[i], true, &ctx) {
                        return;
                    }
                    i
                }
                None => match free_slot(hot) {
                    Some(i) => {
                        if !view_from_published(layer, id, &mut hot[i], false, &ctx) {
                            return;
                        }
                        i
                    }
                    None => {
                        // No room for a view: the entry goes through the published state.
                        enter_unviewed(r, layer, id, &ctx);
                        return;
                    }
                },
            };
            let h = &hot[i];
            let func = h.func;
            let node = match (&h.call, &h.start) {
                (Some(c), _) => Some(c.place.node),
                (None, Some((place, _))) => Some(place.node),
                (None, None) => None,
            };
            // When `node` is `None`, the start is read before the frame's start, so a span
            // entered once has latency >= busy.
            let opened = r.push_span_entry(func, node, key);
            let h = &mut r.spans().hot[i];
            if node.is_none() {
                h.start = Some((opened.place, ticks(opened.at)));
            }
            h.entered += 1;
        });
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let end = Timestamp::now();
        let key = id.into_u64();
        let layer = self.instance;
        let unviewed = with_recorder(|r| {
            // `None` when this thread has no open entry of the span (exited elsewhere, or the
            // entry was dropped as an orphan): nothing to book.
            let out = r.pop_span_entry(key, end)?;
            let hot = &mut r.spans().hot;
            let Some(i) = find(hot, layer, key) else {
                return Some(out);
            };
            let h = &mut hot[i];
            h.entered = h.entered.saturating_sub(1);
            let exit = Exited {
                busy_ns: out.busy,
                child_latency_ns: out.child_wall,
                end: ticks(out.end),
            };
            // Published at once: the span may be entered or closed on another thread next.
            if h.valid() {
                if !publish(layer, key, h, exit.busy_ns, exit.child_latency_ns, exit.end)
                    && !publish_elsewhere(layer, id, h, &ctx)
                {
                    h.id = 0;
                }
            } else {
                h.add(exit);
                view_from_published(layer, id, h, true, &ctx);
            }
            None
        })
        .flatten();
        if let Some(out) = unviewed {
            exit_unviewed(layer, id, &out, &ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let layer = self.instance;
        let viewed = with_recorder(|r| {
            let hot = &mut r.spans().hot;
            let i = find(hot, layer, key)?;
            let h = &mut hot[i];
            let valid = h.valid();
            h.id = 0;
            if valid {
                // Every figure of the span is in the view: its slot is only freed. A span
                // never entered is not a call.
                slots::free_at(h.slot, layer, key);
                if let Some(call) = &h.merged_call() {
                    let last_exit = h.last_exit;
                    complete(r, call, last_exit);
                }
            } else {
                let held = *h;
                close_unviewed(Some(r), layer, &id, Some(&held), &ctx);
            }
            Some(())
        })
        .flatten();
        if viewed.is_none() {
            close_unviewed(None, layer, &id, None, &ctx);
        }
    }
}

/// Publishes a span created while this thread's layer state is out of reach (thread
/// teardown, or a span created from within the layer): its slot holds its function, for
/// whichever thread enters it.
#[cold]
#[inline(never)]
fn new_span_unviewed(layer: u64, meta: &'static Metadata<'static>, key: u64) {
    let func = function_id_uncached(meta);
    if func != SKIP {
        slots::claim(layer, key, func);
    }
}

/// Closes a span this thread holds no valid view of, from its published state, with the
/// figures of the thread's stale view (`held`), if any.
#[cold]
#[inline(never)]
fn close_unviewed<S>(rec: Option<&mut ThreadRecorder>, layer: u64, id: &Id, held: Option<&Hot>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // Views of the span elsewhere (its creator's, if it never entered it) are stale from
    // here on: the span's id may come back with a later span.
    gen_of(layer, id.into_u64()).fetch_add(1, Relaxed);
    let t = slots::release(layer, id.into_u64()).or_else(|| {
        ctx.span(id)
            .and_then(|span| span.extensions_mut().remove::<SpanTiming>())
    });
    let Some(mut t) = t else { return };
    if let Some(h) = held {
        t.call = merged(t.call, t.func, h);
        t.last_exit = t.last_exit.max(h.last_exit);
    }
    // A span never entered is not a call.
    if let Some(call) = &t.call {
        match rec {
            Some(r) => complete(r, call, t.last_exit),
            None => {
                let _ = with_recorder(|r| complete(r, call, t.last_exit));
            }
        }
    }
}

/// Enters a span this thread has no room to keep a view of: the entry's start is published
/// at once.
#[cold]
#[inline(never)]
fn enter_unviewed<S>(r: &mut ThreadRecorder, layer: u64, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut view = Hot::EMPTY;
    if !view_from_published(layer, id, &mut view, false, ctx) {
        return;
    }
    let node = view.call.map(|c| c.place.node);
    let opened = r.push_span_entry(view.func, node, id.into_u64());
    if node.is_none() {
        view.start = Some((opened.place, ticks(opened.at)));
        view_from_published(layer, id, &mut view, true, ctx);
    }
}

/// Books the exit of an entry this thread holds no view of, into its published state.
#[cold]
#[inline(never)]
fn exit_unviewed<S>(layer: u64, id: &Id, out: &PollOutcome, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let book = |t: &mut SpanTiming| {
        // Other threads' views of the span are stale from here on.
        gen_of(layer, id.into_u64()).fetch_add(1, Relaxed);
        if let Some(call) = &mut t.call {
            call.add_poll(out);
        }
        t.last_exit = t.last_exit.max(ticks(out.end));
    };
    if slots::with(layer, id.into_u64(), |t, _| book(t)).is_some() {
        return;
    }
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    if let Some(t) = ext.get_mut::<SpanTiming>() {
        book(t);
    }
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
