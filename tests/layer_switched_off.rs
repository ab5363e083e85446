//! The tracing layer when profiling is switched off at run time: a span created while it is
//! off is never recorded, even if profiling is switched back on before the span is entered
//! (its call would otherwise have no start); spans created while it is on are recorded.
//!
//! A binary of its own with a single test: the switch is process-wide.

use profiling_core::{set_enabled, snapshot, ProfilingLayer};
use tracing_subscriber::prelude::*;

#[test]
fn spans_created_while_switched_off_are_never_recorded() {
    let subscriber = tracing_subscriber::registry().with(ProfilingLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        set_enabled(false);
        let created_off = tracing::info_span!("created_off");
        set_enabled(true);
        for _ in 0..3 {
            created_off.in_scope(|| std::hint::black_box(1));
        }
        drop(created_off);
        let created_on = tracing::info_span!("created_on");
        for _ in 0..3 {
            created_on.in_scope(|| std::hint::black_box(1));
        }
        drop(created_on);
        set_enabled(false);
        let entered_off = tracing::info_span!("created_and_entered_off");
        entered_off.in_scope(|| std::hint::black_box(1));
        drop(entered_off);
        set_enabled(true);
    });
    let s = snapshot();
    let names: Vec<&str> = s.functions.iter().map(|f| f.name.as_str()).collect();
    assert!(s.function("layer_switched_off::created_off").is_none(), "{names:?}");
    assert!(
        s.function("layer_switched_off::created_and_entered_off").is_none(),
        "{names:?}"
    );
    let on = s
        .function("layer_switched_off::created_on")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(on.calls, 1, "one span is one call, however many times it is entered");
}
