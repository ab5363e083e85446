//! The `tracing` layer: every span feeds the same per-function statistics as `#[profiled]`.
//!
//! A span is one call of the function `"{target}::{span name}"`, from its first enter to its
//! last exit; its busy time is the sum of its entries. Each entry is a poll frame on the
//! recorder's stack of the entering thread, so spans and `#[profiled]` frames nest under each
//! other in both directions, and CPU time and allocations are attributed to the innermost
//! of them. Per-span state lives in the span's extensions in the `Registry`.

use std::collections::HashMap;
use std::sync::RwLock;

use tracing_core::span::{Attributes, Id};
use tracing_core::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::record::call::{InFlightCall, Locator};
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
/// stack; its busy time is the sum of all of them (and may exceed its latency). Entries
/// exited out of order are closed by owner, and frames left open above them are dropped.
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
#[derive(Debug, Default)]
pub struct ProfilingLayer {
    /// Function id per span callsite (keyed by the address of its `'static` metadata).
    ids: RwLock<HashMap<usize, u32>>,
}

impl ProfilingLayer {
    /// A layer that records every span it is shown.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The function id of the spans of `meta`, registering the function on first sight.
    ///
    /// A small per-thread direct-mapped cache answers repeat lookups without the lock. Ids
    /// are process-wide (`register_function` is idempotent per callsite), so the cache can
    /// be shared by every layer instance on the thread.
    fn function_id(&self, meta: &'static Metadata<'static>) -> u32 {
        let key = meta as *const Metadata<'static> as usize;
        let slot = (key >> 4) % ID_CACHE;
        if let Ok(Some(id)) = ID_CACHE_TLS.try_with(|c| {
            let (k, id) = c[slot].get();
            (k == key).then_some(id)
        }) {
            return id;
        }
        let cached = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
        let id = match cached {
            Some(id) => id,
            None => {
                let id = register_function(FunctionKey::Span(key), span_meta(meta));
                self.ids.write().unwrap_or_else(|p| p.into_inner()).insert(key, id);
                id
            }
        };
        let _ = ID_CACHE_TLS.try_with(|c| c[slot].set((key, id)));
        id
    }
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

/// What one span has measured so far. Stored in the span's extensions.
#[derive(Debug)]
struct SpanTiming {
    func: u32,
    /// The call, from the first enter on (its place resolved under the innermost frame then).
    call: Option<InFlightCall>,
    last_exit_ns: u64,
}

impl<S> Layer<S> for ProfilingLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if opened_by_profiled(meta) || !config::is_enabled() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let func = self.function_id(meta);
        span.extensions_mut().insert(SpanTiming {
            func,
            call: None,
            last_exit_ns: 0,
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<SpanTiming>() else {
            return;
        };
        // Read before the frame opens, so a span entered once has latency >= busy time.
        let now = if t.call.is_none() { recorder::now_ns() } else { 0 };
        let node = t.call.map(|c| c.place.node);
        let Some(opened) = recorder::push_poll(t.func, node, id.into_u64()) else {
            return;
        };
        if t.call.is_none() {
            t.call = Some(InFlightCall::new(t.func, opened.place, now));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(t) = ext.get_mut::<SpanTiming>() else {
            return;
        };
        // `None` when this thread has no open entry of the span (exited elsewhere, or the
        // entry was dropped as an orphan): nothing to book.
        if let Some(out) = recorder::pop_poll(Locator::Owner(id.into_u64())) {
            if let Some(call) = &mut t.call {
                call.add_poll(&out);
            }
            t.last_exit_ns = t.last_exit_ns.max(out.end.unix_ns());
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(t) = span.extensions_mut().remove::<SpanTiming>() else {
            return;
        };
        // A span never entered is not a call.
        if let Some(call) = &t.call {
            recorder::complete(call, t.last_exit_ns, false);
        }
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
