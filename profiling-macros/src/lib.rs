//! The `#[profiled]` attribute of `profiling-core`.
//!
//! Use it through `profiling_core::profiled`; this crate only generates code, and the
//! generated code calls `profiling_core::__private`, which is not a public API.
//!
//! * `lib.rs`: this entry point and its documentation;
//! * `attr.rs`: parsing and validation of the arguments;
//! * `expand.rs`: validation of the item and code generation.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Records every call of the function with `profiling-core`, under one call site per function.
///
/// ```
/// use profiling_core::profiled;
///
/// #[profiled]
/// fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
///     let n = input.trim().parse()?; // `?` and early `return` work as before
///     Ok(n)
/// }
///
/// struct Cache;
///
/// impl Cache {
///     // Shown as `<module>::Cache::get`.
///     #[profiled]
///     fn get(&self, key: u32) -> u32 {
///         key * 2
///     }
/// }
///
/// // `name` replaces the default display name; `span` also opens a `tracing` span
/// // (at level INFO unless given, as in `span = "debug"`), so the call shows in logs.
/// #[profiled(name = "load config", span = "debug")]
/// async fn load() -> u32 {
///     parse("41").unwrap_or(0) + 1
/// }
///
/// # fn main() {
/// assert_eq!(parse("7"), Ok(7));
/// assert_eq!(Cache.get(2), 4);
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # assert_eq!(rt.block_on(load()), 42);
/// # }
/// ```
///
/// # Arguments
///
/// All optional, comma separated, each at most once:
///
/// * `name = "display name"`: the name shown in reports. By default it is
///   `module::function`, or `module::Type::method` for a function that has a `self`
///   receiver or mentions `Self` in its signature. An associated function that does
///   neither (`fn new() -> Config` inside `impl Config`) is named like a free function,
///   `module::new`: the macro sees one function, not the `impl` around it, and can only
///   name `Self` where the signature proves it exists. Give it a `name` if that matters.
/// * `crate = path`: where `profiling_core` is, for a renamed or re-exported dependency
///   (`crate = my_facade::profiling`). Default: `::profiling_core`.
/// * `span` or `span = "level"` (`"trace"`, `"debug"`, `"info"`, `"warn"`, `"error"`,
///   case-insensitive; default `"info"`): also open a `tracing` span around each call,
///   named after `name` or the function and marked with the field `profiled = true`,
///   by which the tracing layer of `profiling-core` skips it so that no call is counted
///   twice.
///
/// # What it applies to
///
/// * Functions, methods (any receiver, including `self: Box<Self>`) and associated
///   functions; generic, `unsafe` and `extern "ABI"` functions; default bodies in traits.
///   Attributes, visibility and the signature are re-emitted token for token.
/// * `async fn`, also in traits: the body is wrapped in a future that records the call
///   when it completes; no guard is held across an `.await`, so a `Send` future stays
///   `Send`.
/// * The `#[async_trait]` shape, a non-async function whose body ends in
///   `Box::pin(async move { .. })`: the inner future is instrumented, keeping `Send`.
///   Put `#[profiled]` on the methods of the `#[async_trait]` impl.
/// * A non-async function returning a future some other way is timed as a sync
///   function: only the creation of the future is measured.
///
/// It is a compile error to apply it to anything else: a `const fn` (a call evaluated
/// at compile time cannot be recorded), a trait method without a body, or a non-function
/// item. Argument errors point at the offending token.
///
/// # Without the `enabled` feature
///
/// `profiling-core`'s default feature `enabled` turns on this crate's `enabled`
/// feature. Without it, `#[profiled]` still checks its arguments and the item (so a
/// program builds the same way with and without profiling) and then returns the
/// function unchanged: no code, no cost.
#[proc_macro_attribute]
pub fn profiled(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::profiled(args.into(), item.into(), cfg!(feature = "enabled")).into()
}
