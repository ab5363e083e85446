//! The `tracing` layer: every span feeds the same per-function statistics as `#[profiled]`.
//!
//! A span is one call of the function `"{target}::{span name}"`, from its first enter to its
//! last exit; its busy time is the sum of its entries. Each entry is a poll frame on the
//! recorder's stack of the entering thread, so spans and `#[profiled]` frames nest under each
//! other in both directions, and CPU time and allocations are attributed to the innermost
//! of them. What a span has measured lives in a slot of a fixed table keyed by span id
//! (`layer/slots.rs`), or, for spans beyond the table's room, in the span's extensions in the
//! `Registry`. The thread that creates a span owns its slot and books its own entries there
//! with plain stores (no lock, no atomic read-modify-write); other threads book theirs in the
//! slot's shared half, under its lock; the close merges both. A callback reaches the thread's
//! layer state (callsite ids, its token) and its frame stack through one thread-local: the
//! layer's state lives in the thread's recorder (`layer/thread_state.rs`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_core::span::{Attributes, Id};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::record::alloc;
use crate::record::call::PollOutcome;
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
/// entries race on two threads, the call takes the tree place of the earlier one.
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
    /// Tells this layer's spans from another's in the slot table: span ids are unique per
    /// subscriber only.
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

/// A span's figures in its extensions, for a span without a slot (its bucket of slots was
/// full when it was created).
#[derive(Debug)]
struct SpanTiming {
    func: u32,
    part: Partial,
}

/// An instant as the layer keeps it: the clock's raw reading (ticks), which orders instants
/// across threads as Unix time does. Spans convert only their wall time, once, at close
/// ([`complete`]); converting each entry's start and end to Unix time cost two multiplies
/// per entry.
#[inline(always)]
fn ticks(t: Timestamp) -> u64 {
    t.ticks_since(Timestamp::default())
}

/// Books the call of a span that closed with figures `part`, if it was ever entered (a span
/// never entered is not a call).
#[inline(always)]
fn complete(r: &mut ThreadRecorder, func: u32, part: &Partial) {
    if let Some(call) = part.call(func) {
        r.complete(
            &call,
            nanos_for_ticks(part.last_exit.saturating_sub(call.started_ns)),
            false,
        );
    }
}

/// Marks a span created while profiling was off: it is not recorded.
#[derive(Debug)]
struct NotRecorded;

mod slots;
mod thread_state;

use slots::{Found, Partial};
pub(crate) use thread_state::LayerThreadState;
use thread_state::ID_CACHE;

/// The callbacks are `#[inline(always)]`, their rare paths out of line: the subscriber stack
/// (`Layered`) called them out of line, and each call paid a second prologue and epilogue
/// (46 instructions per span).
impl<S> Layer<S> for ProfilingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    #[inline(always)]
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let key = id.into_u64();
        let layer = self.instance;
        if !config::is_enabled() {
            new_span_switched_off(meta, id, &ctx);
            return;
        }
        let claimed = with_recorder(|r| {
            let l = r.spans();
            let func = function_id(&mut l.ids, meta);
            // Before any other thread can know the id: the span's home is decided here, once,
            // and this thread owns its slot.
            (
                func,
                func == SKIP || slots::claim(layer, key, func, l.token()).is_some(),
            )
        });
        match claimed {
            Some((_, true)) => {}
            Some((func, false)) => new_span_in_extensions(func, id, &ctx),
            None => new_span_unowned(layer, meta, id, &ctx),
        }
    }

    #[inline(always)]
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let key = id.into_u64();
        let Some(found) = slots::find(self.instance, key) else {
            enter_in_extensions(id, &ctx);
            return;
        };
        let slot = found.slot;
        let _ = with_recorder(|r| {
            if !slot.owned_by(r.spans().token()) {
                enter_shared(r, slot, key);
                return;
            }
            let func = slot.func();
            let node = match slot.own_node() {
                Some(n) => Some(n),
                None if slot.others() => return enter_owner_after_others(r, slot, key),
                None => None,
            };
            // When `node` is `None`, the start is read before the frame's start, so a span
            // entered once has latency >= busy.
            let opened = r.push_span_entry(func, node, key);
            if node.is_none() {
                slot.start_own(opened.place, ticks(opened.at));
            }
        });
    }

    #[inline(always)]
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let end = Timestamp::now();
        let key = id.into_u64();
        let layer = self.instance;
        let in_extensions = with_recorder(|r| {
            // `None` when this thread has no open entry of the span (exited elsewhere, or the
            // entry was dropped as an orphan): nothing to book.
            let out = r.pop_span_entry(key, end)?;
            let Some(found) = slots::find(layer, key) else {
                return Some(out);
            };
            let (busy, child, end) = (out.busy, out.child_wall, ticks(out.end));
            if found.slot.owned_by(r.spans().token()) {
                found.slot.add_own(busy, child, end);
            } else {
                exit_shared(found, busy, child, end);
            }
            None
        })
        .flatten();
        if let Some(out) = in_extensions {
            exit_in_extensions(id, &out, &ctx);
        }
    }

    #[inline(always)]
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(found) = slots::find(self.instance, id.into_u64()) else {
            close_in_extensions(&id, &ctx);
            return;
        };
        // Freed whether or not this thread's recorder is in reach.
        let (func, part) = found.release();
        if part.start.is_some() {
            let _ = with_recorder(|r| complete(r, func, &part));
        }
    }
}

