//! What `#[profiled]` generates, as `profiling-core` records it: display names (free
//! function, `Type::method`, custom `name`), call kinds, source lines, and calls counted
//! once each, including early returns, `?` and async functions across `.await`.
//!
//! One test: the recorder is process-global.

use profiling_core::record::callsite::CallsiteKind;
use profiling_core::record::snapshot::FunctionStats;
use profiling_core::{profiled, snapshot, Snapshot};
use std::num::ParseIntError;

#[profiled]
fn free(x: u32) -> u32 {
    x + 1
}
const FREE_LINE: u32 = line!() - 3;

#[profiled]
fn parse(s: &str) -> Result<u32, ParseIntError> {
    if s.is_empty() {
        return Ok(0);
    }
    let n = s.parse()?;
    Ok(n)
}

#[profiled(name = "custom display name")]
fn renamed() {}

struct Store<T>(T);

impl<T: Copy> Store<T> {
    #[profiled]
    fn get(&self) -> T {
        self.0
    }

    #[profiled]
    fn new(t: T) -> Self {
        Store(t)
    }

    // Neither a receiver nor `Self`: recorded like a free function.
    #[profiled]
    fn helper() -> u8 {
        1
    }

    #[profiled]
    async fn get_later(&self) -> T {
        tokio::task::yield_now().await;
        self.0
    }
}

trait Greeter {
    #[profiled]
    fn greet(&self) -> &'static str {
        "hello"
    }
}

impl Greeter for Store<u8> {}

#[profiled]
async fn sleepy() -> u8 {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    4
}

#[profiled(span)]
fn with_span() -> u8 {
    5
}

fn function<'a>(snap: &'a Snapshot, name: &str) -> &'a FunctionStats {
    snap.function(name).unwrap_or_else(|| {
        let names: Vec<_> = snap.functions.iter().map(|f| &f.name).collect();
        panic!("{name} not recorded; recorded: {names:?}")
    })
}

#[test]
fn generated_callsites_are_recorded_under_their_names() {
    let m = module_path!();

    for i in 0..3 {
        assert_eq!(free(i), i + 1);
    }
    assert_eq!(parse(""), Ok(0));
    assert_eq!(parse("12"), Ok(12));
    assert!(parse("x").is_err());
    renamed();
    let store = Store::new(7u8);
    assert_eq!(store.get(), 7);
    assert_eq!(Store::<u8>::helper(), 1);
    assert_eq!(store.greet(), "hello");
    assert_eq!(with_span(), 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(store.get_later()), 7);
    assert_eq!(rt.block_on(sleepy()), 4);

    let snap = snapshot();

    let f = function(&snap, &format!("{m}::free"));
    assert_eq!((f.calls, f.kind, f.line), (3, CallsiteKind::Sync, FREE_LINE));
    assert_eq!(f.module, m);
    assert!(f.file.ends_with("recorded.rs"), "{}", f.file);

    // Early return, success and `?` each count one call.
    assert_eq!(function(&snap, &format!("{m}::parse")).calls, 3);
    assert_eq!(function(&snap, "custom display name").calls, 1);
    assert_eq!(function(&snap, &format!("{m}::Store::get")).calls, 1);
    assert_eq!(function(&snap, &format!("{m}::Store::new")).calls, 1);
    assert_eq!(function(&snap, &format!("{m}::helper")).calls, 1);
    // A trait default body names the implementing type.
    assert_eq!(function(&snap, &format!("{m}::Store::greet")).calls, 1);
    assert_eq!(function(&snap, &format!("{m}::with_span")).calls, 1);

    let f = function(&snap, &format!("{m}::Store::get_later"));
    assert_eq!((f.calls, f.kind), (1, CallsiteKind::Async));
    // One call from first poll to completion, not one per poll; latency includes the
    // sleep, busy time does not.
    let f = function(&snap, &format!("{m}::sleepy"));
    assert_eq!((f.calls, f.kind), (1, CallsiteKind::Async));
    assert!(f.total_wall_ns >= 20_000_000, "latency {} ns", f.total_wall_ns);
    assert!(
        f.busy_ns < f.total_wall_ns / 2,
        "busy {} ns of {}",
        f.busy_ns,
        f.total_wall_ns
    );
}
