//! placeholder, being written
pub use profiling_macros::profiled;
#[doc(hidden)]
pub mod __private {}