/// An entry of a span by a thread other than its owner: under the slot's lock, into the shared
/// half. The call's place is the owner's start if published, else the shared half's, else
/// this entry's.
#[cold]
#[inline(never)]
fn enter_shared(r: &mut ThreadRecorder, slot: &'static slots::Slot, key: u64) {
    let node = slot.with_shared(true, |p, own| own.map(|(place, _)| place.node).or(p.node()));
    let opened = r.push_span_entry(slot.func(), node, key);
    if node.is_none() {
        slot.with_shared(true, |p, _| p.start_at(opened.place, ticks(opened.at)));
    }
}

/// An entry of a span by its owner, which has not started the call, after another thread
/// booked figures in the shared half: the call's place is the shared half's if it started
/// the call, else this entry's.
#[cold]
#[inline(never)]
fn enter_owner_after_others(r: &mut ThreadRecorder, slot: &'static slots::Slot, key: u64) {
    let node = slot.with_shared(false, |p, own| own.map(|(place, _)| place.node).or(p.node()));
    let opened = r.push_span_entry(slot.func(), node, key);
    if node.is_none() {
        slot.start_own(opened.place, ticks(opened.at));
    }
}

/// The exit of an entry by a thread other than the span's owner.
#[cold]
#[inline(never)]
fn exit_shared(found: Found, busy: u64, child: u64, end: u64) {
    found.slot.with_shared(true, |p, _| p.add(busy, child, end));
}

/// Marks a span created while profiling is off as not recorded (spans of `#[profiled(span)]`
/// are not recorded anyway).
#[cold]
#[inline(never)]
fn new_span_switched_off<S>(meta: &'static Metadata<'static>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !opened_by_profiled(meta) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(NotRecorded);
        }
    }
}

/// Gives a span its figures' home in its extensions (its bucket of slots was full).
#[cold]
#[inline(never)]
fn new_span_in_extensions<S>(func: u32, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if let Some(span) = ctx.span(id) {
        span.extensions_mut().insert(SpanTiming {
            func,
            part: Partial::EMPTY,
        });
    }
}

/// A span created while this thread's recorder is out of reach (thread teardown, or a span
/// created from within the layer): its slot has no owner, so every thread books it in the
/// shared half.
#[cold]
#[inline(never)]
fn new_span_unowned<S>(layer: u64, meta: &'static Metadata<'static>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let func = function_id_uncached(meta);
    if func != SKIP && slots::claim(layer, id.into_u64(), func, 0).is_none() {
        new_span_in_extensions(func, id, ctx);
    }
}

/// An entry of a span without a slot: its figures are in its extensions (or it is not
/// recorded: created while profiling was off, or by `#[profiled(span)]`).
#[cold]
#[inline(never)]
fn enter_in_extensions<S>(id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let (func, node) = {
        let mut ext = span.extensions_mut();
        if ext.get_mut::<NotRecorded>().is_some() {
            return;
        }
        match ext.get_mut::<SpanTiming>() {
            Some(t) => (t.func, t.part.node()),
            None => {
                // Created while this thread's recorder was out of reach, in a full bucket,
                // or by `#[profiled(span)]`.
                let func = function_id_uncached(span.metadata());
                if func == SKIP {
                    return;
                }
                ext.insert(SpanTiming {
                    func,
                    part: Partial::EMPTY,
                });
                (func, None)
            }
        }
    };
    let key = id.into_u64();
    let opened = with_recorder(|r| r.push_span_entry(func, node, key));
    if let (None, Some(opened)) = (node, opened) {
        let mut ext = span.extensions_mut();
        if let Some(t) = ext.get_mut::<SpanTiming>() {
            t.part.start_at(opened.place, ticks(opened.at));
        }
    }
}

/// The exit of an entry of a span without a slot.
#[cold]
#[inline(never)]
fn exit_in_extensions<S>(id: &Id, out: &PollOutcome, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    if let Some(t) = ext.get_mut::<SpanTiming>() {
        t.part.add(out.busy, out.child_wall, ticks(out.end));
    }
}

/// The close of a span without a slot.
#[cold]
#[inline(never)]
fn close_in_extensions<S>(id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let Some(t) = span.extensions_mut().remove::<SpanTiming>() else {
        return;
    };
    if t.part.start.is_some() {
        let _ = with_recorder(|r| complete(r, t.func, &t.part));
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
