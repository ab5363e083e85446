//! `name`, `crate` and `span`, alone and together; the `span` option opens a tracing
//! span named after `name` or the function, marked `profiled = true`.
#![deny(warnings)]

use profiling_core::profiled;
use std::sync::{Arc, Mutex};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

mod facade {
    // A re-exported core, as a crate wrapping profiling_core would have it.
    pub use profiling_core as core;
}

#[profiled(name = "custom name")]
fn named() -> u8 {
    1
}

#[profiled(crate = ::profiling_core)]
fn absolute_crate() -> u8 {
    2
}

#[profiled(crate = facade::core, name = "through a facade")]
fn facade_crate() -> u8 {
    3
}

#[profiled(span)]
fn with_span() -> u8 {
    4
}

#[profiled(span = "debug", name = "loud one", crate = ::profiling_core,)]
fn with_everything() -> u8 {
    5
}

#[profiled(span = "TRACE")]
async fn async_with_span() -> u8 {
    tokio::task::yield_now().await;
    6
}

struct S;

impl S {
    #[profiled(span = "warn")]
    fn method(&self) -> u8 {
        7
    }
}

/// Records `(name, level, has profiled = true, target)` of every new span, and the
/// spans entered.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<(String, tracing::Level, bool, String)>>>,
    entered: Arc<Mutex<Vec<u64>>>,
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let meta = span.metadata();
        let marked = meta.fields().field("profiled").is_some();
        let mut spans = self.spans.lock().unwrap();
        spans.push((
            meta.name().to_owned(),
            *meta.level(),
            marked,
            meta.target().to_owned(),
        ));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        self.entered.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {}
}

fn main() {
    let recorder = Recorder::default();
    tracing::subscriber::with_default(recorder.clone(), || {
        assert_eq!(named(), 1);
        assert_eq!(absolute_crate(), 2);
        assert_eq!(facade_crate(), 3);
        assert_eq!(with_span(), 4);
        assert_eq!(with_everything(), 5);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(async_with_span()), 6);
        assert_eq!(S.method(), 7);
    });

    let spans = recorder.spans.lock().unwrap().clone();
    let target = module_path!().to_owned();
    assert_eq!(
        spans,
        [
            ("with_span".to_owned(), tracing::Level::INFO, true, target.clone()),
            ("loud one".to_owned(), tracing::Level::DEBUG, true, target.clone()),
            ("async_with_span".to_owned(), tracing::Level::TRACE, true, target.clone()),
            ("method".to_owned(), tracing::Level::WARN, true, target),
        ]
    );
    // Each span was entered at least once (the async one at every poll).
    let entered = recorder.entered.lock().unwrap().clone();
    for id in 1..=4 {
        assert!(entered.contains(&id), "span {id} never entered: {entered:?}");
    }
}
